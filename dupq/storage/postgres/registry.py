"""PgModelRegistry: model versions whose files live in the database, cached under each node's ``DUPQ_HOME``.

Nodes share no disk. :meth:`register` stores the version folder (weights, dupq.json, cross/, and the
OpenVINO export once :meth:`publish` adds it) as chunked ``bytea`` rows of ``model_files`` in the same
transaction as the version record, so a version is listed only with all its files. A node that needs a
version it has not got (:meth:`path`, :meth:`exists`, :meth:`load`) fetches it into a staging folder and
renames it into ``models/<version>/``. ``base`` is the packaged model, built locally by every node.
The pointer flip and its ``NOTIFY`` are one transaction (:meth:`set_current`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from dupq.storage.postgres.db import CURRENT_CHANNEL
from dupq.storage.postgres.store import PgQuestionStore
from dupq.storage.registry import BASE_VERSION, ModelRegistry, next_history, read_history

#: Bytes per ``model_files`` row.
CHUNK = 4 << 20


class PgModelRegistry(ModelRegistry):
    """The :class:`~dupq.storage.registry.ModelRegistry` over :class:`PgQuestionStore` (see the module)."""

    store: PgQuestionStore

    def __init__(self, store: PgQuestionStore, models_dir: str | Path, **kwargs: Any) -> None:
        self._fetch_lock = threading.Lock()
        super().__init__(store, models_dir, **kwargs)

    def _record(self, version: str, *, parent: str | None, created_at: str, config: str) -> None:
        """The version's record with its files (from the complete local folder), in one transaction."""
        with self.store.db.transaction() as c:
            c.execute(
                "INSERT INTO models(version, path, parent, created_at, config) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (version) DO UPDATE SET parent=excluded.parent, config=excluded.config",
                (version, version, parent, created_at, config),
            )
            if version != BASE_VERSION:  # every node builds base from the packaged weights
                _upload(c, version, self.models_dir / version)

    def publish(self, version: str) -> None:
        """Store the files added to the local folder since :meth:`register` (the OpenVINO export)."""
        with self.store.db.transaction() as c:
            _upload(c, version, self.models_dir / version)

    def _fetch(self, version: str) -> bool:
        """Bring the files of a registered version into the local cache; False when it has none stored."""
        dest = self.models_dir / version
        with self._fetch_lock:
            if (dest / "dupq.json").is_file():
                return True
            stage = self.models_dir / f".fetch-{version}-{os.getpid()}"
            shutil.rmtree(stage, ignore_errors=True)
            n = 0
            with self.store.db.connection() as c:
                with c.transaction():
                    cur = c.cursor(name="dupq_fetch")  # server-side: one chunk in memory at a time
                    cur.itersize = 2
                    cur.execute("SELECT path, data FROM model_files WHERE version=%s ORDER BY path, chunk",
                                (version,))
                    f = None
                    current = None
                    for path, data in cur:
                        if path != current:
                            if f is not None:
                                f.close()
                            target = stage / path
                            target.parent.mkdir(parents=True, exist_ok=True)
                            f = open(target, "wb")
                            current = path
                            n += 1
                        f.write(data)
                    if f is not None:
                        f.close()
            if n == 0 or not (stage / "dupq.json").is_file():
                shutil.rmtree(stage, ignore_errors=True)
                return False
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(stage, dest)
            return True

    def path(self, version: str) -> Path:
        """The local folder of ``version``, fetched from the database first if it is registered but not cached."""
        local = self.models_dir / version
        if version != BASE_VERSION and not (local / "dupq.json").is_file() and self._row(version) is not None:
            self._fetch(version)
        return local

    def _point(self, version: str, *, rollback: bool) -> None:
        """Point every node at ``version`` (:func:`point`, in its own transaction)."""
        with self.store.db.transaction() as c:
            point(c, version, rollback=rollback)

    def delete(self, version: str) -> None:
        """Remove a version that is not current: its record, files (cascade) and vector table."""
        from dupq.index.pgvector import drop_vectors

        super().delete(version)
        drop_vectors(self.store.db, version)


def point(c: Any, version: str, *, rollback: bool) -> None:
    """Point every node at ``version`` inside transaction ``c``: pointer, history and the NOTIFY at once (nodes
    promote concurrently: the rows are locked). A shared reindex calls it in the transaction that ends its run."""
    rows = dict(c.execute(
        "SELECT key, value FROM state WHERE key IN ('current_model', 'history') FOR UPDATE").fetchall())
    hist = next_history(read_history(rows.get("current_model"), rows.get("history")), version, rollback=rollback)
    for key, value in (("current_model", version), ("history", json.dumps(hist))):
        c.execute("INSERT INTO state(key, value) VALUES (%s, %s) "
                  "ON CONFLICT (key) DO UPDATE SET value=excluded.value", (key, value))
    c.execute("SELECT pg_notify(%s, %s)", (CURRENT_CHANNEL, version))


def _upload(c: Any, version: str, folder: Path) -> None:
    have = {r[0] for r in c.execute("SELECT DISTINCT path FROM model_files WHERE version=%s", (version,))}
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(folder).as_posix()
        if rel in have and rel not in ("dupq.json", "cross/cross.json"):  # the metadata may change (the int8 check)
            continue
        c.execute("DELETE FROM model_files WHERE version=%s AND path=%s", (version, rel))
        with open(f, "rb") as fh:
            chunk = 0
            while True:
                data = fh.read(CHUNK)
                if not data and chunk:
                    break
                c.execute("INSERT INTO model_files(version, path, chunk, data) VALUES (%s, %s, %s, %s)",
                          (version, rel, chunk, data))
                chunk += 1
                if not data:
                    break
