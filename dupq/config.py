"""Settings: the one place for paths, limits and defaults.

Every layer (library, CLI, web) reads its configuration through :class:`Settings`, so a limit such as the
longest accepted question is decided here and nowhere else.

Example:
    >>> s = Settings.from_env({"DUPQ_HOME": "/tmp/dq"})
    >>> str(s.db_path)
    '/tmp/dq/dupq.sqlite3'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: Where state lives when neither ``--home`` nor ``DUPQ_HOME`` says otherwise.
DEFAULT_HOME = "./dupq-data"

#: Decision threshold of the untuned packaged model (cosine similarity): the max-F1 threshold on
#: ``../shared/data/dev/qqp_pairs_dev.tsv``, produced by ``python scripts/calibrate_threshold.py`` (README).
BASE_THRESHOLD = 0.7513

#: Energy functions a model can be trained and served with.
ENERGIES = ("cosine", "euclidean")

#: Longest question accepted, in characters. The encoder truncates at 256 word pieces anyway; past this
#: length the text is almost certainly not a question but a pasted document.
MAX_QUESTION_CHARS = 1000
#: Longest explicit question id, in characters.
MAX_ID_CHARS = 128
#: Bounds of ``k`` in a search.
MAX_K = 100
DEFAULT_K = 10
#: Most questions accepted by one ``POST /api/v1/questions``.
MAX_BATCH = 1000
#: Largest page of ``GET /api/v1/questions``.
MAX_PAGE = 500

#: Inference backends of ``SiameseEncoder.encode``: OpenVINO (the model exported once per version and run
#: in bf16: 3.5-6x plain fp32 torch on this CPU, depending on load, at the same dev AP; docs/benchmarks.md)
#: or torch (fp32, the reference; training always uses torch). ``$DUPQ_BACKEND`` overrides the default.
BACKENDS = ("openvino", "torch")
DEFAULT_BACKEND = "openvino"
#: OpenVINO inference precision: "bf16" (mean cosine 0.99999 to fp32) or "f32" (exact, ~1.6x slower).
OPENVINO_PRECISION = "bf16"

#: Bank size from which a version's index is an HNSW graph (dupq/index/ann.py) instead of exact search.
#: Exact search reads every vector per query (~linear: about 1 ms per 10k on this CPU), the graph about
#: 0.3-1 ms at any size; below this an exact answer is cheap enough and needs no graph build.
#: ``$DUPQ_ANN_MIN_SIZE`` overrides it.
ANN_MIN_SIZE = 20_000
#: Share of deleted rows in an ANN index that starts a background rebuild (graph + compacted vectors).
ANN_REBUILD_DEAD_FRACTION = 0.25


def default_backend(environ: Mapping[str, str] | None = None) -> str:
    """The encoder backend: ``$DUPQ_BACKEND`` when set, else :data:`DEFAULT_BACKEND`."""
    env = os.environ if environ is None else environ
    backend = env.get("DUPQ_BACKEND") or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ValueError(f"DUPQ_BACKEND must be one of {BACKENDS}, got {backend!r}")
    return backend


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one dupq home.

    Attributes:
        home: Folder holding the SQLite store, model versions and indexes.
        seed_bank: Question bank loaded into an empty store: ``"default"`` (the bank shipped with dupq),
            a path to a question file, or ``None`` for none.
        encode_batch_size: Batch size for embedding questions.
        import_batch_size: Questions per transaction when importing a file.
        admin_token: Bearer token of the write endpoints (pairs, train, promote, delete). None disables
            them rather than leaving them open.
        gate_tolerance: A retrained candidate is promoted only if its AP is at most this much below the
            current model's on every gate report.
        gate_fraction: Share of the stored pairs' duplicate clusters held out for the gate.
        gate_eval_file: A fixed labelled pair file the gate also evaluates on (optional).
        backend: Encoder backend for serving and import, ``"openvino"`` or ``"torch"`` (``$DUPQ_BACKEND``).
        ann_min_size: Bank size from which the index is approximate (HNSW) rather than exact
            (``$DUPQ_ANN_MIN_SIZE``).
    """

    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME))
    seed_bank: str | None = "default"
    encode_batch_size: int = 64
    import_batch_size: int = 512
    admin_token: str | None = None
    gate_tolerance: float = 0.005
    gate_fraction: float = 0.2
    gate_eval_file: str | None = None
    backend: str = DEFAULT_BACKEND
    ann_min_size: int = ANN_MIN_SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home))
        if self.encode_batch_size < 1 or self.import_batch_size < 1:
            raise ValueError("batch sizes must be positive")
        if not 0 < self.gate_fraction < 1 or self.gate_tolerance < 0:
            raise ValueError("gate_fraction must be in (0, 1) and gate_tolerance >= 0")

    @property
    def db_path(self) -> Path:
        return self.home / "dupq.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``DUPQ_*`` environment variables, then explicit overrides (not None)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"home": Path(env.get("DUPQ_HOME", DEFAULT_HOME))}
        if "DUPQ_SEED_BANK" in env:
            values["seed_bank"] = env["DUPQ_SEED_BANK"] or None
        if env.get("DUPQ_ADMIN_TOKEN"):
            values["admin_token"] = env["DUPQ_ADMIN_TOKEN"]
        if env.get("DUPQ_GATE_TOLERANCE"):
            values["gate_tolerance"] = float(env["DUPQ_GATE_TOLERANCE"])
        if env.get("DUPQ_GATE_EVAL_FILE"):
            values["gate_eval_file"] = env["DUPQ_GATE_EVAL_FILE"]
        values["backend"] = default_backend(env)
        if env.get("DUPQ_ANN_MIN_SIZE"):
            values["ann_min_size"] = int(env["DUPQ_ANN_MIN_SIZE"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["home"] = str(self.home)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_home(self, home: str | Path) -> Settings:
        return replace(self, home=Path(home))
