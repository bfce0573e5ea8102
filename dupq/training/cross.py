"""Training the cross-encoder teacher / re-ranker of a version (served by :class:`dupq.models.cross.CrossScorer`)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dupq.models.cross import MAX_LENGTH, CrossScorer, sigmoid, write_meta
from dupq.models.fusion import ScoreFusion


@dataclass
class CrossResult:
    """What :func:`train_cross_encoder` wrote: its threshold, dev metrics, steps and seconds."""

    path: Path
    threshold: float
    metrics: dict[str, Any]
    steps: int
    seconds: float
    pairs_per_second: float
    #: Its logit on each dev pair, in the order given (what :func:`save_fusion`'s fit needs).
    dev_logits: np.ndarray | None = None
    #: The fusion with the twin, once :func:`save_fusion` wrote it.
    fusion: ScoreFusion | None = None

    def summary(self) -> dict[str, Any]:
        """The ``"cross"`` entry of the version's dupq.json."""
        return {
            "threshold": self.threshold,
            "metrics": self.metrics,
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "pairs_per_second": round(self.pairs_per_second, 2),
            **({"fusion": self.fusion.to_dict()} if self.fusion is not None else {}),
        }


def train_cross_encoder(
    pairs: Sequence[Any],
    dev: Sequence[Any],
    output_dir: str | Path,
    *,
    init: str | Path,
    epochs: float = 1.0,
    both_orders: bool = False,
    max_steps: int | None = None,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    warmup_ratio: float = 0.1,
    seed: int = 0,
    bf16: bool = False,
    callbacks: Sequence[Any] = (),
    show_progress_bar: bool = True,
    use_cpu: bool = True,
) -> CrossResult:
    """Fine-tune a cross-encoder on labelled pairs, calibrate it on ``dev`` and save it at ``output_dir``.

    Args:
        pairs: Labelled training pairs (both labels; :class:`dupq.data.Pair`).
        dev: Dev pairs (both labels): the reported AP and the max-F1 threshold.
        output_dir: Where the model and cross.json go (``<staging version folder>/cross``).
        init: Starting weights: a SentenceTransformer folder (its transformer gets a fresh 1-logit head)
            or a CrossEncoder folder.
        both_orders: Train on each pair as (question1, question2) and as (question2, question1): twice the rows
            per epoch (``TrainConfig.cross_both_orders``).
        epochs, max_steps, batch_size, learning_rate, warmup_ratio, seed, bf16: As in ``TrainConfig``.
        callbacks: ``transformers.TrainerCallback`` objects (progress, cancellation).
        show_progress_bar: Show the trainer's progress bar.
        use_cpu: Train on the CPU (False: the trainer picks an accelerator).
    """
    from dupq.evaluation import pair_metrics

    t0 = time.perf_counter()
    if {p.label for p in pairs} != {0, 1}:
        raise ValueError("the cross-encoder needs labelled training pairs with both labels")
    output_dir = Path(output_dir)
    ce = load_init(init)
    ckpt = output_dir.parent / f".{output_dir.name}-ckpt-{os.getpid()}"
    rows = training_rows(pairs, both_orders=both_orders)
    trainer = cross_trainer(ce, rows, ckpt, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                             learning_rate=learning_rate, warmup_ratio=warmup_ratio, seed=seed, bf16=bf16,
                             callbacks=callbacks, show_progress_bar=show_progress_bar, use_cpu=use_cpu)
    t_train = time.perf_counter()
    try:
        trainer.train()
    finally:
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)
    train_seconds = time.perf_counter() - t_train
    ce = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # fp32 for calibration
    steps = trainer.state.global_step
    scorer = CrossScorer(ce, threshold=None, backend="torch")
    logits = scorer.logits([(p.question1, p.question2) for p in dev], batch_size=64)
    scores = sigmoid(logits)
    m = pair_metrics(scores, [p.label for p in dev])
    threshold = float(m["best_f1_threshold"])
    metrics = {"dev": {"pairs": pair_metrics(scores, [p.label for p in dev], threshold=threshold)}}
    output_dir.mkdir(parents=True, exist_ok=True)
    ce.save(str(output_dir))
    seconds = time.perf_counter() - t0
    pps = steps * batch_size / train_seconds if train_seconds > 0 else 0.0
    result = CrossResult(output_dir, threshold, metrics, steps, seconds, pps, dev_logits=logits)
    meta = {**result.summary(), "init": str(init), "training_pairs": len(pairs), "both_orders": both_orders,
            "max_length": MAX_LENGTH}
    write_meta(output_dir, meta)  # cross.json last: has_cross() means complete
    return result


def training_rows(pairs: Sequence[Any], *, both_orders: bool) -> list[tuple[str, str, int]]:
    """The cross-encoder's training rows ``(first, second, label)``: each pair once, or in both orders.

    A cross-encoder reads a pair as one token sequence, so it can score (a, b) and (b, a) differently although
    "duplicate" is symmetric; both orders teach it that, and double the rows an epoch sees (measured in
    docs/benchmarks.md, "The recommended command").
    """
    rows = [(p.question1, p.question2, p.label) for p in pairs]
    return rows + [(b, a, y) for a, b, y in rows] if both_orders else rows


def load_init(init: str | Path) -> Any:
    """A trainable CrossEncoder with one logit from ``init`` (a fresh head on a SentenceTransformer folder)."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "classifier.* newly initialized" is the point here, not a warning
    try:
        return CrossEncoder(str(init), num_labels=1, max_length=MAX_LENGTH, device="cpu")
    finally:
        hf_logging.set_verbosity(verbosity)


def common_args(*, epochs: float, max_steps: int | None, total_steps: int, batch_size: int, learning_rate: float,
                warmup_ratio: float, seed: int, bf16: bool, show_progress_bar: bool, use_cpu: bool) -> dict[str, Any]:
    """The training arguments both of dupq's trainers (twin and cross-encoder) share, as keyword arguments."""
    return {
        "num_train_epochs": epochs,
        "max_steps": max_steps or -1,
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_steps": warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "seed": seed,
        "data_seed": seed,
        "bf16": bf16,
        "logging_steps": max(1, min(25, total_steps // 20)),
        "report_to": "none",
        "disable_tqdm": not show_progress_bar,
        "dataloader_num_workers": 0,
        "use_cpu": use_cpu,  # bf16 on a CPU-only machine needs it said explicitly
    }


def cross_trainer(ce: Any, rows: Sequence[tuple[str, str, int]], ckpt: Path, *, epochs: float, max_steps: int | None,
                   batch_size: int, learning_rate: float, warmup_ratio: float, seed: int, bf16: bool,
                   callbacks: Sequence[Any], show_progress_bar: bool, use_cpu: bool) -> Any:
    """The CrossEncoderTrainer of :func:`train_cross_encoder` (binary cross-entropy, length-grouped batches)."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import PrinterCallback

    from dupq.training.samplers import LengthGroupedBatchSampler

    train_set = Dataset.from_dict(
        {
            "sentence1": [r[0] for r in rows],
            "sentence2": [r[1] for r in rows],
            "label": [float(r[2]) for r in rows],
        }
    )
    total = max_steps or max(1, math.ceil(epochs * math.ceil(len(train_set) / batch_size)))
    args = CrossEncoderTrainingArguments(
        output_dir=str(ckpt),
        **common_args(epochs=epochs, max_steps=max_steps, total_steps=total, batch_size=batch_size,
                      learning_rate=learning_rate, warmup_ratio=warmup_ratio, seed=seed, bf16=bf16,
                      show_progress_bar=show_progress_bar, use_cpu=use_cpu),
        save_strategy="no",
        # Batches of similar length: one long AskUbuntu pair would pad a random batch of short QQP pairs to its
        # length (docs/benchmarks.md: the mixed-source cross-encoder ran at 1.8 s/step in random batches).
        batch_sampler=LengthGroupedBatchSampler,
        # Data-parallel (dupq train --nproc): every weight of the classifier takes part in each step; DDP's
        # default search for unused ones marks classifier.bias ready twice and fails. No effect in one process.
        ddp_find_unused_parameters=False,
    )
    trainer = CrossEncoderTrainer(
        model=ce, args=args, train_dataset=train_set, loss=BinaryCrossEntropyLoss(ce), callbacks=list(callbacks)
    )
    if not show_progress_bar:
        trainer.remove_callback(PrinterCallback)
    return trainer


def cross_step_seconds(pairs: Sequence[Any], *, init: str | Path, scratch: Path, batch_size: int = 32,
                       learning_rate: float = 5e-5, bf16: bool = False, use_cpu: bool = True) -> float:
    """Seconds per optimiser step of :func:`train_cross_encoder` on this machine (:mod:`dupq.training.budget`).

    A throwaway cross-encoder from ``init`` trains :data:`dupq.training.budget.PROBE_STEPS` steps on ``pairs``
    (ideally :func:`dupq.training.budget.probe_rows` of the training pairs: two passes over its width bands, the
    second timed); nothing is saved (``scratch`` only holds the trainer's empty output folder).
    """
    from dupq.training.budget import PROBE_BANDS, PROBE_STEPS, StepTimer

    timer = StepTimer()
    rows = training_rows(pairs, both_orders=False)  # a step costs the same in either order
    trainer = cross_trainer(load_init(init), rows, Path(scratch), epochs=1.0, max_steps=PROBE_STEPS,
                             batch_size=batch_size, learning_rate=learning_rate, warmup_ratio=0.0, seed=0,
                             bf16=bf16, callbacks=[timer.callback], show_progress_bar=False, use_cpu=use_cpu)
    trainer.train()
    return timer.seconds_per_step(last=PROBE_BANDS)
