"""Live nodes: each reports what it serves and has loaded ahead; a promotion waits for them (bounded).

Every node's follower tick upserts its row of ``nodes`` (about once a second). Before a promotion flips the
pointer, :func:`wait_prepared` waits until every node seen in the last :data:`LIVE_S` seconds has loaded the
new version (or serves it), so that all of them switch the moment the ``NOTIFY`` arrives. A dead node stops
being seen and is not waited for.
"""

from __future__ import annotations

import time

from dupq.storage.postgres.db import Database

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
