"""GET /metrics (Prometheus text format, read back with prometheus_client's own parser), its three modes, /readyz,
and JSON log lines that carry the request id the response shows (X-Request-Id)."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ADMIN_TOKEN, SMALL_BANK

from web import create_app

BOTH_BACKENDS = True
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _scrape(client, headers=AUTH) -> dict[str, dict[tuple, float]]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.data
    assert r.content_type.startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _value(m, name: str, **labels) -> float:
    return m.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_parse_and_move_with_requests(client, db_url) -> None:
    before = _scrape(client)
    assert _value(before, "dupq_questions") == 8
    assert _value(before, "dupq_index_vectors") == 8
    assert _value(before, "dupq_serving_version_info", version="base") == 1
    assert _value(before, "dupq_database_up") == 1
    assert _value(before, "dupq_jobs", state="queued") == 0

    for _ in range(3):
        assert client.post("/api/v1/search", json={"question": "How do I reverse a list?", "k": 2}).status_code == 200
    assert client.post("/api/v1/search", json={"question": ""}).status_code == 400
    assert client.post("/api/v1/questions", json={"questions": [{"text": "How do I peel garlic fast?"}]}
                       ).status_code == 201
    pair = {"question1": "How do I reverse a list?", "question2": "Reverse a Python list", "label": 1}
    assert client.post("/api/v1/pairs", headers=AUTH, json={"pairs": [pair]}).status_code == 201
    assert client.get("/api/v1/questions/nothing-here").status_code == 404

    m = _scrape(client)
    search = "/api/v1/search"
    assert _value(m, "dupq_http_requests_total", endpoint=search, method="POST", status="200") - \
        _value(before, "dupq_http_requests_total", endpoint=search, method="POST", status="200") == 3
    assert _value(m, "dupq_http_requests_total", endpoint=search, method="POST", status="400") == 1
    assert _value(m, "dupq_http_requests_total", endpoint="/api/v1/questions/<path:qid>", method="GET",
                  status="404") == 1
    # the histogram: 3 observations, each in the +Inf bucket, a positive sum
    assert _value(m, "dupq_http_request_duration_seconds_count", endpoint=search, method="POST", status="200") == 3
    assert _value(m, "dupq_http_request_duration_seconds_bucket", endpoint=search, method="POST", status="200",
                  le="+Inf") == 3
    assert _value(m, "dupq_http_request_duration_seconds_sum", endpoint=search, method="POST", status="200") > 0
    assert _value(m, "dupq_searches_total", scorer="twin") == 3
    assert _value(m, "dupq_questions") == 9 and _value(m, "dupq_index_vectors") == 9
    assert _value(m, "dupq_pairs", source="api") == 1
    # the scrape before this one was counted too
    assert _value(m, "dupq_http_requests_total", endpoint="/metrics", method="GET", status="200") >= 1
    if db_url:  # the PostgreSQL pool's numbers
        assert _value(m, "dupq_db_pool_requests_total") > _value(before, "dupq_db_pool_requests_total") > 0
        assert _value(m, "dupq_db_pool_max") == 8
        assert _value(m, "dupq_db_pool_connections", state="open") >= 1
    else:
        assert "dupq_db_pool_max" not in m


def test_rate_limit_refusals_are_counted(home, db_url) -> None:
    app = create_app({"TESTING": True, "home": str(home), "database_url": db_url, "seed_bank": str(SMALL_BANK),
                      "admin_token": ADMIN_TOKEN, "rate_limit_search": "2/minute", "metrics": "open"})
    try:
        client = app.test_client()
        codes = [client.post("/api/v1/search", json={"question": "reverse a list"}).status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        m = _scrape(client, headers={})
        assert _value(m, "dupq_rate_limited_total", endpoint="/api/v1/search") == 2
        assert _value(m, "dupq_http_requests_total", endpoint="/api/v1/search", method="POST", status="429") == 2
    finally:
        app.extensions["dupq"].close()


@pytest.mark.parametrize("mode", ["off", "admin", "open"])
def test_metrics_modes(home, db_url, mode) -> None:
    app = create_app({"TESTING": True, "home": str(home), "database_url": db_url, "seed_bank": str(SMALL_BANK),
                      "admin_token": ADMIN_TOKEN, "metrics": mode})
    try:
        client = app.test_client()
        r = client.get("/metrics")
        if mode == "off":
            assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
            assert client.get("/metrics", headers=AUTH).status_code == 404
        elif mode == "admin":
            assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
            assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert _value(_scrape(client), "dupq_questions") == 8
        else:
            assert r.status_code == 200 and _value(_scrape(client, headers={}), "dupq_questions") == 8
    finally:
        app.extensions["dupq"].close()


def test_admin_metrics_without_a_token_are_disabled(home, db_url) -> None:
    app = create_app({"TESTING": True, "home": str(home), "database_url": db_url, "seed_bank": str(SMALL_BANK)})
    try:
        r = app.test_client().get("/metrics")
        assert r.status_code == 403 and r.json["error"]["code"] == "admin_disabled"
    finally:
        app.extensions["dupq"].close()


def test_readyz_and_healthz(client) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json == {"status": "ready", "model": "base"}
    assert client.get("/healthz").json["questions"] == 8


def test_json_logs_carry_the_request_id(home, db_url, capsys) -> None:
    app = create_app({"TESTING": True, "home": str(home), "database_url": db_url, "seed_bank": str(SMALL_BANK),
                      "log_format": "json"})
    try:
        client = app.test_client()
        capsys.readouterr()
        r = client.post("/api/v1/search", json={"question": "How do I reverse a list?"})
        rid = r.headers["X-Request-Id"]
        assert r.status_code == 200 and len(rid) == 32
        given = client.get("/api/v1/questions/nope", headers={"X-Request-Id": "lb-7f3a.2"})
        assert given.status_code == 404 and given.headers["X-Request-Id"] == "lb-7f3a.2"
        # an id that is no sane token (spaces, quotes: log injection) is replaced by a fresh one
        bad = client.get("/healthz", headers={"X-Request-Id": 'x" y'})
        assert bad.headers["X-Request-Id"] != 'x" y' and len(bad.headers["X-Request-Id"]) == 32

        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
        requests = {line["request_id"]: line for line in lines if line["logger"] == "dupq.request"}
        assert requests[rid]["status"] == 200 and requests[rid]["path"] == "/api/v1/search"
        assert requests[rid]["endpoint"] == "/api/v1/search" and requests[rid]["duration_ms"] > 0
        assert requests["lb-7f3a.2"]["status"] == 404 and requests["lb-7f3a.2"]["level"] == "INFO"
        assert requests[bad.headers["X-Request-Id"]]["path"] == "/healthz"
        assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    finally:
        app.extensions["dupq"].close()
        import logging

        for h in list(logging.getLogger().handlers):  # leave the process's logging as other tests expect it
            if getattr(h, "dupq_json", False):
                logging.getLogger().removeHandler(h)
        logging.getLogger().setLevel(logging.WARNING)
