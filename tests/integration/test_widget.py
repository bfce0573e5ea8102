"""The widget's server side: ``/widget.js`` and its pinned path (web/widget.py), CORS on the search endpoint only
for the ``cors_origins`` setting (web/cors.py), each result's ``url``; the browser side is
tests/system/test_widget_browser.py."""

from __future__ import annotations

import base64
import hashlib

import pytest
from flask.testing import FlaskClient
from support import ADMIN_TOKEN, AUTH, SMALL_BANK

from dupq.config import MAX_BODY_BYTES, Settings, SettingsError
from web import create_app
from web.widget import WIDGET_JS

FORUM = "https://forum.example"
OTHER = "https://evil.example"
PREFLIGHT = {"Origin": FORUM, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}
QUESTION = {"question": "How do I reverse a list in Python?", "k": 3}


@pytest.fixture
def app(home):
    app = create_app({"TESTING": True, "home": str(home), "seed_bank": str(SMALL_BANK), "admin_token": ADMIN_TOKEN,
                      "secret_key": "test", "cors_origins": [FORUM, "http://localhost:8080"]})
    yield app
    app.extensions["dupq"].close()


@pytest.fixture
def client(app) -> FlaskClient:
    return FlaskClient(app, app.response_class, use_cookies=True)  # no CSRF help: the API needs none


CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Max-Age", "Access-Control-Expose-Headers", "Access-Control-Allow-Credentials")


def cors_of(resp) -> dict[str, str]:
    return {h: resp.headers[h] for h in CORS_HEADERS if h in resp.headers}


# -- the setting ------------------------------------------------------------------------------------------------
def test_cors_origins_from_toml_and_environment(tmp_path) -> None:
    conf = tmp_path / "dupq.toml"
    conf.write_text('cors_origins = ["https://Forum.example/", "http://localhost:8080"]\n')
    assert Settings.load(config_file=conf).cors_origins == (FORUM, "http://localhost:8080")
    env = {"DUPQ_CORS_ORIGINS": "https://forum.example, https://help.example:8443"}
    assert Settings.load(environ=env).cors_origins == (FORUM, "https://help.example:8443")
    assert Settings.load(environ={"DUPQ_CORS_ORIGINS": "https://a.example:443"}).cors_origins == ("https://a.example",)
    assert Settings().cors_origins == ()  # none by default


@pytest.mark.parametrize("bad", ["*", "https://*.example", "https://forum.example/path", "forum.example", "null",
                                 "ftp://forum.example", "https://user@forum.example", "https://forum.example?x=1"])
def test_cors_origins_refuse_anything_but_an_exact_origin(bad) -> None:
    with pytest.raises(SettingsError, match="cors_origins"):
        Settings(cors_origins=[bad])


# -- CORS on the search endpoint ----------------------------------------------------------------------------------
def test_listed_origin_gets_its_own_origin_back_and_never_credentials(client) -> None:
    r = client.post("/api/v1/search", json=QUESTION, headers={"Origin": FORUM})
    assert r.status_code == 200 and len(r.get_json()["results"]) == 3
    assert cors_of(r) == {"Access-Control-Allow-Origin": FORUM,
                          "Access-Control-Expose-Headers": "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, "
                                                           "X-RateLimit-Reset"}
    assert "Origin" in r.headers["Vary"]
    assert "Set-Cookie" not in r.headers


def test_preflight_allows_post_with_key_and_json_only_for_a_listed_origin(client) -> None:
    r = client.options("/api/v1/search", headers=PREFLIGHT)
    assert r.status_code == 200
    assert cors_of(r) == {"Access-Control-Allow-Origin": FORUM, "Access-Control-Allow-Methods": "POST",
                          "Access-Control-Allow-Headers": "Authorization, Content-Type",
                          "Access-Control-Max-Age": "600"}
    assert "Origin" in r.headers["Vary"] and "Set-Cookie" not in r.headers
    other = client.options("/api/v1/search", headers={**PREFLIGHT, "Origin": OTHER})
    assert cors_of(other) == {} and "Origin" in other.headers["Vary"]


@pytest.mark.parametrize("origin", [OTHER, "https://forum.example.evil.example", "http://forum.example",
                                    "https://forum.example:8443", "null", "HTTPS://FORUM.EXAMPLE"])
def test_any_other_origin_gets_no_cors_headers(client, origin) -> None:
    r = client.post("/api/v1/search", json=QUESTION, headers={"Origin": origin})
    assert r.status_code == 200  # answered (a server cannot stop a request), but the browser will refuse it
    assert cors_of(r) == {}
    assert client.options("/api/v1/search", headers={**PREFLIGHT, "Origin": origin}).headers.get(
        "Access-Control-Allow-Origin") is None


def test_no_origin_listed_means_no_cors_at_all(home) -> None:
    app = create_app({"TESTING": True, "home": str(home), "seed_bank": str(SMALL_BANK)})
    try:
        c = app.test_client()
        assert cors_of(c.post("/api/v1/search", json=QUESTION, headers={"Origin": FORUM})) == {}
        assert cors_of(c.options("/api/v1/search", headers=PREFLIGHT)) == {}
    finally:
        app.extensions["dupq"].close()


@pytest.mark.parametrize("method, path", [("GET", "/healthz"), ("GET", "/api/v1/questions"),
                                          ("GET", "/api/v1/questions/py-rev-1"), ("POST", "/api/v1/questions"),
                                          ("POST", "/api/v1/pairs"), ("OPTIONS", "/api/v1/pairs"),
                                          ("OPTIONS", "/api/v1/questions"), ("GET", "/"), ("POST", "/feedback")])
def test_only_the_search_endpoint_answers_other_origins(client, method, path) -> None:
    r = client.open(path, method=method, headers={"Origin": FORUM, "Access-Control-Request-Method": "POST"})
    assert cors_of(r) == {}, (method, path)


def test_errors_reach_the_listed_origin_and_the_contract_still_applies(client) -> None:
    """A listed origin reads the API's errors (so the widget can say why); CORS opens no way around the body
    contract, the size limit or the CSRF rules of the pages."""
    form = client.post("/api/v1/search", data={"question": "a form post"}, headers={"Origin": FORUM})
    assert form.status_code == 400 and form.get_json()["error"]["code"] == "invalid_json"
    assert form.headers["Access-Control-Allow-Origin"] == FORUM
    empty = client.post("/api/v1/search", json={"question": " "}, headers={"Origin": FORUM})
    assert empty.status_code == 400 and empty.headers["Access-Control-Allow-Origin"] == FORUM
    big = client.post("/api/v1/search", data=b"x" * (MAX_BODY_BYTES + 1), content_type="application/json",
                      headers={"Origin": FORUM})
    assert big.status_code == 413 and big.headers["Access-Control-Allow-Origin"] == FORUM
    unknown = client.post("/api/v1/search", json={**QUESTION, "extra": 1}, headers={"Origin": FORUM})
    assert unknown.status_code == 400 and unknown.get_json()["error"]["code"] == "unknown_field"
    page = client.post("/feedback", data={"question": "q", "id": "py-rev-1", "label": "1"},
                       headers={"Origin": FORUM, "Accept": "application/json"})
    assert page.status_code == 400 and page.get_json()["error"]["code"] == "csrf_failed" and cors_of(page) == {}


def test_preflight_is_not_rate_limited_and_limits_still_apply(home) -> None:
    app = create_app({"TESTING": True, "home": str(home), "seed_bank": str(SMALL_BANK), "cors_origins": [FORUM],
                      "rate_limit_search": "3/minute"})
    try:
        c = app.test_client()
        for _ in range(5):
            assert c.options("/api/v1/search", headers=PREFLIGHT).status_code == 200
        codes = [c.post("/api/v1/search", json=QUESTION, headers={"Origin": FORUM}) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert codes[-1].headers["Access-Control-Allow-Origin"] == FORUM  # the widget can read why
        assert codes[-1].headers["Retry-After"]
    finally:
        app.extensions["dupq"].close()


def test_write_with_token_from_a_listed_origin_gets_no_cors(client) -> None:
    r = client.post("/api/v1/questions", json={"questions": [{"text": "Can I freeze cooked rice?"}]},
                    headers={**AUTH, "Origin": FORUM})
    assert r.status_code == 201 and cors_of(r) == {}


# -- each result's url ----------------------------------------------------------------------------------------------
def test_search_results_carry_the_stored_url(client) -> None:
    url = "https://forum.example/t/reverse-a-python-list/42"
    added = client.post("/api/v1/questions", json={"questions": [
        {"text": "Reverse a Python list in place, how?", "meta": {"url": url}},
        {"text": "Python list reversed without a copy?", "meta": {"url": 42}},
    ]})
    assert added.status_code == 201
    results = client.post("/api/v1/search", json={"question": "reverse a python list", "k": 8}).get_json()["results"]
    by_id = {r["id"]: r for r in results}
    assert by_id[added.get_json()["ids"][0]]["url"] == url
    assert "url" not in by_id[added.get_json()["ids"][1]]  # not a string: no url
    assert "url" not in by_id["py-rev-1"]


# -- the script ---------------------------------------------------------------------------------------------------
def test_widget_js_is_small_script_cached_briefly_and_sets_no_cookie(client) -> None:
    r = client.get("/widget.js")
    assert r.status_code == 200
    assert r.mimetype == "text/javascript"
    assert len(r.data) == len(WIDGET_JS.read_bytes()) <= 15 * 1024  # the budget: 15 kB unminified
    assert r.headers["Cache-Control"] == "public, max-age=3600"
    assert r.headers["Access-Control-Allow-Origin"] == "*" and "Access-Control-Allow-Credentials" not in r.headers
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert "Set-Cookie" not in r.headers
    assert "innerHTML" not in r.get_data(as_text=True).replace("never innerHTML", "")  # text goes in as text
    again = client.get("/widget.js", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


def test_pinned_path_is_immutable_and_matches_its_integrity(client) -> None:
    latest = client.get("/widget.js")
    pinned = client.get(latest.headers["X-Dupq-Widget"])
    assert pinned.status_code == 200 and pinned.data == latest.data
    assert pinned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    digest = hashlib.sha256(latest.data).hexdigest()[:16]
    assert latest.headers["X-Dupq-Widget"] == f"/widget/{digest}.js"
    sri = "sha384-" + base64.b64encode(hashlib.sha384(latest.data).digest()).decode()
    assert latest.headers["X-Dupq-Widget-Integrity"] == sri
    stale = client.get("/widget/0123456789abcdef.js")
    assert stale.status_code == 404 and "immutable" not in stale.headers.get("Cache-Control", "")
