"""One answer per duplicate cluster (issue 25, Required 3), on both backends: closing a question as a duplicate of
its canonical question (chains, cycles, reopening), searches that answer each cluster once, imports whose duplicate
links become canonical links, and the API's endpoints.
"""

from __future__ import annotations

import pytest
from support import AUTH, FIXTURES

from dupq.bank import bank_groups, load_default_bank
from dupq.config import Settings
from dupq.errors import ConflictError, NotFoundError
from dupq.service import DupQ

BOTH_BACKENDS = True

SE = FIXTURES / "sources" / "askubuntu.com"


def pairs_of(svc: DupQ, source: str) -> list[tuple[str, str, int]]:
    return [(p.question1, p.question2, p.label) for p in svc.store.pairs() if p.source == source]


def add(svc: DupQ, *texts: tuple[str, str]) -> None:
    svc.add_questions([{"id": i, "text": t} for i, t in texts])


# -- closing, chains, cycles, reopening ----------------------------------------------------------------------------
def test_close_stores_link_and_pair_and_reopen_removes_exactly_them(svc: DupQ) -> None:
    rev1, rev2 = svc.get("py-rev-1").text, svc.get("py-rev-2").text
    # A person's label of the same pair, from another source: closing and reopening never touch it.
    svc.add_pairs([{"question1": rev2, "question2": rev1, "label": 1}], source="api")
    assert svc.question("py-rev-2")["duplicate_of"] is None
    out = svc.close_as_duplicate("py-rev-2", "py-rev-1")
    assert out["id"] == "py-rev-2" and out["duplicate_of"] == "py-rev-1" and out["closed"] is True
    assert svc.question("py-rev-2")["duplicate_of"] == "py-rev-1"
    assert svc.question("py-rev-1")["duplicate_of"] is None
    assert pairs_of(svc, "canonical") == [(rev2, rev1, 1)]
    assert svc.store.get_pair(out["pair_id"])["source"] == "canonical"
    # Closing again onto the same canonical question changes nothing.
    again = svc.close_as_duplicate("py-rev-2", "py-rev-1")
    assert again["closed"] is False and again["pair_id"] == out["pair_id"]
    assert len(pairs_of(svc, "canonical")) == 1 and svc.duplicate_count() == 1
    back = svc.reopen("py-rev-2")
    assert back == {"id": "py-rev-2", "duplicate_of": None, "reopened_from": "py-rev-1", "pair_removed": out["pair_id"]}
    assert svc.question("py-rev-2")["duplicate_of"] is None and svc.duplicate_count() == 0
    assert pairs_of(svc, "canonical") == [] and pairs_of(svc, "api") == [(rev2, rev1, 1)]
    with pytest.raises(ConflictError) as e:
        svc.reopen("py-rev-2")
    assert e.value.code == "not_duplicate"


def test_chains_resolve_to_their_end(svc: DupQ) -> None:
    # A -> B, then B -> C: A answers with C (its chain's end); D closed onto A (closed) links straight to C.
    svc.close_as_duplicate("py-rev-2", "py-rev-1")  # A=py-rev-2, B=py-rev-1
    svc.close_as_duplicate("py-rev-1", "py-sort")  # B -> C=py-sort
    assert svc.question("py-rev-2")["duplicate_of"] == "py-sort"
    assert svc.question("py-rev-1")["duplicate_of"] == "py-sort"
    d = svc.close_as_duplicate("ck-egg", "py-rev-2")
    assert d["duplicate_of"] == "py-sort"
    assert svc.store.canonical_link("ck-egg").target_id == "py-sort"  # stored to the end, not to py-rev-2
    assert svc.store.canonical_of(["py-rev-2", "py-rev-1", "ck-egg", "py-sort"]) == {
        "py-rev-2": "py-sort", "py-rev-1": "py-sort", "ck-egg": "py-sort"}
    # The closed question's own pair is with its chain's end at the time: (ck-egg, py-sort).
    egg, sort = svc.get("ck-egg").text, svc.get("py-sort").text
    assert (egg, sort, 1) in pairs_of(svc, "canonical")
    # Reopening the middle: A is B's duplicate again, B is open.
    svc.reopen("py-rev-1")
    assert svc.question("py-rev-2")["duplicate_of"] == "py-rev-1"
    assert svc.question("py-rev-1")["duplicate_of"] is None
    assert svc.question("ck-egg")["duplicate_of"] == "py-sort"


def test_cycles_and_conflicts_are_refused_and_write_nothing(svc: DupQ) -> None:
    svc.close_as_duplicate("py-rev-2", "py-rev-1")
    svc.close_as_duplicate("py-sort", "py-rev-2")  # -> py-rev-1
    before = (svc.store.pairs(), svc.duplicate_count())
    for qid, canonical in [("py-rev-1", "py-rev-2"), ("py-rev-1", "py-sort"), ("ck-egg", "ck-egg")]:
        with pytest.raises(ConflictError) as e:
            svc.close_as_duplicate(qid, canonical)
        assert e.value.code == "duplicate_cycle" and e.value.status == 409, (qid, canonical)
    with pytest.raises(ConflictError) as e:
        svc.close_as_duplicate("py-rev-2", "ck-egg")  # closed onto another one already
    assert e.value.code == "already_duplicate"
    for qid, canonical in [("nope", "py-rev-1"), ("py-rev-1", "nope")]:
        with pytest.raises(NotFoundError):
            svc.close_as_duplicate(qid, canonical)
    with pytest.raises(NotFoundError):
        svc.reopen("nope")
    assert (svc.store.pairs(), svc.duplicate_count()) == before


def test_deleting_a_canonical_question_reopens_its_duplicates(svc: DupQ) -> None:
    svc.close_as_duplicate("py-rev-2", "py-rev-1")
    svc.delete("py-rev-1")
    assert svc.question("py-rev-2")["duplicate_of"] is None and svc.duplicate_count() == 0
    assert svc.search("flip the order of a Python list", k=1)["results"][0]["id"] == "py-rev-2"


# -- search: one answer per cluster --------------------------------------------------------------------------------
def test_a_search_that_hits_only_a_closed_question_answers_with_its_canonical_one(svc: DupQ) -> None:
    add(svc, ("mongolia", "What is the capital city of Mongolia?"),
        ("ulaanbaatar", "Which city is the seat of government of Mongolia?"))
    svc.close_as_duplicate("mongolia", "ulaanbaatar")
    res = svc.search("What is the capital city of Mongolia?", k=3)["results"]
    top = res[0]
    assert top["id"] == "ulaanbaatar" and top["text"] == "Which city is the seat of government of Mongolia?"
    assert [d["id"] for d in top["duplicates"]] == ["mongolia"]
    # The cluster's score is its best hit's: the closed duplicate's exact match.
    assert top["score"] == pytest.approx(1.0, abs=1e-4) == top["duplicates"][0]["score"]
    assert top["duplicate"] is True
    assert "mongolia" not in [r["id"] for r in res] and len({r["id"] for r in res}) == 3
    assert all("duplicates" not in r for r in res[1:])  # only a result with matched duplicates carries the key
    # The canonical question's own hit is attached nowhere: it is the result.
    svc.reopen("mongolia")
    ids = [r["id"] for r in svc.search("What is the capital city of Mongolia?", k=3)["results"]]
    assert ids[:2] == ["mongolia", "ulaanbaatar"]


def test_a_filtered_search_never_answers_with_a_canonical_question_outside_its_filter(svc: DupQ) -> None:
    # Scoped search and cluster collapse together: the duplicate matches the filter, its canonical question does
    # not, so the duplicate itself answers for its cluster (never a question the filter excludes).
    svc.add_questions([
        {"id": "mn-a", "text": "What is the capital city of Mongolia?", "meta": {"site": "a.example"}},
        {"id": "mn-b", "text": "Which city is the seat of government of Mongolia?", "meta": {"site": "b.example"}},
        {"id": "mn-a2", "text": "Mongolia's capital city, what is it called?", "meta": {"site": "a.example"}},
    ])
    svc.close_as_duplicate("mn-a", "mn-b")
    svc.close_as_duplicate("mn-a2", "mn-b")
    unfiltered = svc.search("What is the capital city of Mongolia?", k=3)["results"]
    assert unfiltered[0]["id"] == "mn-b" and {d["id"] for d in unfiltered[0]["duplicates"]} == {"mn-a", "mn-a2"}
    res = svc.search("What is the capital city of Mongolia?", k=3, filter={"site": "a.example"})["results"]
    assert [r["id"] for r in res] == ["mn-a"]  # the cluster once, answered by its best matching hit
    assert [d["id"] for d in res[0]["duplicates"]] == ["mn-a2"] and res[0]["score"] == pytest.approx(1.0, abs=1e-4)
    res = svc.search("What is the capital city of Mongolia?", k=3, filter={"site": "b.example"})["results"]
    assert [r["id"] for r in res] == ["mn-b"] and "duplicates" not in res[0]


def test_a_big_cluster_is_fetched_past_until_k_clusters(svc: DupQ) -> None:
    """15 close variants of one question, all closed onto it, fill the index's first hits: the search asks the
    index again (twice the k each round) until it has k distinct clusters, or the bank is exhausted."""
    variants = [(f"rev-{n}", f"How do I reverse a list in Python? (variant {n})") for n in range(15)]
    add(svc, *variants)
    for qid, _ in variants:
        svc.close_as_duplicate(qid, "py-rev-1")
    res = svc.search("How do I reverse a list in Python?", k=5)["results"]
    assert len({r["id"] for r in res}) == 5 and res[0]["id"] == "py-rev-1"
    assert len(res[0]["duplicates"]) == 15  # every variant hit before the 5th cluster did
    everything = svc.search("How do I reverse a list in Python?", k=20)["results"]  # 8 clusters in all
    assert sorted(r["id"] for r in everything) == sorted(svc.store.ids() - {qid for qid, _ in variants})


@pytest.fixture
def bank_svc(home, db_url):
    """The bundled bank (370 questions, 78 paraphrase groups), each group closed onto its first member."""
    s = DupQ(Settings(home=home, seed_bank="default", database_url=db_url))
    for ids in bank_groups().values():
        for other in ids[1:]:
            s.close_as_duplicate(other, ids[0])
    yield s
    s.close()


def test_top_10_holds_10_distinct_clusters(bank_svc: DupQ) -> None:
    groups = bank_groups()
    canonical = {m: ids[0] for ids in groups.values() for m in ids}
    texts = {r["id"]: r["text"] for r in load_default_bank()}
    queries = [texts[ids[-1]] for ids in list(groups.values())[:20]]
    for q in queries:
        res = bank_svc.search(q, k=10)["results"]
        ids = [r["id"] for r in res]
        assert len(ids) == 10 and len(set(ids)) == 10, ids
        assert not any(i in canonical and canonical[i] != i for i in ids), ids  # only canonical questions answer
        for r in res:  # attached duplicates belong to their result's cluster, best first
            dups = r.get("duplicates", [])
            assert all(canonical[d["id"]] == r["id"] for d in dups)
            assert [d["score"] for d in dups] == sorted((d["score"] for d in dups), reverse=True)
            assert r["score"] >= max((d["score"] for d in dups), default=r["score"])
        assert [r["score"] for r in res] == sorted((r["score"] for r in res), reverse=True)
    # The query's own group answers first, with the query's own text attached as a closed duplicate.
    first = bank_svc.search(queries[0], k=10)["results"][0]
    gid = next(g for g, ids in groups.items() if texts[ids[-1]] == queries[0])
    assert first["id"] == groups[gid][0] and groups[gid][-1] in [d["id"] for d in first["duplicates"]]
    # k larger than the number of clusters: every cluster once, none left out.
    n_clusters = len(texts) - sum(len(ids) - 1 for ids in groups.values())
    everything = bank_svc.search(queries[0], k=100)["results"]
    assert len({r["id"] for r in everything}) == len(everything) == min(100, n_clusters)


# -- imports: duplicate links become canonical links ---------------------------------------------------------------
def test_imported_duplicate_links_become_canonical_links(svc: DupQ) -> None:
    report = svc.import_export(SE).to_dict()
    assert report["closed"] == 3 and report["pairs_added"] == 3 and report["cycles"] == 0
    assert {qid: svc.question(qid)["duplicate_of"] for qid in
            ("askubuntu.com:5", "askubuntu.com:13", "askubuntu.com:20", "askubuntu.com:1")} == {
        "askubuntu.com:5": "askubuntu.com:1", "askubuntu.com:13": "askubuntu.com:12",
        "askubuntu.com:20": "askubuntu.com:19", "askubuntu.com:1": None}
    assert svc.store.canonical_link("askubuntu.com:5").actor == "import"
    hit = svc.search(svc.get("askubuntu.com:5").text, k=3)["results"][0]
    assert hit["id"] == "askubuntu.com:1" and hit["duplicates"][0]["id"] == "askubuntu.com:5"
    # Reopening an imported duplicate removes its link and the pair the import stored with it.
    pair = svc.store.canonical_link("askubuntu.com:5").pair_id
    assert svc.store.get_pair(pair)["source"] == "stackexchange"
    svc.reopen("askubuntu.com:5", actor="mod")
    assert svc.store.get_pair(pair) is None and len(pairs_of(svc, "stackexchange")) == 2
    assert svc.store.kept_open("askubuntu.com:5")["actor"] == "mod"
    # A re-import adds nothing and changes nothing: the moderator's reopen outranks the dump that still links it
    # (no link, no pair).
    for _ in range(2):
        again = svc.import_export(SE).to_dict()
        assert again["added"] == 0 and again["closed"] == 0 and again["closed_existing"] == 2
        assert again["kept_open"] == 1 and again["pairs_added"] == 0
        assert svc.question("askubuntu.com:5")["duplicate_of"] is None and len(pairs_of(svc, "stackexchange")) == 2
    # Closed again by hand, the record is gone: the next import finds the link there already.
    svc.close_as_duplicate("askubuntu.com:5", "askubuntu.com:1", actor="mod")
    assert svc.store.kept_open("askubuntu.com:5") is None
    third = svc.import_export(SE).to_dict()
    assert third["closed"] == 0 and third["closed_existing"] == 3 and third["kept_open"] == 0


def _dump(folder, posts: list[tuple[int, str]], links: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True)
    rows = "".join(f'  <row Id="{i}" PostTypeId="1" Title="{t}" Body="" Tags="&lt;x&gt;" '
                   f'CreationDate="2020-01-01T00:00:00.000" Score="1" />\n' for i, t in posts)
    (folder / "Posts.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<posts>\n{rows}</posts>\n')
    rows = "".join(f'  <row Id="{n}" CreationDate="2020-01-01T00:00:00.000" PostId="{a}" RelatedPostId="{b}" '
                   'LinkTypeId="3" />\n' for n, (a, b) in enumerate(links, 1))
    (folder / "PostLinks.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<postlinks>\n{rows}</postlinks>\n')


def test_an_imported_chain_resolves_and_a_cycle_is_reported_not_raised(svc: DupQ, tmp_path) -> None:
    posts = [(1, "How do I mount a USB stick?"), (2, "Mounting a USB flash drive from the shell"),
             (3, "USB drive does not mount automatically"), (4, "How do I change my wallpaper?"),
             (5, "Setting a desktop background image"), (6, "Change the background picture of the desktop")]
    # 3 -> 2 -> 1 (a chain), and 4 -> 5 -> 6 -> 4 (a cycle in the dump).
    _dump(tmp_path / "site.example", posts, [(3, 2), (2, 1), (4, 5), (5, 6), (6, 4)])
    report = svc.import_export(tmp_path / "site.example").to_dict()
    assert report["added"] == 6 and report["closed"] == 4 and report["cycles"] == 1
    assert report["cycle_samples"] == [["site.example:6", "site.example:4"]]
    ends = svc.store.canonical_of([f"site.example:{i}" for i in range(1, 7)])
    assert ends == {"site.example:3": "site.example:1", "site.example:2": "site.example:1",
                    "site.example:4": "site.example:6", "site.example:5": "site.example:6"}
    # Every link is still a labelled pair for training (the cycle's too: all three ask the same thing).
    assert len(pairs_of(svc, "stackexchange")) == 5


# -- the API ---------------------------------------------------------------------------------------------------------
def test_duplicate_of_endpoints(client) -> None:
    url = "/api/v1/questions/py-rev-2/duplicate-of"
    assert client.post(url, json={"canonical": "py-rev-1"}).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert client.post(url, json={"canonical": "py-rev-1"}, headers=wrong).status_code == 401
    assert client.delete(url).status_code == 401
    assert client.get("/api/v1/questions/py-rev-2").get_json()["duplicate_of"] is None
    r = client.post(url, json={"canonical": "py-rev-1"}, headers=AUTH)
    assert r.status_code == 200 and r.get_json()["duplicate_of"] == "py-rev-1" and r.get_json()["closed"] is True
    q = client.get("/api/v1/questions/py-rev-2").get_json()
    assert q["duplicate_of"] == "py-rev-1" and q["id"] == "py-rev-2" and "meta" in q
    link = client.get(url).get_json()  # the link itself, while it exists
    assert link["duplicate_of"] == link["closed_onto"] == "py-rev-1" and link["actor"] == "admin-token"
    res = client.post("/api/v1/search", json={"question": "flip a Python list's order", "k": 3}).get_json()
    assert res["results"][0]["id"] == "py-rev-1" and res["results"][0]["duplicates"][0]["id"] == "py-rev-2"
    bad = client.post("/api/v1/questions/py-rev-1/duplicate-of", json={"canonical": "py-rev-2"}, headers=AUTH)
    assert bad.status_code == 409 and bad.get_json()["error"]["code"] == "duplicate_cycle"
    assert client.post("/api/v1/questions/nope/duplicate-of", json={"canonical": "py-rev-1"},
                       headers=AUTH).status_code == 404
    assert client.post("/api/v1/questions/py-sort/duplicate-of", json={"canonical": "nope"},
                       headers=AUTH).status_code == 404
    for body, code in [({}, "missing_field"), ({"canonical": ""}, "invalid_id"), ({"canonical": 3}, "invalid_type"),
                       ({"canonical": "py-rev-1", "x": 1}, "unknown_field")]:
        r = client.post("/api/v1/questions/py-sort/duplicate-of", json=body, headers=AUTH)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == code, body
    r = client.delete(url, headers=AUTH)
    assert r.status_code == 200 and r.get_json()["reopened_from"] == "py-rev-1"
    assert client.get("/api/v1/questions/py-rev-2").get_json()["duplicate_of"] is None
    r = client.delete(url, headers=AUTH)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "not_duplicate"
    r = client.get(url)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_duplicate"
    assert client.get("/api/v1/questions/nope/duplicate-of").get_json()["error"]["code"] == "not_found"
    assert set(client.options(url).headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "DELETE", "OPTIONS"}
    assert client.delete("/api/v1/questions/nope/duplicate-of", headers=AUTH).status_code == 404
    # The contract declares both operations and the results' duplicates.
    spec = client.get("/api/v1/openapi.json").get_json()
    ops = spec["paths"]["/api/v1/questions/{qid}/duplicate-of"]
    assert ops["post"]["operationId"] == "closeAsDuplicate" and ops["delete"]["operationId"] == "reopenQuestion"
    assert ops["get"]["operationId"] == "getDuplicateOf"
    assert ops["post"]["security"] == ops["delete"]["security"] == [{"bearer": ["moderate"]}]
    assert "duplicates" in spec["components"]["schemas"]["SearchResult"]["properties"]
    assert "duplicate_of" in spec["components"]["schemas"]["QuestionDetail"]["properties"]


def test_duplicate_of_endpoints_disabled_without_a_token(home, db_url) -> None:
    from web import create_app

    app = create_app({"TESTING": True, "home": str(home), "database_url": db_url,
                      "seed_bank": str(FIXTURES / "small_bank.jsonl"), "secret_key": "x"})
    try:
        r = app.test_client().post("/api/v1/questions/py-rev-2/duplicate-of", json={"canonical": "py-rev-1"})
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "admin_disabled"
    finally:
        app.extensions["dupq"].close()


# -- the pages: the search page, the question page, the admin form, the review queue ------------------------------
def test_search_page_shows_asked_before_as_text_never_html(client) -> None:
    svc = client.application.extensions["dupq"]
    svc.add_questions([{"id": "xss", "text": "How do I flip a Python list? <img src=x onerror=alert(1)>"}])
    svc.close_as_duplicate("xss", "py-rev-1")
    page = client.get("/", query_string={"q": "How do I flip a Python list? <img src=x onerror=alert(1)>"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "asked before as" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    assert 'href="/q/xss"' in html
    # The closed question's own page names its canonical question.
    q = client.get("/q/xss").get_data(as_text=True)
    assert "Closed as a duplicate of" in q and 'href="/q/py-rev-1"' in q


def test_admin_form_closes_and_reopens(client) -> None:
    svc = client.application.extensions["dupq"]
    assert client.post("/admin/duplicate-of", data={"question": "py-rev-2", "canonical": "py-rev-1"}).status_code == 401
    client.post("/admin/login", data={"token": "test-admin-token"})
    assert "Duplicate clusters" in client.get("/admin/").get_data(as_text=True)
    r = client.post("/admin/duplicate-of", data={"question": "py-rev-2", "canonical": "py-rev-1"},
                    follow_redirects=True)
    assert "py-rev-2 is closed as a duplicate of py-rev-1." in r.get_data(as_text=True)
    assert svc.question("py-rev-2")["duplicate_of"] == "py-rev-1"
    assert svc.store.canonical_link("py-rev-2").actor == "admin-token"
    r = client.post("/admin/duplicate-of", data={"question": "py-rev-1", "canonical": "py-rev-2"},
                    follow_redirects=True)
    assert "would make a cycle" in r.get_data(as_text=True)
    r = client.post("/admin/reopen", data={"question": "py-rev-2"}, follow_redirects=True)
    assert "Reopened py-rev-2" in r.get_data(as_text=True) and svc.duplicate_count() == 0
    assert svc.store.kept_open("py-rev-2")["actor"] == "admin-token"  # imports leave it open now
    r = client.post("/admin/reopen", data={"question": "nope"}, follow_redirects=True)
    assert "no question with id" in r.get_data(as_text=True)


def test_review_same_label_can_close_one_and_undo_reopens(client) -> None:
    svc = client.application.extensions["dupq"]
    client.post("/admin/login", data={"token": "test-admin-token"})
    page = client.get("/admin/review").get_data(as_text=True)
    assert 'name="close"' in page  # stored neighbour pairs offer it
    pair = next(c for c in client.get("/admin/review.json", headers=AUTH).get_json()["pairs"] if c["id1"])
    form = {"question1": pair["question1"], "question2": pair["question2"], "id1": pair["id1"], "id2": pair["id2"]}
    json_ = {"Accept": "application/json"}
    # "Different" never closes, whatever the option says.
    r = client.post("/admin/review/label", data={**form, "label": "0", "close": "1"}, headers=json_)
    assert r.status_code == 201 and r.get_json()["closed"] is None and svc.duplicate_count() == 0
    client.post(f"/admin/review/undo/{r.get_json()['pair']['id']}", headers=json_)
    r = client.post("/admin/review/label", data={**form, "label": "1", "close": "2"}, headers=json_)
    body = r.get_json()
    assert r.status_code == 201 and body["closed"]["id"] == pair["id2"]
    assert body["closed"]["duplicate_of"] == pair["id1"]
    assert body["pair"]["source"] == "review" and body["pair"]["id"] == body["closed"]["pair_id"]
    assert svc.question(pair["id2"])["duplicate_of"] == pair["id1"] and svc.pair_counts() == {"review": 1}
    r = client.post(f"/admin/review/undo/{body['pair']['id']}", headers=json_)
    assert r.get_json() == {"undone": body["pair"]["id"], "reopened": pair["id2"]}
    assert svc.question(pair["id2"])["duplicate_of"] is None and svc.pair_counts() == {}
    assert svc.store.kept_open(pair["id2"]) is None  # an undo puts back the state before: nothing recorded
    bad = client.post("/admin/review/label", data={**form, "label": "1", "close": "3"}, headers=json_)
    assert bad.status_code == 400
    searched = client.post("/admin/review/label", data={**form, "id1": "", "label": "1", "close": "1"}, headers=json_)
    assert searched.status_code == 400 and "stored" in searched.get_json()["error"]["message"]


# -- the command line ----------------------------------------------------------------------------------------------
def test_cli_close_search_reopen(runner) -> None:
    from dupq.cli import main

    r = runner.invoke(main, ["close", "py-rev-2", "--as-duplicate-of", "py-rev-1"])
    assert r.exit_code == 0 and "py-rev-2 is closed as a duplicate of py-rev-1" in r.output, r.output
    r = runner.invoke(main, ["search", "flip the order of items in a Python list", "-k", "2"])
    assert r.exit_code == 0 and "[py-rev-1]" in r.output and "asked before as:" in r.output and "[py-rev-2]" in r.output
    r = runner.invoke(main, ["close", "py-rev-1", "--as-duplicate-of", "py-rev-2"])
    assert r.exit_code == 1 and "cycle" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["reopen", "py-rev-2"])
    assert r.exit_code == 0 and "py-rev-2 is reopened (it was a duplicate of py-rev-1)" in r.output
    r = runner.invoke(main, ["reopen", "nope"])
    assert r.exit_code == 1 and "no question with id 'nope'" in r.output
