"""CSRF tokens on every form and page fetch (web/csrf.py), the session cookie's attributes, and the page's
"add my question" under ``questions_need_token``."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from support import ADMIN_TOKEN, AUTH, SMALL_BANK

from web import create_app

JSON = {"Accept": "application/json"}


def plain(app) -> FlaskClient:
    """A client that sends no CSRF token unless told to (unlike conftest's CsrfClient)."""
    return FlaskClient(app, app.response_class, use_cookies=True)


def token_of(client: FlaskClient, path: str = "/") -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


@pytest.mark.parametrize(
    "path, data",
    [
        ("/feedback", {"question": "How do I reverse a list?", "id": "py-rev-1", "label": "1"}),
        ("/add", {"question": "Can I freeze cooked rice?"}),
        ("/feedback/1/undo", {}),
        ("/admin/login", {"token": ADMIN_TOKEN}),
        ("/admin/promote", {"version": "base"}),
        ("/admin/rollback", {}),
        ("/admin/train", {"max_steps": "2"}),
        ("/admin/review/label", {"question1": "a?", "question2": "b?", "label": "1"}),
        ("/admin/review/undo/1", {}),
    ],
)
def test_every_form_post_without_the_token_is_refused(app, path, data) -> None:
    c = plain(app)
    with c.session_transaction() as s:
        # a signed-in admin's browser: a cross-site form would carry the cookie
        s.update(key_id="admin-token", key="admin-token", scope="admin")
    svc = app.extensions["dupq"]
    before = (svc.count(), svc.pair_counts(), [j.id for j in svc.list_jobs()])
    r = c.post(path, data=data)
    assert r.status_code == 400 and b"CSRF" in r.data
    r = c.post(path, data=data, headers=JSON)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "csrf_failed"
    r = c.post(path, data={**data, "csrf_token": "forged"}, headers=JSON)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "csrf_failed"
    assert (svc.count(), svc.pair_counts(), [j.id for j in svc.list_jobs()]) == before


def test_the_pages_token_is_accepted_as_field_or_header(app) -> None:
    c = plain(app)
    token = token_of(c)
    r = c.post("/feedback", data={"question": "How do I reverse a list?", "id": "py-rev-1", "label": "1",
                                  "csrf_token": token}, headers=JSON)
    assert r.status_code == 201, r.get_json()
    r = c.post("/add", data={"question": "Can I freeze cooked rice?"}, headers={**JSON, "X-CSRFToken": token})
    assert r.status_code == 201, r.get_json()
    # the admin page's forms carry it too
    admin = c.get("/admin/").get_data(as_text=True)
    assert 'name="csrf_token"' in admin
    assert c.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf_token": token}).status_code == 302
    page = c.get("/admin/").get_data(as_text=True)
    assert page.count('name="csrf_token"') >= 3  # sign out, retrain, rollback (and promote per version)


def test_the_api_needs_no_csrf_token(app) -> None:
    c = plain(app)
    assert c.post("/api/v1/search", json={"question": "How do I reverse a list?"}).status_code == 200
    assert c.post("/api/v1/questions", json={"questions": [{"text": "Is it exempt?"}]}).status_code == 201
    assert c.post("/api/v1/pairs", json={"pairs": [{"question1": "a?", "question2": "b?", "label": 1}]},
                  headers=AUTH).status_code == 201


def _app(home, **settings):
    return create_app({"TESTING": True, "home": str(home), "seed_bank": str(SMALL_BANK), "admin_token": ADMIN_TOKEN,
                       "secret_key": "test", **settings})


def test_session_cookie_attributes(home) -> None:
    for settings, secure in (({}, False), ({"session_cookie_secure": True, "session_cookie_samesite": "Strict"}, True)):
        app = _app(home, **settings)
        try:
            c = plain(app)
            token = token_of(c)
            r = c.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf_token": token})
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and f"SameSite={settings.get('session_cookie_samesite', 'Lax')}" in cookie
            assert ("Secure" in cookie) is secure
        finally:
            app.extensions["dupq"].close()


def test_page_add_honours_questions_need_token(home) -> None:
    app = _app(home, questions_need_token=True)
    try:
        c = app.test_client()
        r = c.post("/add", data={"question": "Can I freeze cooked rice?"}, headers=JSON)
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
        r = c.post("/add", data={"question": "Can I freeze cooked rice?"}, follow_redirects=True)
        assert b"this needs a key of scope write or higher" in r.data
        assert app.extensions["dupq"].count() == 8
        assert c.post("/admin/login", data={"token": ADMIN_TOKEN}).status_code == 302
        r = c.post("/add", data={"question": "Can I freeze cooked rice?"}, headers=JSON)
        assert r.status_code == 201 and app.extensions["dupq"].count() == 9
    finally:
        app.extensions["dupq"].close()
