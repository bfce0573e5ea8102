"""Backend selection: the embedded default (SQLite + in-process index) or PostgreSQL + pgvector.

``Settings.database_url`` (``DUPQ_DATABASE_URL``, ``--database``) picks PostgreSQL; without it nothing
changes. :func:`open_backend` is the one place that chooses; everything the two backends do differently is
behind the :class:`Backend` it returns, so the service, the retrainer and the worker never ask which one
they hold. Both implement the same interfaces, stated here as protocols: :class:`Store` (questions, pairs,
state, model records), :class:`Jobs` (job records), :class:`Nodes` (how a serving process lives beside the
others that share its state), :class:`Keys` (API keys), :class:`Audit` (the audit log) and
:class:`dupq.index.VectorIndex`. Keys and the audit log are written once for both (:mod:`dupq.storage.keys`,
:mod:`dupq.storage.audit`), over the store's SQL access.

Example:
    >>> from dupq.config import Settings
    >>> b = open_backend(Settings(home="/tmp/dq-doc", seed_bank=None))
    >>> b.shared, type(b.store).__name__, type(b.jobs).__name__
    (False, 'QuestionStore', 'JobStore')
    >>> b.close()
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dupq.config import Settings
from dupq.filters import QuestionFilter
from dupq.index.base import Scope, VectorIndex
from dupq.models.energy import Energy
from dupq.storage.audit import AuditEntry, AuditRecords
from dupq.storage.jobs import Job
from dupq.storage.keys import ApiKey, KeyRecords
from dupq.storage.records import CanonicalLink, NewQuestion, Question, StoredPair


@runtime_checkable
class Store(Protocol):
    """What dupq needs of a store (:class:`~dupq.storage.sqlite.store.QuestionStore`,
    :class:`~dupq.storage.postgres.store.PgQuestionStore`)."""

    def revision(self) -> int: ...
    def get_state(self, key: str, default: str | None = None) -> str | None: ...
    def set_state(self, key: str, value: str) -> None: ...
    def set_states(self, values: dict[str, str]) -> None: ...
    def init_state(self, key: str, value: str) -> None: ...
    def add(self, questions: Iterable[NewQuestion], *, skip_existing: bool = False) -> list[Question]: ...
    def get(self, qid: str) -> Question | None: ...
    def get_many(self, ids: list[str]) -> dict[str, Question]: ...
    def list(self, offset: int = 0, limit: int = 50) -> list[Question]: ...
    def count(self) -> int: ...
    def delete(self, qid: str) -> bool: ...
    def iter_texts(self, batch: int = 4096) -> Iterator[list[tuple[str, str]]]: ...
    def ids(self) -> set[str]: ...
    def question_counts(self) -> dict[str, int]: ...
    def add_pairs(self, pairs: Iterable[tuple[str, str, int]], *, source: str,
                  model_version: str | None = None) -> int: ...
    def pairs(self) -> list[StoredPair]: ...
    def pair_counts(self) -> dict[str, int]: ...
    def add_pair(self, q1: str, q2: str, label: int, *, source: str, model_version: str | None = None) -> int: ...
    def get_pair(self, pair_id: int) -> dict[str, Any] | None: ...
    def delete_pair(self, pair_id: int, *, source: str | None = None) -> bool: ...
    def labelled_keys(self) -> set[str]: ...
    def canonical_of(self, ids: list[str]) -> dict[str, str]: ...
    def canonical_link(self, qid: str) -> CanonicalLink | None: ...
    def duplicates_of(self, qid: str, limit: int = 100) -> list[str]: ...
    def pair_link(self, pair_id: int) -> str | None: ...
    def link_count(self) -> int: ...
    def close_duplicate(self, qid: str, target: str, *, actor: str,
                        pair_source: str | None = "canonical") -> tuple[CanonicalLink, bool]: ...
    def close_duplicates(self, links: Iterable[tuple[str, str]], *, actor: str, pair_source: str | None,
                         labelled: set[str] | None = None) -> list[str]: ...
    def reopen(self, qid: str) -> CanonicalLink: ...
    def index_fields(self, fields: Sequence[str]) -> bool: ...
    def scope(self, qf: QuestionFilter) -> Scope: ...
    def model_record(self, version: str) -> dict[str, Any] | None: ...
    def model_records(self) -> list[dict[str, Any]]: ...
    def put_model_record(self, version: str, *, path: str, parent: str | None, created_at: str,
                         config: str) -> None: ...
    def delete_model_record(self, version: str) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Jobs(Protocol):
    """What dupq needs of a job store (:class:`~dupq.storage.sqlite.jobs.JobStore`,
    :class:`~dupq.storage.postgres.jobs.PgJobStore`; the rules: :class:`~dupq.storage.jobs.JobRecords`)."""

    worker_dies_with_parent: bool

    def create(self, options: dict[str, Any]) -> Job: ...
    def get(self, jid: str) -> Job: ...
    def list(self, limit: int = 20) -> list[Job]: ...
    def active(self) -> Job | None: ...
    def claim(self, jid: str, *, pid: int) -> Job | None: ...
    def transition(self, jid: str, to: str, **fields: Any) -> Job: ...
    def update(self, jid: str, **fields: Any) -> None: ...
    def request_cancel(self, jid: str) -> Job: ...
    def interrupted(self) -> list[Job]: ...
    def stop_worker(self, job: Job) -> None: ...
    def record_worker(self, jid: str, pid: int) -> None: ...
    def is_owner(self, jid: str, pid: int | None) -> bool: ...
    def holding(self, jid: str, on_lost: Callable[[threading.Event], None]) -> AbstractContextManager[None]: ...
    def requeue_expired(self) -> list[str]: ...
    def expired_ready(self) -> str | None: ...
    def next_queued(self) -> str | None: ...


@runtime_checkable
class Keys(Protocol):
    """What dupq needs of its API keys (:class:`~dupq.storage.keys.KeyRecords` on either backend): only a hash of
    each key is stored; a name is unique among active keys; a revocation is read by every node on its next
    request."""

    def create(self, name: str, scope: str, *, origins: tuple[str, ...] = (),
               rate_limit: str | None = None) -> tuple[ApiKey, str]: ...
    def get(self, key_id: str) -> tuple[ApiKey, str] | None: ...
    def list(self) -> list[ApiKey]: ...
    def count_active(self) -> int: ...
    def revoke(self, name: str) -> ApiKey: ...


@runtime_checkable
class Audit(Protocol):
    """The append-only audit log (:class:`~dupq.storage.audit.AuditRecords` on either backend)."""

    def append(self, key: str, action: str, obj: Any) -> AuditEntry: ...
    def entries(self, limit: int = 50, before: int | None = None) -> list[AuditEntry]: ...


@runtime_checkable
class Nodes(Protocol):
    """How a serving process lives beside the others that share its state (:class:`Backend.nodes`).

    SQLite (:class:`~dupq.storage.sqlite.home.OneWriter`): the process is its home's one writer; nothing to
    follow, nobody to tell. PostgreSQL (:class:`~dupq.storage.postgres.nodes.SharedNodes`): every node follows
    the shared pointer, runs jobs of dead nodes and reports what it serves; a promotion waits for the others.
    """

    def start(self, *, on_current: Callable[[str], None], on_ready: Callable[[str], None],
              on_tick: Callable[[], None], status: Callable[[], tuple[str, str | None]],
              reindex_tools: Callable[[str], tuple[Any, VectorIndex]] | None = None,
              on_flip: Callable[[str, Callable[[], bool]], None] | None = None) -> None:
        """Follow the others: ``on_current(version)`` when the shared pointer moved, ``on_ready(version)`` when
        a version is about to be promoted, ``on_tick()`` about once a second; ``status()`` is what this
        process serves and has loaded ahead. Shared reindex (PostgreSQL): ``reindex_tools(version)`` gives the
        encoder and index this node embeds its chunks with; ``on_flip(version, point)`` switches every node
        once this node completed the last chunk (``point()``: the pointer move, True if it was this node's)."""
        ...

    def share_reindex(self, version: str, open_index: Callable[[], VectorIndex], *,
                      rollback: bool = False) -> Callable[[Callable[[int, int], None] | None], None] | None:
        """Share the re-embedding of a promotion of ``version`` with every node: None where there is nobody to
        share it with (SQLite) or too little to embed; else a function that waits until the pointer moved."""
        ...

    def loading(self, write_lock: threading.RLock) -> AbstractContextManager[Any]:
        """What a promotion holds while it loads the new version: the write lock where this process is the
        only writer (nothing is then left to catch up), nothing where other nodes write anyway."""
        ...

    def announce(self, version: str) -> None:
        """Before the switch to ``version``: tell the others and wait (bounded) until they have loaded it."""
        ...

    def close(self) -> None: ...


@dataclass
class Backend:
    """The store, job store and model registry of one process, and what its backend does its own way.

    Attributes:
        shared: True on PostgreSQL: several processes (nodes) share the state, none owns it.
        db: The :class:`dupq.storage.postgres.db.Database` (None on SQLite).
        keys: The API keys (:class:`Keys`), in the store's database.
        audit: The audit log (:class:`Audit`), in the store's database.
    """

    settings: Settings
    store: Any
    jobs: Any
    registry: Any
    shared: bool = False
    db: Any = None
    keys: Keys | None = None  # set by open_backend: over the store's database
    audit: Audit | None = None

    def __post_init__(self) -> None:
        if self.keys is None:
            self.keys = KeyRecords(self.store)
        if self.audit is None:
            self.audit = AuditRecords(self.store)

    def open_index(self, version: str, dim: int, energy: Energy | str, *,
                   read_only: bool = False) -> tuple[VectorIndex, bool]:
        """The index of ``version`` and whether it was found intact (False: fill it from the store)."""
        raise NotImplementedError

    def index_in_step(self, index: VectorIndex) -> bool:
        """Whether ``index`` is known to hold exactly the stored questions (False: sync it)."""
        raise NotImplementedError

    def index_to_rebuild(self, version: str, index: VectorIndex, dim: int, energy: Energy | str) -> VectorIndex:
        """The index that a reindex of ``version`` (served from ``index``) embeds every stored question into."""
        raise NotImplementedError

    def nodes(self) -> Nodes:
        """This process's :class:`Nodes`."""
        raise NotImplementedError

    def fill_shared(self, version: str, encoder: Any, index: VectorIndex, *,
                    should_stop: Callable[[], bool]) -> bool:
        """A retrain worker's indexing of its candidate, shared with every node (PostgreSQL: chunks,
        :func:`dupq.storage.postgres.reindex.fill_shared`); False where nothing was shared: embed it alone."""
        return False

    def available(self, timeout: float = 1.0) -> bool:
        """Whether the state can be read now (a readiness probe): always on SQLite, whose file is this
        process's; on PostgreSQL, whether a working connection comes within ``timeout`` seconds."""
        return True

    def pool_stats(self) -> dict[str, int]:
        """The database connection pool's counters and gauges (psycopg_pool's names); none on SQLite."""
        return {}

    def waiting_at_most(self, seconds: float) -> AbstractContextManager[Any]:
        """Within the block, this thread waits at most ``seconds`` for the database (nothing to wait for on
        SQLite)."""
        return nullcontext()

    def close(self) -> None:
        self.store.close()


@dataclass
class SqliteBackend(Backend):
    """One home: a SQLite store, indexes in ``index/<version>/``, one writing process (the home lock)."""

    lock: Any = None  # the home's writer lock (dupq.storage.sqlite.home.HomeLock), None for a reader

    def open_index(self, version: str, dim: int, energy: Energy | str, *,
                   read_only: bool = False) -> tuple[VectorIndex, bool]:
        from dupq.index import open_index

        return open_index(self.settings.index_dir / version, dim, energy, ann_min_size=self.settings.ann_min_size,
                          read_only=read_only)

    def index_in_step(self, index: VectorIndex) -> bool:
        """The store's revision says: this process writes both."""
        return index.revision == self.store.revision()

    def index_to_rebuild(self, version: str, index: VectorIndex, dim: int, energy: Energy | str) -> VectorIndex:
        """A new, empty one: the folder is removed (its files rebuilt from scratch, corrupt ones too)."""
        shutil.rmtree(self.settings.index_dir / version, ignore_errors=True)
        return self.open_index(version, dim, energy)[0]

    def nodes(self) -> Nodes:
        from dupq.storage.sqlite.home import OneWriter

        return OneWriter()

    def close(self) -> None:
        super().close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


@dataclass
class PostgresBackend(Backend):
    """A PostgreSQL database shared by every node: pgvector tables, version files in the database."""

    def open_index(self, version: str, dim: int, energy: Energy | str, *,
                   read_only: bool = False) -> tuple[VectorIndex, bool]:
        from dupq.index.pgvector import PgVectorIndex

        return PgVectorIndex.open(self.db, version, dim, energy, kind=self.settings.pg_index)

    def index_in_step(self, index: VectorIndex) -> bool:
        """Never known: other nodes write too, so the revision says little; the catch-up is one anti-join."""
        return False

    def index_to_rebuild(self, version: str, index: VectorIndex, dim: int, energy: Energy | str) -> VectorIndex:
        """The table every node is searching: its rows are replaced in place."""
        return index

    def nodes(self) -> Nodes:
        from dupq.storage.postgres.nodes import SharedNodes

        s = self.settings
        return SharedNodes(self.db, self.store, switch_wait_s=s.switch_wait_s, lease_s=s.job_lease_s,
                           chunk_size=s.reindex_chunk_size, batch_size=s.encode_batch_size)

    def fill_shared(self, version: str, encoder: Any, index: VectorIndex, *,
                    should_stop: Callable[[], bool]) -> bool:
        import os

        from dupq.storage.postgres.jobs import worker_owner
        from dupq.storage.postgres.reindex import fill_shared

        s = self.settings
        return fill_shared(self.db, version, encoder, index, owner=f"{worker_owner(os.getpid())}:worker",
                           lease_s=s.job_lease_s, chunk_size=s.reindex_chunk_size, batch_size=s.encode_batch_size,
                           should_stop=should_stop)

    def available(self, timeout: float = 1.0) -> bool:
        return self.db.ping(timeout)

    def pool_stats(self) -> dict[str, int]:
        return self.db.pool_stats()

    def waiting_at_most(self, seconds: float) -> AbstractContextManager[Any]:
        return self.db.waiting_at_most(seconds)

    def close(self) -> None:
        super().close()
        self.db.close()


def open_backend(settings: Settings, *, writer: bool = False, pool_size: int = 8) -> Backend:
    """Open the backend ``settings`` select (PostgreSQL when ``database_url`` is set).

    ``writer``: the process that serves and writes the state (the web process, a CLI command), not a
    reader or a training worker. On SQLite it takes the home's writer lock first (``BusyError`` when another
    process holds it); on PostgreSQL any number of nodes write.
    """
    from dupq.storage.registry import ModelRegistry

    if not settings.database_url:
        from dupq.storage.sqlite.home import HomeLock
        from dupq.storage.sqlite.jobs import JobStore
        from dupq.storage.sqlite.store import QuestionStore

        lock = HomeLock(settings.home) if writer else None
        try:
            store = QuestionStore(settings.db_path)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        backend = SqliteBackend(settings, store, JobStore(store), None, lock=lock)
        try:
            if writer:
                store.index_fields(settings.filter_fields)
            backend.registry = ModelRegistry.from_settings(store, settings)
        except BaseException:
            backend.close()
            raise
        return backend
    from dupq.storage.postgres.db import Database
    from dupq.storage.postgres.jobs import PgJobStore
    from dupq.storage.postgres.registry import PgModelRegistry
    from dupq.storage.postgres.store import PgQuestionStore

    db = Database(settings.database_url, max_size=pool_size, timeout=settings.db_timeout_s)
    try:
        store = PgQuestionStore(db)
        if writer:
            store.index_fields(settings.filter_fields)
        registry = PgModelRegistry(store, settings.models_dir, backend=settings.backend,
                                   shared_export_cache=settings.export_cache, precision=settings.inference_precision)
        return PostgresBackend(settings, store, PgJobStore(db, lease_s=settings.job_lease_s), registry, True, db)
    except BaseException:
        db.close()
        raise
