"""Backups of a dupq deployment: one archive, taken consistently while the service runs, restored exactly.

An archive is a tar file (gzip-compressed when its name ends in ``.gz`` or ``.tgz``) whose first member is
``manifest.json`` (:data:`FORMAT`, the dupq version, the backend, its schema version, when, the counts, the
store revision) and whose last is ``SHA256SUMS`` (a checksum of every other member): a restore reads the
manifest first (a newer format or another backend is refused before anything is written), extracts into a
staging folder beside the target, checks every checksum and only then puts the state in place, so a
truncated or damaged archive restores nothing.

SQLite (``home/...`` members): the store through SQLite's online backup API, read from one snapshot; the
vector indexes copied as their manifests commit them (append-only files, so the committed prefix is stable)
and, for the served version, at the same store revision as the snapshot, so a restored home serves the very
same vectors (same ids, same scores) without embedding anything; the registered model versions' folders
(weights, ``dupq.json``, cross-encoder, OpenVINO exports; an export that is a link into this machine's
shared export cache is left out and exported again on first use); the training logs. Writers are held back
(SQLite's write lock) only while the index files are pinned, a few milliseconds; searches never wait.

PostgreSQL (``database/...`` members): every dupq table (questions, pairs, state, jobs, model records and
files, the vector tables) with binary ``COPY`` inside one ``REPEATABLE READ READ ONLY`` transaction, plus the
sequences and the vector tables' index definitions. A restore goes into an empty database: the schema at
the archive's version (the packaged migrations), the rows, the sequences, the HNSW indexes, in one
transaction; then the migrations bring it to this dupq's schema.

Example:
    >>> m = backup_sqlite(settings, Path("home.tar"))        # doctest: +SKIP
    >>> restore_sqlite(Path("home.tar"), Path("/srv/dupq"))   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dupq import __version__
from dupq.config import Settings
from dupq.errors import BusyError, ConflictError, DupQError, NotFoundError, ValidationError
from dupq.index.storage import MANIFEST as INDEX_MANIFEST
from dupq.storage.postgres.db import redacted

#: The archive layout this dupq writes; a restore reads this one and every older one it knows.
FORMAT = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
#: Marker in every manifest (a tar that lacks it is not a dupq backup).
KIND = "dupq-backup"
BACKENDS = ("sqlite", "postgres")
#: Index files of a version (dupq/index/storage.py): the log, committed by its manifest.
_LOG_FILES = ("vectors.f32", "ids.txt", "deleted.txt")
#: The ANN graph (dupq/index/ann.py): its meta names what the graph covers.
_GRAPH_FILES = ("ann.json", "ann.usearch")
#: PostgreSQL tables that describe running processes, not state: never backed up.
_PG_SKIP = ("nodes", "schema_version")
#: Tables restored before the others (foreign keys point at them).
_PG_FIRST = ("questions", "models")
_CHUNK = 1 << 20


class BackupError(ValidationError):
    """The archive is not a dupq backup, is damaged or truncated, or is of a format this dupq cannot read."""

    code = "bad_backup"


class BackupIOError(DupQError):
    """Reading an archive or writing what it holds failed for a reason outside the archive (a full disk)."""

    code = "backup_io"


@dataclass
class Member:
    """One file to write into the archive: its name there and how to read ``size`` bytes of it."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]
    mode: int = 0o644


@dataclass
class Snapshot:
    """What a backend's snapshot produced: the manifest's backend part and the members to archive."""

    backend: str
    schema: int
    info: dict[str, Any]
    members: list[Member] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- archives ------------------------------------------------------------------------------------------------
class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through and stops after ``size`` bytes (a file's committed prefix)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left, self.sha = f, size, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        self.sha.update(data)
        return data


def _mode(path: Path) -> str:
    return "w:gz" if path.name.endswith((".gz", ".tgz")) else "w"


def write_archive(path: Path, manifest: dict[str, Any], members: list[Member]) -> int:
    """Write ``manifest``, the members and their checksums to ``path`` (aside, then renamed); returns its size.

    Raises :class:`ConflictError` when ``path`` exists: a backup never replaces a file.
    """
    if path.exists():
        raise ConflictError(f"{path} exists already; a backup never overwrites a file", code="exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    sums: list[str] = []
    try:
        with tarfile.open(partial, _mode(path), format=tarfile.PAX_FORMAT) as tar:
            body = json.dumps(manifest, indent=2, sort_keys=True).encode()
            _add(tar, MANIFEST, body)
            sums.append(f"{hashlib.sha256(body).hexdigest()}  {MANIFEST}")
            for m in members:
                info = tarfile.TarInfo(m.name)
                info.size, info.mode, info.mtime = m.size, m.mode, int(time.time())
                with m.open() as f:
                    reader = _Hashing(f, m.size)
                    try:
                        tar.addfile(info, reader)
                    except OSError:
                        if reader.left:  # the file lost its tail meanwhile (a version deleted, a folder replaced)
                            raise BusyError(f"{m.name} shrank while it was being read; run the backup again") \
                                from None
                        raise
                sums.append(f"{reader.sha.hexdigest()}  {m.name}")
            _add(tar, SUMS, ("\n".join(sums) + "\n").encode())
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _file(path: Path, name: str) -> Member:
    return Member(name, path.stat().st_size, lambda: open(path, "rb"))


@contextmanager
def _reading(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive open for reading; anything unreadable becomes a :class:`BackupError`."""
    if not path.is_file():
        raise NotFoundError(f"no backup file {path}")
    try:
        with tarfile.open(path, "r:*") as tar:
            yield tar
    except (tarfile.TarError, EOFError, zlib.error, OSError, UnicodeDecodeError) as e:
        if isinstance(e, OSError) and not isinstance(e, (tarfile.TarError, EOFError)) and e.errno is not None:
            raise BackupIOError(f"cannot restore {path}: {e}") from None  # the disk, not the archive (ENOSPC)
        raise BackupError(f"{path} is not a readable dupq backup (damaged or truncated: {e})") from None


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of backup ``path`` (its first member), checked: a dupq backup of a known format."""
    with _reading(path) as tar:
        return _manifest(tar, path)[0]


def _manifest(tar: tarfile.TarFile, path: Path) -> tuple[dict[str, Any], bytes, tarfile.TarInfo]:
    """The first member, checked (see :func:`read_manifest`), its bytes and its header."""
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise BackupError(f"{path} is not a dupq backup (it does not start with {MANIFEST})")
    f = tar.extractfile(first)
    assert f is not None
    raw = f.read()
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BackupError(f"{path}: its {MANIFEST} is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise BackupError(f"{path} is not a dupq backup (its {MANIFEST} does not say {KIND!r})")
    fmt = manifest.get("format")
    if not isinstance(fmt, int) or fmt < 1:
        raise BackupError(f"{path}: unknown backup format {fmt!r}")
    if fmt > FORMAT:
        raise BackupError(
            f"{path} is backup format {fmt}, written by dupq {manifest.get('dupq_version')}; this dupq "
            f"({__version__}) reads formats up to {FORMAT}: restore it with that dupq or a newer one",
            code="backup_too_new")
    if manifest.get("backend") not in BACKENDS:
        raise BackupError(f"{path}: unknown backend {manifest.get('backend')!r}")
    return manifest, raw, first


def extract(path: Path, stage: Path) -> dict[str, Any]:
    """Extract backup ``path`` into the empty folder ``stage`` and check it; returns its manifest.

    Every member must be a plain file inside ``stage`` and match ``SHA256SUMS``, and every checksummed file
    must be there: a truncated or altered archive raises :class:`BackupError`.
    """
    with _reading(path) as tar:
        manifest, raw, first = _manifest(tar, path)
        expected: dict[str, str] | None = None
        got: dict[str, str] = {MANIFEST: hashlib.sha256(raw).hexdigest()}
        for m in tar:
            name = PurePosixPath(m.name)
            if m.isdir() or m is first:
                continue
            if m.name == MANIFEST:
                raise BackupError(f"{path}: a second {MANIFEST}")
            if not m.isfile() or name.is_absolute() or ".." in name.parts:
                raise BackupError(f"{path}: unexpected member {m.name!r}")
            f = tar.extractfile(m)
            assert f is not None
            if m.name == SUMS:
                expected = _parse_sums(f.read().decode(errors="replace"), path)
                continue
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            sha = hashlib.sha256()
            with open(target, "wb") as out:
                while data := f.read(_CHUNK):
                    sha.update(data)
                    out.write(data)
            got[m.name] = sha.hexdigest()
    if expected is None:
        raise BackupError(f"{path} is truncated (no {SUMS} at its end)")
    bad = sorted(n for n in expected if got.get(n) != expected[n])
    extra = sorted(set(got) - set(expected))
    if bad or extra:
        raise BackupError(f"{path} is damaged: {len(bad)} files do not match their checksums"
                          f"{' (' + ', '.join(bad[:3]) + ')' if bad else ''}"
                          f"{', unlisted files ' + ', '.join(extra[:3]) if extra else ''}")
    return manifest


def _parse_sums(text: str, path: Path) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BackupError(f"{path}: its {SUMS} is damaged")
        out[name] = digest
    return out


def manifest_for(snap: Snapshot) -> dict[str, Any]:
    return {
        "kind": KIND,
        "format": FORMAT,
        "dupq_version": __version__,
        "backend": snap.backend,
        "schema_version": snap.schema,
        "created_at": now(),
        **snap.info,
        "notes": snap.notes,
    }


# -- SQLite ----------------------------------------------------------------------------------------------
@dataclass
class _PinnedFile:
    name: str  # member name
    fd: int
    size: int

    def open(self) -> IO[bytes]:
        f = os.fdopen(os.dup(self.fd), "rb")
        f.seek(0)
        return f


def _pin_index(folder: Path, prefix: str) -> list[_PinnedFile] | None:
    """Open one version's index files as its manifest commits them (None: no readable index there).

    Everything is opened through one descriptor of the folder, so a compaction that replaces the folder
    meanwhile cannot mix two generations of files; the ANN graph is kept only if its meta did not change
    while it was opened (else the restored home builds a new graph).
    """
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    pinned: list[_PinnedFile] = []
    try:
        def pin(name: str, size: int | None = None) -> None:
            fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
            pinned.append(_PinnedFile(f"{prefix}/{name}", fd, os.fstat(fd).st_size if size is None else size))

        def read(name: str) -> bytes:
            fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
            with os.fdopen(fd, "rb") as f:
                return f.read()

        body = read(INDEX_MANIFEST)
        manifest = json.loads(body)
        for name in _LOG_FILES:
            size = int(manifest["bytes"].get(name, 0))
            pin(name, size)
            if pinned[-1].size > os.fstat(pinned[-1].fd).st_size:
                raise ValueError(f"{folder}/{name} is shorter than its manifest")
        pinned.append(_PinnedFile(f"{prefix}/{INDEX_MANIFEST}", _memfd(body), len(body)))
        with suppress(OSError, ValueError):
            meta = read(_GRAPH_FILES[0])
            graph = os.open(_GRAPH_FILES[1], os.O_RDONLY, dir_fd=dfd)
            if read(_GRAPH_FILES[0]) == meta and json.loads(meta).get("rows") is not None:
                pinned.append(_PinnedFile(f"{prefix}/{_GRAPH_FILES[0]}", _memfd(meta), len(meta)))
                pinned.append(_PinnedFile(f"{prefix}/{_GRAPH_FILES[1]}", graph, os.fstat(graph).st_size))
            else:
                os.close(graph)
        return pinned
    except (OSError, ValueError, KeyError):
        for p in pinned:
            os.close(p.fd)
        return None
    finally:
        os.close(dfd)


def _memfd(data: bytes) -> int:
    """A descriptor reading ``data`` (a file read once, kept as it was then)."""
    fd = os.memfd_create("dupq-backup")
    os.write(fd, data)
    return fd


def _index_revision(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / INDEX_MANIFEST).read_text())["revision"])
    except (OSError, ValueError, KeyError):
        return None


def backup_sqlite(settings: Settings, *, stage_dir: Path | None = None,
                  wait_s: float = 5.0) -> tuple[Snapshot, Callable[[], None]]:
    """A consistent snapshot of the SQLite home of ``settings`` (see the module); returns it and its cleanup.

    ``stage_dir``: where the store's copy is made (default: the system's temporary folder), e.g. the folder
    the archive goes to.

    Beside a running server (its home lock held), SQLite's write lock is taken for a moment: the served
    version's index is waited for until it holds every stored question (the server writes the store, then
    the index), a read snapshot of the store is opened and the index files are pinned; then writers go on
    while the snapshot is copied. Without a server the home lock is held for the whole backup.

    ``wait_s`` bounds that wait (writers wait with it, and give up after their 30 s busy timeout): an index
    still behind then (an import batch being embedded) is archived as it is, with a note, and the restored
    home embeds what it lacks when it opens.
    """
    from dupq.storage.sqlite.home import HomeLock

    db = settings.db_path
    if not db.is_file():
        raise NotFoundError(f"no dupq home at {settings.home} (no {db.name})")
    try:
        lock: HomeLock | None = HomeLock(settings.home)
    except BusyError:
        lock = None  # a server owns the home: back up beside it
    stage = Path(tempfile.mkdtemp(prefix=".dupq-backup-", dir=stage_dir))
    pinned: list[_PinnedFile] = []

    def cleanup() -> None:
        for p in pinned:
            with suppress(OSError):
                os.close(p.fd)
        shutil.rmtree(stage, ignore_errors=True)
        if lock is not None:
            lock.release()

    try:
        notes: list[str] = []
        writer = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=60, isolation_level=None)
        reader = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=60, isolation_level=None)
        try:
            t0 = time.perf_counter()
            writer.execute("BEGIN IMMEDIATE")  # writers wait from here ...
            try:
                revision = int(writer.execute("SELECT value FROM state WHERE key='revision'").fetchone()[0])
                current = (writer.execute("SELECT value FROM state WHERE key='current_model'").fetchone()
                           or ["base"])[0]
                served = settings.index_dir / current
                if lock is None and served.is_dir():
                    # The server commits a write, then saves the index at that revision: let it finish.
                    deadline = time.monotonic() + wait_s
                    while _index_revision(served) != revision and time.monotonic() < deadline:
                        time.sleep(0.005)
                reader.execute("BEGIN")
                reader.execute("SELECT COUNT(*) FROM state").fetchone()  # the read snapshot starts here
                if settings.index_dir.is_dir():
                    for folder in sorted(p for p in settings.index_dir.iterdir() if p.is_dir()
                                         and not p.name.endswith((".compact", ".old"))):
                        files = _pin_index(folder, f"home/index/{folder.name}")
                        if files is None:
                            notes.append(f"index/{folder.name} unreadable: left out (rebuilt from the store)")
                            continue
                        pinned.extend(files)
            finally:
                writer.execute("ROLLBACK")  # ... to here
            stall_ms = (time.perf_counter() - t0) * 1000
            index_revision = _index_revision(served) if served.is_dir() else None
            copy = sqlite3.connect(stage / db.name)
            try:
                reader.backup(copy)  # SQLite's online backup API, from the snapshot opened above
            finally:
                copy.close()
            reader.execute("COMMIT")
        finally:
            writer.close()
            reader.close()
        pinned_served = [p for p in pinned if p.name == f"home/index/{current}/{INDEX_MANIFEST}"]
        served_revision = None
        if pinned_served:
            with pinned_served[0].open() as f:
                served_revision = int(json.loads(f.read())["revision"])
        if served_revision != revision:
            notes.append(f"the index of {current} was at revision {served_revision}, the store at {revision}: "
                         "the restored home embeds what it lacks when it opens")
        # The copy, checked and counted (its schema is the one the snapshot had).
        check = sqlite3.connect(stage / db.name, isolation_level=None)
        try:
            schema = int(check.execute("PRAGMA user_version").fetchone()[0])
            check.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            counts = _counts(check)
            versions = [r[0] for r in check.execute("SELECT version FROM models ORDER BY created_at, version")]
        finally:
            check.close()
        members = [_file(stage / db.name, f"home/{db.name}")]
        members += [Member(p.name, p.size, p.open) for p in pinned]
        for version in versions:
            folder = settings.models_dir / version
            if not (folder / "dupq.json").is_file():
                raise BusyError(f"model version {version} is registered but its folder {folder} is gone "
                                "(deleted during the backup?); run the backup again")
            members += _folder_members(folder, f"home/models/{version}", notes)
        if settings.logs_dir.is_dir():
            members += _folder_members(settings.logs_dir, "home/logs", notes)
        info = {"revision": revision, "current_model": current, "counts": counts, "versions": versions,
                "index_revision": index_revision, "live": lock is None, "write_stall_ms": round(stall_ms, 1)}
        return Snapshot("sqlite", schema, info, members, notes), cleanup
    except BaseException:
        cleanup()
        raise


def _counts(c: Any) -> dict[str, int]:
    return {t: int(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in ("questions", "pairs", "jobs",
                                                                                  "models")}


def _folder_members(folder: Path, prefix: str, notes: list[str]) -> list[Member]:
    """Every file under ``folder``; links (an export shared by every home of the machine) and the unfinished
    folders of an export in progress (``*.tmp-*``) are left out."""
    out = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for d in list(dirs):
            if (base / d).is_symlink() or ".tmp-" in d:
                dirs.remove(d)
                if (base / d).is_symlink():
                    notes.append(f"{(base / d).relative_to(folder.parent)} links to the machine's shared "
                                 "export cache: left out (exported again on first use)")
        for name in sorted(files):
            p = base / name
            if p.is_symlink() or not p.is_file():
                continue
            out.append(_file(p, f"{prefix}/{p.relative_to(folder).as_posix()}"))
    return out


def check_empty_home(home: Path) -> None:
    """Refuse a restore into a home that holds anything (an empty or missing folder is fine)."""
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise ConflictError(f"{home} is not empty: a restore goes into a new or empty folder only "
                            "(move the old home aside first)", code="not_empty")


def restore_sqlite(path: Path, home: Path) -> dict[str, Any]:
    """Restore SQLite backup ``path`` into the new or empty folder ``home``; returns the manifest.

    The archive is extracted and checked beside ``home``, the store upgraded to this dupq's schema (its
    migrations), and the folder renamed into place: a failure at any point leaves ``home`` as it was.
    """
    from dupq.storage.migrations import packaged
    from dupq.storage.sqlite.store import QuestionStore

    home = Path(home).absolute()
    check_empty_home(home)
    manifest = read_manifest(path)
    if manifest["backend"] != "sqlite":
        raise BackupError(f"{path} is a backup of a PostgreSQL database: restore it with --database URL "
                          "(into an empty database)", code="wrong_backend")
    home.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{home.name}.restore-", dir=home.parent))
    try:
        manifest = extract(path, stage)
        root = stage / "home"
        db = root / "dupq.sqlite3"
        if not db.is_file():
            raise BackupError(f"{path} holds no store (home/dupq.sqlite3)")
        wanted = len(packaged("dupq.storage.sqlite"))
        try:
            c = sqlite3.connect(db, isolation_level=None)
            try:
                ok = c.execute("PRAGMA integrity_check").fetchone()[0]
                schema = int(c.execute("PRAGMA user_version").fetchone()[0])
            finally:
                c.close()
        except sqlite3.DatabaseError as e:
            raise BackupError(f"{path}: its store is not a readable SQLite database ({e})") from None
        if ok != "ok":
            raise BackupError(f"{path}: its store fails SQLite's integrity check ({ok})")
        if schema > wanted:
            raise BackupError(f"{path}: its store has schema {schema}, newer than this dupq's ({wanted}); "
                              "restore it with a newer dupq", code="backup_too_new")
        QuestionStore(db).close()  # the migrations this dupq has and the backup's store lacks
        for sub in ("models", "index", "logs"):
            (root / sub).mkdir(exist_ok=True)
        if home.exists():
            home.rmdir()  # empty (checked above); a file that appeared meanwhile makes this fail, as it should
        os.replace(root, home)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    manifest["restored_schema"] = len(packaged("dupq.storage.sqlite"))
    return manifest


# -- PostgreSQL -------------------------------------------------------------------------------------------
def _pg_tables(c: Any) -> list[str]:
    return [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                    "ORDER BY tablename")]


def _pg_columns(c: Any, table: str) -> list[str]:
    return [r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                    "current_schema() AND table_name = %s ORDER BY ordinal_position", (table,))]


def backup_postgres(settings: Settings, *, stage_dir: Path | None = None) -> tuple[Snapshot, Callable[[], None]]:
    """A consistent snapshot of the PostgreSQL database of ``settings`` (one read-only REPEATABLE READ
    transaction); every table is COPYed into a staging folder (in ``stage_dir``) first, so the transaction
    is short."""
    import psycopg

    stage = Path(tempfile.mkdtemp(prefix=".dupq-backup-", dir=stage_dir))

    def cleanup() -> None:
        shutil.rmtree(stage, ignore_errors=True)

    try:
        try:
            conn = psycopg.connect(settings.database_url, autocommit=True)
        except psycopg.OperationalError as e:
            raise NotFoundError(f"cannot connect to {redacted(settings.database_url)}: {e}") from None
        with conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                tables = _pg_tables(conn)
                if "schema_version" not in tables:
                    raise NotFoundError(f"{redacted(settings.database_url)} holds no dupq database (no schema_version)")
                schema = int(conn.execute("SELECT version FROM schema_version").fetchone()[0])
                vec = {r[1]: {"version": r[0], "dim": int(r[2])}
                       for r in conn.execute("SELECT version, tbl, dim FROM vector_tables")}
                state = dict(conn.execute("SELECT key, value FROM state").fetchall())
                layout = []
                for t in [t for t in tables if t not in _PG_SKIP]:
                    cols = _pg_columns(conn, t)
                    out = stage / f"{t}.copy"
                    with open(out, "wb") as f, conn.cursor().copy(
                            f"COPY {t} ({', '.join(cols)}) TO STDOUT (FORMAT BINARY)") as cp:
                        for block in cp:
                            f.write(block)
                    indexes = [r[0] for r in conn.execute(
                        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
                        "AND indexname NOT LIKE %s", (t, f"{t}_pkey"))] if t in vec else []
                    layout.append({"table": t, "columns": cols, "vectors": vec.get(t), "indexes": indexes})
                counts = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                          for t in ("questions", "pairs", "jobs", "models")}
                versions = [r[0] for r in conn.execute("SELECT version FROM models ORDER BY created_at, version")]
                served = next((t for t, v in vec.items() if v["version"] == state.get("current_model", "base")), None)
                unembedded = int(conn.execute(
                    f"SELECT COUNT(*) FROM questions q WHERE NOT EXISTS (SELECT 1 FROM {served} v "
                    "WHERE v.seq = q.seq)").fetchone()[0]) if served else 0
                # Sequences are not transactional: read here they are at least what the snapshot's rows used.
                sequences = {r[0]: int(r[1]) for r in conn.execute(
                    "SELECT sequencename, COALESCE(last_value, 0) FROM pg_sequences "
                    "WHERE schemaname = current_schema()")}
            finally:
                conn.execute("COMMIT")
        notes = []
        if unembedded:
            # A node stores a question, then its vectors, in two transactions: the snapshot fell between them.
            notes.append(f"{unembedded} questions were being added (stored, not yet embedded): the restored "
                         "database embeds them when a node first opens it")
        members = [_file(stage / f"{t['table']}.copy", f"database/{t['table']}.copy") for t in layout]
        info = {"revision": int(state.get("revision", 0)), "current_model": state.get("current_model", "base"),
                "counts": counts, "versions": versions, "tables": layout, "sequences": sequences}
        return Snapshot("postgres", schema, info, members, notes), cleanup
    except BaseException:
        cleanup()
        raise


def restore_postgres(path: Path, url: str) -> dict[str, Any]:
    """Restore PostgreSQL backup ``path`` into the empty database ``url``; returns the manifest.

    One transaction creates the schema at the backup's version, loads every table, sets the sequences and
    builds the vector tables' indexes; a failure leaves the database empty. Then this dupq's migrations run.
    """
    import psycopg

    from dupq.index.pgvector import HNSW_BUILD_BYTES_PER_VECTOR, HNSW_BUILD_MEM_MB, vector_table_sql
    from dupq.storage.postgres.db import Database, migrations

    manifest = read_manifest(path)
    if manifest["backend"] != "postgres":
        raise BackupError(f"{path} is a backup of a SQLite home: restore it with --home DIR (a new folder)",
                          code="wrong_backend")
    wanted = migrations()
    schema = int(manifest["schema_version"])
    if schema > len(wanted):
        raise BackupError(f"{path}: its database has schema {schema}, newer than this dupq's ({len(wanted)}); "
                          "restore it with a newer dupq", code="backup_too_new")
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as e:
        raise NotFoundError(f"cannot connect to {redacted(url)}: {e}") from None
    with conn:
        present = _pg_tables(conn)
        if present:
            raise ConflictError(f"the database {redacted(url)} is not empty ({len(present)} tables: "
                                f"{', '.join(present[:5])}); a restore goes into an empty database only",
                                code="not_empty")
        stage = Path(tempfile.mkdtemp(prefix="dupq-restore-"))
        try:
            manifest = extract(path, stage)
            layout = manifest["tables"]
            order = sorted(layout, key=lambda t: (t["vectors"] is not None,
                                                  _PG_FIRST.index(t["table"]) if t["table"] in _PG_FIRST else 99))
            with conn.transaction():
                for _number, _name, sql in wanted[:schema]:
                    conn.execute(sql)
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
                conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (schema,))
                for t in order:
                    table, cols = t["table"], ", ".join(t["columns"])
                    if t["vectors"] is not None:
                        conn.execute(vector_table_sql(table, int(t["vectors"]["dim"])))
                    else:
                        conn.execute(f"DELETE FROM {table}")  # rows a migration seeded (the revision)
                    with open(stage / "database" / f"{table}.copy", "rb") as f, conn.cursor().copy(
                            f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                        while data := f.read(_CHUNK):
                            cp.write(data)
                    if t["indexes"]:
                        rows = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                        low, high = HNSW_BUILD_MEM_MB
                        mb = min(high, max(low, rows * max(HNSW_BUILD_BYTES_PER_VECTOR.values()) // 2**20 + 1))
                        conn.execute(f"SET LOCAL maintenance_work_mem = '{mb}MB'")
                        for ddl in t["indexes"]:
                            conn.execute(ddl)
                        conn.execute(f"ANALYZE {table}")
                for name, value in manifest["sequences"].items():
                    if value > 0:
                        conn.execute("SELECT setval(%s, %s)", (name, value))
        except psycopg.Error as e:
            raise BackupError(f"{path}: its tables do not load into the schema they name ({e})") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    Database(url, max_size=1).close()  # this dupq's migrations the backup's schema lacks
    manifest["restored_schema"] = len(wanted)
    return manifest
