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

    def __init__(self, db: Database, store: Any, *, switch_wait_s: float, lease_s: float = 30.0,
                 chunk_size: int = 1000, batch_size: int = 64) -> None:
        from dupq.storage.postgres.reindex import SharedReindex

        self.db = db
        self.store = store
        self.switch_wait_s = switch_wait_s
        self.batch_size = batch_size
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.reindex = SharedReindex(db, owner=self.name, lease_s=lease_s, chunk_size=chunk_size)
        self._stop = threading.Event()
        self._follower: Any = None
        self._beat: threading.Thread | None = None
        self._runner: Any = None

    def start(self, *, on_current: Callable[[str], None], on_ready: Callable[[str], None],
              on_tick: Callable[[], None], status: Callable[[], tuple[str, str | None]],
              reindex_tools: Callable[[str], tuple[Any, Any]] | None = None,
              on_flip: Callable[[str, Callable[[], bool]], None] | None = None) -> None:
        """Follow the pointer, report this node and, given ``reindex_tools`` and ``on_flip``, embed a share of
        every shared reindex (:class:`~dupq.storage.postgres.reindex.ChunkRunner`, its own thread: a chunk
        takes seconds, which the follower's second-by-second pointer checks must not wait for)."""
        from dupq.storage.postgres.follow import Follower
        from dupq.storage.postgres.reindex import ChunkRunner

        self._follower = Follower(self.db, on_current, on_tick, on_ready=on_ready).start()
        self._beat = threading.Thread(target=self._report, args=(status,), name="dupq-node", daemon=True)
        self._beat.start()
        if reindex_tools is not None and on_flip is not None:
            self._runner = ChunkRunner(self.reindex, reindex_tools, on_flip, batch_size=self.batch_size).start()

    def share_reindex(self, version: str, open_index: Callable[[], Any], *,
                      rollback: bool = False) -> Callable[[Callable[[int, int], None] | None], None] | None:
        """Plan (or join) the shared reindex of ``version``; returns ``wait(progress)``, which blocks until
        every chunk is in and the pointer moved (``progress(chunks_done, chunks)`` on the way), or None when
        fewer than one chunk of questions is missing (the caller catches them up itself)."""
        index = open_index()
        run = self.reindex.plan(version, index.table, rollback=rollback)
        if run is None:
            return None

        def wait(progress: Callable[[int, int], None] | None = None) -> None:
            self.reindex.wait(run, progress=None if progress is None else lambda st: progress(st.done, st.chunks))

        return wait

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
        if self._runner is not None:
            self._runner.stop()  # a chunk it was embedding goes to another node after its lease
            self._runner = None
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
            leave(self.db, self.name)
