"""Live nodes: each reports what it serves and has loaded ahead; a promotion waits for them (bounded).

Every node's follower tick upserts its row of ``nodes`` (about once a second). Before a promotion flips the
pointer, :func:`wait_prepared` waits until every node seen in the last :data:`LIVE_S` seconds has loaded the
new version (or serves it), so that all of them switch the moment the ``NOTIFY`` arrives. A dead node stops
being seen and is not waited for. :class:`SharedNodes` is how a serving process takes part in all this (the
:class:`dupq.storage.Nodes` of PostgreSQL).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from dupq.storage.postgres.db import JOBS_CHANNEL, Database

log = logging.getLogger(__name__)

#: A node not seen for this many seconds is not live.
LIVE_S = 5.0


def report(db: Database, node: str, serving: str, prepared: str | None) -> None:
    with db.connection() as c:
        c.execute(
            "INSERT INTO nodes(name, seen, serving, prepared) VALUES (%s, now(), %s, %s) ON CONFLICT (name) "
            "DO UPDATE SET seen = now(), serving = excluded.serving, prepared = excluded.prepared",
            (node, serving, prepared),
        )
        c.execute("DELETE FROM nodes WHERE seen < now() - interval '1 hour'")


def unprepared(db: Database, version: str, *, exclude: str | None = None) -> list[str]:
    """Live nodes that have neither loaded nor switched to ``version``."""
    with db.connection() as c:
        rows = c.execute(
            "SELECT name FROM nodes WHERE seen > now() - make_interval(secs => %s) AND name IS DISTINCT FROM %s "
            "AND serving IS DISTINCT FROM %s AND prepared IS DISTINCT FROM %s",
            (LIVE_S, exclude, version, version),
        ).fetchall()
    return [r[0] for r in rows]


def wait_prepared(db: Database, version: str, *, exclude: str | None = None, timeout: float = 60.0) -> list[str]:
    """Wait until every live node has loaded ``version``; returns those still without it at the timeout."""
    end = time.monotonic() + timeout
    while True:
        left = unprepared(db, version, exclude=exclude)
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.2)


def leave(db: Database, node: str) -> None:
    """A node closing: no promotion waits for it any more."""
    try:
        with db.connection() as c:
            c.execute("DELETE FROM nodes WHERE name=%s", (node,))
    except Exception:  # noqa: BLE001 - closing anyway; the row goes stale in LIVE_S seconds
        pass


class SharedNodes:
    """A serving node among others on one database: it follows the shared pointer (:class:`Follower`), runs
    jobs (the follower's tick), reports itself about once a second, and a promotion it makes waits for the
    other live nodes to load the version (:func:`wait_prepared`) without holding writes back.

    Args:
        db: The shared database.
        store: Its store (the ``preparing`` state).
        switch_wait_s: Longest wait of a promotion for the other live nodes.
    """

    def __init__(self, db: Database, store: Any, *, switch_wait_s: float) -> None:
        self.db = db
        self.store = store
        self.switch_wait_s = switch_wait_s
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._follower: Any = None
        self._beat: threading.Thread | None = None

    def start(self, *, on_current: Callable[[str], None], on_ready: Callable[[str], None],
              on_tick: Callable[[], None], status: Callable[[], tuple[str, str | None]]) -> None:
        from dupq.storage.postgres.follow import Follower

        self._follower = Follower(self.db, on_current, on_tick, on_ready=on_ready).start()
        self._beat = threading.Thread(target=self._report, args=(status,), name="dupq-node", daemon=True)
        self._beat.start()

    def _report(self, status: Callable[[], tuple[str, str | None]]) -> None:
        """Report this node (what it serves, what it has loaded ahead) about once a second; a database outage
        only skips reports (the node is not live to the others meanwhile, which is true)."""
        failing = False
        while not self._stop.is_set():
            try:
                report(self.db, self.name, *status())
            except Exception as e:  # noqa: BLE001 - the database is briefly away, or the node is closing
                if self._stop.is_set():
                    return
                if not failing:  # once per outage: the follower logs the outage too
                    log.warning("node report failed (%s); retrying every second", str(e).strip())
                failing = True
            else:
                failing = False
            self._stop.wait(1.0)

    def loading(self, write_lock: threading.RLock) -> AbstractContextManager[Any]:
        """Nothing: other nodes write meanwhile anyway; the switch catches up what was added."""
        return nullcontext()

    def announce(self, version: str) -> None:
        """Have every live node load ``version`` (also for a promotion without a job, and a rollback) and wait
        until they have, at most ``switch_wait_s``: then the switch is instant everywhere."""
        self.store.set_state("preparing", version)
        self.db.notify(JOBS_CHANNEL, f"ready:{version}")
        wait_prepared(self.db, version, exclude=self.name, timeout=self.switch_wait_s)

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
            leave(self.db, self.name)
