"""Quality benchmark of the recommended recipe: BM25, the untuned base model, the fine-tuned twin and the twin
re-ranked by its cross-encoder, on QQP dev and held-out AskUbuntu (a script that measures and prints, not a
test).

Usage:
    python scripts/bench_quality.py                       # the recommended command's recipe, full data
    python scripts/bench_quality.py --limit 300           # a smoke run on a few hundred pairs per source
    python scripts/bench_quality.py --no-ranking          # ablation: positive-only pairs join the contrastive loss
    python scripts/bench_quality.py --no-positive-only    # ablation: labelled pairs only
    python scripts/bench_quality.py --no-cross-encoder    # ablation: no teacher / re-ranker
    python scripts/bench_quality.py --no-askubuntu        # ablation: QQP only
    python scripts/bench_quality.py --negatives-per-positive 1   # ablation: mined negatives (teacher-filtered)
    python scripts/bench_quality.py --base-weight 0.3     # ablation: WiSE-FT weight averaging

It trains exactly what ``dupq train ../shared/data/train/qqp_pairs_train.tsv
../shared/data/train/askubuntu_pairs_train.tsv --dev ../shared/data/dev/qqp_pairs_dev.tsv`` trains: the same
``TrainConfig`` defaults (only the flags above change them), the same routing of the two files
(``dupq.data.read_pairs_by_source`` + ``dupq.training.data.split_by_labels``: QQP's labelled source and AskUbuntu
to the contrastive loss and the cross-encoder, QQP's duplicate-only sources to the ranking loss), the same dev
file. One difference, on purpose: 20% of AskUbuntu's duplicate clusters are held out of training
(``split_by_cluster``, seed 0) so the no-forgetting check is honest; the command trains on all of it.

Reported: dev pair AP and duplicate-retrieval nDCG@10 (corpus = every dev question, self excluded), the same
on the held-out AskUbuntu clusters, wall time and training pairs/s. The "+ re-ranker" row scores pairs with the
version's cross-encoder (its AP) and re-ranks the twin's top ``--rerank-top-n`` for a seeded sample of
``--rerank-queries`` queries (its nDCG@10, printed beside the twin's nDCG@10 on the same queries).
"""

from __future__ import annotations

import os

# Under CPU contention an OpenMP team that spin-waits for a busy core is several times slower than one thread;
# passive waiting removes that cliff. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dupq.data import Pair, read_pairs, read_pairs_by_source, split_by_cluster  # noqa: E402


def sample(items: list[Any], n: int | None, seed: int) -> list[Any]:
    if n is None or n >= len(items):
        return list(items)
    return random.Random(seed).sample(items, n)


def torch_encode(path: str, energy: str) -> Any:
    """Encode with the SentenceTransformer itself in fp32: the reference, whatever backend dupq serves with."""
    from dupq.models.encoder import load_sentence_transformer

    model = load_sentence_transformer(path, cached=False)
    return lambda texts: model.encode(
        texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=energy == "cosine"
    )


def memo_encode(encode: Any) -> Any:
    """``encode`` that embeds each distinct text once (re-ranking needs the twin's scores of pairs it ranked)."""
    cache: dict[str, np.ndarray] = {}

    def run(texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        if todo:
            cache.update(zip(todo, encode(todo), strict=True))
        return np.stack([cache[t] for t in texts])

    return run


def reranked_retrieval(
    pairs: list[Pair], encode: Any, cross: Any, depth: int, queries: int, seed: int, energy: str
) -> dict:
    """nDCG@10 of the twin's top ``depth`` and of the same candidates re-ordered as search re-orders them
    (``CrossScorer.rerank``: the fused score when the version has one), and by the cross-encoder alone."""
    from dupq.evaluation import pair_scores, rank_dense, retrieval_metrics, retrieval_task_from_pairs

    task = retrieval_task_from_pairs(pairs)
    ranked = rank_dense(task, encode, energy=energy, top_k=depth)
    qids = list(task.queries)
    if 0 < queries < len(qids):
        qids = random.Random(seed).sample(qids, queries)
    flat = [(task.queries[q], task.corpus[d]) for q in qids for d in ranked[q]]
    twin_scores = pair_scores(encode, [Pair(a, b, 0) for a, b in flat], energy=energy)
    t0 = time.perf_counter()
    logits = cross.logits(flat, batch_size=32)
    seconds = time.perf_counter() - t0
    fused = cross.rerank_logits(logits, twin_scores)
    twin, rer, alone, k = {}, {}, {}, 0
    for q in qids:
        docs = ranked[q]
        twin[q] = docs
        rer[q] = [docs[j] for j in np.argsort(-fused[k : k + len(docs)], kind="stable")]
        alone[q] = [docs[j] for j in np.argsort(-logits[k : k + len(docs)], kind="stable")]
        k += len(docs)
    qrels = {q: task.qrels[q] for q in qids}
    return {
        "twin": retrieval_metrics(twin, qrels, (1, 10)),
        "reranked": retrieval_metrics(rer, qrels, (1, 10)),
        "cross_alone": retrieval_metrics(alone, qrels, (1, 10)),
        "scorer": cross.scorer,
        "queries": len(qids),
        "pairs_scored": len(flat),
        "cross_pairs_per_second": round(len(flat) / seconds, 1) if seconds > 0 else None,
    }


def row(name: str, r: dict[str, Any]) -> str:
    def f(v: Any, fmt: str = ".4f") -> str:
        return "-" if v is None else format(v, fmt)

    return (f"| {name} | {f(r.get('dev_ap'))} | {f(r.get('dev_ndcg10'))} | {f(r.get('au_ap'))} | "
            f"{f(r.get('au_ndcg10'))} | {f(r.get('wall_s'), '.0f')} | {r.get('pairs_s') or '-'} |")


def main() -> int:
    data = ROOT.parent / "shared" / "data"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-dir", type=Path, default=data / "train")
    ap.add_argument("--dev", type=Path, default=data / "dev" / "qqp_pairs_dev.tsv")
    ap.add_argument("--limit", type=int, default=None,
                    help="smoke run: at most this many pairs per training group, dev and AU held-out set")
    ap.add_argument("--askubuntu-holdout", type=float, default=0.2, help="fraction of AskUbuntu clusters held out")
    # ablations (unset: the recommended command's TrainConfig defaults)
    ap.add_argument("--no-ranking", action="store_true", help="ranking_loss=none: positive-only pairs join the "
                    "contrastive loss as positives")
    ap.add_argument("--ranking-loss", choices=["gist", "mnrl"], default=None)
    ap.add_argument("--no-positive-only", action="store_true", help="train on the labelled pairs only")
    ap.add_argument("--no-cross-encoder", action="store_true", help="no teacher, no re-ranker row")
    ap.add_argument("--no-askubuntu", action="store_true", help="train on QQP only")
    ap.add_argument("--max-positive-only", type=int, default=None)
    ap.add_argument("--negatives-per-positive", type=float, default=None)
    ap.add_argument("--base-weight", type=float, default=None)
    ap.add_argument("--ranking-weight", type=float, default=None)
    ap.add_argument("--loss", default=None)
    ap.add_argument("--learning-rate", type=float, default=None)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--cross-epochs", type=float, default=None)
    ap.add_argument("--rerank-top-n", type=int, default=20)
    ap.add_argument("--rerank-queries", type=int, default=1500, help="dev queries re-ranked (0: all)")
    ap.add_argument("--cross-backend", default="openvino", choices=["openvino", "torch"])
    ap.add_argument("--no-baselines", action="store_true", help="skip BM25 and the base model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/dupq-bench"), help="where trained versions go")
    ap.add_argument("--json", type=Path, default=None, help="also write every number to this file")
    args = ap.parse_args()
    qqp_file, au_file = args.train_dir / "qqp_pairs_train.tsv", args.train_dir / "askubuntu_pairs_train.tsv"
    for f in (args.dev, qqp_file, au_file):
        if not f.exists():
            print(f"data file not found: {f}", file=sys.stderr)
            return 2

    import torch

    torch.set_num_threads(args.threads)
    from dupq.config import BASE_THRESHOLD
    from dupq.evaluation import evaluate_bm25, evaluate_encoder, pair_metrics, pair_scores
    from dupq.models.cross import CROSS_DIR, CrossScorer, has_cross, sigmoid
    from dupq.models.encoder import SiameseEncoder, packaged_model_path
    from dupq.training import TrainConfig, split_by_labels, train

    t_start = time.perf_counter()
    lim = args.limit
    qqp_groups = {k: sample(v, lim, args.seed) for k, v in read_pairs_by_source(qqp_file).items()}
    labelled, positive_only = split_by_labels(qqp_groups)
    au = read_pairs(au_file).pairs
    au_split = split_by_cluster(au, dev_fraction=args.askubuntu_holdout, seed=args.seed)
    au_train = [] if args.no_askubuntu else sample(au_split.train, lim, args.seed)
    au_eval = sample(au_split.dev, lim, args.seed)
    # The AskUbuntu file's routing, as `dupq train` does it: its labelled duplicates also reach the ranking loss.
    au_ranked = split_by_labels({"askubuntu": au_train})[1] if au_train and not args.no_positive_only else []
    dev = sample(read_pairs(args.dev).pairs, lim, args.seed)
    if args.no_positive_only:
        positive_only = []

    overrides: dict[str, Any] = {}
    for name in ("max_positive_only", "negatives_per_positive", "base_weight", "ranking_weight", "loss",
                 "learning_rate", "epochs", "max_steps", "cross_epochs", "ranking_loss"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.no_ranking:
        overrides["ranking_loss"] = "none"
    if args.no_cross_encoder:
        overrides["cross_encoder"] = False
    config = TrainConfig(**overrides)
    setup = {
        "qqp_labelled": len(labelled),
        "qqp_positive_only": len(positive_only),
        "askubuntu_train": len(au_train),
        "askubuntu_duplicates_ranked": len(au_ranked),
        "askubuntu_heldout_pairs": len(au_eval),
        "dev_pairs": len(dev),
        "limit": lim,
        "overrides": overrides,
        "config": config.to_dict(),
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(f"setup: {json.dumps(setup)}", flush=True)

    rows: dict[str, dict[str, Any]] = {}
    raw: dict[str, Any] = {}
    if not args.no_baselines:
        t0 = time.perf_counter()
        d, a = evaluate_bm25(dev), evaluate_bm25(au_eval)
        raw["BM25"] = {"dev": d, "askubuntu_heldout": a}
        rows["BM25 (bm25s)"] = {"dev_ap": d["pairs"]["ap"], "dev_ndcg10": d["retrieval"]["ndcg@10"],
                                "au_ap": a["pairs"]["ap"], "au_ndcg10": a["retrieval"]["ndcg@10"],
                                "wall_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        base = torch_encode(packaged_model_path(), "cosine")
        d = evaluate_encoder(base, dev, energy="cosine", threshold=BASE_THRESHOLD)
        a = evaluate_encoder(base, au_eval, energy="cosine", threshold=BASE_THRESHOLD)
        raw["base"] = {"dev": d, "askubuntu_heldout": a}
        rows["base all-MiniLM-L6-v2"] = {"dev_ap": d["pairs"]["ap"], "dev_ndcg10": d["retrieval"]["ndcg@10"],
                                         "au_ap": a["pairs"]["ap"], "au_ndcg10": a["retrieval"]["ndcg@10"],
                                         "wall_s": time.perf_counter() - t0}
        print(f"  baselines evaluated in {time.perf_counter() - t_start:.0f}s", flush=True)

    out = args.out / f"recipe-{int(time.time())}"
    print(f"training the recipe -> {out}", flush=True)
    result = train(labelled + au_train, config, start=packaged_model_path(), output_dir=out, dev_pairs=dev,
                   positive_only=positive_only + au_ranked, show_progress_bar=True)
    meta = SiameseEncoder.read_config(out)
    twin = torch_encode(str(out), meta["energy"])
    a = evaluate_encoder(twin, au_eval, energy=meta["energy"], threshold=meta["threshold"])
    d = result.metrics["dev"]  # train() measured it on every dev pair (torch fp32), served threshold
    raw["twin"] = {"dev": d, "askubuntu_heldout": a}
    ph = result.phase_seconds
    rows["twin fine-tuned"] = {"dev_ap": d["pairs"]["ap"], "dev_ndcg10": d["retrieval"]["ndcg@10"],
                               "au_ap": a["pairs"]["ap"], "au_ndcg10": a["retrieval"]["ndcg@10"],
                               "wall_s": ph.get("total"), "pairs_s": f"{result.pairs_per_second:.1f}"}
    if has_cross(out):
        t0 = time.perf_counter()
        cross = CrossScorer.load(out / CROSS_DIR, backend=args.cross_backend)
        twin = memo_encode(twin)
        energy = meta["energy"]
        scored = {}
        for name, pairs in (("dev", dev), ("askubuntu", au_eval)):
            texts = [(p.question1, p.question2) for p in pairs]
            labels = [p.label for p in pairs]
            logits = cross.logits(texts, batch_size=32)  # once: the cross-encoder alone and fused
            fused = cross.rerank_logits(logits, pair_scores(twin, pairs, energy=energy))
            scored[name] = {
                "cross_alone": pair_metrics(sigmoid(logits), labels, threshold=cross.threshold),
                "reranked": pair_metrics(fused, labels, threshold=cross.rerank_threshold),
            }
        rd = reranked_retrieval(dev, twin, cross, args.rerank_top_n, args.rerank_queries, args.seed, energy)
        ra = reranked_retrieval(au_eval, twin, cross, args.rerank_top_n, args.rerank_queries, args.seed, energy)
        raw["reranked"] = {"scorer": cross.scorer, "pairs": scored, "dev_retrieval": rd, "askubuntu_retrieval": ra,
                           "eval_seconds": time.perf_counter() - t0}
        pairs_s = f"twin {result.pairs_per_second:.1f}, CE {result.cross['pairs_per_second']:.1f}"
        rows["its cross-encoder alone (top 20 re-ordered by it)".replace("20", str(args.rerank_top_n))] = {
            "dev_ap": scored["dev"]["cross_alone"]["ap"], "dev_ndcg10": rd["cross_alone"]["ndcg@10"],
            "au_ap": scored["askubuntu"]["cross_alone"]["ap"], "au_ndcg10": ra["cross_alone"]["ndcg@10"],
            "wall_s": ph.get("total"), "pairs_s": pairs_s,
        }
        # The fusion is fit on dev (like the thresholds), so the dev AP of this row is in-sample; AskUbuntu is not.
        rows[f"twin + re-ranker (top {args.rerank_top_n}, {cross.scorer})"] = {
            "dev_ap": scored["dev"]["reranked"]["ap"], "dev_ndcg10": rd["reranked"]["ndcg@10"],
            "au_ap": scored["askubuntu"]["reranked"]["ap"], "au_ndcg10": ra["reranked"]["ndcg@10"],
            "wall_s": ph.get("total"), "pairs_s": pairs_s,
        }

    wall = time.perf_counter() - t_start
    print()
    print(f"dev: {args.dev} ({len(dev)} pairs); AskUbuntu held out: {len(au_eval)} pairs "
          f"({args.askubuntu_holdout:.0%} of its clusters); overrides {json.dumps(overrides) or 'none'}")
    print("| model | dev AP | dev nDCG@10 | AU AP | AU nDCG@10 | wall s | train pairs/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(row(name, r))
    print()
    print(f"phases (s): {json.dumps(ph)}; counts: {json.dumps(result.counts)}")
    if "reranked" in raw:
        rd, ra = raw["reranked"]["dev_retrieval"], raw["reranked"]["askubuntu_retrieval"]
        print(f"re-ranked ({rd['scorer']}) nDCG@10 on {rd['queries']} dev queries: "
              f"{rd['reranked']['ndcg@10']:.4f} vs the twin's "
              f"{rd['twin']['ndcg@10']:.4f} on the same queries ({rd['cross_pairs_per_second']} CE pairs/s); "
              f"AskUbuntu {ra['reranked']['ndcg@10']:.4f} vs {ra['twin']['ndcg@10']:.4f}")
    print(f"total wall time {wall / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "rows": rows, "raw": raw, "phases": ph,
                                         "counts": result.counts, "wall_seconds": wall}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
