"""Backend selection: the embedded default (SQLite + in-process index) or PostgreSQL + pgvector.

``Settings.database_url`` (``DUPQ_DATABASE_URL``, ``--database``) picks PostgreSQL; without it nothing
changes. Both backends implement the same interfaces, stated here as protocols where the service, the
retrainer and the worker meet them: :class:`Store` (questions, pairs, state, model records),
:class:`Jobs` (job records) and :class:`dupq.index.VectorIndex`.

Example:
    >>> from dupq.config import Settings
    >>> b = open_backend(Settings(home="/tmp/dq-doc", seed_bank=None))
    >>> b.shared, type(b.store).__name__
    (False, 'QuestionStore')
    >>> b.close()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dupq.config import Settings
from dupq.index.base import VectorIndex
from dupq.models.energy import Energy
from dupq.storage.jobs import Job
from dupq.storage.sqlite.store import NewQuestion, Question, StoredPair


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
    def model_record(self, version: str) -> dict[str, Any] | None: ...
    def model_records(self) -> list[dict[str, Any]]: ...
    def put_model_record(self, version: str, *, path: str, parent: str | None, created_at: str,
                         config: str) -> None: ...
    def delete_model_record(self, version: str) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Jobs(Protocol):
    """What dupq needs of a job store (:class:`~dupq.storage.jobs.JobStore`,
    :class:`~dupq.storage.postgres.jobs.PgJobStore`)."""

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


@dataclass
class Backend:
    """The store, job store and model registry of one process, and how it opens a version's index.

    Attributes:
        shared: True on PostgreSQL: several processes (nodes) share the state, none owns it.
        db: The :class:`dupq.storage.postgres.db.Database` (None on SQLite).
    """

    settings: Settings
    store: Any
    jobs: Any
    registry: Any
    shared: bool
    db: Any = None

    def open_index(self, version: str, dim: int, energy: Energy | str, *,
                   read_only: bool = False) -> tuple[VectorIndex, bool]:
        """The index of ``version`` and whether it was found intact (False: fill it from the store)."""
        if self.db is not None:
            from dupq.index.pgvector import PgVectorIndex

            return PgVectorIndex.open(self.db, version, dim, energy, kind=self.settings.pg_index)
        from dupq.index import open_index

        return open_index(self.settings.index_dir / version, dim, energy, ann_min_size=self.settings.ann_min_size,
                          read_only=read_only)

    def close(self) -> None:
        self.store.close()
        if self.db is not None:
            self.db.close()


def open_backend(settings: Settings, *, pool_size: int = 8) -> Backend:
    """Open the backend ``settings`` select (PostgreSQL when ``database_url`` is set)."""
    from dupq.storage.jobs import JobStore
    from dupq.storage.sqlite.registry import ModelRegistry
    from dupq.storage.sqlite.store import QuestionStore

    if not settings.database_url:
        store = QuestionStore(settings.db_path)
        try:
            return Backend(settings, store, JobStore(store), ModelRegistry.from_settings(store, settings), False)
        except BaseException:
            store.close()
            raise
    from dupq.storage.postgres.db import Database
    from dupq.storage.postgres.jobs import PgJobStore
    from dupq.storage.postgres.registry import PgModelRegistry
    from dupq.storage.postgres.store import PgQuestionStore

    db = Database(settings.database_url, max_size=pool_size)
    try:
        store = PgQuestionStore(db)
        registry = PgModelRegistry(store, settings.models_dir, backend=settings.backend,
                                   shared_export_cache=settings.export_cache)
        return Backend(settings, store, PgJobStore(db, lease_s=settings.job_lease_s), registry, True, db)
    except BaseException:
        db.close()
        raise
