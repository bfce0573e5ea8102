"""Training jobs: records in the store, one worker process per job, one job at a time.

A job's life is one table (:data:`TRANSITIONS`) and :meth:`JobRecords.transition` refuses every other move::

    queued -> running -> evaluating -> indexing -> ready -> promoted
    evaluating -> rejected                 (the evaluation gate said no)
    any of queued..indexing -> cancelled   (on request)
    any active state -> failed             (an error, a killed worker, a restart of the web process)

``ready`` means the candidate passed the gate and its index is complete: only the switch is left, which
the web process (the home's one writer) makes. The record is the only state shared by the web process and
the worker (:mod:`dupq.retrain` owns the lifecycle, :mod:`dupq.worker` is the worker's entry point).

The rules are written once, here: the state table, and :class:`JobRecords`, which moves, updates and cancels
jobs by them. A backend supplies only its SQL and its locking (:class:`dupq.storage.sqlite.jobs.JobStore`:
one web process per home; :class:`dupq.storage.postgres.jobs.PgJobStore`: row locks, leases and fencing for
workers on several nodes).

Example:
    >>> from dupq.storage.sqlite.jobs import JobStore
    >>> from dupq.storage.sqlite.store import QuestionStore
    >>> jobs = JobStore(QuestionStore(":memory:"))
    >>> job = jobs.create({"max_steps": 20})
    >>> jobs.claim(job.id, pid=1234).state
    'running'
    >>> jobs.transition(job.id, "promoted")
    Traceback (most recent call last):
    ...
    dupq.storage.jobs.IllegalTransition: job ... cannot go from running to promoted
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dupq.errors import ConflictError, NotFoundError
from dupq.storage.sql import SqlAccess

#: Every legal move of a job; a state without an entry is final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"evaluating", "cancelled", "failed"}),
    "evaluating": frozenset({"indexing", "rejected", "cancelled", "failed"}),
    "indexing": frozenset({"ready", "cancelled", "failed"}),
    "ready": frozenset({"promoted", "failed"}),
}
STATES = ("queued", "running", "evaluating", "indexing", "ready", "promoted", "rejected", "failed", "cancelled")
ACTIVE = tuple(s for s in STATES if s in TRANSITIONS)
TERMINAL = tuple(s for s in STATES if s not in TRANSITIONS)
#: Fields a job record holds besides its state.
FIELDS = ("progress", "metrics", "error", "version", "pid", "cancel")
#: The columns a job is read from, in :class:`Job`'s order (:meth:`Job.from_row`).
COLUMNS = "id, state, options, progress, metrics, error, version, pid, cancel, created_at, updated_at"


class IllegalTransition(ConflictError):
    """A job was asked to move where :data:`TRANSITIONS` does not allow (e.g. cancelled while it ran)."""

    code = "illegal_transition"


def can_move(current: str, to: str) -> bool:
    """Whether a job in state ``current`` may move to ``to``.

    Example:
        >>> can_move("indexing", "ready"), can_move("ready", "cancelled"), can_move("promoted", "failed")
        (True, False, False)
    """
    return to in TRANSITIONS.get(current, ())


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    options: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    version: str | None
    pid: int | None
    cancel: bool
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, r: Any) -> Job:
        """The job of a row selected as :data:`COLUMNS` (JSON text in options, progress and metrics)."""
        return cls(r[0], r[1], json.loads(r[2]), json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7], bool(r[8]),
                   r[9], r[10])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "options": self.options,
            "progress": self.progress,
            "metrics": self.metrics,
            "error": self.error,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def timestamp() -> str:
    """Now, as a job record writes it (UTC, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


class JobRecords(SqlAccess):
    """The job rules over a backend's ``jobs`` table: the moves, updates and cancels of every backend.

    A backend supplies its :class:`~dupq.storage.sql.SqlAccess` (placeholder, transaction, query), :meth:`_lock`
    (the row of a job, locked for the rest of the transaction), the methods
    that differ in kind (``create``, ``claim``), and who holds a job: one home's serving process holds all of
    them; on a shared database a worker holds a job by a lease that another node takes over when it runs out
    (:meth:`is_owner`, :meth:`_fenced`, :meth:`holding`, the job runner's :meth:`requeue_expired`,
    :meth:`expired_ready` and :meth:`next_queued`).
    """

    #: Whether a worker must die with the process that started it: on a store several nodes share, a dead
    #: node's job is taken over after its lease rather than finished by an orphan.
    worker_dies_with_parent: bool

    # -- what a backend supplies besides its SqlAccess ---------------------------------------------------------
    def _lock(self, c: Any, jid: str, *, active: bool = False) -> tuple[str, int] | None:
        """``(state, attempt)`` of job ``jid`` (only while it is active, with ``active``), locked until the end
        of the transaction ``c``; None when there is no such job."""
        raise NotImplementedError

    def _fenced(self, jid: str, attempt: int) -> bool:
        """Whether this process lost job ``jid`` (another worker took it over at ``attempt``)."""
        raise NotImplementedError

    def _moved(self, c: Any, jid: str, to: str) -> None:
        """Called in the transaction of a move to ``to`` (a backend announces what other processes wait for)."""

    # -- what a backend supplies: who holds a job --------------------------------------------------------------
    def is_owner(self, jid: str, pid: int | None) -> bool:
        """Whether worker ``pid`` of this host holds (or last held) job ``jid``."""
        raise NotImplementedError

    def record_worker(self, jid: str, pid: int) -> None:
        """The serving process started worker ``pid`` for ``jid``."""
        raise NotImplementedError

    def holding(self, jid: str, on_lost: Callable[[threading.Event], None]) -> AbstractContextManager[None]:
        """Keep this process's hold on ``jid`` while the block runs; ``on_lost(finished)`` is called (in another
        thread) when the job was taken over (``finished`` is set once the block ends)."""
        raise NotImplementedError

    def requeue_expired(self) -> list[str]:
        """Put jobs whose worker's lease ran out back in the queue (a takeover); returns their ids."""
        raise NotImplementedError

    def expired_ready(self) -> str | None:
        """A ``ready`` job whose promoting process died, claimed for this process; None if none."""
        raise NotImplementedError

    def next_queued(self) -> str | None:
        """A queued job no process has started a worker for, reserved for a worker this process starts."""
        raise NotImplementedError

    def interrupted(self) -> list[Job]:
        """The jobs a serving process that starts must end (left behind by one that died)."""
        raise NotImplementedError

    # -- the rules ------------------------------------------------------------------------------------------
    def get(self, jid: str) -> Job:
        rows = self._rows(f"SELECT {COLUMNS} FROM jobs WHERE id={self.mark}", (jid,))
        if not rows:
            raise NotFoundError(f"no job with id {jid!r}")
        return Job.from_row(rows[0])

    def list(self, limit: int = 20) -> list[Job]:
        rows = self._rows(f"SELECT {COLUMNS} FROM jobs ORDER BY created_at DESC LIMIT {self.mark}", (limit,))
        return [Job.from_row(r) for r in rows]

    def active(self) -> Job | None:
        marks = self._marks(len(ACTIVE))
        rows = self._rows(f"SELECT {COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created_at DESC", ACTIVE)
        return Job.from_row(rows[0]) if rows else None

    def transition(self, jid: str, to: str, **fields: Any) -> Job:
        """Move job ``jid`` to state ``to`` (and set ``fields``) in one transaction.

        Raises:
            IllegalTransition: :data:`TRANSITIONS` has no such move from the job's current state, or this
                process lost the job to another worker.
            NotFoundError: No such job.
        """
        if to not in STATES:
            raise ValueError(f"unknown job state {to!r}")
        with self._transaction() as c:
            row = self._lock(c, jid)
            if row is None:
                raise NotFoundError(f"no job with id {jid!r}")
            state, attempt = row
            if state in ACTIVE and self._fenced(jid, attempt):
                raise IllegalTransition(f"job {jid} was taken over by another worker (attempt {attempt})")
            if not can_move(state, to):
                raise IllegalTransition(f"job {jid} cannot go from {state} to {to}")
            self._set(c, jid, state=to, **fields)
            self._moved(c, jid, to)
        return self.get(jid)

    def update(self, jid: str, **fields: Any) -> None:
        """Set fields (progress, metrics, error, version, pid, cancel) of an active job, never its state;
        ignored once the job ended or this process lost it."""
        if "state" in fields:
            raise ValueError("a job's state changes only through transition()")
        with self._transaction() as c:
            row = self._lock(c, jid, active=True)
            if row is not None and not self._fenced(jid, row[1]):
                self._set(c, jid, **fields)

    def _set(self, c: Any, jid: str, **fields: Any) -> None:
        unknown = set(fields) - {"state", *FIELDS}
        if unknown:
            raise ValueError(f"unknown job field(s) {sorted(unknown)}")
        cols = [f"{k}={self.mark}" for k in [*fields, "updated_at"]]
        vals = [json.dumps(v) if k in ("progress", "metrics") else (int(v) if k == "cancel" else v)
                for k, v in fields.items()]
        c.execute(f"UPDATE jobs SET {', '.join(cols)} WHERE id={self.mark}", (*vals, timestamp(), jid))

    def request_cancel(self, jid: str) -> Job:
        """Ask the worker to stop (it polls the flag each step) and signal it where it runs on this host; a
        queued job ends at once."""
        job = self.get(jid)
        if not can_move(job.state, "cancelled"):
            raise ConflictError(f"job {jid} can no longer be cancelled ({job.state})", code="job_ended")
        self.update(jid, cancel=1)
        if job.state == "queued":
            try:
                self.transition(jid, "cancelled", error="cancelled on request")
            except IllegalTransition:
                pass  # a worker claimed it meanwhile: it sees the flag
        self._signal_worker(job, signal.SIGTERM)
        return self.get(jid)

    def stop_worker(self, job: Job) -> None:
        """Kill the worker of ``job`` if it runs on this host and is still alive (a pid may have been reused:
        checked)."""
        self._signal_worker(job, signal.SIGKILL)

    def _signal_worker(self, job: Job, sig: int) -> None:
        if job.pid and self.is_owner(job.id, job.pid) and is_worker(job.pid, job.id):
            try:
                os.kill(job.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass  # already gone


def is_worker(pid: int, jid: str) -> bool:
    """Whether ``pid`` is still this job's worker (a pid can be reused by an unrelated process)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return b"dupq.worker" in cmd and jid.encode() in cmd
