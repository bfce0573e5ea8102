"""QuestionStore: the SQLite database under ``$DUPQ_HOME`` (WAL mode, transactional writes).

The store is the source of truth; vector indexes are derived from it and can always be rebuilt. Every
write bumps a ``revision`` counter in the same transaction, so an index can tell it is stale cheaply.

Example:
    >>> store = QuestionStore(":memory:")
    >>> [q.id for q in store.add([NewQuestion("How do I boil an egg?", id="egg")])]
    ['egg']
    >>> store.get("egg").text
    'How do I boil an egg?'
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dupq.text import pair_key

# Each entry upgrades the schema by one version (PRAGMA user_version); statements are idempotent.
MIGRATIONS: list[str] = [
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


class StoreError(Exception):
    """Base class of store errors."""


class DuplicateIdError(StoreError):
    """An explicit question id is already taken."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"question id already exists: {', '.join(ids[:5])}")
        self.ids = ids


@dataclass(frozen=True)
class NewQuestion:
    """A question to add; ``id`` is generated when None."""

    text: str
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredPair:
    """A labelled pair as stored: every label given is kept (see :meth:`QuestionStore.pairs`)."""

    question1: str
    question2: str
    label: int
    source: str
    model_version: str | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "question1": self.question1,
            "question2": self.question2,
            "label": self.label,
            "source": self.source,
            "model_version": self.model_version,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Question:
    """A stored question."""

    id: str
    text: str
    meta: dict[str, Any]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "meta": self.meta, "created_at": self.created_at}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_questions(items: Iterable[NewQuestion], taken_ids: set[str], taken_texts: set[str]) -> list[NewQuestion]:
    """The items whose text and id are neither taken (already stored) nor repeated earlier in ``items``.

    Both backends' stores add through it, so the rule of what is skipped is one rule. ``taken_ids`` and
    ``taken_texts`` are extended in place.

    Example:
        >>> [q.text for q in new_questions([NewQuestion("a"), NewQuestion("b"), NewQuestion("a")], set(), {"b"})]
        ['a']
    """
    kept: list[NewQuestion] = []
    for q in items:
        if q.text in taken_texts or (q.id is not None and q.id in taken_ids):
            continue
        taken_texts.add(q.text)
        if q.id is not None:
            taken_ids.add(q.id)
        kept.append(q)
    return kept


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class QuestionStore:
    """SQLite-backed store of questions (and, later, pairs and jobs).

    Args:
        path: Database file (created with its schema if missing) or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the threads of this process; the lock serialises its use.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            for i, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for stmt in filter(str.strip, script.split(";")):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {i}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: committed on success, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @staticmethod
    def _bump(c: sqlite3.Connection) -> None:
        c.execute("UPDATE state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")

    # -- state ------------------------------------------------------------------------------------
    def revision(self) -> int:
        """Counter bumped by every write to questions."""
        return int(self.query("SELECT value FROM state WHERE key='revision'")[0][0])

    def get_state(self, key: str, default: str | None = None) -> str | None:
        rows = self.query("SELECT value FROM state WHERE key=?", (key,))
        return rows[0][0] if rows else default

    def set_state(self, key: str, value: str) -> None:
        self.set_states({key: value})

    def set_states(self, values: dict[str, str]) -> None:
        """Set several state keys in one transaction: readers see all of them changed or none.

        Example:
            >>> store = QuestionStore(":memory:")
            >>> store.set_states({"a": "1", "b": "2"}); store.get_state("b")
            '2'
        """
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                list(values.items()),
            )

    # -- questions --------------------------------------------------------------------------------
    def add(self, questions: Iterable[NewQuestion], *, skip_existing: bool = False) -> list[Question]:
        """Add questions in one transaction and return the stored ones, in input order.

        Args:
            questions: The questions; ``id=None`` gets a generated id.
            skip_existing: Skip (instead of failing on) questions whose explicit id is taken or whose exact
                text is already stored, and repeats within the batch. Used by bulk import.

        Raises:
            DuplicateIdError: An explicit id is taken (or repeated in the batch) and ``skip_existing`` is
                False; nothing is written.
        """
        items = list(questions)
        created = _now()
        out: list[Question] = []
        with self.transaction() as c:
            if skip_existing:
                items = self._without_existing(c, items)
            else:
                explicit = [q.id for q in items if q.id is not None]
                taken = self._existing_ids(c, explicit)
                repeated = {i for i in explicit if explicit.count(i) > 1}
                if taken or repeated:
                    raise DuplicateIdError(sorted(set(taken) | repeated))
            rows = []
            for q in items:
                qid = q.id if q.id is not None else new_id()
                rows.append((qid, q.text, json.dumps(q.meta, ensure_ascii=False), created))
                out.append(Question(qid, q.text, dict(q.meta), created))
            if rows:
                c.executemany("INSERT INTO questions(id, text, meta, created_at) VALUES (?, ?, ?, ?)", rows)
                self._bump(c)
        return out

    @staticmethod
    def _existing_ids(c: sqlite3.Connection, ids: list[str]) -> list[str]:
        found: list[str] = []
        for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found += [r[0] for r in c.execute(f"SELECT id FROM questions WHERE id IN ({marks})", chunk)]
        return found

    @classmethod
    def _without_existing(cls, c: sqlite3.Connection, items: list[NewQuestion]) -> list[NewQuestion]:
        taken_ids = set(cls._existing_ids(c, [q.id for q in items if q.id is not None]))
        texts = list({q.text for q in items})
        taken_texts: set[str] = set()
        for i in range(0, len(texts), 500):
            chunk = texts[i : i + 500]
            marks = ",".join("?" * len(chunk))
            taken_texts |= {r[0] for r in c.execute(f"SELECT text FROM questions WHERE text IN ({marks})", chunk)}
        return new_questions(items, taken_ids, taken_texts)

    def get(self, qid: str) -> Question | None:
        rows = self.query("SELECT id, text, meta, created_at FROM questions WHERE id=?", (qid,))
        return self._row(rows[0]) if rows else None

    def get_many(self, ids: list[str]) -> dict[str, Question]:
        out: dict[str, Question] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.query(f"SELECT id, text, meta, created_at FROM questions WHERE id IN ({marks})", chunk):
                out[r["id"]] = self._row(r)
        return out

    def list(self, offset: int = 0, limit: int = 50) -> list[Question]:
        """Questions in insertion order."""
        rows = self.query(
            "SELECT id, text, meta, created_at FROM questions ORDER BY seq LIMIT ? OFFSET ?", (limit, offset)
        )
        return [self._row(r) for r in rows]

    def count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM questions")[0][0])

    def delete(self, qid: str) -> bool:
        """Delete one question; False when it did not exist."""
        with self.transaction() as c:
            n = c.execute("DELETE FROM questions WHERE id=?", (qid,)).rowcount
            if n:
                self._bump(c)
        return bool(n)

    def iter_texts(self, batch: int = 4096) -> Iterator[list[tuple[str, str]]]:
        """All ``(id, text)`` in insertion order, in batches (keyset paging, so memory stays bounded)."""
        last = 0
        while True:
            rows = self.query("SELECT seq, id, text FROM questions WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch))
            if not rows:
                return
            last = rows[-1]["seq"]
            yield [(r["id"], r["text"]) for r in rows]

    # -- labelled pairs ---------------------------------------------------------------------------
    def add_pairs(
        self, pairs: Iterable[tuple[str, str, int]], *, source: str, model_version: str | None = None
    ) -> int:
        """Store labelled pairs in one transaction; returns how many. Conflicting labels are all kept."""
        created = _now()
        rows = [(q1, q2, pair_key(q1, q2), int(label), source, model_version, created) for q1, q2, label in pairs]
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO pairs(question1, question2, pair_key, label, source, model_version, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def pairs(self) -> list[StoredPair]:
        """Every stored pair in the order it was given (so "latest wins" is the last occurrence)."""
        rows = self.query(
            "SELECT question1, question2, label, source, model_version, created_at FROM pairs ORDER BY seq"
        )
        return [StoredPair(r[0], r[1], int(r[2]), r[3], r[4], r[5]) for r in rows]

    def pair_counts(self) -> dict[str, int]:
        """Stored pairs per source."""
        return {r[0]: int(r[1]) for r in self.query("SELECT source, COUNT(*) FROM pairs GROUP BY source")}

    def question_counts(self) -> dict[str, int]:
        """Stored questions per ``meta.source`` (``bank``/``import``/``web``/``api``; unknown: ``other``)."""
        rows = self.query(
            "SELECT COALESCE(json_extract(meta, '$.source'), 'other'), COUNT(*) FROM questions GROUP BY 1"
        )
        return {r[0]: int(r[1]) for r in rows}

    def ids(self) -> set[str]:
        return {r[0] for r in self.query("SELECT id FROM questions")}

    @staticmethod
    def _row(r: sqlite3.Row) -> Question:
        return Question(r["id"], r["text"], json.loads(r["meta"]), r["created_at"])

    # -- single labelled pairs with an id (the page's in-place feedback and its undo; the review queue) --------
    def add_pair(self, q1: str, q2: str, label: int, *, source: str, model_version: str | None = None) -> int:
        """Store one labelled pair and return its id (the row's ``seq``), so that exactly this label can be undone."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO pairs(question1, question2, pair_key, label, source, model_version, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (q1, q2, pair_key(q1, q2), int(label), source, model_version, _now()),
            )
            return int(cur.lastrowid)

    def get_pair(self, pair_id: int) -> dict[str, Any] | None:
        """One stored pair: ``{"id", "question1", "question2", "label", "source", "model_version", "created_at"}``."""
        rows = self.query(
            "SELECT seq, question1, question2, label, source, model_version, created_at FROM pairs WHERE seq=?",
            (int(pair_id),),
        )
        if not rows:
            return None
        r = rows[0]
        keys = ("id", "question1", "question2", "label", "source", "model_version", "created_at")
        return dict(zip(keys, (int(r[0]), r[1], r[2], int(r[3]), r[4], r[5], r[6]), strict=True))

    def delete_pair(self, pair_id: int, *, source: str | None = None) -> bool:
        """Delete the one pair with this id (and this source, if given); False when there is none."""
        sql, params = "DELETE FROM pairs WHERE seq=?", [int(pair_id)]
        if source is not None:
            sql, params = sql + " AND source=?", [*params, source]
        with self.transaction() as c:
            return bool(c.execute(sql, params).rowcount)

    def labelled_keys(self) -> set[str]:
        """The order-free keys of every labelled pair (the review queue skips pairs that already have a label)."""
        return {r[0] for r in self.query("SELECT DISTINCT pair_key FROM pairs")}

    # -- model version records (dupq.storage.sqlite.registry) -----------------------------------------------
    def model_record(self, version: str) -> dict[str, Any] | None:
        """The record of ``version``: ``{"version", "path", "parent", "created_at", "config"}`` (config: JSON)."""
        rows = self.query("SELECT version, path, parent, created_at, config FROM models WHERE version=?", (version,))
        return dict(rows[0]) if rows else None

    def model_records(self) -> list[dict[str, Any]]:
        """Every version record, oldest first."""
        rows = self.query("SELECT version, path, parent, created_at, config FROM models ORDER BY created_at, version")
        return [dict(r) for r in rows]

    def put_model_record(self, version: str, *, path: str, parent: str | None, created_at: str, config: str) -> None:
        """Insert or replace the record of ``version``."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO models(version, path, parent, created_at, config) VALUES (?, ?, ?, ?, ?)",
                (version, path, parent, created_at, config),
            )

    def delete_model_record(self, version: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM models WHERE version=?", (version,))

    def init_state(self, key: str, value: str) -> None:
        """Set ``key`` only if it is not set yet."""
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO state(key, value) VALUES (?, ?)", (key, value))
