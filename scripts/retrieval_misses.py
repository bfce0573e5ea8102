"""Print a random sample of the retrieval "misses" of a model on a pair file, for a person to judge.

A miss is a query whose top-ranked question is not in its labelled duplicate cluster. On QQP many misses are
unlabelled duplicates (the pair files label only some pairs), which caps what a retrieval metric built from
the labelled clusters can show; reading a sample tells how many. Prints the miss count and how many points of
nDCG@10 the misses cost, then for each sampled miss the query, the model's top answer and one labelled
duplicate of the query.

Usage:
    python scripts/retrieval_misses.py ../shared/data/dev/qqp_pairs_dev.tsv [--model PATH] [--sample 40] [--seed 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see bench_quality.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dupq.data import read_pairs  # noqa: E402
from dupq.evaluation import rank_dense, retrieval_metrics, retrieval_task_from_pairs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path, help="labelled pair file (TSV, CSV or JSONL)")
    ap.add_argument("--model", default=None, help="model folder (default: the packaged base model)")
    ap.add_argument("--sample", type=int, default=40, help="misses to print")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not args.pairs.exists():
        print(f"pair file not found: {args.pairs}", file=sys.stderr)
        return 2

    from dupq.models.encoder import load_sentence_transformer, packaged_model_path

    model = load_sentence_transformer(args.model or packaged_model_path(), cached=False)
    task = retrieval_task_from_pairs(read_pairs(args.pairs).pairs)
    ranked = rank_dense(
        task, lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True), top_k=10
    )
    misses = sorted(q for q, top in ranked.items() if top and top[0] not in task.qrels[q])
    n = len(task.queries)
    ndcg = retrieval_metrics(ranked, task.qrels)["ndcg@10"]
    misses_ndcg = retrieval_metrics(ranked, {q: task.qrels[q] for q in misses})["ndcg@10"] if misses else 1.0
    print(f"{len(misses)} of {n} queries ({len(misses) / n:.1%}) have a top answer outside their labelled "
          f"duplicate cluster; nDCG@10 {ndcg:.4f}, of whose deficit "
          f"{100 * len(misses) * (1 - misses_ndcg) / n:.2f} points come from those queries")
    print(f"a random {min(args.sample, len(misses))} of them:\n")
    for n, q in enumerate(random.Random(args.seed).sample(misses, min(args.sample, len(misses)))):
        labelled = task.corpus[sorted(task.qrels[q])[0]]
        print(f"{n}. query:     {task.queries[q]}\n   top answer: {task.corpus[ranked[q][0]]}\n"
              f"   labelled:   {labelled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
