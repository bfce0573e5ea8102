"""Training jobs: records in the store, one worker process per job, one job at a time.

A job's life is one table (:data:`TRANSITIONS`) and :meth:`JobStore.transition` refuses every other move::

    queued -> running -> evaluating -> indexing -> ready -> promoted
    evaluating -> rejected                 (the evaluation gate said no)
    any of queued..indexing -> cancelled   (on request)
    any active state -> failed             (an error, a killed worker, a restart of the web process)

``ready`` means the candidate passed the gate and its index is complete: only the switch is left, which
the web process (the home's one writer) makes. The record is the only state shared by the web process and
the worker (:mod:`dupq.retrain` owns the lifecycle, :mod:`dupq.worker` is the worker's entry point).

The interface is deliberately narrow (create / claim / transition / set progress / get / list) so that a
database backend can claim jobs with ``SELECT ... FOR UPDATE SKIP LOCKED`` behind the same methods.

Example:
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
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dupq.errors import ConflictError, NotFoundError
from dupq.storage.sqlite.store import QuestionStore

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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class JobStore:
    """Job records in the ``jobs`` table of a :class:`QuestionStore` database (shared by web and worker)."""

    def __init__(self, store: QuestionStore) -> None:
        self.store = store

    def create(self, options: dict[str, Any]) -> Job:
        """A new queued job; :class:`ConflictError` if another job is still active (one at a time)."""
        jid = uuid.uuid4().hex[:12]
        now = _now()
        with self.store.transaction() as c:
            marks = ",".join("?" * len(ACTIVE))
            active = c.execute(f"SELECT id FROM jobs WHERE state IN ({marks})", ACTIVE).fetchone()
            if active:
                raise ConflictError(f"training job {active[0]} is still active; one job at a time", code="job_active")
            c.execute(
                "INSERT INTO jobs(id, state, options, created_at, updated_at) VALUES (?, 'queued', ?, ?, ?)",
                (jid, json.dumps(options), now, now),
            )
        return self.get(jid)

    def get(self, jid: str) -> Job:
        rows = self.store.query("SELECT * FROM jobs WHERE id=?", (jid,))
        if not rows:
            raise NotFoundError(f"no job with id {jid!r}")
        return self._row(rows[0])

    def list(self, limit: int = 20) -> list[Job]:
        return [self._row(r) for r in self.store.query("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))]

    def active(self) -> Job | None:
        marks = ",".join("?" * len(ACTIVE))
        rows = self.store.query(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at DESC", ACTIVE)
        return self._row(rows[0]) if rows else None

    def claim(self, jid: str, *, pid: int) -> Job | None:
        """Take queued job ``jid`` for the worker ``pid`` (queued -> running); None when it is not queued.

        A database backend does the same with ``SELECT ... FOR UPDATE SKIP LOCKED``.
        """
        with self.store.transaction() as c:
            n = c.execute(
                "UPDATE jobs SET state='running', pid=?, updated_at=? WHERE id=? AND state='queued' AND cancel=0",
                (pid, _now(), jid),
            ).rowcount
        return self.get(jid) if n else None

    def transition(self, jid: str, to: str, **fields: Any) -> Job:
        """Move job ``jid`` to state ``to`` (and set ``fields``) in one transaction.

        Raises:
            IllegalTransition: :data:`TRANSITIONS` has no such move from the job's current state.
            NotFoundError: No such job.
        """
        if to not in STATES:
            raise ValueError(f"unknown job state {to!r}")
        with self.store.transaction() as c:
            row = c.execute("SELECT state FROM jobs WHERE id=?", (jid,)).fetchone()
            if row is None:
                raise NotFoundError(f"no job with id {jid!r}")
            if not can_move(row[0], to):
                raise IllegalTransition(f"job {jid} cannot go from {row[0]} to {to}")
            self._set(c, jid, state=to, **fields)
        return self.get(jid)

    def update(self, jid: str, **fields: Any) -> None:
        """Set fields (progress, metrics, error, version, pid, cancel) of an active job; never its state."""
        if "state" in fields:
            raise ValueError("a job's state changes only through transition()")
        marks = ",".join("?" * len(ACTIVE))
        with self.store.transaction() as c:
            row = c.execute(f"SELECT 1 FROM jobs WHERE id=? AND state IN ({marks})", (jid, *ACTIVE)).fetchone()
            if row is not None:
                self._set(c, jid, **fields)

    @staticmethod
    def _set(c: Any, jid: str, **fields: Any) -> None:
        unknown = set(fields) - {"state", *FIELDS}
        if unknown:
            raise ValueError(f"unknown job field(s) {sorted(unknown)}")
        cols = [f"{k}=?" for k in fields]
        vals = [json.dumps(v) if k in ("progress", "metrics") else v for k, v in fields.items()]
        c.execute(f"UPDATE jobs SET {', '.join([*cols, 'updated_at=?'])} WHERE id=?", (*vals, _now(), jid))

    def request_cancel(self, jid: str) -> Job:
        """Ask the worker to stop (it polls the flag each step) and signal it; a queued job ends at once."""
        job = self.get(jid)
        if not can_move(job.state, "cancelled"):
            raise ConflictError(f"job {jid} can no longer be cancelled ({job.state})", code="job_ended")
        self.update(jid, cancel=1)
        if job.state == "queued":
            try:
                self.transition(jid, "cancelled", error="cancelled on request")
            except IllegalTransition:
                pass  # a worker claimed it meanwhile: it sees the flag
        if job.pid and _is_worker(job.pid, jid):
            _signal(job.pid, signal.SIGTERM)
        return self.get(jid)

    def interrupted(self) -> list[Job]:
        """Jobs still active in the record (on start-up: left behind by a web process that died)."""
        marks = ",".join("?" * len(ACTIVE))
        return [self._row(r) for r in self.store.query(f"SELECT * FROM jobs WHERE state IN ({marks})", ACTIVE)]

    def stop_worker(self, job: Job) -> None:
        """Kill the worker of ``job`` if that process is still alive (a pid may have been reused: checked)."""
        if job.pid and _is_worker(job.pid, job.id):
            _signal(job.pid, signal.SIGKILL)

    @staticmethod
    def _row(r: Any) -> Job:
        return Job(
            r["id"],
            r["state"],
            json.loads(r["options"]),
            json.loads(r["progress"]),
            json.loads(r["metrics"]),
            r["error"],
            r["version"],
            r["pid"],
            bool(r["cancel"]),
            r["created_at"],
            r["updated_at"],
        )


def _is_worker(pid: int, jid: str) -> bool:
    """Whether ``pid`` is still this job's worker (a pid can be reused by an unrelated process)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return b"dupq.worker" in cmd and jid.encode() in cmd


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone
