"""JobStore: job records in the ``jobs`` table of a home's SQLite database (shared by web and worker).

The rules are :class:`dupq.storage.jobs.JobRecords`'; this module is their SQL. One web process owns the
home (its writer lock), so every job is its own: no leases, and ``create`` refuses a second active job
inside its transaction.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from dupq.errors import ConflictError
from dupq.storage.jobs import ACTIVE, COLUMNS, Job, JobRecords, new_job_id, timestamp
from dupq.storage.sqlite.store import QuestionStore


class JobStore(JobRecords):
    """Job records in the ``jobs`` table of a :class:`QuestionStore` database."""

    mark = "?"
    worker_dies_with_parent = False  # its job is ended by the next start of the serving process (interrupted)

    def __init__(self, store: QuestionStore) -> None:
        self.store = store

    def _transaction(self) -> AbstractContextManager[Any]:
        return self.store.transaction()

    def _rows(self, sql: str, params: tuple | list = ()) -> list[Any]:
        return self.store.query(sql, params)

    def _lock(self, c: Any, jid: str, *, active: bool = False) -> tuple[str, int] | None:
        # The IMMEDIATE transaction holds the database's write lock: the row cannot change under it.
        sql, params = "SELECT state FROM jobs WHERE id=?", (jid,)
        if active:
            sql, params = sql + f" AND state IN ({self._marks(len(ACTIVE))})", (jid, *ACTIVE)
        row = c.execute(sql, params).fetchone()
        return (row[0], 0) if row is not None else None

    def _fenced(self, jid: str, attempt: int) -> bool:
        return False  # no leases: nothing takes a job over

    # -- one home: its serving process holds every job ---------------------------------------------------------
    def is_owner(self, jid: str, pid: int | None) -> bool:
        return True

    def record_worker(self, jid: str, pid: int) -> None:
        self.update(jid, pid=pid)

    @contextmanager
    def holding(self, jid: str, on_lost: Callable[[threading.Event], None]) -> Iterator[None]:
        yield  # nothing can take the job over

    def requeue_expired(self) -> list[str]:
        return []  # no leases: a dead process's jobs are ended on the next start (interrupted)

    def expired_ready(self) -> str | None:
        return None

    def next_queued(self) -> str | None:
        return None  # the process that queues a job starts its worker

    def create(self, options: dict[str, Any]) -> Job:
        """A new queued job; :class:`ConflictError` if another job is still active (one at a time)."""
        jid = new_job_id()
        now = timestamp()
        with self.store.transaction() as c:
            marks = self._marks(len(ACTIVE))
            active = c.execute(f"SELECT id FROM jobs WHERE state IN ({marks})", ACTIVE).fetchone()
            if active:
                raise ConflictError(f"training job {active[0]} is still active; one job at a time", code="job_active")
            c.execute(
                "INSERT INTO jobs(id, state, options, created_at, updated_at) VALUES (?, 'queued', ?, ?, ?)",
                (jid, json.dumps(options), now, now),
            )
        return self.get(jid)

    def claim(self, jid: str, *, pid: int) -> Job | None:
        """Take queued job ``jid`` for the worker ``pid`` (queued -> running); None when it is not queued."""
        with self.store.transaction() as c:
            n = c.execute(
                "UPDATE jobs SET state='running', pid=?, updated_at=? WHERE id=? AND state='queued' AND cancel=0",
                (pid, timestamp(), jid),
            ).rowcount
        return self.get(jid) if n else None

    def interrupted(self) -> list[Job]:
        """Jobs still active in the record (on start-up: left behind by a web process that died)."""
        return [Job.from_row(r) for r in self._rows(f"SELECT {COLUMNS} FROM jobs WHERE state IN "
                                                    f"({self._marks(len(ACTIVE))})", ACTIVE)]
