"""DupQ service: the index stays consistent with the store through add, delete, restart and crashes."""

from __future__ import annotations

import shutil

import pytest

from dupq.errors import BusyError, ConflictError, NotFoundError, ValidationError
from dupq.service import DupQ
from dupq.storage.records import NewQuestion

#: Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
BOTH_BACKENDS = True


def index_ids(svc: DupQ) -> set[str]:
    return svc.serving.index.ids()


def test_seeded_store_and_index_agree(svc: DupQ) -> None:
    assert svc.store.count() == 8 and index_ids(svc) == svc.store.ids()
    res = svc.search("How can I reverse a Python list?", k=3)
    assert res["model"] == "base" and res["energy"] == "cosine"
    assert res["results"][0]["id"] == "py-rev-1" and res["results"][0]["duplicate"]
    scores = [r["score"] for r in res["results"]]
    assert scores == sorted(scores, reverse=True)


def test_add_delete_restart_keep_index_consistent(settings) -> None:
    with DupQ(settings) as svc:
        added = svc.add_questions(
            [
                {"text": "How do I cancel a flight booking?", "id": "tr-cancel"},
                {"text": "Is bread flour the same as plain flour?"},
            ]
        )
        svc.delete("ck-egg")
        expected = svc.store.ids()
        assert index_ids(svc) == expected and "tr-cancel" in expected and added[1].id in expected
    with DupQ(settings) as svc:  # restart: loaded from disk, not rebuilt
        assert index_ids(svc) == expected
        assert svc.search("cancel my plane ticket", k=1)["results"][0]["id"] == "tr-cancel"
        assert "ck-egg" not in {r["id"] for r in svc.search("boil an egg", k=8)["results"]}


def test_crash_between_store_and_index_write_is_repaired_on_open(settings) -> None:
    with DupQ(settings) as svc:
        # Simulate a crash after the store commit but before the index append.
        svc.store.add([NewQuestion("How do I undo the last git commit?", "git-undo")])
        svc.store.delete("fin-tax")
    with DupQ(settings) as svc:
        assert index_ids(svc) == svc.store.ids()
        assert svc.search("revert my latest git commit", k=1)["results"][0]["id"] == "git-undo"


def test_missing_index_is_rebuilt_and_reindex_works(settings) -> None:
    with DupQ(settings) as svc:
        ids = svc.store.ids()
    if settings.database_url:  # the index is the version's vector table
        from dupq.index.pgvector import drop_vectors
        from dupq.storage.postgres.db import Database

        db = Database(settings.database_url, max_size=1)
        drop_vectors(db, "base")
        db.close()
    else:
        shutil.rmtree(settings.index_dir)
    with DupQ(settings) as svc:
        assert index_ids(svc) == ids
        assert svc.reindex(progress=False) == len(ids)


def test_validation_and_errors(svc: DupQ) -> None:
    for bad in ["", "   ", None, 42, "x" * 1001]:
        with pytest.raises(ValidationError):
            svc.search(bad)
    for k in [0, 101, "3", 2.5, True]:
        with pytest.raises(ValidationError):
            svc.search("a question", k)
    with pytest.raises(ConflictError):
        svc.add_questions([{"text": "dup id?", "id": "py-sort"}])
    with pytest.raises(ValidationError):
        svc.add_questions([{"text": "bad id?", "id": "has space"}])
    with pytest.raises(NotFoundError):
        svc.get("nope")
    with pytest.raises(NotFoundError):
        svc.delete("nope")
    assert svc.store.count() == 8  # nothing half-written


def test_one_writer_per_home(svc: DupQ, settings) -> None:
    if settings.database_url:  # PostgreSQL: no lock; a second node on the same home and database writes too
        with DupQ(settings) as other:
            other.add_questions([{"text": "Written by a second node?", "id": "second"}])
            assert svc.search("written by the second node", k=1)["results"][0]["id"] == "second"
        return
    with pytest.raises(BusyError):
        DupQ(settings)
    with DupQ(settings, read_only=True) as ro:  # a reader beside the owner works
        assert ro.search("free disk space on linux", k=1)["results"][0]["id"].startswith("lx-disk")
        with pytest.raises(BusyError):
            ro.add_questions([{"text": "nope?"}])


def test_seed_only_once(settings) -> None:
    with DupQ(settings) as svc:
        for q in list(svc.store.ids()):
            svc.delete(q)
    with DupQ(settings) as svc:  # deleting everything does not resurrect the bank
        assert svc.store.count() == 0 and svc.search("anything?")["results"] == []
