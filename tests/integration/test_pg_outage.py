"""A node whose PostgreSQL database goes away and comes back, in process (the real server of the session):

* connections the server closed (as a restart does: ``pg_terminate_backend``) are replaced without an error;
* while the database refuses connections (``ALLOW_CONNECTIONS false`` + every connection terminated), the
  API answers 503 with ``Retry-After`` and a JSON error within the ``db_timeout_s`` wait, /readyz 503,
  /healthz 200 (alive, counts null), /metrics says ``dupq_database_up 0``; when it is back, everything answers
  again by itself and the node's follower and heartbeat threads are still running;
* a training job whose lease lapsed while its worker was cut off is taken over once, not duplicated.

(tests/system/test_pg_restart.py restarts and kills a server of its own under load.)
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest
from support import ADMIN_TOKEN, SMALL_BANK

from dupq.errors import DatabaseUnavailableError
from dupq.storage.jobs import IllegalTransition
from dupq.storage.postgres.db import Database
from dupq.storage.postgres.follow import wait_for
from dupq.storage.postgres.jobs import PgJobStore
from web import create_app


def _admin(url: str) -> psycopg.Connection:
    """A connection to the server's maintenance database (not the test's, which is switched off)."""
    head, _, query = url.partition("?")
    return psycopg.connect(f"{head.rsplit('/', 1)[0]}/postgres?{query}", autocommit=True)


def _name(url: str) -> str:
    return url.partition("?")[0].rsplit("/", 1)[1]


def _terminate(url: str) -> int:
    with _admin(url) as c:
        return len(c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                             (_name(url),)).fetchall())


def _allow(url: str, allow: bool) -> None:
    with _admin(url) as c:
        c.execute(f'ALTER DATABASE "{_name(url)}" ALLOW_CONNECTIONS {"true" if allow else "false"}')


def test_connections_closed_by_the_server_are_replaced(pg_database) -> None:
    db = Database(pg_database, max_size=4, timeout=2.0)
    try:
        conns = [db.pool.getconn() for _ in range(3)]  # several idle connections in the pool
        for c in conns:
            db.pool.putconn(c)
        assert _terminate(pg_database) >= 3
        for _ in range(5):  # no error: each broken one is discarded, the request takes a fresh one
            assert db.schema_version() >= 1
        assert db.pool_stats()["connections_lost"] >= 1
    finally:
        db.close()


@pytest.fixture
def node(pg_database, tmp_path):
    app = create_app({"TESTING": True, "home": str(tmp_path / "home"), "database_url": pg_database,
                      "seed_bank": str(SMALL_BANK), "admin_token": ADMIN_TOKEN, "db_timeout_s": 1.0,
                      "metrics": "open"})
    yield app
    _allow(pg_database, True)
    app.extensions["dupq"].close()


def test_outage_answers_503_then_recovers_by_itself(node, pg_database) -> None:
    client = node.test_client()
    svc = node.extensions["dupq"]
    assert client.get("/readyz").status_code == 200
    assert client.post("/api/v1/search", json={"question": "How do I reverse a list?"}).status_code == 200

    _allow(pg_database, False)
    _terminate(pg_database)
    t0 = time.monotonic()
    r = client.post("/api/v1/search", json={"question": "How do I reverse a list?"})
    took = time.monotonic() - t0
    assert r.status_code == 503 and r.json["error"]["code"] == "database_unavailable", r.json
    assert r.headers["Retry-After"].isdigit() and took < 1.0 + 2.0  # the db_timeout_s wait, no hang
    add = client.post("/api/v1/questions", json={"questions": [{"id": "during", "text": "Asked while it was down?"}]})
    assert add.status_code == 503 and "Retry-After" in add.headers
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["error"]["code"] == "database_unavailable"
    assert "Retry-After" in ready.headers
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["questions"] is None and health.json["model"] == "base"
    scrape = client.get("/metrics").get_data(as_text=True)
    assert "dupq_database_up 0.0" in scrape and "dupq_questions " not in scrape
    page = client.get("/?q=How+do+I+reverse+a+list")  # the page says so in place, never a 500
    assert page.status_code == 200 and "database is unavailable" in page.get_data(as_text=True)
    with pytest.raises(DatabaseUnavailableError):
        svc.count()

    _allow(pg_database, True)
    t_back = time.monotonic()
    assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=5.0)
    assert time.monotonic() - t_back < 5.0
    assert client.post("/api/v1/search", json={"question": "How do I reverse a list?"}).status_code == 200
    assert client.post("/api/v1/questions", json={"questions": [{"id": "after", "text": "Asked once it was back?"}]}
                       ).status_code == 201
    assert client.get("/healthz").json["questions"] == 9
    assert client.get("/api/v1/questions/during").status_code == 404  # the refused add was not half-stored
    # the node's background threads rode it out
    assert svc.nodes._follower._thread.is_alive() and svc.nodes._beat.is_alive()


def test_lapsed_lease_is_taken_over_not_duplicated(pg_database) -> None:
    db = Database(pg_database, max_size=2)
    try:
        worker = PgJobStore(db, lease_s=1.0)  # the worker's process
        runner = PgJobStore(db, lease_s=1.0)  # another node's job runner
        job = worker.create({"epochs": 1})
        assert worker.claim(job.id, pid=os.getpid()).state == "running"
        assert worker.renew(job.id)  # in time: renewed
        assert runner.requeue_expired() == []
        time.sleep(1.3)  # the worker was cut off from the database for longer than its lease
        assert not worker.renew(job.id)  # a lapsed lease is lost, even before anyone took the job
        assert runner.requeue_expired() == [job.id] and runner.requeue_expired() == []  # taken over once
        again = runner.claim(job.id, pid=os.getpid() + 1)
        assert again is not None and again.state == "running"
        with pytest.raises(IllegalTransition):  # the old worker is fenced out of every move
            worker.transition(job.id, "evaluating", version="v-old")
        assert not worker.renew(job.id)
        assert runner.get(job.id).state == "running"
    finally:
        db.close()
