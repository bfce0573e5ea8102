"""QuestionStore: schema, ids, conflicts, paging, revisions, WAL."""

from __future__ import annotations

import pytest

from dupq.storage.migrations import packaged
from dupq.storage.records import DuplicateIdError, NewQuestion
from dupq.storage.sqlite.store import QuestionStore


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


#: The schema as the code before the migration files wrote it (``MIGRATIONS`` in store.py, two scripts, each
#: recorded as one ``PRAGMA user_version``): a home it made must open unchanged.
OLD_SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS questions (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        text       TEXT NOT NULL,
        meta       TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS questions_text ON questions(text);
    CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT OR IGNORE INTO state(key, value) VALUES ('revision', '0');
    CREATE TABLE IF NOT EXISTS models (
        version    TEXT PRIMARY KEY,
        path       TEXT NOT NULL,
        parent     TEXT,
        created_at TEXT NOT NULL,
        config     TEXT NOT NULL DEFAULT '{}'
    );
    """,
    """
    CREATE TABLE IF NOT EXISTS pairs (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        question1     TEXT NOT NULL,
        question2     TEXT NOT NULL,
        pair_key      TEXT NOT NULL,
        label         INTEGER NOT NULL CHECK (label IN (0, 1)),
        source        TEXT NOT NULL,
        model_version TEXT,
        created_at    TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS pairs_key ON pairs(pair_key);
    CREATE TABLE IF NOT EXISTS jobs (
        id         TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        options    TEXT NOT NULL DEFAULT '{}',
        progress   TEXT NOT NULL DEFAULT '{}',
        metrics    TEXT NOT NULL DEFAULT '{}',
        error      TEXT,
        version    TEXT,
        pid        INTEGER,
        cancel     INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
]


def _schema(path) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        rows = [(kind, name, " ".join(sql.split()) if sql else sql) for kind, name, sql in rows]  # as SQL reads it
        return [*rows, ("user_version", conn.execute("PRAGMA user_version").fetchone()[0])]
    finally:
        conn.close()


def _old_home(path, scripts: int) -> None:
    """A database made by the old code's first ``scripts`` schema scripts, with a question in it."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    for i, script in enumerate(OLD_SCHEMA[:scripts], start=1):
        for stmt in filter(str.strip, script.split(";")):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {i}")
    conn.execute("INSERT INTO questions(id, text, created_at) VALUES ('old', 'an old question?', '2026-01-01')")
    conn.execute("UPDATE state SET value = '1' WHERE key = 'revision'")
    conn.close()


def test_a_home_of_the_old_schema_opens_unchanged(tmp_path) -> None:
    from dupq.storage.sqlite.jobs import JobStore

    old = tmp_path / "old.sqlite3"
    _old_home(old, 2)
    before = _schema(old)
    store = QuestionStore(old)
    assert store.get("old").text == "an old question?" and store.revision() == 1
    assert JobStore(store).create({}).state == "queued"  # the jobs table is the one it had
    store.close()
    after = _schema(old)
    kept = {row[1] for row in before[:-1]}
    assert [row for row in after[:-1] if row[1] in kept] == before[:-1]  # nothing re-applied, nothing altered
    assert after[-1] == ("user_version", len(packaged("dupq.storage.sqlite")))  # later migrations only added

    fresh = tmp_path / "new.sqlite3"
    QuestionStore(fresh).close()
    assert _schema(fresh) == _schema(old)  # the migration files make the same schema


def test_an_old_home_part_way_is_upgraded_in_order(tmp_path) -> None:
    old = tmp_path / "v1.sqlite3"
    _old_home(old, 1)  # before the pairs and jobs tables
    store = QuestionStore(old)
    assert store.get("old") is not None and store.add_pairs([("a?", "b?", 1)], source="api") == 1
    store.close()
    fresh = tmp_path / "new.sqlite3"
    QuestionStore(fresh).close()
    assert _schema(old) == _schema(fresh)


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_both_backends_meet_one_interface(settings) -> None:
    """open_backend is the one place that chooses: what differs is behind the Backend and the protocols."""
    from dupq.errors import BusyError
    from dupq.storage import Jobs, Nodes, Store, open_backend

    backend = open_backend(settings, writer=True)
    try:
        assert isinstance(backend.store, Store) and isinstance(backend.jobs, Jobs)
        assert isinstance(backend.nodes(), Nodes)
        assert backend.registry.current() == "base" and backend.registry.history() == ["base"]
        if backend.shared:  # nodes share the state: any number of writers
            open_backend(settings, writer=True).close()
        else:  # the home's writer lock
            with pytest.raises(BusyError):
                open_backend(settings, writer=True)
            open_backend(settings).close()  # a reader or a worker takes no lock
    finally:
        backend.close()
    open_backend(settings, writer=True).close()  # closing released the lock
