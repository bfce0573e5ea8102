"""Labelled pairs: the API, the page's feedback buttons, `dupq import-pairs`, conflict rule; admin auth."""

from __future__ import annotations

import pytest
from support import AUTH

from dupq.cli import main
from dupq.retrain import stored_pairs


def err(resp, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    if code:
        assert resp.get_json()["error"]["code"] == code


def test_post_pairs_stores_and_latest_label_wins(client, app) -> None:
    body = {
        "pairs": [
            {"question1": "How do I boil eggs?", "question2": "Egg boiling time?", "label": 1},
            {"question1": "Visa for Japan?", "question2": "How do I boil eggs?", "label": 0},
        ]
    }
    r = client.post("/api/v1/pairs", json=body, headers=AUTH)
    assert r.status_code == 201 and r.get_json() == {"added": 2, "self_pairs": 0}
    # the same pair, reversed, with the opposite label: both are kept, the latest wins for training
    flip = {"pairs": [{"question1": "Egg boiling time?", "question2": "How do I boil eggs?", "label": 0}]}
    assert client.post("/api/v1/pairs", json=flip, headers=AUTH).status_code == 201
    svc = app.extensions["dupq"]
    assert svc.store.pair_counts() == {"api": 3}
    resolved = {(p.question1, p.question2): p.label for p in stored_pairs(svc.store)}
    assert len(resolved) == 2 and 0 in resolved.values() and 1 not in resolved.values()


@pytest.mark.parametrize(
    "pairs, code",
    [
        ([{"question1": "a?", "question2": "b?", "label": 2}], "invalid_label"),
        ([{"question1": "a?", "question2": "b?", "label": True}], "invalid_label"),
        ([{"question1": "a?", "question2": "b?", "label": 1.5}], "invalid_label"),
        ([{"question1": "a?", "question2": "b?"}], "missing_field"),
        ([{"question1": "a?", "question2": "b?", "label": 1, "extra": 1}], "unknown_field"),
        ([{"question1": "", "question2": "b?", "label": 1}], "empty_question"),
        (["not an object"], "invalid_type"),
        ([], "invalid_type"),
    ],
)
def test_post_pairs_validation(client, app, pairs, code) -> None:
    err(client.post("/api/v1/pairs", json={"pairs": pairs}, headers=AUTH), 400, code)
    assert app.extensions["dupq"].store.pair_counts() == {}


def test_self_pairs_are_counted_not_stored(client, app) -> None:
    """A pair of a question with itself (after whitespace collapse) is well formed but says nothing: like
    `dupq import-pairs`, the API drops and counts it (a 400 would refuse a request the contract accepts)."""
    body = {"pairs": [{"question1": "same?", "question2": " same? ", "label": 1},
                      {"question1": "a?", "question2": "b?", "label": 0}]}
    r = client.post("/api/v1/pairs", json=body, headers=AUTH)
    assert r.status_code == 201 and r.get_json() == {"added": 1, "self_pairs": 1}
    assert app.extensions["dupq"].store.pair_counts() == {"api": 1}


def test_write_endpoints_need_the_token(client) -> None:
    pair = {"pairs": [{"question1": "a?", "question2": "b?", "label": 1}]}
    err(client.post("/api/v1/pairs", json=pair), 401, "unauthorized")
    err(client.post("/api/v1/train", json={}), 401)
    err(client.post("/api/v1/models/base/promote"), 401)
    err(client.delete("/api/v1/jobs/xyz"), 401)
    assert client.get("/api/v1/models").status_code == 200  # reads stay open


def test_without_a_configured_token_write_endpoints_are_disabled(home) -> None:
    from support import SMALL_BANK

    from web import create_app

    app = create_app(
        {"TESTING": True, "home": str(home), "seed_bank": str(SMALL_BANK), "admin_token": None}
    )
    try:
        c = app.test_client()
        err(c.post("/api/v1/pairs", json={"pairs": []}), 403, "admin_disabled")
        err(c.delete("/api/v1/questions/py-sort"), 403, "admin_disabled")
        assert c.get("/admin/").status_code == 403
        # a key presented where none exists is an unknown key (web/auth.py): 401, on any route
        err(c.post("/api/v1/pairs", json={"pairs": []}, headers=AUTH), 401, "unauthorized")
    finally:
        app.extensions["dupq"].close()


def test_feedback_buttons_store_pairs_with_model_version(client, app) -> None:
    html = client.get("/?q=How+can+I+reverse+a+list+in+Python%3F&k=2").get_data(as_text=True)
    assert html.count('name="label" value="1"') == 2 and html.count('name="label" value="0"') == 2  # same / different
    r = client.post(
        "/feedback",
        data={"question": "How can I reverse a list in Python?", "id": "py-rev-1", "label": "1"},
        follow_redirects=True,
    )
    assert r.status_code == 200 and b"Thanks" in r.data
    client.post("/feedback", data={"question": "How can I reverse a list in Python?", "id": "py-sort", "label": "0"})
    bad = client.post("/feedback", data={"question": "x?", "id": "nope", "label": "1"}, follow_redirects=True)
    assert b"no question with id" in bad.data
    pairs = app.extensions["dupq"].store.pairs()
    assert [(p.question2, p.label, p.source, p.model_version) for p in pairs] == [
        ("How do I reverse a list in Python?", 1, "feedback", "base"),
        ("How do I sort a list of numbers in Python?", 0, "feedback", "base"),
    ]


def test_import_pairs_cli(runner, tmp_path) -> None:
    f = tmp_path / "pairs.tsv"
    f.write_text("question1\tquestion2\tis_duplicate\na?\tb?\t1\na?\tb?\t1\nc?\tc?\t0\nb?\ta?\t0\n")
    r = runner.invoke(main, ["import-pairs", str(f)])
    assert r.exit_code == 0, r.output
    assert "added 1 pairs" in r.output and "1 self-pairs" in r.output and "1 conflicting" in r.output
    bad = tmp_path / "bad.tsv"
    bad.write_text("question1\tquestion2\tis_duplicate\na?\tb?\t7\n")
    r = runner.invoke(main, ["import-pairs", str(bad)])
    assert r.exit_code == 1 and "bad.tsv:2" in r.output


def test_admin_page_login_and_status(client) -> None:
    assert client.get("/admin/").status_code == 401
    client.post("/admin/login", data={"token": "wrong"})
    assert client.get("/admin/").status_code == 401
    client.post("/admin/login", data={"token": AUTH["Authorization"].split()[1]})
    page = client.get("/admin/")
    assert page.status_code == 200 and b"Model versions" in page.data and b"Retrain on stored pairs" in page.data
    s = client.get("/admin/status.json").get_json()
    assert s["model"] == "base" and s["questions"] and [v["version"] for v in s["versions"]] == ["base"]


def test_imported_and_api_pairs_share_one_key(svc, tmp_path) -> None:
    from dupq.data import read_pairs
    from dupq.text import normalize_question, pair_key

    f = tmp_path / "pairs.tsv"
    long = "x" * 1200
    f.write_text(
        "question1\tquestion2\tis_duplicate\n"
        "How  do I   boil an egg?\t Best way to boil eggs? \t1\n"
        f"{long}\tfine?\t0\n"
    )
    r = svc.import_pairs(f)
    assert (r["added"], r["invalid"]) == (1, 1)  # the over-long row is dropped and counted, not a crash
    assert read_pairs(f).invalid == 1
    svc.add_pairs([{"question1": "Best way to boil eggs?", "question2": "How do I boil an egg?", "label": 1}])
    stored = svc.store.pairs()
    keys = {pair_key(p.question1, p.question2) for p in stored}
    assert len(stored) == 2 and keys == {pair_key("How do I boil an egg?", "Best way to boil eggs?")}
    assert len(stored_pairs(svc.store)) == 1  # training keeps one pair
    assert normalize_question(" How  do I\tboil an egg?\n") == "How do I boil an egg?"


def test_stored_sources_group_the_kept_labels_by_source(app) -> None:
    # the worker's retrain passes these to the recipe's selection: one retrieval check per source
    from dupq.data import Pair
    from dupq.retrain import stored_sources

    store = app.extensions["dupq"].store
    store.add_pair("How do I boil eggs?", "Egg boiling time?", 0, source="feedback")
    store.add_pair("Egg boiling time?", "How do I boil eggs?", 1, source="review")  # a correction: review's label
    store.add_pair("Visa for Japan?", "Japan visa rules?", 1, source="feedback")
    store.add_pair("Visa for Japan?", "Japan visa rules?", 1, source="api")  # a repeat keeps the first source
    pairs = stored_pairs(store)
    by_source = stored_sources(store, pairs)
    assert {k: sorted(p.question1 for p in v) for k, v in by_source.items()} == {
        "review": ["Egg boiling time?"], "feedback": ["Visa for Japan?"]}
    assert stored_sources(store, [Pair("Visa for Japan?", "Japan visa rules?", 1)]) == {
        "feedback": [Pair("Visa for Japan?", "Japan visa rules?", 1)]}
