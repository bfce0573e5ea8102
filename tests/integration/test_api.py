"""JSON API: every success and error case."""

from __future__ import annotations

import re

import pytest
from support import ADMIN_TOKEN, AUTH, SMALL_BANK

from dupq.config import MAX_BATCH, MAX_QUESTION_CHARS

#: Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
BOTH_BACKENDS = True


def err(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body


def test_search_returns_ranked_results(client) -> None:
    r = client.post("/api/v1/search", json={"question": "How do I reverse a list in Python?", "k": 5})
    assert r.status_code == 200
    body = r.get_json()
    assert set(body) == {"model", "energy", "scorer", "threshold", "took_ms", "results"}
    assert body["scorer"] == "twin"
    assert len(body["results"]) == 5 and body["model"] == "base"
    assert body["results"][0]["id"] == "py-rev-1" and body["results"][0]["duplicate"] is True
    assert all(set(x) == {"id", "text", "score", "duplicate"} for x in body["results"])
    assert [x["score"] for x in body["results"]] == sorted((x["score"] for x in body["results"]), reverse=True)
    assert body["results"][-1]["duplicate"] is False
    assert len(client.post("/api/v1/search", json={"question": "visa for Japan"}).get_json()["results"]) == 8


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"data": "not json", "content_type": "application/json"}, "invalid_json"),
        ({"data": "question=x", "content_type": "application/x-www-form-urlencoded"}, "invalid_json"),
        ({"json": ["a list"]}, "invalid_json"),
        ({"json": {}}, "missing_field"),
        ({"json": {"question": ""}}, "empty_question"),
        ({"json": {"question": "   "}}, "empty_question"),
        ({"json": {"question": 12}}, "invalid_type"),
        ({"json": {"question": "ok?", "k": "5"}}, "invalid_type"),
        ({"json": {"question": "ok?", "k": 0}}, "k_out_of_range"),
        ({"json": {"question": "ok?", "k": 101}}, "k_out_of_range"),
        ({"json": {"question": "x" * (MAX_QUESTION_CHARS + 1)}}, "question_too_long"),
    ],
)
def test_search_errors(client, kwargs, code) -> None:
    err(client.post("/api/v1/search", **kwargs), 400, code)


def test_add_get_list_delete_questions(client) -> None:
    r = client.post(
        "/api/v1/questions",
        json={
            "questions": [
                {"text": "How do I renew my passport?", "id": "tr-passport", "meta": {"topic": "travel"}},
                {"text": "  What is a good oven temperature for roasting vegetables?  "},
            ]
        },
    )
    assert r.status_code == 201
    ids = r.get_json()["ids"]
    assert ids[0] == "tr-passport" and len(ids) == 2
    q = client.get("/api/v1/questions/tr-passport").get_json()
    assert q["text"] == "How do I renew my passport?" and q["meta"] == {"source": "api", "topic": "travel"}
    assert q["created_at"]
    assert client.get(f"/api/v1/questions/{ids[1]}").get_json()["text"].startswith("What is a good oven")
    page = client.get("/api/v1/questions?offset=8&limit=1").get_json()
    assert page["total"] == 10 and [x["id"] for x in page["questions"]] == ["tr-passport"]
    assert len(client.get("/api/v1/questions").get_json()["questions"]) == 10
    hit = client.post("/api/v1/search", json={"question": "passport renewal", "k": 1}).get_json()["results"][0]
    assert hit["id"] == "tr-passport"
    err(client.delete("/api/v1/questions/tr-passport"), 401, "unauthorized")
    err(client.delete("/api/v1/questions/tr-passport", headers={"Authorization": "Bearer wrong"}), 401)
    assert client.delete("/api/v1/questions/tr-passport", headers=AUTH).get_json() == {"deleted": "tr-passport"}
    err(client.get("/api/v1/questions/tr-passport"), 404, "not_found")
    err(client.delete("/api/v1/questions/tr-passport", headers=AUTH), 404, "not_found")
    hit = client.post("/api/v1/search", json={"question": "passport renewal", "k": 10}).get_json()["results"]
    assert "tr-passport" not in {h["id"] for h in hit}


def test_add_errors(client) -> None:
    err(client.post("/api/v1/questions", json={"questions": [{"text": "x?", "id": "py-sort"}]}), 409, "duplicate_id")
    err(client.post("/api/v1/questions", json={"questions": []}), 400)
    err(client.post("/api/v1/questions", json={"questions": "text"}), 400)
    err(client.post("/api/v1/questions", json={}), 400)
    err(client.post("/api/v1/questions", json={"questions": ["just a string"]}), 400, "invalid_type")
    err(client.post("/api/v1/questions", json={"questions": [{"text": ""}]}), 400, "empty_question")
    err(client.post("/api/v1/questions", json={"questions": [{"text": "ok?", "id": 5}]}), 400, "invalid_type")
    err(client.post("/api/v1/questions", json={"questions": [{"text": "ok?", "meta": []}]}), 400, "invalid_type")
    err(client.post("/api/v1/questions", json={"questions": [{"text": "ok?"}] * (MAX_BATCH + 1)}), 400)
    # all or nothing: a bad item anywhere stores nothing
    err(client.post("/api/v1/questions", json={"questions": [{"text": "fine?"}, {"text": ""}]}), 400)
    assert client.get("/api/v1/questions").get_json()["total"] == 8


def test_list_errors(client) -> None:
    err(client.get("/api/v1/questions?limit=0"), 400)
    err(client.get("/api/v1/questions?limit=abc"), 400, "invalid_type")
    err(client.get("/api/v1/questions?offset=-1"), 400)


def test_unknown_route_and_method_are_json(client) -> None:
    err(client.get("/api/v1/nothing"), 404)
    err(client.get("/api/v1/search"), 405)


def test_healthz_and_openapi(client) -> None:
    h = client.get("/healthz").get_json()
    assert h == {"status": "ok", "model": "base", "questions": 8, "indexed": 8}
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    routes = {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", str(r.rule)), m)
        for r in client.application.url_map.iter_rules()
        if str(r.rule).startswith(("/api/", "/healthz", "/readyz"))
        for m in r.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == documented


def test_lone_surrogate_is_a_400(client) -> None:
    r = client.post("/api/v1/search", data='{"question": "a\\ud800b"}', content_type="application/json")
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_text"


def test_body_over_the_limit_is_413_json(client) -> None:
    from dupq.config import MAX_BODY_BYTES

    body = b'{"question": "' + b"a" * MAX_BODY_BYTES + b'"}'
    r = client.post("/api/v1/search", data=body, content_type="application/json")
    assert r.status_code == 413 and r.json["error"]["code"] == "request_entity_too_large"


def test_405_names_the_allowed_methods_and_unknown_api_paths_are_json(client) -> None:
    r = client.put("/api/v1/search", json={})
    assert r.status_code == 405 and "POST" in r.headers["Allow"] and r.json["error"]["code"] == "method_not_allowed"
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.is_json and r.json["error"]["code"] == "not_found"


def _app(home, **settings):
    from web import create_app

    return create_app({"TESTING": True, "home": str(home), "seed_bank": str(SMALL_BANK), **settings})


def test_rate_limits_answer_429_json(tmp_path) -> None:
    app = _app(tmp_path / "h", rate_limit_search="3/minute", rate_limit_write="1/minute")
    try:
        c = app.test_client()
        codes = [c.post("/api/v1/search", json={"question": "boil an egg"}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.post("/api/v1/search", json={"question": "boil an egg"})
        assert r.json["error"]["code"] == "too_many_requests" and "Retry-After" in r.headers
        assert c.post("/api/v1/questions", json={"questions": [{"text": "Is this new?"}]}).status_code == 201
        assert c.post("/api/v1/questions", json={"questions": [{"text": "Is this new too?"}]}).status_code == 429
        assert c.get("/api/v1/questions").status_code == 200  # reads other than search are not limited
    finally:
        app.extensions["dupq"].close()


def test_questions_can_require_the_token(tmp_path) -> None:
    app = _app(tmp_path / "h", admin_token=ADMIN_TOKEN, questions_need_token=True)
    try:
        c = app.test_client()
        body = {"questions": [{"text": "Is this new?"}]}
        assert c.post("/api/v1/questions", json=body).status_code == 401
        assert c.post("/api/v1/questions", json=body, headers=AUTH).status_code == 201
    finally:
        app.extensions["dupq"].close()


def test_a_limited_search_starts_no_thread(tmp_path, monkeypatch) -> None:
    """The rate limiter's memory storage must not start an expiry thread per hit (it cost ~2 ms a search)."""
    import threading

    app = _app(tmp_path / "h", rate_limit_search="1000/minute")
    try:
        c = app.test_client()
        assert c.post("/api/v1/search", json={"question": "boil an egg"}).status_code == 200
        started = []
        real_start = threading.Thread.start
        monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self), real_start(self))[1])
        for _ in range(20):
            r = c.post("/api/v1/search", json={"question": "boil an egg"})
            assert r.status_code == 200 and "X-RateLimit-Remaining" in r.headers
        assert started == []
    finally:
        app.extensions["dupq"].close()
