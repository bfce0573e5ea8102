"""QuestionStore: schema, ids, conflicts, paging, revisions, WAL."""

from __future__ import annotations

import pytest

from dupq.storage.sqlite.store import DuplicateIdError, NewQuestion, QuestionStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """The same store interface on SQLite and on PostgreSQL (dupq.storage.postgres.store)."""
    if request.param == "sqlite":
        s = QuestionStore(tmp_path / "db.sqlite3")
        yield s
        s.close()
        return
    from dupq.storage.postgres.db import Database
    from dupq.storage.postgres.store import PgQuestionStore

    db = Database(request.getfixturevalue("pg_database"), max_size=2)
    yield PgQuestionStore(db)
    db.close()


def test_add_get_list_delete(store: QuestionStore) -> None:
    added = store.add([NewQuestion("q one?", "a", {"topic": "x"}), NewQuestion("q two?")])
    assert [q.id for q in added][0] == "a" and len(added[1].id) == 16  # generated id
    assert store.get("a").meta == {"topic": "x"} and store.get("a").created_at
    assert [q.text for q in store.list()] == ["q one?", "q two?"]
    assert [q.text for q in store.list(offset=1, limit=1)] == ["q two?"]
    assert store.count() == 2
    assert store.delete("a") and not store.delete("a")
    assert store.get("a") is None and store.count() == 1


def test_explicit_duplicate_id_is_rejected_and_nothing_written(store: QuestionStore) -> None:
    store.add([NewQuestion("first?", "x")])
    rev = store.revision()
    with pytest.raises(DuplicateIdError):
        store.add([NewQuestion("new one?", "y"), NewQuestion("second?", "x")])
    with pytest.raises(DuplicateIdError):
        store.add([NewQuestion("a?", "z"), NewQuestion("b?", "z")])
    assert store.count() == 1 and store.get("y") is None and store.revision() == rev


def test_skip_existing_skips_known_ids_texts_and_repeats(store: QuestionStore) -> None:
    store.add([NewQuestion("known text?", "k")])
    added = store.add(
        [NewQuestion("known text?"), NewQuestion("other?", "k"), NewQuestion("fresh?"), NewQuestion("fresh?")],
        skip_existing=True,
    )
    assert [q.text for q in added] == ["fresh?"]


def test_revision_bumps_on_every_write(store: QuestionStore) -> None:
    r0 = store.revision()
    store.add([NewQuestion("a?", "a")])
    r1 = store.revision()
    store.delete("a")
    assert r0 < r1 < store.revision()
    store.add([], skip_existing=True)  # an empty batch writes nothing
    assert store.revision() == r1 + 1


def test_schema_is_idempotent_and_wal(tmp_path) -> None:
    path = tmp_path / "db.sqlite3"
    a = QuestionStore(path)
    a.add([NewQuestion("persisted?", "p")])
    a.close()
    b = QuestionStore(path)  # reopening re-runs nothing and loses nothing
    assert b.get("p").text == "persisted?"
    assert b.query("PRAGMA journal_mode")[0][0] == "wal"
    b.close()


def test_iter_texts_pages_through_everything(store: QuestionStore) -> None:
    store.add([NewQuestion(f"question {i}?", f"id{i}") for i in range(25)])
    batches = list(store.iter_texts(batch=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [i for b in batches for i, _ in b] == [f"id{i}" for i in range(25)]


def test_set_states_writes_several_keys_at_once(tmp_path) -> None:
    from dupq.storage.sqlite.store import QuestionStore

    store = QuestionStore(tmp_path / "s.sqlite3")
    store.set_states({"current_model": "v2", "history": '["base", "v2"]'})
    assert (store.get_state("current_model"), store.get_state("history")) == ("v2", '["base", "v2"]')
    store.close()
