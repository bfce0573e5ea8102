"""PgJobStore: the job rules of :class:`dupq.storage.jobs.JobRecords` on PostgreSQL, for workers on several nodes.

* Claims take the row with ``SELECT ... FOR UPDATE SKIP LOCKED``: two workers never claim one job.
* A claim carries a lease (``owner``, ``lease_until``) that the worker renews (:meth:`renew`, a heartbeat
  thread in the worker). A job whose lease ran out (its node died) is put back to ``queued`` by any node's
  job runner (:meth:`requeue_expired`, the one move outside :data:`dupq.storage.jobs.TRANSITIONS`: a takeover
  restarts the job) and claimed again by a free worker; ``attempt`` counts the claims.
* ``attempt`` is also the fence: a worker that lost its lease can no longer move or update the job.
* A lease that lapsed is lost even if nobody took the job yet: :meth:`renew` extends only a lease still running.
  A worker cut off from the database for longer than its lease (an outage, a partition) therefore stops at its
  next renewal, and the job is taken over (re-queued, ``attempt`` + 1) by whichever node's runner sees it first,
  the worker's own node included; the row lock on the job orders the two, so it runs exactly once more.
* One active job at a time is a unique partial index, so nodes asking at once cannot both create one.
* A move to ``ready`` announces the version (state ``preparing`` and a ``NOTIFY``): every node loads it now,
  so that its switch is instant.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dupq.errors import ConflictError, DatabaseUnavailableError
from dupq.storage.jobs import ACTIVE, Job, JobRecords, new_job_id, timestamp
from dupq.storage.postgres.db import JOBS_CHANNEL, Database, PgAccess

log = logging.getLogger(__name__)
#: States a lease protects (a worker is working on the job).
LEASED = ("running", "evaluating", "indexing")


def worker_owner(pid: int) -> str:
    """The lease owner name of process ``pid`` on this host."""
    return f"{socket.gethostname()}:{pid}"


class PgJobStore(PgAccess, JobRecords):
    """Job records in the ``jobs`` table of a PostgreSQL :class:`Database` (see the module docstring).

    Args:
        db: The shared database.
        lease_s: Seconds a claim lasts without a renewal.
    """

    worker_dies_with_parent = True

    def __init__(self, db: Database, *, lease_s: float = 30.0) -> None:
        self.db = db
        self.lease_s = float(lease_s)
        self._fence: dict[str, int] = {}  # job -> the attempt this process claimed

    def _lock(self, c: Any, jid: str, *, active: bool = False) -> tuple[str, int] | None:
        sql, params = "SELECT state, attempt FROM jobs WHERE id=%s", (jid,)
        if active:
            sql, params = sql + " AND state = ANY(%s)", (jid, list(ACTIVE))
        row = c.execute(sql + " FOR UPDATE", params).fetchone()
        return (row[0], int(row[1])) if row is not None else None

    def _fenced(self, jid: str, attempt: int) -> bool:
        return jid in self._fence and attempt != self._fence[jid]

    def _moved(self, c: Any, jid: str, to: str) -> None:
        if to == "ready":  # nodes load the version now, so that the switch is instant
            version = c.execute("SELECT version FROM jobs WHERE id=%s", (jid,)).fetchone()[0]
            c.execute("INSERT INTO state(key, value) VALUES ('preparing', %s) "
                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (version,))
            c.execute("SELECT pg_notify(%s, %s)", (JOBS_CHANNEL, f"ready:{version}"))

    def record_worker(self, jid: str, pid: int) -> None:
        """Nothing: the worker's claim records its pid and host (another node's worker may win the claim)."""

    def create(self, options: dict[str, Any]) -> Job:
        """A new queued job; :class:`ConflictError` if another job is still active (one at a time)."""
        import psycopg

        jid = new_job_id()
        now = timestamp()
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
                (pid, worker_owner(pid), attempt, timestamp(), self.lease_s, jid),
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
        """Extend this process's lease on ``jid``; False when it lost it (taken over, the job ended, or the lease
        lapsed meanwhile: then another node's runner may be re-queuing it this very moment)."""
        attempt = self._fence.get(jid)
        with self.db.connection() as c:
            n = c.execute("UPDATE jobs SET lease_until = now() + make_interval(secs => %s) "
                          "WHERE id=%s AND attempt=%s AND state = ANY(%s) AND lease_until >= now()",
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
                    (f"taken over: the lease of {owner} ran out in state {state}", timestamp(), jid),
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

    def is_owner(self, jid: str, pid: int | None) -> bool:
        """Whether worker ``pid`` of this host holds (or last held) job ``jid``."""
        if pid is None:
            return False
        with self.db.connection() as c:
            row = c.execute("SELECT owner FROM jobs WHERE id=%s", (jid,)).fetchone()
        return bool(row) and row[0] == worker_owner(pid)

    @contextmanager
    def holding(self, jid: str, on_lost: Callable[[threading.Event], None]) -> Iterator[None]:
        """Renew this process's lease on ``jid`` every quarter lease while the block runs; ``on_lost(finished)``
        is called in the renewing thread when the lease was lost (the job was taken over, or it ended)."""
        finished = threading.Event()

        def renew() -> None:
            while not finished.wait(self.lease_s / 4):
                try:
                    if not self.renew(jid):
                        log.warning("job %s: lease lost (taken over); stopping", jid)
                        on_lost(finished)
                        return
                except DatabaseUnavailableError as e:  # briefly away: retry at the next beat (a quarter lease)
                    log.warning("job %s: lease renewal failed: %s", jid, e.message)
                except Exception:  # noqa: BLE001 - the thread must go on renewing
                    log.exception("job %s: lease renewal failed", jid)

        threading.Thread(target=renew, name=f"lease-{jid}", daemon=True).start()
        try:
            yield
        finally:
            finished.set()

    def interrupted(self) -> list[Job]:
        """None: a node starting up ends no job. The jobs of a dead node are taken over once their lease runs
        out (:meth:`requeue_expired`, :meth:`expired_ready`, by every node's job runner); the others are alive."""
        return []
