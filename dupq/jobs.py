"""Training jobs: records in the store, one worker process per job, one job at a time.

A job moves through ``queued -> running -> evaluating -> indexing -> promoted``, or ends ``rejected`` (the
evaluation gate said no), ``failed`` (an error, a killed worker, or a restart of the web process) or
``cancelled``. The record is the only shared state between the web process and the worker: the worker
writes state and progress, the web process reads them and, once the worker is done, promotes the version.

Example:
    >>> jobs = JobStore(store)                       # doctest: +SKIP
    >>> job = jobs.create({"max_steps": 20})         # doctest: +SKIP
    >>> jobs.get(job.id).state                       # doctest: +SKIP
    'queued'
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
from dupq.store import QuestionStore

STATES = ("queued", "running", "evaluating", "indexing", "promoted", "rejected", "failed", "cancelled")
ACTIVE = ("queued", "running", "evaluating", "indexing")
TERMINAL = ("promoted", "rejected", "failed", "cancelled")


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

    def update(self, jid: str, **fields: Any) -> None:
        """Set fields (state, progress, metrics, error, version, pid, cancel). A terminal state is final."""
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown job state {fields['state']!r}")
        cols, vals = [], []
        for k, v in fields.items():
            cols.append(f"{k}=?")
            vals.append(json.dumps(v) if k in ("progress", "metrics") else v)
        marks = ",".join("?" * len(TERMINAL))
        with self.store.transaction() as c:
            c.execute(
                f"UPDATE jobs SET {', '.join(cols)}, updated_at=? WHERE id=? AND state NOT IN ({marks})",
                (*vals, _now(), jid, *TERMINAL),
            )

    def request_cancel(self, jid: str) -> Job:
        """Ask the worker to stop (it polls the flag each step) and signal it."""
        job = self.get(jid)
        if job.state in TERMINAL:
            raise ConflictError(f"job {jid} already ended ({job.state})", code="job_ended")
        self.update(jid, cancel=1)
        if job.state == "queued" and job.pid is None:
            self.update(jid, state="cancelled")
        elif job.pid and _is_worker(job.pid, jid):
            _signal(job.pid, signal.SIGTERM)
        return self.get(jid)

    def fail_interrupted(self) -> list[str]:
        """On start-up: jobs left active by a dead web process are marked failed (their worker is stopped)."""
        failed = []
        for r in self.store.query(f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(ACTIVE))})", ACTIVE):
            job = self._row(r)
            if job.pid and _is_worker(job.pid, job.id):
                _signal(job.pid, signal.SIGKILL)
            self.update(job.id, state="failed", error="interrupted: the service restarted while the job ran")
            failed.append(job.id)
        return failed

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
