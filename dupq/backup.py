"""Back up a running deployment into one archive, and restore it into a new home or an empty database.

The application side of :mod:`dupq.storage.backup` (what an archive holds and how each backend takes a
consistent snapshot is there): which backend ``settings`` name, the report ``dupq backup`` and ``dupq restore``
print. Neither opens the service nor loads a model: a backup runs beside the serving process (on SQLite
beside the home's writer; on PostgreSQL beside every node), a restore writes state the service opens later.

Example:
    >>> report = backup(Settings(home="/srv/dupq"), Path("dupq.tar.gz"))        # doctest: +SKIP
    >>> restore(Path("dupq.tar.gz"), Settings(home="/srv/dupq-restored"))       # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dupq.config import Settings
from dupq.storage.backup import (
    FORMAT,
    backup_postgres,
    backup_sqlite,
    manifest_for,
    read_manifest,
    restore_postgres,
    restore_sqlite,
    write_archive,
)

__all__ = ["FORMAT", "backup", "describe", "restore"]


def backup(settings: Settings, path: str | Path) -> dict[str, Any]:
    """Write a backup of the home (SQLite) or database (PostgreSQL) of ``settings`` to the new file ``path``.

    Returns the archive's manifest plus ``file``, ``bytes`` and ``seconds``. A ``.gz`` / ``.tgz`` name is
    gzip-compressed. Refuses to replace an existing file (``ConflictError``).
    """
    path = Path(path)
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    take = backup_postgres if settings.database_url else backup_sqlite
    snap, cleanup = take(settings, stage_dir=path.parent)  # the staged copies go where the archive goes
    try:
        manifest = manifest_for(snap)
        size = write_archive(path, manifest, snap.members)
    finally:
        cleanup()
    return {**_public(manifest), "file": str(path), "bytes": size, "seconds": round(time.perf_counter() - t0, 3)}


def restore(path: str | Path, settings: Settings) -> dict[str, Any]:
    """Restore backup ``path`` into the home of ``settings`` (a new or empty folder) or, when it names a
    database, into that database (empty). Returns the manifest plus ``seconds`` and ``target``.

    Refused (nothing written): a non-empty target (``ConflictError``), an archive of the other backend, of a
    newer format or schema, damaged or truncated (``dupq.storage.backup.BackupError``).
    """
    path = Path(path)
    t0 = time.perf_counter()
    if settings.database_url:
        manifest = restore_postgres(path, settings.database_url)
        target = settings.database_url
    else:
        manifest = restore_sqlite(path, settings.home)
        target = str(settings.home)
    return {**_public(manifest), "target": target, "seconds": round(time.perf_counter() - t0, 3)}


def describe(path: str | Path) -> dict[str, Any]:
    """The manifest of backup ``path`` (format, dupq version, backend, schema, counts), read without restoring."""
    return _public(read_manifest(Path(path)))


def _public(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without the PostgreSQL table layout (the restore's, not a person's)."""
    return {k: v for k, v in manifest.items() if k not in ("tables", "sequences")}
