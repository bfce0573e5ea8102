"""Follower: how a node learns of promotions and of jobs without a shared disk.

One thread per node holds a dedicated connection that ``LISTEN``\\ s on
:data:`~dupq.storage.postgres.db.CURRENT_CHANNEL` and :data:`~dupq.storage.postgres.db.JOBS_CHANNEL` (with
psycopg >= 3.2 a query on a connection that is iterating ``notifies()`` hangs, so it never runs queries).
A notification, or every ``poll_s`` seconds without one (NOTIFY is lost while the listener is disconnected),
wakes it: a job that became ``ready`` is passed to
``on_ready(version)`` (the node loads it ahead of the switch), then it reads the pointer through the pool
and calls ``on_current(version)``, then ``on_tick()`` (the node's job runner: takeovers, free workers).

The thread outlives a database outage: every failure is logged and retried at the next wake-up (an outage is
logged once, as a warning, not once a second), and the listener reconnects when the server is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dupq.errors import DatabaseUnavailableError
from dupq.storage.postgres.db import CURRENT_CHANNEL, JOBS_CHANNEL, Database

log = logging.getLogger(__name__)

#: Seconds between two pointer polls when no notification arrives.
POLL_S = 1.0


class Follower:
    """Calls ``on_current`` with the database's current version and ``on_tick`` on every wake-up.

    Args:
        db: The shared database (the pointer is read through its pool).
        on_current: Called with the current version (the node switches when it differs from its own).
        on_tick: Called after each wake-up (errors are logged, never stop the thread).
        poll_s: Longest wait between two wake-ups.
    """

    def __init__(self, db: Database, on_current: Callable[[str], None], on_tick: Callable[[], None] | None = None,
                 *, on_ready: Callable[[str], None] | None = None, poll_s: float = POLL_S) -> None:
        self.db = db
        self.on_current = on_current
        self.on_tick = on_tick
        self.on_ready = on_ready
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._conn = None
        self._away = False  # the database is unavailable (logged once per outage)
        self._thread = threading.Thread(target=self._run, name="dupq-follower", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _listen(self):
        import psycopg

        conn = psycopg.connect(self.db.url, autocommit=True, **self.db.connect_kwargs)
        conn.execute(f"LISTEN {CURRENT_CHANNEL}")
        conn.execute(f"LISTEN {JOBS_CHANNEL}")
        return conn

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._listen()
                ready = [n.payload[6:] for n in conn.notifies(timeout=self.poll_s, stop_after=1)
                         if n.payload.startswith("ready:")]  # any notification: look at the pointer now
            except Exception as e:  # noqa: BLE001 - the database went away: poll until it is back
                if conn is not None or not self._away:
                    log.warning("listener connection lost (%s); polling", str(e).strip())
                self._away = True
                if conn is not None:
                    conn.close()
                conn = None
                ready = []
                self._stop.wait(self.poll_s)
            if self._stop.is_set():
                break
            self._wake(ready)
        if conn is not None:
            conn.close()

    def _wake(self, ready: list[str]) -> None:
        try:
            with self.db.connection() as c:
                state = dict(c.execute("SELECT key, value FROM state WHERE key IN ('current_model', 'preparing')"))
        except DatabaseUnavailableError as e:
            if not self._away:
                log.warning("database unavailable (%s); retrying every %.0f s", e.message, self.poll_s)
            self._away = True
            return
        except Exception:  # noqa: BLE001
            log.exception("reading the current version failed")
            return
        if self._away:
            log.warning("database available again")
            self._away = False
        current = state.get("current_model")
        # The version being promoted (state 'preparing'): polled too, so a lost NOTIFY costs a second only.
        for version in dict.fromkeys([*ready, state.get("preparing")]):
            if version and version != current and self.on_ready is not None:
                try:
                    self.on_ready(version)
                except Exception:  # noqa: BLE001
                    log.exception("loading ready version %s failed", version)
        try:
            if current:
                self.on_current(current)
        except Exception:  # noqa: BLE001
            log.exception("following the current version failed")
        if self.on_tick is not None:
            try:
                self.on_tick()
            except DatabaseUnavailableError as e:
                log.warning("job runner tick: %s", e.message)
            except Exception:  # noqa: BLE001
                log.exception("job runner tick failed")


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds passed (tests and scripts)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
