"""The search page renders ranked results, marks duplicates, escapes stored HTML, and adds questions."""

from __future__ import annotations


def test_form_without_query(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and b'name="q"' in r.data and b"8 stored questions" in r.data


def test_results_ranked_with_duplicate_mark(client) -> None:
    html = client.get("/?q=How+can+I+reverse+a+list+in+Python%3F&k=3").get_data(as_text=True)
    first = html.index("How do I reverse a list in Python?")
    assert first < html.index("flip the order of items")
    assert "likely duplicate" in html and html.count("<li ") == 3
    assert "Mine is different — add it" in html  # the ask flow: likely duplicates found


def test_stored_html_is_escaped(client) -> None:
    client.post(
        "/api/v1/questions", json={"questions": [{"text": "<script>alert(1)</script> How do I reverse a list?"}]}
    )
    html = client.get("/?q=reverse+a+list").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_bad_query_shows_error_not_traceback(client) -> None:
    r = client.get("/?q=" + "x" * 1200)
    assert r.status_code == 200 and b"the limit is 1000" in r.data


def test_add_button_stores_the_question(client) -> None:
    r = client.post("/add", data={"question": "Can I freeze cooked rice?"}, follow_redirects=True)
    assert r.status_code == 200 and b"Added your question" in r.data
    assert client.get("/healthz").get_json()["questions"] == 9
    r = client.post("/add", data={"question": ""}, follow_redirects=True)
    assert b"must not be empty" in r.data
