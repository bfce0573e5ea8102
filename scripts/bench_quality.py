"""Quality benchmark: BM25, the untuned base model and fine-tuned models on QQP dev and held-out AskUbuntu
(a script that measures and prints, not a test).

Usage:
    python scripts/bench_quality.py [--max-steps 1600] [--margins 0.3,0.5,0.7] [--precisions fp32,bf16]
                                    [--dev-sample N] [--json results.json]

Training data (never the dev file): the labelled QQP train pairs, a sample of the positive-only QQP pairs
(hard negatives mined for them by ``dupq.training``), and AskUbuntu train pairs minus a held-out 20% of its
duplicate clusters (split by cluster, so no held-out question is ever trained on). Training pairs that share
a question with the dev file are dropped by ``dupq.training.train`` (dev stays question-disjoint).

Reported for ``../shared/data/dev/qqp_pairs_dev.tsv``: pair metrics (AP, best F1 and its threshold,
precision/recall at the served threshold) and retrieval over its questions (corpus = every question, queries =
questions with a duplicate, self excluded: MRR@10, nDCG@10, R@1, R@10); the same for the held-out AskUbuntu
clusters (the no-forgetting check); training wall time and pairs/s. One model is trained per
(margin, precision) combination, which is also how the margin sweep and the bf16 comparison are run.
"""

from __future__ import annotations

import os

# Under CPU contention an OpenMP team that spin-waits for a busy core is several times slower than one thread;
# passive waiting removes that cliff. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dupq.data import Pair, read_pairs, split_by_cluster  # noqa: E402

LABELLED_SOURCE = "nlx_rodrigues2017_quora_train"


def read_qqp_train(path: Path) -> tuple[list[Pair], list[Pair]]:
    """The labelled (50/50) and the positive-only pairs of the QQP train file, told apart by their source."""
    read_pairs(path)  # validates the whole file with dupq's own reader first
    labelled: list[Pair] = []
    positive_only: list[Pair] = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            q1, q2 = row["question1"].strip(), row["question2"].strip()
            if not q1 or not q2 or q1 == q2:
                continue
            pair = Pair(q1, q2, int(row["is_duplicate"]))
            (labelled if row["source"] == LABELLED_SOURCE else positive_only).append(pair)
    return labelled, positive_only


def sample(items: list[Any], n: int | None, seed: int) -> list[Any]:
    if n is None or n >= len(items):
        return list(items)
    return random.Random(seed).sample(items, n)


def evaluate(name: str, fn: Any, dev: list[Pair], au: list[Pair]) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = {"dev": fn(dev), "askubuntu_heldout": fn(au)}
    print(f"  evaluated {name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def torch_encode(path: str, energy: str) -> Any:
    """Encode with the SentenceTransformer itself in fp32: the reference, whatever backend dupq serves with."""
    from dupq.model import load_sentence_transformer

    model = load_sentence_transformer(path, cached=False)
    return lambda texts: model.encode(
        texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=energy == "cosine"
    )


def row(name: str, r: dict[str, Any]) -> str:
    d, a = r["dev"], r["askubuntu_heldout"]
    p, q = d["pairs"], d["retrieval"]
    return (
        f"| {name} | {p['ap']:.4f} | {p['best_f1']:.4f} | {p['best_f1_threshold']:.4f} | {p['precision']:.4f} | "
        f"{p['recall']:.4f} | {q['mrr@10']:.4f} | {q['ndcg@10']:.4f} | {q['recall@1']:.4f} | {q['recall@10']:.4f} | "
        f"{a['pairs']['ap']:.4f} | {a['retrieval']['ndcg@10']:.4f} |"
    )


def main() -> int:
    data = ROOT.parent / "shared" / "data"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-dir", type=Path, default=data / "train")
    ap.add_argument("--dev", type=Path, default=data / "dev" / "qqp_pairs_dev.tsv")
    ap.add_argument("--max-steps", type=int, default=1600, help="optimiser steps per trained model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=2e-5)
    ap.add_argument("--loss", default="contrastive")
    ap.add_argument("--eval-steps", type=int, default=800, help="dev evaluation interval (0: train()'s default)")
    ap.add_argument("--margins", default="default", help="comma-separated margins, or 'default'")
    ap.add_argument("--precisions", default="default", help="comma-separated fp32/bf16, or 'default'")
    ap.add_argument("--repeat", type=int, default=1, help="run the margin x precision list this many times "
                    "(interleaved repeats make a fair fp32/bf16 throughput comparison on a busy machine)")
    ap.add_argument("--negatives-per-positive", type=float, default=None)
    ap.add_argument("--ranking-weight", type=float, default=None, help="weight of the in-batch ranking term")
    ap.add_argument("--base-weight", type=float, default=None, help="share of base weights averaged back in")
    ap.add_argument("--qqp-labelled", type=int, default=None, help="labelled QQP pairs to train on (default all)")
    ap.add_argument("--qqp-positive-only", type=int, default=3000, help="positive-only QQP pairs to train on")
    ap.add_argument("--askubuntu-train", type=int, default=3000, help="AskUbuntu train pairs to train on")
    ap.add_argument("--askubuntu-positives-only", action="store_true",
                    help="train on the AskUbuntu duplicates only (its negatives are random title pairs)")
    ap.add_argument("--askubuntu-holdout", type=float, default=0.2, help="fraction of AskUbuntu clusters held out")
    ap.add_argument("--dev-sample", type=int, default=None, help="evaluate on a random sample of dev pairs")
    ap.add_argument("--askubuntu-eval-sample", type=int, default=None, help="sample of held-out AskUbuntu pairs")
    ap.add_argument("--no-baselines", action="store_true", help="skip BM25 and the base model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/dupq-bench"), help="where trained versions go")
    ap.add_argument("--json", type=Path, default=None, help="also write every number to this file")
    args = ap.parse_args()
    for f in (args.dev, args.train_dir / "qqp_pairs_train.tsv", args.train_dir / "askubuntu_pairs_train.tsv"):
        if not f.exists():
            print(f"data file not found: {f}", file=sys.stderr)
            return 2

    import torch

    torch.set_num_threads(args.threads)
    from dupq.config import BASE_THRESHOLD
    from dupq.evaluation import evaluate_bm25, evaluate_encoder
    from dupq.model import SiameseEncoder, packaged_model_path
    from dupq.training import TrainConfig, train

    t_start = time.perf_counter()
    labelled, positive_only = read_qqp_train(args.train_dir / "qqp_pairs_train.tsv")
    au = read_pairs(args.train_dir / "askubuntu_pairs_train.tsv").pairs
    au_split = split_by_cluster(au, dev_fraction=args.askubuntu_holdout, seed=args.seed)
    dev = read_pairs(args.dev).pairs
    dev = sample(dev, args.dev_sample, args.seed)
    au_eval = sample(au_split.dev, args.askubuntu_eval_sample, args.seed)
    au_train = [p for p in au_split.train if p.label or not args.askubuntu_positives_only]
    train_pairs = (
        sample(labelled, args.qqp_labelled, args.seed)
        + sample(positive_only, args.qqp_positive_only, args.seed)
        + sample(au_train, args.askubuntu_train, args.seed)
    )
    setup = {
        "qqp_labelled": min(len(labelled), args.qqp_labelled or len(labelled)),
        "qqp_positive_only": min(len(positive_only), args.qqp_positive_only),
        "askubuntu_train": min(len(au_train), args.askubuntu_train),
        "askubuntu_positives_only": args.askubuntu_positives_only,
        "askubuntu_heldout_pairs": len(au_eval),
        "askubuntu_heldout_positives": sum(p.label for p in au_eval),
        "askubuntu_split_dropped": au_split.dropped,
        "dev_pairs": len(dev),
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(f"setup: {json.dumps(setup)}", flush=True)

    results: dict[str, Any] = {}
    if not args.no_baselines:
        results["BM25 (bm25s)"] = evaluate("BM25", lambda ps: evaluate_bm25(ps), dev, au_eval)
        base = torch_encode(packaged_model_path(), "cosine")
        results["base all-MiniLM-L6-v2"] = evaluate(
            "base", lambda ps: evaluate_encoder(base, ps, energy="cosine", threshold=BASE_THRESHOLD), dev, au_eval
        )

    defaults = TrainConfig()
    # TrainConfig options left unset here keep TrainConfig's own defaults.
    optional = ("negatives_per_positive", "ranking_weight", "base_weight")
    extra = {name: getattr(args, name) for name in optional if getattr(args, name) is not None}
    margins = [None] if args.margins == "default" else [float(m) for m in args.margins.split(",")]
    precisions = ["bf16" if defaults.bf16 else "fp32"] if args.precisions == "default" else args.precisions.split(",")
    runs: dict[str, Any] = {}
    combos = [(m, p) for _ in range(args.repeat) for m in margins for p in precisions]
    for run_no, (margin, precision) in enumerate(combos, 1):
        config = TrainConfig(
            loss=args.loss,
            margin=margin,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            bf16=precision == "bf16",
            eval_steps=args.eval_steps or None,
            **extra,
        )
        name = f"fine-tuned {config.loss} m={config.margin:g} {precision}"
        if args.repeat > 1:
            name += f" #{run_no}"
        out = args.out / f"m{config.margin:g}-{precision}-{int(time.time())}"
        print(f"training {name} -> {out}", flush=True)
        result = train(train_pairs, config, start=packaged_model_path(), output_dir=out, dev_pairs=dev,
                       show_progress_bar=True)
        meta = SiameseEncoder.read_config(out)
        t0 = time.perf_counter()
        results[name] = {
            "dev": result.metrics["dev"],  # train() measured it on every dev pair (torch fp32), served threshold
            "askubuntu_heldout": evaluate_encoder(
                torch_encode(str(out), meta["energy"]), au_eval, energy=meta["energy"], threshold=meta["threshold"]
            ),
        }
        print(f"  evaluated {name} on AskUbuntu in {time.perf_counter() - t0:.0f}s", flush=True)
        runs[name] = {
            "path": str(out),
            "config": config.to_dict(),
            "counts": result.counts,
            "thresholds": result.thresholds,
            "train_seconds": round(result.seconds, 1),
            "pairs_per_second": round(result.pairs_per_second, 2),
            "best_step": meta.get("best_step"),
            "history": result.history,
        }
        print(f"  {name}: {json.dumps(runs[name]['counts'])}; {result.seconds:.0f}s, "
              f"{result.pairs_per_second:.1f} pairs/s", flush=True)

    wall = time.perf_counter() - t_start
    print()
    print(f"dev: {args.dev} ({len(dev)} pairs); AskUbuntu held out: {len(au_eval)} pairs "
          f"({args.askubuntu_holdout:.0%} of its clusters)")
    print("| model | dev AP | best F1 | F1 threshold | P@served | R@served | MRR@10 | nDCG@10 | R@1 | R@10 "
          "| AU AP | AU nDCG@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(row(name, r))
    print()
    for name, run in runs.items():
        print(f"{name}: {run['train_seconds']}s in train(), {run['pairs_per_second']} training pairs/s, "
              f"best step {run['best_step']}, counts {json.dumps(run['counts'])}")
    print(f"total wall time {wall / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": results, "runs": runs, "wall_seconds": wall},
                                        indent=2))
    if not args.out.exists() or not any(args.out.iterdir()):
        shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
