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


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one dupq home.

    Attributes:
        home: Folder holding the SQLite store, model versions and indexes.
        seed_bank: Question bank loaded into an empty store: ``"default"`` (the bank shipped with dupq),
            a path to a question file, or ``None`` for none.
        encode_batch_size: Batch size for embedding questions.
        import_batch_size: Questions per transaction when importing a file.
    """

    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME))
    seed_bank: str | None = "default"
    encode_batch_size: int = 64
    import_batch_size: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home))
        if self.encode_batch_size < 1 or self.import_batch_size < 1:
            raise ValueError("batch sizes must be positive")

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
