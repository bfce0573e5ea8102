"""The review queue: uncertain pairs first, labelled pairs leave it, labels are pairs of source ``review``."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ADMIN_TOKEN, AUTH

from dupq.review import RecentSearches, uncertain_pairs
from dupq.text import pair_key

JSON = {"Accept": "application/json", **AUTH}


def test_queue_is_sorted_by_distance_to_the_threshold_and_skips_labelled_pairs(svc) -> None:
    recent = RecentSearches()
    res = svc.search("How can I see the disk space left?", 4)
    recent.record("How can I see the disk space left?", res["model"], res["results"])
    queue = uncertain_pairs(svc, recent, limit=50)
    margins = [c["margin"] for c in queue]
    assert margins == sorted(margins) and len(queue) > 5
    assert {c["origin"] for c in queue} == {"search", "neighbours"}
    t = svc.encoder.threshold
    assert all(abs(c["margin"] - abs(c["score"] - t)) < 1e-9 and c["question1"] != c["question2"] for c in queue)
    assert len({pair_key(c["question1"], c["question2"]) for c in queue}) == len(queue)  # each pair once
    first = queue[0]
    svc.add_pair(first["question2"], first["question1"], 1, source="review")  # either order counts as labelled
    assert pair_key(first["question1"], first["question2"]) not in {
        pair_key(c["question1"], c["question2"]) for c in uncertain_pairs(svc, recent, limit=50)
    }


def test_searches_by_another_model_version_are_not_candidates(svc) -> None:
    recent = RecentSearches()
    recent.record("How do I flip a list?", "some-other-version", [{"id": "py-rev-1", "text": "x", "score": 0.75}])
    assert all(c["origin"] == "neighbours" for c in uncertain_pairs(svc, recent, limit=100))


def test_review_routes_need_the_admin_sign_in(client) -> None:
    r = client.get("/admin/review")
    assert r.status_code == 401 and b'name="token"' in r.data  # the sign-in form, back here after it
    assert client.get("/admin/review.json").status_code == 401
    assert client.post("/admin/review/label", data={}).status_code == 401
    client.post("/admin/login", data={"token": ADMIN_TOKEN})
    r = client.get("/admin/review")
    assert r.status_code == 200 and b"Review queue" in r.data and b'name="question1"' in r.data


def test_labelling_stores_a_review_pair_that_leaves_the_queue_and_undo_removes_it(client) -> None:
    queue = client.get("/admin/review.json", headers=AUTH).get_json()["pairs"]
    first = queue[0]
    r = client.post("/admin/review/label", data={"question1": first["question1"], "question2": first["question2"],
                                                 "label": "0"}, headers=JSON)
    assert r.status_code == 201
    pair = r.get_json()["pair"]
    assert pair["source"] == "review" and pair["label"] == 0 and pair["model_version"] == "base"
    after = client.get("/admin/review.json", headers=AUTH).get_json()["pairs"]
    assert (first["question1"], first["question2"]) not in {(c["question1"], c["question2"]) for c in after}
    svc = client.application.extensions["dupq"]
    assert svc.store.pair_counts() == {"review": 1}
    assert client.post(f"/admin/review/undo/{pair['id']}", headers=JSON).status_code == 200
    assert svc.store.pair_counts() == {}
    bad = client.post("/admin/review/label", data={"question1": "a b", "question2": "a b", "label": "1"}, headers=JSON)
    assert bad.status_code == 400


def test_review_labels_are_training_pairs(client) -> None:
    from dupq.retrain import stored_pairs

    client.post("/admin/review/label", data={"question1": "How do I reverse a list in Python?",
                                             "question2": "How do I sort a list of numbers in Python?", "label": "0"},
                headers=JSON)
    assert [(p.question1, p.label) for p in stored_pairs(client.application.extensions["dupq"].store)] == [
        ("How do I reverse a list in Python?", 0)
    ]


@pytest.mark.slow
def test_bundled_bank_first_20_split(tmp_path: Path) -> None:
    """On the bundled bank (paraphrase groups = real duplicates) the queue's first 20 sit at the boundary and mix
    duplicates with non-duplicates (uncertainty sampling, not the easy cases)."""
    from dupq.bank import load_default_bank
    from dupq.config import Settings
    from dupq.service import DupQ

    group = {r["id"]: r["meta"].get("group") for r in load_default_bank()}
    with DupQ(Settings(home=tmp_path / "home", seed_bank="default")) as svc:
        queue = uncertain_pairs(svc, None, limit=20)
        threshold = svc.encoder.threshold
    same = [bool(group.get(c["id1"]) and group.get(c["id1"]) == group.get(c["id2"])) for c in queue]
    assert len(queue) == 20
    assert all(abs(c["score"] - threshold) < 0.05 for c in queue)  # all near the boundary
    assert 0 < sum(same) < 20  # uncertain: a mix, not the easy cases of either kind
