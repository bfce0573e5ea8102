"""PgJobStore: :class:`dupq.storage.jobs.JobStore`'s interface on PostgreSQL, for workers on several nodes.

* Claims take the row with ``SELECT ... FOR UPDATE SKIP LOCKED``: two workers never claim one job.
* A claim carries a lease (``owner``, ``lease_until``) that the worker renews (:meth:`renew`, a heartbeat
  thread in the worker). A job whose lease ran out (its node died) is put back to ``queued`` by any node's
  job runner (:meth:`requeue_expired`, the one move outside :data:`dupq.storage.jobs.TRANSITIONS`: a takeover
  restarts the job) and claimed again by a free worker; ``attempt`` counts the claims.
* ``attempt`` is also the fence: a worker that lost its lease can no longer move or update the job.
* One active job at a time is a unique partial index, so nodes asking at once cannot both create one.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

from dupq.errors import ConflictError, NotFoundError
from dupq.storage.jobs import ACTIVE, FIELDS, STATES, IllegalTransition, Job, _is_worker, _now, _signal, can_move
from dupq.storage.postgres.db import JOBS_CHANNEL, Database

_COLS = "id, state, options, progress, metrics, error, version, pid, cancel, created_at, updated_at"
#: States a lease protects (a worker is working on the job).
LEASED = ("running", "evaluating", "indexing")


def worker_owner(pid: int) -> str:
    """The lease owner name of process ``pid`` on this host."""
    return f"{socket.gethostname()}:{pid}"


class PgJobStore:
    """Job records in the ``jobs`` table of a PostgreSQL :class:`Database` (see the module docstring).

    Args:
        db: The shared database.
        lease_s: Seconds a claim lasts without a renewal.
    """

    shared = True

    def __init__(self, db: Database, *, lease_s: float = 30.0) -> None:
        self.db = db
        self.lease_s = float(lease_s)
        self._fence: dict[str, int] = {}  # job -> the attempt this process claimed

    def create(self, options: dict[str, Any]) -> Job:
        """A new queued job; :class:`ConflictError` if another job is still active (one at a time)."""
        import psycopg

        jid = uuid.uuid4().hex[:12]
        now = _now()
        try:
            with self.db.transaction() as c:
                # lease_until on a queued job: the asking node's reservation (it starts a worker itself now)
                c.execute("INSERT INTO jobs(id, state, options, created_at, updated_at, lease_until) VALUES "
                          "(%s, 'queued', %s, %s, %s, now() + make_interval(secs => %s))",
                          (jid, json.dumps(options), now, now, self.lease_s))
                c.execute("SELECT pg_notify(%s, %s)", (JOBS_CHANNEL, jid))
        except psycopg.errors.UniqueViolation:
            active = self.active()
            raise ConflictError(f"training job {active.id if active else '?'} is still active; one job at a time",
                                code="job_active") from None
        return self.get(jid)

    def get(self, jid: str) -> Job:
        with self.db.connection() as c:
            row = c.execute(f"SELECT {_COLS} FROM jobs WHERE id=%s", (jid,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job with id {jid!r}")
        return _job(row)

    def list(self, limit: int = 20) -> list[Job]:
        with self.db.connection() as c:
            rows = c.execute(f"SELECT {_COLS} FROM jobs ORDER BY created_at DESC LIMIT %s", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def active(self) -> Job | None:
        with self.db.connection() as c:
            row = c.execute(f"SELECT {_COLS} FROM jobs WHERE state = ANY(%s) ORDER BY created_at DESC",
                            (list(ACTIVE),)).fetchone()
        return _job(row) if row else None

    def claim(self, jid: str, *, pid: int) -> Job | None:
        """Take queued job ``jid`` for worker ``pid`` on this host, with a lease; None if not claimable."""
        with self.db.transaction() as c:
            row = c.execute("SELECT attempt FROM jobs WHERE id=%s AND state='queued' AND cancel=0 "
                            "FOR UPDATE SKIP LOCKED", (jid,)).fetchone()
            if row is None:
                return None
            attempt = int(row[0]) + 1
            c.execute(
                "UPDATE jobs SET state='running', pid=%s, owner=%s, attempt=%s, updated_at=%s, "
                "lease_until = now() + make_interval(secs => %s) WHERE id=%s",
                (pid, worker_owner(pid), attempt, _now(), self.lease_s, jid),
            )
        self._fence[jid] = attempt
        return self.get(jid)

    def next_queued(self) -> str | None:
        """Reserve the oldest queued job no node has reserved (for a worker this node starts); None if none.

        The reservation lasts one lease, so that free nodes do not all start a worker for one job.
        """
        with self.db.transaction() as c:
            row = c.execute("SELECT id FROM jobs WHERE state='queued' AND cancel=0 AND "
                            "(lease_until IS NULL OR lease_until < now()) ORDER BY created_at "
                            "LIMIT 1 FOR UPDATE SKIP LOCKED").fetchone()
            if row is not None:
                c.execute("UPDATE jobs SET lease_until = now() + make_interval(secs => %s) WHERE id=%s",
                          (self.lease_s, row[0]))
        return row[0] if row else None

    def renew(self, jid: str) -> bool:
        """Extend this process's lease on ``jid``; False when it lost it (taken over, or the job ended)."""
        attempt = self._fence.get(jid)
        with self.db.connection() as c:
            n = c.execute("UPDATE jobs SET lease_until = now() + make_interval(secs => %s) "
                          "WHERE id=%s AND attempt=%s AND state = ANY(%s)",
                          (self.lease_s, jid, attempt, [*LEASED, "ready"])).rowcount
        return bool(n)

    def requeue_expired(self) -> list[str]:
        """Put jobs whose worker's lease ran out back in the queue (a takeover); returns their ids."""
        with self.db.transaction() as c:
            rows = c.execute("SELECT id, state, owner FROM jobs WHERE state = ANY(%s) AND lease_until < now() "
                             "FOR UPDATE SKIP LOCKED", (list(LEASED),)).fetchall()
            for jid, state, owner in rows:
                c.execute(
                    "UPDATE jobs SET state='queued', pid=NULL, owner=NULL, lease_until=NULL, version=NULL, "
                    "attempt = attempt + 1, error=%s, updated_at=%s WHERE id=%s",
                    (f"taken over: the lease of {owner} ran out in state {state}", _now(), jid),
                )
            if rows:
                c.execute("SELECT pg_notify(%s, %s)", (JOBS_CHANNEL, "requeued"))
        return [r[0] for r in rows]

    def expired_ready(self) -> str | None:
        """A ``ready`` job whose promoting process died (its lease ran out), claimed for this process."""
        with self.db.transaction() as c:
            row = c.execute("SELECT id, attempt FROM jobs WHERE state='ready' AND lease_until < now() "
                            "FOR UPDATE SKIP LOCKED LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute("UPDATE jobs SET attempt=%s, lease_until = now() + make_interval(secs => %s) WHERE id=%s",
                      (row[1] + 1, self.lease_s, row[0]))
        self._fence[row[0]] = row[1] + 1
        return row[0]

    def is_owner(self, jid: str, pid: int) -> bool:
        """Whether worker ``pid`` of this host holds (or last held) job ``jid``."""
        with self.db.connection() as c:
            row = c.execute("SELECT owner FROM jobs WHERE id=%s", (jid,)).fetchone()
        return bool(row) and row[0] == worker_owner(pid)

    def transition(self, jid: str, to: str, **fields: Any) -> Job:
        """Move job ``jid`` to ``to`` (and set ``fields``) in one transaction.

        Raises:
            IllegalTransition: :data:`TRANSITIONS` has no such move, or this process lost the job's lease.
            NotFoundError: No such job.
        """
        if to not in STATES:
            raise ValueError(f"unknown job state {to!r}")
        with self.db.transaction() as c:
            row = c.execute("SELECT state, attempt, version FROM jobs WHERE id=%s FOR UPDATE", (jid,)).fetchone()
            if row is None:
                raise NotFoundError(f"no job with id {jid!r}")
            if jid in self._fence and row[1] != self._fence[jid] and row[0] in ACTIVE:
                raise IllegalTransition(f"job {jid} was taken over by another worker (attempt {row[1]})")
            if not can_move(row[0], to):
                raise IllegalTransition(f"job {jid} cannot go from {row[0]} to {to}")
            _set(c, jid, state=to, **fields)
            if to == "ready":  # nodes load the version now, so that the switch is instant
                version = fields.get("version") or row[2]
                c.execute("INSERT INTO state(key, value) VALUES ('preparing', %s) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (version,))
                c.execute("SELECT pg_notify(%s, %s)", (JOBS_CHANNEL, f"ready:{version}"))
        return self.get(jid)

    def update(self, jid: str, **fields: Any) -> None:
        """Set fields of an active job (never its state); ignored once the job ended or was taken over."""
        if "state" in fields:
            raise ValueError("a job's state changes only through transition()")
        with self.db.transaction() as c:
            row = c.execute("SELECT attempt FROM jobs WHERE id=%s AND state = ANY(%s) FOR UPDATE",
                            (jid, list(ACTIVE))).fetchone()
            if row is not None and (jid not in self._fence or row[0] == self._fence[jid]):
                _set(c, jid, **fields)

    def request_cancel(self, jid: str) -> Job:
        """Ask the worker to stop (it polls the flag each step; signalled too when it runs on this host)."""
        job = self.get(jid)
        if not can_move(job.state, "cancelled"):
            raise ConflictError(f"job {jid} can no longer be cancelled ({job.state})", code="job_ended")
        self.update(jid, cancel=1)
        if job.state == "queued":
            try:
                self.transition(jid, "cancelled", error="cancelled on request")
            except IllegalTransition:
                pass
        if job.pid and self.is_owner(jid, job.pid) and _is_worker(job.pid, jid):
            import signal

            _signal(job.pid, signal.SIGTERM)
        return self.get(jid)

    def interrupted(self) -> list[Job]:
        """Active jobs whose lease ran out (their node died); the others belong to live nodes."""
        with self.db.connection() as c:
            rows = c.execute(f"SELECT {_COLS} FROM jobs WHERE state = ANY(%s) AND lease_until < now()",
                             (list(ACTIVE),)).fetchall()
        return [_job(r) for r in rows]

    def stop_worker(self, job: Job) -> None:
        """Kill the worker of ``job`` if it runs on this host and is still alive."""
        import signal

        if job.pid and self.is_owner(job.id, job.pid) and _is_worker(job.pid, job.id):
            _signal(job.pid, signal.SIGKILL)


def _set(c: Any, jid: str, **fields: Any) -> None:
    unknown = set(fields) - {"state", *FIELDS}
    if unknown:
        raise ValueError(f"unknown job field(s) {sorted(unknown)}")
    cols = [f"{k}=%s" for k in fields]
    vals = [json.dumps(v) if k in ("progress", "metrics") else (int(v) if k == "cancel" else v)
            for k, v in fields.items()]
    c.execute(f"UPDATE jobs SET {', '.join([*cols, 'updated_at=%s'])} WHERE id=%s", (*vals, _now(), jid))


def _job(r: Any) -> Job:
    return Job(r[0], r[1], json.loads(r[2]), json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7], bool(r[8]),
               r[9], r[10])
