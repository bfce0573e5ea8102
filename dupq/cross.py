"""The cross-encoder teacher and re-ranker of a model version (``models/<version>/cross/``).

A ``sentence_transformers.cross_encoder.CrossEncoder`` (one logit per pair, ``num_labels=1``) reads both
questions together, so it sees the word-level differences a twin encoder averages away; it is too slow to
embed a bank, but it can re-score the twin's top N (:meth:`dupq.service.DupQ.search` with ``rerank``) and
judge which mined negatives are real non-duplicates (:func:`dupq.training.train`).

:func:`train_cross_encoder` fine-tunes it from the packaged MiniLM weights (or any SentenceTransformer /
CrossEncoder folder) with ``BinaryCrossEntropyLoss`` on labelled pairs, calibrates its own max-F1 threshold on
dev (on the sigmoid score, like the twin's on the cosine) and saves it with a ``cross.json`` of its threshold
and dev metrics. :class:`CrossScorer` loads it and scores pairs with torch (fp32, the reference) or with the
OpenVINO export (bf16, cached in ``cross/openvino/``; :class:`dupq.runtime.OpenVINOPairScorer`).
Training also fits a :class:`dupq.fusion.ScoreFusion` of the cross-encoder's logit and the twin's score on dev
(``"fusion"`` in cross.json); when there is one, :meth:`CrossScorer.rerank` ranks by it and its threshold decides.

Example:
    >>> cs = CrossScorer.load("dupq-data/models/v20261202-190000/cross")              # doctest: +SKIP
    >>> s = cs.score([("How do I boil an egg?", "Best way to boil eggs?")])          # doctest: +SKIP
    >>> bool(cs.is_duplicate(s)[0])                                                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dupq.config import BACKENDS, DEFAULT_BACKEND, OPENVINO_PRECISION
from dupq.fusion import FUSED_SCORER, ScoreFusion

log = logging.getLogger(__name__)

__all__ = [
    "CROSS_DIR", "CROSS_META", "CrossResult", "CrossScorer", "has_cross", "save_fusion", "train_cross_encoder",
]

#: Sub-folder of a version folder holding its cross-encoder.
CROSS_DIR = "cross"
#: The cross-encoder's own metadata file (threshold, dev metrics, training time).
CROSS_META = "cross.json"
#: Longest tokenised pair (both questions): QQP pairs average ~30 word pieces, 99.9% fit in 128.
MAX_LENGTH = 128


def has_cross(version_dir: str | Path) -> bool:
    """Whether a version folder holds a complete cross-encoder."""
    return (Path(version_dir) / CROSS_DIR / CROSS_META).is_file()


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The cross-encoder's probability from its logit (float64)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class CrossScorer:
    """A fine-tuned cross-encoder with its calibrated threshold: scores pairs in [0, 1], higher = duplicate.

    Args:
        model: The ``CrossEncoder``; None to load it from ``source`` on first need (the torch backend, an
            export), so that re-ranking from a cached OpenVINO export never imports torch.
        threshold: Max-F1 threshold on the score, calibrated on dev (None: not calibrated).
        metadata: The rest of cross.json (dev metrics, seconds, training options; ``"fusion"``: the fitted
            :class:`dupq.fusion.ScoreFusion` that :meth:`rerank` uses).
        backend: ``"openvino"`` (the export, bf16) or ``"torch"`` (fp32, the reference).
        source: Folder the weights came from (the export is keyed on its files).
    """

    def __init__(
        self,
        model: Any,
        *,
        threshold: float | None,
        metadata: dict[str, Any] | None = None,
        backend: str = "torch",
        source: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._model = model
        self.threshold = None if threshold is None else float(threshold)
        self.metadata = dict(metadata or {})
        self.backend = backend
        self.source = Path(source) if source is not None else None
        fusion = self.metadata.get("fusion")
        self.fusion = ScoreFusion.from_dict(fusion) if fusion else None
        self._runtime: Any = None
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()

    @classmethod
    def load(cls, folder: str | Path, *, backend: str = DEFAULT_BACKEND) -> CrossScorer:
        """Open ``models/<version>/cross`` (cross.json now; the weights on first need, see :attr:`model`)."""
        folder = Path(folder)
        meta = json.loads((folder / CROSS_META).read_text())
        return cls(None, threshold=meta.pop("threshold", None), metadata=meta, backend=backend, source=folder)

    @property
    def model(self) -> Any:
        """The ``CrossEncoder`` (loaded from :attr:`source` on first use: this imports torch)."""
        if self._model is None:
            if self.source is None:
                raise ValueError("this cross-encoder has no model and no source folder to load one from")
            with self._model_lock:
                if self._model is None:
                    self._model = _load_cross_encoder(self.source)
        return self._model

    @property
    def runtime(self) -> Any:
        """The OpenVINO pair scorer, exported on first use (None with the torch backend or if it failed)."""
        if self.backend != "openvino" or self.source is None:
            return None
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    try:
                        from dupq.runtime import OpenVINOPairScorer

                        self._runtime = OpenVINOPairScorer.load_or_export(
                            self._model,
                            self.source,
                            self.source / "openvino",
                            precision=OPENVINO_PRECISION,
                            loader=lambda: self.model,
                        )
                    except Exception:  # noqa: BLE001 - a broken export must not stop re-ranking
                        log.exception("OpenVINO cross-encoder unavailable; scoring with torch")
                        self._runtime = False
        return self._runtime or None

    def logits(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        """The cross-encoder's logit of each (question, question) pair (higher = duplicate)."""
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float64)
        runtime = self.runtime
        if runtime is not None:
            return np.asarray(runtime.logits(list(pairs), batch_size=batch_size), dtype=np.float64).reshape(-1)
        logits = self.model.predict(
            [tuple(p) for p in pairs], batch_size=batch_size, activation_fn=_identity(), show_progress_bar=False
        )
        return np.asarray(logits, dtype=np.float64).reshape(-1)

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        """Duplicate score of each (question, question) pair: the sigmoid of the cross-encoder's logit."""
        return sigmoid(self.logits(pairs, batch_size=batch_size))

    @property
    def scorer(self) -> str:
        """What :meth:`rerank` scores with: ``"cross-encoder+twin"`` with a fusion, else ``"cross-encoder"``."""
        return FUSED_SCORER if self.fusion is not None else "cross-encoder"

    @property
    def rerank_threshold(self) -> float | None:
        """The threshold on :meth:`rerank`'s scores (the fusion's, else the cross-encoder's own)."""
        return self.fusion.threshold if self.fusion is not None else self.threshold

    def rerank(
        self, pairs: Sequence[tuple[str, str]], twin_scores: Sequence[float] | np.ndarray, *, batch_size: int = 32
    ) -> np.ndarray:
        """Re-ranking score of each pair, in [0, 1], higher = duplicate: the fusion of the cross-encoder's logit
        with the twin's pair score (``twin_scores``, the version's energy) when cross.json has one, else the
        cross-encoder's own score."""
        if len(twin_scores) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(twin_scores)} twin scores")
        return self.rerank_logits(self.logits(pairs, batch_size=batch_size), twin_scores)

    def rerank_logits(self, logits: np.ndarray, twin_scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """:meth:`rerank`'s scores from logits already computed (:meth:`logits`), e.g. to report both."""
        return self.fusion.score(twin_scores, logits) if self.fusion is not None else sigmoid(logits)

    def is_rerank_duplicate(self, scores: np.ndarray | float) -> np.ndarray | bool:
        """Whether :meth:`rerank` scores mark duplicates (at :attr:`rerank_threshold`)."""
        if self.fusion is not None:
            return self.fusion.is_duplicate(scores)
        return self.is_duplicate(scores)

    def is_duplicate(self, scores: np.ndarray | float) -> np.ndarray | bool:
        if self.threshold is None:
            raise ValueError("this cross-encoder has no calibrated threshold")
        return np.asarray(scores) >= self.threshold


def _load_cross_encoder(folder: Path) -> Any:
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a saved BERT classifier config warns about its unused loss_type
    try:
        return CrossEncoder(str(folder), device="cpu")
    finally:
        hf_logging.set_verbosity(verbosity)


def _identity() -> Any:
    import torch

    return torch.nn.Identity()


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
    ce = _load_init(init)
    ckpt = output_dir.parent / f".{output_dir.name}-ckpt-{os.getpid()}"
    trainer = _cross_trainer(ce, pairs, ckpt, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
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
    meta = {**result.summary(), "init": str(init), "training_pairs": len(pairs), "max_length": MAX_LENGTH}
    _write_meta(output_dir, meta)  # cross.json last: has_cross() means complete
    return result


def _load_init(init: str | Path) -> Any:
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


def _cross_trainer(ce: Any, pairs: Sequence[Any], ckpt: Path, *, epochs: float, max_steps: int | None,
                   batch_size: int, learning_rate: float, warmup_ratio: float, seed: int, bf16: bool,
                   callbacks: Sequence[Any], show_progress_bar: bool, use_cpu: bool) -> Any:
    """The CrossEncoderTrainer of :func:`train_cross_encoder` (binary cross-entropy, length-grouped batches)."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import PrinterCallback

    from dupq.samplers import LengthGroupedBatchSampler

    train_set = Dataset.from_dict(
        {
            "sentence1": [p.question1 for p in pairs],
            "sentence2": [p.question2 for p in pairs],
            "label": [float(p.label) for p in pairs],
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
    """Seconds per optimiser step of :func:`train_cross_encoder` on this machine (:mod:`dupq.budget`).

    A throwaway cross-encoder from ``init`` trains :data:`dupq.budget.PROBE_STEPS` steps on ``pairs``
    (ideally :func:`dupq.budget.probe_sample` of the training pairs); nothing is saved (``scratch`` only holds
    the trainer's empty output folder).
    """
    from dupq.budget import PROBE_STEPS, StepTimer

    timer = StepTimer()
    trainer = _cross_trainer(_load_init(init), pairs, Path(scratch), epochs=1.0, max_steps=PROBE_STEPS,
                             batch_size=batch_size, learning_rate=learning_rate, warmup_ratio=0.0, seed=0,
                             bf16=bf16, callbacks=[timer.callback], show_progress_bar=False, use_cpu=use_cpu)
    trainer.train()
    return timer.seconds_per_step()


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``folder``'s cross.json whole and atomically (a temporary file renamed over it)."""
    tmp = folder / (CROSS_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, folder / CROSS_META)


def save_fusion(folder: str | Path, fusion: ScoreFusion) -> None:
    """Record ``fusion`` in ``folder``'s cross.json (rewritten whole and atomically)."""
    folder = Path(folder)
    meta = json.loads((folder / CROSS_META).read_text())
    meta["fusion"] = fusion.to_dict()
    _write_meta(folder, meta)
