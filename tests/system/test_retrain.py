"""The retrain loop through the HTTP API with the real model: pairs -> job -> gate -> hot swap -> rollback.

A real threaded HTTP server serves the app so that searches run concurrently with the training worker,
which is a separate process. Jobs are short (a few optimiser steps) to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import ADMIN_TOKEN, SMALL_BANK, bank_pairs
from werkzeug.serving import make_server

from web import create_app

#: Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
BOTH_BACKENDS = True

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}




class Server:
    """The app on a real loopback HTTP server in a thread (threaded: searches run while jobs are polled)."""

    def __init__(self, app) -> None:
        self.app = app
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def call(self, method: str, path: str, body: dict | None = None, auth: bool = False) -> tuple[int, dict]:
        headers = {"content-type": "application/json", **(AUTH if auth else {})}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def wait_job(self, job: str, until: tuple[str, ...], timeout: float = 600) -> dict:
        t0 = time.time()
        while time.time() - t0 < timeout:
            _, j = self.call("GET", f"/api/v1/jobs/{job}")
            if j["state"] in until:
                return j
            time.sleep(0.3)
        raise AssertionError(f"job {job} did not reach {until} in {timeout}s: {j}")

    @staticmethod
    def wait_job_on(svc, job: str, until: tuple[str, ...], timeout: float = 600):
        t0 = time.time()
        while time.time() - t0 < timeout:
            j = svc.job(job)
            if j.state in until:
                return j
            time.sleep(0.3)
        raise AssertionError(f"job {job} did not reach {until} in {timeout}s: {svc.job(job)}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.app.extensions["dupq"].close()


@pytest.fixture
def server(tmp_path: Path, db_url):
    eval_file = tmp_path / "eval_pairs.jsonl"
    eval_file.write_text("".join(json.dumps(p) + "\n" for p in bank_pairs(seed=1)))
    app = create_app(
        {
            "TESTING": True,
            "home": str(tmp_path / "home"),
            "database_url": db_url,
            "seed_bank": str(SMALL_BANK),
            "admin_token": ADMIN_TOKEN,
            "secret_key": "t",
            # the fixed evaluation file with correct labels: what a model trained on flipped labels must fail
            "gate_eval_file": str(eval_file),
            "gate_tolerance": 0.02,
            "rate_limit_search": "",  # off: the hot-swap check searches as fast as it can from one client
        }
    )
    s = Server(app)
    yield s
    s.close()


def expire_lease(svc, job_id: str) -> None:
    """Make a PostgreSQL job's lease run out now (its node died long ago)."""
    with svc.backend.db.connection() as c:
        c.execute("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id=%s", (job_id,))


def wait_for(cond, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def search_loop(server: Server, stop: threading.Event, seen: list, failures: list) -> None:
    while not stop.is_set():
        status, body = server.call("POST", "/api/v1/search", {"question": "How can I reverse a Python list?", "k": 3})
        if status != 200 or not body.get("results"):
            failures.append((status, body))
        else:
            seen.append(body["model"])


def test_retrain_promote_hot_swap_then_rejected_gate(server: Server) -> None:
    pairs = bank_pairs()
    assert server.call("POST", "/api/v1/pairs", {"pairs": pairs}, auth=True)[0] == 201

    stop, seen, failures = threading.Event(), [], []
    searcher = threading.Thread(target=search_loop, args=(server, stop, seen, failures))
    searcher.start()
    try:
        status, body = server.call(
            "POST", "/api/v1/train", {"max_steps": 4, "eval_steps": 4, "batch_size": 16, "cross_encoder": True},
            auth=True,
        )
        assert status == 202 and body["state"] in ("queued", "running")
        assert server.call("POST", "/api/v1/train", {}, auth=True)[0] == 409  # one job at a time
        job = server.wait_job(body["job"], ("promoted", "rejected", "failed", "cancelled"))
        time.sleep(0.5)  # a few searches after the switch
    finally:
        stop.set()
        searcher.join()
    assert job["state"] == "promoted", job
    new = job["version"]
    assert job["metrics"]["gate"]["stored_pairs_holdout"]["candidate"]["pairs"]["ap"] > 0
    assert "eval_file" in job["metrics"]["gate"]
    # The retrain built the version's cross-encoder too; the gate reports it beside the twin (decision: twin).
    cross_report = job["metrics"]["gate"]["stored_pairs_holdout"]["candidate_cross_encoder"]["pairs"]
    assert 0 <= cross_report["ap"] <= 1 and job["metrics"]["train"]

    # Concurrency: zero failed searches, each answered by the old or the new version, switching once.
    assert not failures, failures[:3]
    assert set(seen) <= {"base", new} and seen[0] == "base" and seen[-1] == new
    switches = sum(1 for a, b in zip(seen, seen[1:], strict=False) if a != b)
    assert switches == 1, f"{len(seen)} searches switched {switches} times"

    _, models = server.call("GET", "/api/v1/models")
    assert models["current"] == new
    v = next(m for m in models["versions"] if m["version"] == new)
    assert v["parent"] == "base" and v["metrics"]["dev"]["pairs"]["ap"] > 0 and v["data"]
    status, reranked = server.call("POST", "/api/v1/search", {"question": "boil an egg", "k": 3, "rerank": True})
    assert status == 200 and reranked["scorer"] == "cross-encoder+twin" and reranked["model"] == new

    # A job trained on flipped labels must fail the gate on the fixed evaluation file.
    flipped = [{**p, "label": 1 - p["label"]} for p in pairs]
    assert server.call("POST", "/api/v1/pairs", {"pairs": flipped}, auth=True)[0] == 201
    status, body = server.call(
        "POST",
        "/api/v1/train",
        {"max_steps": 12, "eval_steps": 12, "batch_size": 16, "learning_rate": 3e-4},
        auth=True,
    )
    job = server.wait_job(body["job"], ("promoted", "rejected", "failed", "cancelled"))
    assert job["state"] == "rejected", job
    rep = job["metrics"]["gate"]["eval_file"]
    assert rep["candidate"]["pairs"]["ap"] < rep["current"]["pairs"]["ap"] - 0.02
    assert not (server.app.extensions["dupq"].settings.models_dir / job["version"]).exists()
    assert server.call("POST", "/api/v1/search", {"question": "boil an egg"})[1]["model"] == new

    # Rollback through the API: promote the old version again.
    assert server.call("POST", "/api/v1/models/base/promote", {}, auth=True) == (200, {"current": "base"})
    assert server.call("POST", "/api/v1/search", {"question": "boil an egg"})[1]["model"] == "base"


def test_killed_worker_fails_the_job_and_old_version_keeps_serving(server: Server) -> None:
    assert server.call("POST", "/api/v1/pairs", {"pairs": bank_pairs()}, auth=True)[0] == 201
    # A short cross-encoder phase: the kill must land in the twin's training, and 400 cross-encoder steps took
    # 281 s of the 300 s wait alone on an AVX2-only CPU (fp32), longer under CI's load.
    _, body = server.call("POST", "/api/v1/train", {"max_steps": 400, "batch_size": 16, "cross_max_steps": 5},
                          auth=True)
    svc = server.app.extensions["dupq"]
    t0 = time.time()
    while True:  # wait until it is really training
        job = svc.jobs.get(body["job"])
        if job.progress.get("phase") == "training" and job.progress.get("step", 0) >= 1:
            break
        assert job.state in ("queued", "running") and time.time() - t0 < 300, job
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)
    job = server.wait_job(body["job"], ("failed",), timeout=60)
    assert "signal 9" in job["error"]
    assert server.call("POST", "/api/v1/search", {"question": "boil an egg"})[1]["model"] == "base"
    assert svc.registry.current() == "base" and [v["version"] for v in svc.registry.list()] == ["base"]
    leftovers = [d.name for d in svc.settings.models_dir.iterdir() if d.name != "base"]
    assert leftovers == [], leftovers  # no partial version folder


def test_cancel_and_restart_marks_running_jobs_failed(server: Server, tmp_path: Path) -> None:
    assert server.call("POST", "/api/v1/pairs", {"pairs": bank_pairs()}, auth=True)[0] == 201
    _, body = server.call("POST", "/api/v1/train", {"max_steps": 400, "batch_size": 16}, auth=True)
    status, j = server.call("DELETE", f"/api/v1/jobs/{body['job']}", auth=True)
    assert status == 202
    job = server.wait_job(body["job"], ("cancelled", "failed"), timeout=120)
    assert job["state"] == "cancelled", job
    assert server.call("DELETE", f"/api/v1/jobs/{body['job']}", auth=True)[0] == 409
    assert server.call("GET", "/api/v1/jobs/nope")[0] == 404

    # A record left "running" by a web process that died is marked failed when the service opens again.
    svc = server.app.extensions["dupq"]
    stale = svc.jobs.create({"max_steps": 1})
    svc.jobs.claim(stale.id, pid=999_999)  # a worker pid that is not running
    svc.close()
    from dupq.service import DupQ

    with DupQ(svc.settings) as again:
        j = again.jobs.get(stale.id)
        if svc.settings.database_url:
            # Shared: another node's job is never failed by a node starting; once its lease runs out it is
            # taken over (re-queued, then claimed by a free worker).
            assert j.state == "running"
            expire_lease(again, stale.id)
            assert wait_for(lambda: again.jobs.get(stale.id).state != "running" or
                            again.jobs.get(stale.id).error is not None, 10)
            j = again.jobs.get(stale.id)
            assert j.error and "taken over" in j.error, j
            again.cancel_job(stale.id)
            j = server.wait_job_on(again, stale.id, ("cancelled", "failed"), timeout=120)
        else:
            assert j.state == "failed" and "restarted" in j.error
    server.app.extensions["dupq"] = DupQ(svc.settings)  # so the fixture can close it


def test_restart_promotes_a_ready_job(svc) -> None:
    """A worker finished (state ready, index complete) but the web process died before the switch."""
    import shutil

    shutil.copytree(svc.settings.models_dir / "base", svc.settings.models_dir / "v2")  # packaged weights, new name
    svc.registry.register("v2", parent="base")
    job = svc.jobs.create({})
    svc.jobs.claim(job.id, pid=999_999)
    for state in ("evaluating", "indexing"):
        svc.jobs.transition(job.id, state, version="v2")
    svc.jobs.transition(job.id, "ready")
    settings = svc.settings
    svc.close()
    from dupq.service import DupQ

    with DupQ(settings) as again:
        if settings.database_url:  # shared: promoted by a node once the dead promoter's lease ran out
            expire_lease(again, job.id)
            assert wait_for(lambda: again.job(job.id).state == "promoted", 30)
        assert again.job(job.id).state == "promoted" and again.version == "v2"
        assert again.search("boil an egg", k=1)["model"] == "v2"
