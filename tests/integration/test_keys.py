"""API keys with scopes and the audit log (web/auth.py, dupq/access.py, dupq/storage/keys.py, dupq/storage/audit.py).

The scope test is generated from the app's route table: every route must declare the scope it needs
(``web.auth.requires``), and a key of each scope, and no key, is tried against every route and method: allowed
exactly where the scope allows (search < write < moderate < admin), 401 / 403 elsewhere. Requests are built so that
an allowed one changes nothing (an unknown id, an invalid body): the key check runs before anything else.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from support import ADMIN_TOKEN, SMALL_BANK

from dupq.access import SCOPES, allows
from dupq.cli import main

#: Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
BOTH_BACKENDS = True
KEY = re.compile(r"^dupq_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")
JSON = {"Accept": "application/json"}


def make_app(home: Path, db_url: str | None, **settings):
    from web import create_app

    return create_app({"TESTING": True, "home": str(home), "database_url": db_url, "seed_bank": str(SMALL_BANK),
                       "admin_token": ADMIN_TOKEN, "secret_key": "test", "rate_limit_search": "",
                       "rate_limit_write": "", **settings})


@pytest.fixture
def app(home, db_url):
    app = make_app(home, db_url)
    yield app
    app.extensions["dupq"].close()


@pytest.fixture
def keys(app) -> dict[str, str]:
    """One key per scope, named after it."""
    access = app.extensions["dupq"].access
    return {scope: access.create_key(f"k-{scope}", scope, actor="setup")[1] for scope in SCOPES}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the route table -------------------------------------------------------------------------------------------
#: Values of the routes' arguments: unknown ids, so an allowed request finds nothing to act on.
ARGS = {"qid": "no-such-question", "job_id": "no-such-job", "version": "no-such-version", "pair_id": 999999,
        "name": "no-such-plot", "filename": "dupq.css",
        "digest": "0000000000000000"}
#: Bodies an allowed request is refused for (400 / a flash), after the key check: nothing is written or started.
FORMS = {"admin.train": {"max_steps": "0"}, "admin.promote": {"version": "no-such-version"},
         "admin.login": {"token": "wrong"}, "pages.feedback": {"label": "7"}, "pages.add": {"question": " "},
         "admin.review.label": {"label": "7"}}
#: Flask's own routes: open.
FLASK_ROUTES = {"static"}


def routes(app) -> list[tuple[str, str, str, str | None]]:
    """``(endpoint, method, url, scope needed)`` of every route of ``app``; fails on a route that declares none."""
    from web.auth import needed

    out = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            view = app.view_functions[rule.endpoint]
            if rule.endpoint in FLASK_ROUTES:
                declared = None
            else:
                assert hasattr(view, "dupq_scope"), (
                    f"route {rule.rule} ({rule.endpoint}) declares no scope: decorate it with web.auth.requires")
                declared = needed(view.dupq_scope)
            url = rule.build({a: ARGS[a] for a in rule.arguments}, append_unknown=False)[1]
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                out.append((rule.endpoint, method, url, declared))
    return out


def call(client, endpoint: str, method: str, url: str, headers: dict[str, str]):
    if method == "GET":
        return client.get(url, headers=headers)
    if url.startswith("/api/"):  # an invalid body: 400 after the key check
        return client.open(url, method=method, json={"not a field": 1}, headers=headers)
    return client.open(url, method=method, data=FORMS.get(endpoint, {}), headers={**headers, **JSON})


def test_every_route_allows_exactly_the_scopes_it_declares(app, keys) -> None:
    table = routes(app)
    assert len(table) >= 25 and {e for e, *_ in table} >= {"api.search", "api.audit_log", "admin.index",
                                                             "admin.review.label", "pages.add"}
    declared = {(e, m): s for e, m, _, s in table}
    assert declared[("api.search", "POST")] is None and declared[("api.delete_question", "DELETE")] == "moderate"
    assert declared[("api.add_pairs", "POST")] == "write" and declared[("api.train", "POST")] == "admin"
    assert declared[("admin.review.label", "POST")] == "moderate" and declared[("api.audit_log", "GET")] == "admin"
    failures = []
    for who in (None, *SCOPES):
        client = app.test_client()
        headers = bearer(keys[who]) if who else {}
        for endpoint, method, url, scope in table:
            status = call(client, endpoint, method, url, headers).status_code
            if scope is None or allows(who, scope):
                ok = status not in (401, 403)
            else:
                ok = status == (401 if who is None else 403)
            if not ok:
                failures.append(f"{who or 'no key'} {method} {url} (needs {scope}): {status}")
    assert not failures, "\n".join(failures)
    svc = app.extensions["dupq"]
    assert svc.count() == 8 and svc.pair_counts() == {} and svc.list_jobs() == []  # allowed calls changed nothing


def test_questions_need_token_maps_to_the_write_scope(home, db_url) -> None:
    app = make_app(home, db_url, questions_need_token=True)
    try:
        access = app.extensions["dupq"].access
        search, write = (access.create_key(f"k-{s}", s, actor="setup")[1] for s in ("search", "write"))
        c = app.test_client()
        body = {"questions": [{"text": "Can I freeze cooked rice?"}]}
        assert c.post("/api/v1/questions", json=body).status_code == 401
        assert c.post("/api/v1/questions", json=body, headers=bearer(search)).status_code == 403
        assert c.post("/api/v1/questions", json=body, headers=bearer(write)).status_code == 201
        r = c.post("/add", data={"question": "How long do boiled eggs keep?"}, headers={**JSON, **bearer(write)})
        assert r.status_code == 201
        spec = c.get("/api/v1/openapi.json").get_json()
        assert spec["paths"]["/api/v1/questions"]["post"]["security"] == [{"bearer": ["write"]}]
        assert [(e.key, e.action) for e in access.audit_log()][:2] == [("k-write", "questions.add")] * 2
    finally:
        app.extensions["dupq"].close()


# -- unknown and revoked keys ------------------------------------------------------------------------------------
def test_an_unknown_or_revoked_key_is_refused_everywhere_at_once(app, keys) -> None:
    c = app.test_client()
    search = {"question": "How do I reverse a list in Python?"}
    assert c.post("/api/v1/search", json=search).status_code == 200  # open without a key
    for wrong in ("nope", keys["admin"][:-1] + "x", "dupq_000000000000_" + "a" * 43, ADMIN_TOKEN + "x"):
        r = c.post("/api/v1/search", json=search, headers=bearer(wrong))
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized", wrong
    assert c.get("/healthz", headers=bearer("nope")).status_code == 401
    assert c.get("/", headers=bearer("nope")).status_code == 401
    assert c.get("/api/v1/audit", headers=bearer(keys["admin"])).status_code == 200
    app.extensions["dupq"].access.revoke_key("k-admin", actor="test")
    assert c.get("/api/v1/audit", headers=bearer(keys["admin"])).status_code == 401
    assert c.post("/api/v1/search", json=search, headers=bearer(keys["admin"])).status_code == 401
    assert c.get("/api/v1/audit", headers=bearer(ADMIN_TOKEN)).status_code == 200  # DUPQ_ADMIN_TOKEN still works


def test_a_signed_in_session_ends_when_its_key_is_revoked(app, keys) -> None:
    c = app.test_client()
    assert c.post("/admin/login", data={"token": keys["write"]}).status_code == 302  # below moderate: refused
    assert c.get("/admin/review").status_code == 401
    r = c.post("/admin/login", data={"token": keys["moderate"]})
    assert r.status_code == 302 and r.headers["Location"].endswith("/admin/review")
    assert c.get("/admin/review").status_code == 200
    assert c.get("/admin/").status_code == 403  # the admin page needs admin
    assert c.get("/admin/review.json").status_code == 200
    app.extensions["dupq"].access.revoke_key("k-moderate", actor="test")
    r = c.get("/admin/review")
    assert r.status_code == 401 and b'name="token"' in r.data
    with c.session_transaction() as s:
        assert "key" not in s and "key_id" not in s
    assert c.post("/admin/login", data={"token": keys["admin"], "next": "//evil.example/x"}).headers[
        "Location"].endswith("/admin/")  # never an open redirect
    assert c.get("/admin/").status_code == 200


def test_a_key_can_be_recreated_under_its_revoked_name(app, keys) -> None:
    from dupq.errors import ConflictError, ValidationError

    access = app.extensions["dupq"].access
    with pytest.raises(ConflictError):
        access.create_key("k-write", "write", actor="test")
    with pytest.raises(ValidationError):
        access.create_key("admin-token", "admin", actor="test")
    with pytest.raises(ValidationError):
        access.create_key("x", "root", actor="test")
    access.revoke_key("k-write", actor="test")
    _, again = access.create_key("k-write", "write", actor="test")
    c = app.test_client()
    pair = {"pairs": [{"question1": "a question?", "question2": "another one?", "label": 1}]}
    assert c.post("/api/v1/pairs", json=pair, headers=bearer(keys["write"])).status_code == 401
    assert c.post("/api/v1/pairs", json=pair, headers=bearer(again)).status_code == 201
    assert [(k.name, k.active) for k in access.list_keys() if k.name == "k-write"] == [("k-write", False),
                                                                                      ("k-write", True)]


def test_origin_allow_list_and_per_key_rate_limit(home, db_url) -> None:
    app = make_app(home, db_url)
    try:
        access = app.extensions["dupq"].access
        _, forum = access.create_key("forum", "search", actor="setup", origins=["https://forum.example"],
                                     rate_limit="3/minute")
        _, other = access.create_key("other", "search", actor="setup")
        c = app.test_client()
        body = {"question": "How do I boil an egg?", "k": 1}
        assert c.post("/api/v1/search", json=body, headers={**bearer(forum), "Origin": "https://forum.example"}
                      ).status_code == 200
        r = c.post("/api/v1/search", json=body, headers={**bearer(forum), "Origin": "https://evil.example"})
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "origin_not_allowed"
        assert c.post("/api/v1/search", json=body, headers=bearer(forum)).status_code == 200  # no Origin: a server
        assert c.post("/api/v1/search", json=body, headers=bearer(forum)).status_code == 200
        assert c.post("/api/v1/search", json=body, headers=bearer(forum)).status_code == 429  # its 3/minute
        assert c.post("/api/v1/search", json=body, headers=bearer(other)).status_code == 200  # counted per key
        assert c.post("/api/v1/search", json=body).status_code == 200
    finally:
        app.extensions["dupq"].close()


# -- the audit log -------------------------------------------------------------------------------------------------
def test_the_audit_log_holds_one_entry_per_action_with_its_key(home, db_url) -> None:
    app = make_app(home, db_url)
    svc = app.extensions["dupq"]
    try:
        access = svc.access
        _, alice = access.create_key("alice", "moderate", actor="cli:root")
        _, bot = access.create_key("bot", "write", actor="cli:root")
        _, boss = access.create_key("boss", "admin", actor="cli:root")
        c = app.test_client()
        pair = {"pairs": [{"question1": "How do I boil an egg?", "question2": "Boiling eggs: how?", "label": 1}]}
        assert c.post("/api/v1/pairs", json=pair, headers=bearer(bot)).status_code == 201
        assert c.delete("/api/v1/questions/py-sort", headers=bearer(alice)).status_code == 200
        first = c.get("/admin/review.json", headers=bearer(alice)).get_json()["pairs"][0]
        r = c.post("/admin/review/label", data={"question1": first["question1"], "question2": first["question2"],
                                                "label": "1"}, headers={**JSON, **bearer(alice)})
        pair_id = r.get_json()["pair"]["id"]
        assert c.post(f"/admin/review/undo/{pair_id}", headers={**JSON, **bearer(alice)}).status_code == 200
        assert c.post("/api/v1/models/base/promote", headers=bearer(boss)).status_code == 200
        assert c.post("/admin/login", data={"token": boss}).status_code == 302  # the page's session acts as boss
        assert c.post("/admin/rollback").status_code == 302  # nothing to roll back to: refused, not recorded
        # refused actions leave no entry
        assert c.delete("/api/v1/questions/py-rev-1", headers=bearer(bot)).status_code == 403
        assert c.delete("/api/v1/questions/no-such", headers=bearer(alice)).status_code == 404
        access.revoke_key("bot", actor="cli:root")
        svc.audit("carol", "question.close", "q1 -> q2")  # what another feature records through DupQ.audit
        expected = [
            ("cli:root", "key.create", "alice (moderate)"),
            ("cli:root", "key.create", "bot (write)"),
            ("cli:root", "key.create", "boss (admin)"),
            ("bot", "pairs.add", "1 pairs (source api)"),
            ("alice", "question.delete", "py-sort"),
            ("alice", "review.label", f"pair {pair_id}: same"),
            ("alice", "review.undo", f"pair {pair_id}"),
            ("boss", "model.promote", "base"),
            ("cli:root", "key.revoke", "bot (write)"),
            ("carol", "question.close", "q1 -> q2"),
        ][::-1]
        got = c.get("/api/v1/audit", headers=bearer(boss)).get_json()
        assert [(e["key"], e["action"], e["object"]) for e in got["entries"]] == expected
        assert got["next_before"] is None and all(set(e) == {"id", "at", "key", "action", "object"}
                                                  for e in got["entries"])
        page1 = c.get("/api/v1/audit?limit=4", headers=bearer(boss)).get_json()
        page2 = c.get(f"/api/v1/audit?limit=4&before={page1['next_before']}", headers=bearer(boss)).get_json()
        assert [e["action"] for e in page1["entries"] + page2["entries"]] == [a for _, a, _ in expected[:8]]
        assert c.get("/api/v1/audit?limit=0", headers=bearer(boss)).status_code == 400
        assert c.get("/api/v1/audit", headers=bearer(alice)).status_code == 403
        page = c.get("/admin/").get_data(as_text=True)
        assert "Audit log" in page and "question.close" in page and "alice" in page
        assert '<code id="me">boss</code>' in page
    finally:
        svc.close()
    # kept through a restart; append-only in the database itself
    app = make_app(home, db_url)
    svc = app.extensions["dupq"]
    try:
        entries = svc.access.audit_log()
        assert [(e.key, e.action, e.object) for e in entries] == expected
        with pytest.raises(Exception, match="append-only"):
            with svc.store._transaction() as conn:
                conn.execute("UPDATE audit SET key = 'mallory'")
        with pytest.raises(Exception, match="append-only"):
            with svc.store._transaction() as conn:
                conn.execute("DELETE FROM audit")
        assert len(svc.access.audit_log()) == len(expected)
    finally:
        svc.close()


# -- the command line --------------------------------------------------------------------------------------------
def test_cli_creates_lists_and_revokes_keys_and_stores_only_a_hash(runner, home, db_url) -> None:
    r = runner.invoke(main, ["keys", "create", "--scope", "moderate", "--name", "alice"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert KEY.match(token), r.stdout
    secret = token.rsplit("_", 1)[-1] if token.count("_") == 2 else token.split("_", 2)[2]
    r = runner.invoke(main, ["keys", "create", "--scope", "search", "--name", "forum",
                             "--origin", "https://forum.example", "--rate-limit", "100/minute"])
    assert r.exit_code == 0 and KEY.match(r.stdout.strip().splitlines()[-1])
    bad = runner.invoke(main, ["keys", "create", "--scope", "search", "--name", "x", "--rate-limit", "often"])
    assert bad.exit_code == 1 and "not a rate limit" in bad.output
    bad = runner.invoke(main, ["keys", "create", "--scope", "search", "--name", "x", "--origin", "forum.example"])
    assert bad.exit_code == 1 and "origin" in bad.output
    assert runner.invoke(main, ["keys", "create", "--scope", "root", "--name", "x"]).exit_code == 2
    listed = runner.invoke(main, ["keys", "list"])
    assert listed.exit_code == 0 and "alice" in listed.output and "https://forum.example" in listed.output
    assert secret not in listed.output
    # only a hash is stored: the secret is nowhere in the database
    if db_url is None:
        stored = b"".join(p.read_bytes() for p in home.glob("dupq.sqlite3*"))
        assert b"alice" in stored and secret.encode() not in stored and token.encode() not in stored
    else:
        import psycopg

        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT * FROM api_keys").fetchall()
        assert len(rows) == 2 and secret not in repr(rows)
    app = make_app(home, db_url)
    try:
        c = app.test_client()
        assert c.get("/admin/review.json", headers=bearer(token)).status_code == 200
        r = runner.invoke(main, ["keys", "revoke", "alice"])
        assert r.exit_code == 0 and "revoked key 'alice'" in r.output
        assert c.get("/admin/review.json", headers=bearer(token)).status_code == 401  # the running app, at once
    finally:
        app.extensions["dupq"].close()
    assert runner.invoke(main, ["keys", "revoke", "alice"]).exit_code == 1
    assert "alice" not in runner.invoke(main, ["keys", "list"]).output
    assert "alice" in runner.invoke(main, ["keys", "list", "--all"]).output
    log = runner.invoke(main, ["audit"])
    assert log.exit_code == 0
    lines = log.output.strip().splitlines()
    assert "key.revoke" in lines[0] and "alice (moderate)" in lines[0] and "cli:" in lines[0] and len(lines) == 3


# -- several nodes on one PostgreSQL database ----------------------------------------------------------------------
def test_a_revoked_key_is_refused_at_once_on_every_node(tmp_path, pg_database) -> None:
    nodes = [make_app(tmp_path / f"node{i}", pg_database) for i in range(2)]
    try:
        _, token = nodes[0].extensions["dupq"].access.create_key("alice", "moderate", actor="test")
        clients = [n.test_client() for n in nodes]
        assert [c.get("/admin/review.json", headers=bearer(token)).status_code for c in clients] == [200, 200]
        assert clients[1].post("/admin/login", data={"token": token}).status_code == 302
        assert clients[1].get("/admin/review").status_code == 200
        nodes[0].extensions["dupq"].access.revoke_key("alice", actor="test")  # on node 0
        assert [c.get("/admin/review.json", headers=bearer(token)).status_code for c in clients] == [401, 401]
        assert clients[1].get("/admin/review").status_code == 401  # node 1's signed-in session ended too
    finally:
        for n in nodes:
            n.extensions["dupq"].close()


def test_the_older_auth_flag_of_an_operation_means_admin() -> None:
    from web.contract import Error, Operation

    assert Operation("x", "x", {200: (Error, "")}, auth=True).needed_scope() == "admin"
    assert Operation("x", "x", {200: (Error, "")}, auth=lambda: False).needed_scope() is None
    assert Operation("x", "x", {200: (Error, "")}, scope="moderate", auth=True).needed_scope() == "moderate"


def test_only_a_hash_is_kept_and_keys_verify() -> None:
    from dupq.storage.keys import hash_secret, parse_token, verify_secret

    token = "dupq_0123456789ab_" + "s" * 43
    stored = hash_secret(parse_token(token)[1])
    assert stored.startswith("scrypt$") and "s" * 43 not in stored
    assert verify_secret("s" * 43, stored) and not verify_secret("s" * 42 + "t", stored)
    assert hash_secret("s" * 43) != stored  # a salt per key


def test_sqlite_audit_triggers_refuse_changes(tmp_path) -> None:
    from dupq.storage.sqlite.store import QuestionStore

    store = QuestionStore(tmp_path / "db.sqlite3")
    store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    conn.execute("INSERT INTO audit(at, key, action, object) VALUES ('t', 'k', 'a.b', 'o')")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()
