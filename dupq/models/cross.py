"""The cross-encoder teacher and re-ranker of a model version (``models/<version>/cross/``).

A ``sentence_transformers.cross_encoder.CrossEncoder`` (one logit per pair, ``num_labels=1``) reads both
questions together, so it sees the word-level differences a twin encoder averages away; it is too slow to
embed a bank, but it can re-score the twin's top N (:meth:`dupq.service.DupQ.search` with ``rerank``) and
judge which mined negatives are real non-duplicates (:func:`dupq.training.recipe.train`).

:func:`train_cross_encoder` fine-tunes it from the packaged MiniLM weights (or any SentenceTransformer /
CrossEncoder folder) with ``BinaryCrossEntropyLoss`` on labelled pairs, calibrates its own max-F1 threshold on
dev (on the sigmoid score, like the twin's on the cosine) and saves it with a ``cross.json`` of its threshold
and dev metrics. :class:`CrossScorer` loads it and scores pairs with torch (fp32, the reference) or with the
OpenVINO export (bf16, cached in ``cross/openvino/``; :class:`dupq.models.runtime.OpenVINOPairScorer`).
Training also fits a :class:`dupq.models.fusion.ScoreFusion` of the cross-encoder's logit and the twin's score on dev
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
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dupq.config import BACKENDS, DEFAULT_BACKEND, OPENVINO_PRECISION
from dupq.models.fusion import FUSED_SCORER, ScoreFusion

log = logging.getLogger(__name__)

__all__ = ["CROSS_DIR", "CROSS_META", "CrossScorer", "has_cross", "save_fusion", "write_meta"]

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
            :class:`dupq.models.fusion.ScoreFusion` that :meth:`rerank` uses).
        backend: ``"openvino"`` (the export, bf16) or ``"torch"`` (fp32, the reference).
        source: Folder the weights came from (the export is keyed on its files).
        precision: The ``inference_precision`` setting (:func:`dupq.models.quantize.resolve_precision`; its int8
            check is cross.json's ``"int8"``, its int8 graph ``<source>/openvino-int8``); None: best float.
    """

    def __init__(
        self,
        model: Any,
        *,
        threshold: float | None,
        metadata: dict[str, Any] | None = None,
        backend: str = "torch",
        source: str | Path | None = None,
        precision: str | None = None,
    ) -> None:
        self.precision = precision
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
    def load(cls, folder: str | Path, *, backend: str = DEFAULT_BACKEND, precision: str | None = None) -> CrossScorer:
        """Open ``models/<version>/cross`` (cross.json now; the weights on first need, see :attr:`model`)."""
        folder = Path(folder)
        meta = json.loads((folder / CROSS_META).read_text())
        return cls(None, threshold=meta.pop("threshold", None), metadata=meta, backend=backend, source=folder,
                   precision=precision)

    @property
    def serving_precision(self) -> tuple[str, str]:
        """What :meth:`logits` computes in and why (as :attr:`SiameseEncoder.serving_precision`)."""
        if self.backend != "openvino" or self.source is None:
            return "fp32", "torch backend: fp32"
        from dupq.models.quantize import INT8_DIR, cpu_bf16, float_precision, int8_ready, resolve_precision

        if self.precision is None:
            best = float_precision()
            return best, f"{best}: the best float precision of this CPU"
        from dupq.models.runtime import KEY_PRECISION, weights_key

        key = weights_key(self.source, precision=KEY_PRECISION, kind="pair-logit")
        ready = int8_ready(self.source, key) and (self.source / INT8_DIR).is_dir()
        return resolve_precision(self.precision, self.metadata.get("int8"), int8_ready=ready, cpu_bf16=cpu_bf16())

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
                        from dupq.models.quantize import INT8_DIR, float_precision
                        from dupq.models.runtime import OpenVINOPairScorer

                        precision, why = self.serving_precision
                        if "asked" in why:
                            log.warning("cross-encoder inference precision: %s", why)
                        hint = {"bf16": OPENVINO_PRECISION, "fp32": "f32"}
                        if precision == "int8":
                            self._runtime = OpenVINOPairScorer.load_int8(self.source / INT8_DIR,
                                                                         precision=hint[float_precision()])
                        else:
                            self._runtime = OpenVINOPairScorer.load_or_export(
                                self._model,
                                self.source,
                                self.source / "openvino",
                                precision=hint[precision],
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














def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``folder``'s cross.json whole and atomically (a temporary file renamed over it)."""
    tmp = folder / (CROSS_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, folder / CROSS_META)


def save_fusion(folder: str | Path, fusion: ScoreFusion) -> None:
    """Record ``fusion`` in ``folder``'s cross.json (rewritten whole and atomically)."""
    folder = Path(folder)
    meta = json.loads((folder / CROSS_META).read_text())
    meta["fusion"] = fusion.to_dict()
    write_meta(folder, meta)
