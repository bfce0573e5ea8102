"""A promotion's re-embedding shared by three ``dupq serve`` nodes on one PostgreSQL database.

Real processes, the real model, a real server (embedded PostgreSQL + pgvector). Two promotions through one
node's API while clients search every node and a writer adds questions:

1. every node embeds some of the chunks, the pointer flips once, the new version's vectors are complete
   (one per stored question, those added meanwhile included), and no search fails;
2. a node SIGKILLed while it holds a chunk costs only that chunk: its lease lapses, another node re-claims and
   completes it, the chunks it finished stay done, and the promotion still completes on the survivors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from support import SMALL_BANK
from test_multinode import Load, Node

#: Seconds a chunk's claim lasts here (short: the dead node's chunk is re-claimed quickly).
LEASE_S = 5
#: Questions per chunk, and generated questions added to the small bank (16 chunks).
CHUNK = 100
BANK_N = 1500

TOPICS = ["a Python list", "my laptop battery", "a git branch", "the kitchen sink", "a PDF file", "my router",
          "a SQL query", "the garden hose", "an Excel sheet", "my bicycle chain"]
VERBS = ["fix", "clean", "speed up", "back up", "reset", "share", "shrink", "repair", "rename", "check"]


def _bank(tmp: Path) -> Path:
    path = tmp / "bank.jsonl"
    lines = SMALL_BANK.read_text().splitlines()
    for i in range(BANK_N):
        text = f"How do I {VERBS[i % 10]} {TOPICS[(i // 10) % 10]} for case {i}?"
        lines.append(json.dumps({"id": f"g{i}", "text": text, "meta": {}}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def nodes(pg_database, tmp_path, monkeypatch):
    # test_multinode's Node, with this bank, this lease and small chunks
    monkeypatch.setattr("test_multinode.LEASE_S", LEASE_S)
    monkeypatch.setattr("test_multinode.SMALL_BANK", _bank(tmp_path))
    monkeypatch.setenv("DUPQ_REINDEX_CHUNK_SIZE", str(CHUNK))
    ns = [Node("n0", tmp_path, pg_database)]
    try:
        ns[0].wait_up()  # the first node seeds the bank (embedded with base) alone
        ns += [Node(n, tmp_path, pg_database) for n in ("n1", "n2")]
        for n in ns:
            n.wait_up()
        yield ns
    finally:
        for n in ns:
            n.stop()


def _register_copy(url: str, tmp: Path, name: str) -> None:
    """Register a version with the packaged weights (its own vector table, empty: every question to embed)."""
    from dupq.config import Settings
    from dupq.storage import open_backend

    backend = open_backend(Settings(home=tmp / "admin", database_url=url, seed_bank=None))
    try:
        shutil.copytree(backend.registry.path("base"), backend.registry.path(name))
        backend.registry.register(name, parent="base")
    finally:
        backend.close()


def _promote(node: Node, version: str) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def call() -> None:
        out["response"] = node.call("POST", f"/api/v1/models/{version}/promote", timeout=600)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    return t, out


def _pid(node_name: str) -> int:
    return int(node_name.split(":")[1])


def _missing(c, version: str) -> int:
    tbl = c.execute("SELECT tbl FROM vector_tables WHERE version=%s", (version,)).fetchone()[0]
    return c.execute(f"SELECT COUNT(*) FROM questions q WHERE NOT EXISTS (SELECT 1 FROM {tbl} v "
                     "WHERE v.seq = q.seq)").fetchone()[0]


def _complete(url: str, version: str, timeout: float = 30) -> None:
    """Every stored question has a vector of ``version`` (a write in flight may lag a moment)."""
    import psycopg

    end = time.time() + timeout
    with psycopg.connect(url, autocommit=True) as c:
        while (left := _missing(c, version)) and time.time() < end:
            time.sleep(0.2)
    assert left == 0, f"{left} questions without a {version} vector"


def test_three_nodes_share_a_promotion_and_a_killed_node_costs_only_its_chunk(nodes, pg_database, tmp_path) -> None:
    import psycopg

    url = pg_database
    n0, n1, n2 = nodes
    for v in ("vshare1", "vshare2"):
        _register_copy(url, tmp_path, v)
    load = Load(nodes)
    try:
        # 1. Three nodes share the first promotion.
        t, out = _promote(n0, "vshare1")
        t.join(600)
        assert out["response"] == (200, {"current": "vshare1"}), out
        with psycopg.connect(url, autocommit=True) as c:
            run, state, chunks, total = c.execute(
                "SELECT id, state, chunks, total FROM reindex_runs WHERE version='vshare1'").fetchone()
            by_node = dict(c.execute("SELECT done_by, COUNT(*) FROM reindex_chunks WHERE run=%s AND state='done' "
                                     "GROUP BY done_by", (run,)).fetchall())
        assert state == "done" and total >= BANK_N + 8 and chunks == -(-total // CHUNK)
        assert sum(by_node.values()) == chunks
        assert {_pid(k) for k in by_node} == {n.proc.pid for n in nodes}, by_node  # every node did some chunks
        _complete(url, "vshare1")
        end = time.time() + 10
        while {n.model() for n in nodes} != {"vshare1"}:
            assert time.time() < end
            time.sleep(0.1)

        # 2. n2 is SIGKILLed while it holds a chunk of the second promotion.
        load.live = [n0, n1]
        time.sleep(1.0)  # requests already sent to n2 finish
        t, out = _promote(n0, "vshare2")
        victim = None
        with psycopg.connect(url, autocommit=True) as c:
            end = time.time() + 300
            while victim is None:
                assert time.time() < end and t.is_alive(), out
                # A claim of n2's made in the last 0.3 s: the chunk is mid-embedding (each takes longer).
                rows = c.execute(
                    "SELECT c.run, c.n, c.owner FROM reindex_chunks c JOIN reindex_runs r ON r.id = c.run "
                    "WHERE r.version='vshare2' AND c.state='claimed' "
                    "AND c.lease_until > now() + make_interval(secs => %s)", (LEASE_S - 0.3,)).fetchall()
                mine = [r for r in rows if _pid(r[2]) == n2.proc.pid]
                if mine:
                    os.kill(n2.proc.pid, signal.SIGKILL)
                    n2.proc.wait()
                    victim = mine[0][2]
                time.sleep(0.02)
            lost = c.execute("SELECT run, n, attempt FROM reindex_chunks WHERE owner=%s AND state='claimed'",
                             (victim,)).fetchall()
            assert len(lost) == 1, lost  # one chunk at a time: the one it was embedding
            run2, lost_n, lost_attempt = lost[0]
            kept = c.execute("SELECT COUNT(*) FROM reindex_chunks WHERE run=%s AND done_by=%s",
                             (run2, victim)).fetchone()[0]
        t.join(600)
        assert out["response"] == (200, {"current": "vshare2"}), out
        with psycopg.connect(url, autocommit=True) as c:
            state, chunks = c.execute("SELECT state, chunks FROM reindex_runs WHERE id=%s", (run2,)).fetchone()
            done = dict(c.execute("SELECT done_by, COUNT(*) FROM reindex_chunks WHERE run=%s AND state='done' "
                                  "GROUP BY done_by", (run2,)).fetchall())
            redo = c.execute("SELECT state, done_by, attempt FROM reindex_chunks WHERE run=%s AND n=%s",
                             (run2, lost_n)).fetchone()
            history = json.loads(c.execute("SELECT value FROM state WHERE key='history'").fetchone()[0])
        assert state == "done" and sum(done.values()) == chunks
        assert done.get(victim, 0) == kept  # what it finished before it died stays done
        assert redo[0] == "done" and redo[1] != victim and redo[2] > lost_attempt  # only its chunk was redone
        assert history[-2:] == ["vshare1", "vshare2"]  # each pointer move happened once
        _complete(url, "vshare2")
        for n in (n0, n1):
            assert n.model() == "vshare2"
    finally:
        load.close()
    assert load.searches > 50 and load.failures == [], load.failures[:5]
    with psycopg.connect(url, autocommit=True) as c:
        assert _missing(c, "vshare2") == 0
        total = c.execute("SELECT COUNT(*) FROM questions").fetchone()[0]
    assert total == BANK_N + 8 + len(load.acked)
