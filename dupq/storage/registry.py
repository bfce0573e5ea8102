"""ModelRegistry: model versions under ``models/<version>/`` and the pointer to the current one.

The registry's rules are written here once, for both backends: version names, the base version, the history
a promotion appends to and a rollback walks back, what may be deleted. The records, the pointer and the
history live in the store (:class:`dupq.storage.Store`), so promoting a version is one atomic write. The
packaged base model is always registered as version ``base``; its folder holds only a dupq.json pointing at
the packaged weights. On PostgreSQL :class:`dupq.storage.postgres.registry.PgModelRegistry` keeps the
version files in the database too and announces a new pointer to every node.

Example:
    >>> reg = ModelRegistry(store, settings.models_dir)   # doctest: +SKIP
    >>> reg.current(), [v["version"] for v in reg.list()] # doctest: +SKIP
    ('base', ['base'])
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dupq.config import BASE_THRESHOLD, DEFAULT_BACKEND, Settings
from dupq.errors import NotFoundError, ValidationError
from dupq.models.encoder import PACKAGED, SiameseEncoder, packaged_dimension
from dupq.storage.records import created_now

BASE_VERSION = "base"
#: What a version name may be: it names a folder and a URL path segment.
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Versions the history keeps (rollbacks walk back at most this far).
HISTORY_LEN = 100


def new_version_name() -> str:
    """A sortable, unique-enough version name: ``v20261129-134501``."""
    return "v" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def check_version_name(version: str) -> None:
    """Raise ``ValidationError`` unless ``version`` is a valid version name.

    Example:
        >>> check_version_name("v20261129-134501")
        >>> check_version_name("../x")
        Traceback (most recent call last):
        ...
        dupq.errors.ValidationError: invalid version name '../x'
    """
    if not VERSION_NAME.match(version):
        raise ValidationError(f"invalid version name {version!r}")


def read_history(current: str | None, stored: str | None) -> list[str]:
    """The history from the store's ``history`` and ``current_model`` values (none stored: the current one)."""
    return json.loads(stored or "[]") or [current or BASE_VERSION]


def next_history(history: list[str], version: str, *, rollback: bool = False) -> list[str]:
    """The history after making ``version`` current.

    A promotion appends to it; a rollback pops versions off it down to ``version``, so repeated rollbacks
    walk back through what was served, not back and forth.

    Example:
        >>> next_history(["base", "v1", "v2"], "v3"), next_history(["base", "v1", "v2"], "v1", rollback=True)
        (['base', 'v1', 'v2', 'v3'], ['base', 'v1'])
    """
    hist = list(history)
    if rollback:
        while hist and hist[-1] != version:
            hist.pop()
    elif hist[-1] != version:
        hist.append(version)
    return hist[-HISTORY_LEN:]


class ModelRegistry:
    """Model versions on disk plus their records (parent, config, metrics) in the store.

    Args:
        store: The store holding the version records and the current pointer.
        models_dir: Folder of the version folders.
        backend: Encoder backend of every loaded version (:meth:`SiameseEncoder.load`).
        shared_export_cache: Folder of OpenVINO exports shared by every home (None: off), passed to every load.
        precision: The ``inference_precision`` setting every loaded version resolves (None: best float).
    """

    def __init__(
        self,
        store: Any,
        models_dir: str | Path,
        *,
        backend: str = DEFAULT_BACKEND,
        shared_export_cache: str | Path | None = None,
        precision: str | None = None,
    ) -> None:
        self.store = store
        self.models_dir = Path(models_dir)
        self.backend = backend
        self.precision = precision
        self.shared_export_cache = Path(shared_export_cache) if shared_export_cache is not None else None
        self._ensure_base()

    @classmethod
    def from_settings(cls, store: Any, settings: Settings) -> ModelRegistry:
        """The registry of ``settings.home``, loading versions with its backend and shared export cache."""
        return cls(store, settings.models_dir, backend=settings.backend, shared_export_cache=settings.export_cache,
                   precision=settings.inference_precision)

    def _ensure_base(self) -> None:
        path = self.models_dir / BASE_VERSION
        if not (path / "dupq.json").is_file():
            # Only dupq.json is written (the weights stay in the package): no model load, so a fresh home or
            # a PostgreSQL node's fresh cache never imports torch to start.
            enc = SiameseEncoder(None, threshold=BASE_THRESHOLD, dim=packaged_dimension())
            enc.metadata = {"parent": None, "note": "packaged all-MiniLM-L6-v2, untuned"}
            enc.save(path, weights=PACKAGED)
        if not self._row(BASE_VERSION):
            self.register(BASE_VERSION, parent=None)
        self.store.init_state("current_model", BASE_VERSION)

    def _row(self, version: str) -> Any:
        return self.store.model_record(version)

    def path(self, version: str) -> Path:
        return self.models_dir / version

    def register(self, version: str, *, parent: str | None) -> None:
        """Record a version whose folder (with dupq.json) is complete on disk."""
        check_version_name(version)
        config = SiameseEncoder.read_config(self.models_dir / version)
        self._record(version, parent=parent, created_at=created_now(), config=json.dumps(config))

    def _record(self, version: str, *, parent: str | None, created_at: str, config: str) -> None:
        """Store the record of a registered version (and, where nodes share no disk, its files)."""
        self.store.put_model_record(version, path=version, parent=parent, created_at=created_at, config=config)

    def update_config(self, version: str) -> None:
        """Record ``version``'s dupq.json again (after a step that changed it, e.g. ``dupq models quantize``), and
        make the files added to its folder since (its int8 export) available to every process that serves it."""
        row = self._row(version)
        if row is None:
            raise NotFoundError(f"unknown model version {version!r}")
        config = SiameseEncoder.read_config(self.models_dir / version)
        self._record(version, parent=row["parent"], created_at=row["created_at"], config=json.dumps(config))
        if version != BASE_VERSION:
            self.publish(version)

    def publish(self, version: str) -> None:
        """Make files written into a registered version's folder since :meth:`register` (its OpenVINO export)
        available to every process that serves it; with one home they already are."""

    def load_cross(self, version: str, *, backend: str | None = None) -> Any:
        """The version's cross-encoder (:class:`dupq.models.cross.CrossScorer`), or None when it has none."""
        from dupq.models.cross import CROSS_DIR, CrossScorer, has_cross

        path = self.path(version)
        if not has_cross(path):
            return None
        return CrossScorer.load(path / CROSS_DIR, backend=backend or self.backend, precision=self.precision)

    def exists(self, version: str) -> bool:
        return self._row(version) is not None and (self.path(version) / "dupq.json").is_file()

    def current(self) -> str:
        return self.store.get_state("current_model") or BASE_VERSION

    def history(self) -> list[str]:
        """Versions in the order they were made current (the last one is current)."""
        return read_history(self.current(), self.store.get_state("history"))

    def set_current(self, version: str, *, rollback: bool = False) -> None:
        """Point at ``version`` (one atomic write). The caller makes sure its index is complete first.

        A promotion appends to the history; a rollback walks back through it (:func:`next_history`).
        """
        if not self.exists(version):
            raise NotFoundError(f"unknown model version {version!r}")
        self._point(version, rollback=rollback)

    def _point(self, version: str, *, rollback: bool) -> None:
        """Write the pointer and the history at once (one home has one writer: no lock needed)."""
        hist = next_history(self.history(), version, rollback=rollback)
        self.store.set_states({"current_model": version, "history": json.dumps(hist)})

    def previous(self) -> str | None:
        """The version served before the current one (still on disk), or None."""
        hist = self.history()
        for v in reversed(hist[:-1]):
            if self.exists(v):
                return v
        return None

    def load(self, version: str) -> SiameseEncoder:
        if not self.exists(version):
            raise NotFoundError(f"unknown model version {version!r}")
        return SiameseEncoder.load(
            self.path(version), backend=self.backend, shared_export_cache=self.shared_export_cache,
            precision=self.precision,
        )

    def list(self) -> list[dict[str, Any]]:
        """Versions, oldest first, with their config (metrics, counts) and whether each is current."""
        cur = self.current()
        out = []
        for r in self.store.model_records():
            cfg = json.loads(r["config"])
            out.append(
                {
                    "version": r["version"],
                    "parent": r["parent"],
                    "created_at": r["created_at"],
                    "current": r["version"] == cur,
                    "energy": cfg.get("energy"),
                    "threshold": cfg.get("threshold"),
                    "metrics": cfg.get("metrics", {}),
                    "data": cfg.get("data", {}),
                    "int8": cfg.get("int8"),  # the int8 check (dupq.models.quantize), None: never checked
                }
            )
        return out

    def delete(self, version: str) -> None:
        """Remove a version that is not current."""
        if version in (self.current(), BASE_VERSION):
            raise ValidationError(f"cannot delete the current or base version {version!r}")
        self.store.delete_model_record(version)
        shutil.rmtree(self.path(version), ignore_errors=True)
