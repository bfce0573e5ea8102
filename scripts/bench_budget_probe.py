"""How well the time budget's probes predict a real run's steps (dupq/training/budget.py; a script that measures
and prints, not a test).

For each model the budget times (the cross-encoder, the twin's contrastive steps, its ranking steps) it prints
the seconds per step the probe predicts — today's (:func:`dupq.training.budget.probe_rows`: batches at the mean
width of each of five bands of the run's batch widths, the second of two passes timed) and the earlier one
(rows of the mean length, median of five steps) — against the mean step of ``--steps`` real steps of the same
trainer on all of the data, in its own length-grouped batch order.

Usage:
    HF_HUB_OFFLINE=1 python scripts/bench_budget_probe.py ../shared/data/train/qqp_pairs_train.tsv \\
        ../shared/data/train/askubuntu_pairs_train.tsv --dev ../shared/data/dev/qqp_pairs_dev.tsv --steps 150
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dupq.data import read_pairs, read_pairs_by_source
from dupq.models.encoder import load_sentence_transformer, packaged_model_path
from dupq.models.energy import Energy
from dupq.training import TrainConfig
from dupq.training.budget import StepTimer
from dupq.training.cross import cross_trainer, load_init, training_rows
from dupq.training.data import prepare_data, split_by_labels
from dupq.training.hardware import bf16_supported
from dupq.training.recipe import _probe_costs
from dupq.training.twin import row_length, twin_datasets, twin_trainer

OLD_PROBE_STEPS = 6  # the earlier probe: 6 steps of mean-length rows, the median interval


def mean_length_rows(rows: Sequence[Any], n: int, length: Callable[[Any], int]) -> list[Any]:
    """The earlier probe's rows: the ``n`` whose length is nearest the mean."""
    mean = statistics.fmean(length(r) for r in rows)
    order = sorted(range(len(rows)), key=lambda i: (abs(length(rows[i]) - mean), i))
    return [rows[i] for i in sorted(order[:n])]


Maker = Callable[[list[Any], int, StepTimer], Any]  # (rows, steps, timer) -> a trainer


def time_steps(make: Maker, rows: list[Any], steps: int, last: int | None) -> float:
    """Seconds per step of ``steps`` steps on ``rows``: the median interval, or the mean of the ``last`` ones."""
    timer = StepTimer()
    make(rows, steps, timer).train()
    return timer.seconds_per_step() if last is None else timer.seconds_per_step(last=last)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="training pair files (as dupq train takes them)")
    ap.add_argument("--dev", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=150, help="real steps timed per model")
    args = ap.parse_args()

    config = TrainConfig(epochs=1.0)  # as train() resolves the auto epochs; the probes set max_steps anyway
    bf16 = config.bf16 and bf16_supported()
    labelled, positive_only = [], []
    for f in args.files:
        lab, pos = split_by_labels(read_pairs_by_source(f))
        labelled += lab
        positive_only += pos
    data = prepare_data(labelled, read_pairs(args.dev).pairs, config, positive_only=positive_only)
    energy = Energy.from_name(config.energy)
    base = load_sentence_transformer(packaged_model_path(), cached=False)
    guide = None
    if data.ranking and config.ranking_loss == "gist":
        guide = copy.deepcopy(base)
        guide.requires_grad_(False)
        guide.eval()
    batch = config.batch_size
    scratch = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    print(f"bf16 {bf16}; batch {batch}; {len(data.train)} labelled, {len(data.ranking)} ranking pairs; "
          f"{args.steps} real steps per model", flush=True)

    def twin_maker(kind: str) -> Maker:
        def make(rows: list[Any], steps: int, timer: StepTimer) -> Any:
            only = replace(data, train=rows if kind == "train" else [], ranking=rows if kind == "ranking" else [])
            model = copy.deepcopy(base)
            datasets, losses = twin_datasets(model, only, config, energy, guide)
            return twin_trainer(model, datasets, losses, config, output_dir=scratch / f"{kind}-{time.time_ns()}",
                                max_steps=steps, total_steps=steps, bf16=bf16, world=1, evaluator=None,
                                eval_steps=None, callbacks=[timer.callback], show_progress_bar=False)
        return make

    def cross_make(rows: list[Any], steps: int, timer: StepTimer) -> Any:
        return cross_trainer(load_init(packaged_model_path()), training_rows(rows, both_orders=False),
                             scratch / f"cross-{time.time_ns()}", epochs=1.0, max_steps=steps, batch_size=batch,
                             learning_rate=config.cross_learning_rate, warmup_ratio=0.0, seed=0, bf16=bf16,
                             callbacks=[timer.callback], show_progress_bar=False, use_cpu=True)

    # The recipe's cross-encoder rows: every labelled pair in both orders (a step costs the same in either).
    cross_rows = [*data.train, *(replace(p, question1=p.question2, question2=p.question1) for p in data.train)]
    models = [("cross-encoder", cross_make, cross_rows, lambda p: len(p.question1) + len(p.question2)),
              ("twin contrastive", twin_maker("train"), list(data.train), row_length),
              ("twin ranking", twin_maker("ranking"), list(data.ranking), row_length)]
    try:
        t0 = time.perf_counter()
        costs = _probe_costs(base, data, data.train, config, energy, guide, bf16, packaged_model_path(), scratch)
        print(f"probes (today's, as train() runs them): {time.perf_counter() - t0:.0f} s", flush=True)
        for (name, make, rows, length), new in zip(models, (costs.cross, costs.twin, costs.ranking), strict=True):
            if not rows:
                continue
            t1 = time.perf_counter()
            old = time_steps(make, mean_length_rows(rows, OLD_PROBE_STEPS * batch, length), OLD_PROBE_STEPS, None)
            t2 = time.perf_counter()
            actual = time_steps(make, rows, args.steps, args.steps - 1)
            t3 = time.perf_counter()
            print(f"{name}: actual {actual:.3f} s/step over {args.steps - 1} steps ({t3 - t2:.0f} s); probe "
                  f"{new:.3f} ({100 * (new / actual - 1):+.1f}%); earlier probe {old:.3f} "
                  f"({100 * (old / actual - 1):+.1f}%, {t2 - t1:.0f} s)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the trainers' empty output folders
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
