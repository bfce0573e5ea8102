"""In-place feedback on the search page: JSON answers for fetch, redirects for forms, undo of exactly one pair."""

from __future__ import annotations

JSON = {"Accept": "application/json"}


def _pairs(client) -> list[dict]:
    store = client.application.extensions["dupq"].store
    return [store.get_pair(r[0]) for r in store.query("SELECT seq FROM pairs ORDER BY seq")]


def test_feedback_answers_json_with_the_pair_and_its_model_version(client) -> None:
    data = {"question": "How can I flip a list?", "id": "py-rev-1", "label": "1"}
    r = client.post("/feedback", data=data, headers=JSON)
    assert r.status_code == 201
    pair = r.get_json()["pair"]
    assert pair["source"] == "feedback" and pair["label"] == 1 and pair["model_version"] == "base"
    assert pair["question2"] == "How do I reverse a list in Python?"
    assert [p["id"] for p in _pairs(client)] == [pair["id"]]


def test_undo_removes_only_that_pair_and_only_for_its_browser(client, app) -> None:
    kept = client.post("/feedback", data={"question": "flip a list", "id": "py-rev-1", "label": "1"}, headers=JSON)
    undone = client.post("/feedback", data={"question": "flip a list", "id": "py-sort", "label": "0"}, headers=JSON)
    kept_id, undone_id = kept.get_json()["pair"]["id"], undone.get_json()["pair"]["id"]
    other = app.test_client()  # another browser: no session, so no undo of someone else's label
    assert other.post(f"/feedback/{undone_id}/undo", headers=JSON).status_code == 404
    r = client.post(f"/feedback/{undone_id}/undo", headers=JSON)
    assert r.status_code == 200 and r.get_json()["undone"] == undone_id
    assert [p["id"] for p in _pairs(client)] == [kept_id]
    assert client.post(f"/feedback/{undone_id}/undo", headers=JSON).status_code == 404  # already gone


def test_undo_never_deletes_labels_of_other_sources(client) -> None:
    svc = client.application.extensions["dupq"]
    imported = svc.add_pair("a question here", "another question", 1, source="import")["id"]
    with client.session_transaction() as s:
        s["pairs"] = [imported]  # even a forged claim on it
    assert client.post(f"/feedback/{imported}/undo", headers=JSON).status_code == 404
    assert svc.store.get_pair(imported) is not None


def test_feedback_form_without_javascript_redirects_and_offers_undo(client) -> None:
    data = {"question": "flip a list", "id": "py-rev-1", "label": "1"}
    r = client.post("/feedback", data=data, follow_redirects=True)
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "your feedback will teach" in html and "Undo that feedback" in html
    pid = _pairs(client)[0]["id"]
    r = client.post(f"/feedback/{pid}/undo", data={"question": "flip a list"}, follow_redirects=True)
    assert b"Feedback undone." in r.data and _pairs(client) == []


def test_bad_feedback_is_a_json_error(client) -> None:
    r = client.post("/feedback", data={"question": "flip a list", "id": "nope", "label": "1"}, headers=JSON)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    r = client.post("/feedback", data={"question": "flip a list", "id": "py-rev-1", "label": "2"}, headers=JSON)
    assert r.status_code == 400


def test_mine_is_different_adds_the_question_and_a_negative_per_likely_duplicate(client) -> None:
    r = client.post("/add", data={"question": "How do I reverse a tuple?", "dup": ["py-rev-1", "py-rev-2"]},
                    headers=JSON)
    assert r.status_code == 201
    body = r.get_json()
    assert body["question"]["text"] == "How do I reverse a tuple?"
    pairs = _pairs(client)
    expected = [(0, "feedback", "How do I reverse a tuple?")] * 2
    assert [(p["label"], p["source"], p["question1"]) for p in pairs] == expected
    assert client.get("/healthz").get_json()["questions"] == 9
    r = client.post("/add", data={"question": "Another one", "dup": ["missing-id"]}, headers=JSON)
    assert r.status_code == 404 and client.get("/healthz").get_json()["questions"] == 9  # nothing half-done


def test_question_page_shows_the_question_and_its_neighbours(client) -> None:
    html = client.get("/q/py-rev-1").get_data(as_text=True)
    assert "<h1>How do I reverse a list in Python?</h1>" in html and "flip the order of items" in html
    assert client.get("/q/nope").status_code == 404


def test_searches_are_remembered_for_the_review_queue(client, app) -> None:
    for q in ("How do I rev", "How do I reverse a li", "How do I reverse a list?"):
        client.post("/api/v1/search", json={"question": q, "k": 3})
    client.get("/?q=free+disk+space")
    recent = app.extensions["dupq_recent"].items()
    assert [s["question"] for s in recent] == ["How do I reverse a list?", "free disk space"]  # prefixes folded
    assert len(recent[0]["results"]) == 3 and recent[0]["version"] == "base"


def test_feedback_keeps_the_version_that_showed_the_result(client) -> None:
    svc = client.application.extensions["dupq"]
    from support import tiny_version

    shown_by = tiny_version.install(svc)  # known, though not serving
    data = {"question": "flip a list", "id": "py-rev-1", "label": "1", "model": shown_by}
    assert client.post("/feedback", data=data, headers=JSON).get_json()["pair"]["model_version"] == shown_by
    data["model"] = "no-such-version"
    assert client.post("/feedback", data=data, headers=JSON).get_json()["pair"]["model_version"] == "base"
