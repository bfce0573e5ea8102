"""The shared reindex's chunk table on a real embedded PostgreSQL (dupq/storage/postgres/reindex.py).

Claims never overlap (SKIP LOCKED), a lapsed claim is re-claimed and fences its first owner out, exactly one
completer of the last chunks gets the flip, the flip moves the pointer once, and a DupQ promotion on
PostgreSQL goes through chunks (embedded with the real model) and serves a complete index.
System test with three node processes and a SIGKILL: tests/system/test_shared_reindex.py.
"""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
from support import SMALL_BANK

from dupq.errors import ConflictError
from dupq.storage.records import NewQuestion


@pytest.fixture
def db(pg_database):
    from dupq.storage.postgres.db import Database

    d = Database(pg_database, max_size=8)
    yield d
    d.close()


def _bank(db, n: int) -> tuple[object, object]:
    from dupq.index.pgvector import PgVectorIndex
    from dupq.storage.postgres.store import PgQuestionStore

    store = PgQuestionStore(db)
    store.add([NewQuestion(f"How do I fix problem number {i} on my computer?", f"q{i}") for i in range(n)])
    index, _ = PgVectorIndex.open(db, "vnew", 8, "cosine")
    return store, index


def _vectors(chunk, reindex) -> list:
    rng = np.random.default_rng(chunk.n)
    rows = reindex.texts(chunk)
    vecs = rng.normal(size=(len(rows), 8)).astype(np.float32)
    return [(seq, v / np.linalg.norm(v)) for (seq, _), v in zip(rows, vecs, strict=True)]


def test_chunks_are_claimed_once_and_the_last_completer_alone_flips(db) -> None:
    from dupq.storage.postgres.reindex import SharedReindex

    _, index = _bank(db, 230)
    nodes = [SharedReindex(db, owner=f"n{i}", lease_s=30, chunk_size=20) for i in range(3)]
    run = nodes[0].plan("vnew", index.table)
    assert nodes[1].plan("vnew", index.table) == run  # a second promoter joins the run
    st = nodes[0].status(run)
    assert (st.chunks, st.total, st.state) == (12, 230, "embedding")  # 11 x 20 + one of 10

    flips, claimed, lock = [], [], threading.Lock()

    def work(r) -> None:
        while (chunk := r.claim()) is not None:
            with lock:
                claimed.append(chunk.n)
            flip = r.complete(chunk, _vectors(chunk, r), 0.0)
            if flip is not None:
                with lock:
                    flips.append((r.owner, flip))

    threads = [threading.Thread(target=work, args=(r,)) for r in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 13))  # every chunk claimed exactly once
    assert len(flips) == 1 and nodes[0].status(run).state == "flipping"
    assert len(index) == 230
    owner, flip = flips[0]
    other = next(r for r in nodes if r.owner != owner)
    stale = type(flip)(flip.run, flip.version, flip.attempt + 1, False, False)
    assert not other.point(stale)  # not the holder's attempt: no pointer move
    assert next(r for r in nodes if r.owner == owner).point(flip)
    assert not next(r for r in nodes if r.owner == owner).point(flip)  # exactly once
    with db.connection() as c:
        assert c.execute("SELECT value FROM state WHERE key='current_model'").fetchone()[0] == "vnew"
    st = nodes[0].status(run)
    assert st.state == "done" and st.done == 12 and sum(st.by_node.values()) == 12


def test_a_lapsed_claim_is_reclaimed_and_fences_out_its_first_owner(db) -> None:
    from dupq.storage.postgres.reindex import SharedReindex

    _, index = _bank(db, 40)
    dead = SharedReindex(db, owner="dead", lease_s=0.3, chunk_size=20)
    live = SharedReindex(db, owner="live", lease_s=30, chunk_size=20)
    run = dead.plan("vnew", index.table)
    lost = dead.claim()
    assert lost.n == 1 and live.claim().n == 2  # SKIP LOCKED / claimed: the next chunk
    time.sleep(0.5)  # the dead node's lease lapses
    again = live.claim()
    assert (again.n, again.attempt) == (1, 2)
    assert not dead.renew(lost)
    from dupq.storage.postgres.reindex import _Lost

    with pytest.raises(_Lost):  # the first owner's late result is refused (and nothing of it written)
        dead.complete(lost, _vectors(lost, dead), 0.0)
    assert len(index) == 0
    assert live.complete(again, _vectors(again, live), 0.0) is None
    st = live.status(run)
    assert st.by_node == {"live": 1} and st.done == 1


def test_a_new_promotion_supersedes_an_embedding_run_but_waits_for_a_flipping_one(db) -> None:
    from dupq.index.pgvector import PgVectorIndex
    from dupq.storage.postgres.reindex import ReindexFailed, SharedReindex

    _, index = _bank(db, 50)
    r = SharedReindex(db, owner="n", lease_s=30, chunk_size=20)
    first = r.plan("vnew", index.table)
    other, _ = PgVectorIndex.open(db, "vother", 8, "cosine")
    second = r.plan("vother", other.table)
    assert second != first and r.status(first).state == "failed"
    with pytest.raises(ReindexFailed, match="superseded"):
        r.wait(first)
    # the active run (vother) is flipping: another version's promotion must wait
    while (chunk := r.claim()) is not None:
        r.complete(chunk, _vectors(chunk, r), 0.0)
    with pytest.raises(ConflictError, match="flipping"):
        r.plan("vnew", index.table)
    # a retrain job's fill never supersedes a run: it embeds alone
    with pytest.raises(ConflictError, match="re-embedding"):
        r.plan("vnew", index.table, promote=False)


def test_fewer_missing_than_a_chunk_is_not_shared(db) -> None:
    from dupq.storage.postgres.reindex import SharedReindex

    _, index = _bank(db, 10)
    assert SharedReindex(db, owner="n", lease_s=30, chunk_size=20).plan("vnew", index.table) is None


def test_promote_on_postgres_goes_through_chunks_and_serves_a_complete_index(pg_database, tmp_path) -> None:
    from dupq.config import Settings
    from dupq.service import DupQ

    settings = Settings(home=tmp_path / "home", seed_bank=str(SMALL_BANK), database_url=pg_database,
                        reindex_chunk_size=10)
    with DupQ(settings) as svc:
        svc.add_questions([{"text": f"How can I make my program number {i} run faster?", "id": f"p{i}"}
                           for i in range(45)])
        shutil.copytree(svc.registry.path("base"), svc.registry.path("vcopy"))
        svc.registry.register("vcopy", parent="base")
        svc.promote("vcopy", progress=False)
        assert svc.version == "vcopy" and svc.registry.current() == "vcopy"
        assert len(svc.serving.index) == svc.count() == 53
        with svc.backend.db.connection() as c:
            row = c.execute("SELECT state, chunks, total FROM reindex_runs").fetchone()
            assert row == ("done", 6, 53)
            assert c.execute("SELECT COUNT(*) FROM reindex_chunks WHERE state='done' AND rows > 0").fetchone()[0] == 6
        hit = svc.search("make program 7 run faster", k=1)["results"][0]
        assert hit["id"] == "p7" and svc.search("x", k=1)["model"] == "vcopy"


def test_a_retrain_workers_indexing_is_shared_and_leaves_the_pointer(pg_database, tmp_path) -> None:
    """JobWorker's indexing step (Backend.fill_shared): the worker and a node embed the candidate's chunks;
    the run ends filled without moving the pointer (its job promotes it)."""
    from dupq.config import Settings
    from dupq.service import DupQ
    from dupq.storage import open_backend

    settings = Settings(home=tmp_path / "node", seed_bank=str(SMALL_BANK), database_url=pg_database,
                        reindex_chunk_size=5, encode_batch_size=4)
    with DupQ(settings) as node:  # its runner thread takes chunks too
        node.add_questions([{"text": f"Why does my phone number {i} not charge?", "id": f"c{i}"}
                            for i in range(60)])
        shutil.copytree(node.registry.path("base"), node.registry.path("vcand"))
        node.registry.register("vcand", parent="base")
        worker = open_backend(Settings(home=tmp_path / "worker", seed_bank=None, database_url=pg_database,
                                       reindex_chunk_size=5, encode_batch_size=4), pool_size=3)
        try:
            encoder = worker.registry.load("vcand")
            index, _ = worker.open_index("vcand", encoder.dim, encoder.energy_name)
            assert worker.fill_shared("vcand", encoder, index, should_stop=lambda: False)
            assert len(index) == node.count() == 68
        finally:
            worker.close()
        with node.backend.db.connection() as c:
            state, promote, chunks = c.execute("SELECT state, promote, chunks FROM reindex_runs").fetchone()
            owners = [r[0] for r in c.execute("SELECT DISTINCT done_by FROM reindex_chunks")]
        assert (state, promote, chunks) == ("done", False, 14) and node.registry.current() == "base"
        assert any(o.endswith(":worker") for o in owners), owners
        assert node.version == "base"
