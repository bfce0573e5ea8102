"""QuestionStore: the SQLite database under ``$DUPQ_HOME`` (WAL mode, transactional writes).

The store is the source of truth; vector indexes are derived from it and can always be rebuilt. Every
write bumps a ``revision`` counter in the same transaction, so an index can tell it is stale cheaply. The
rules and queries are :class:`dupq.storage.store.QuestionRecords`'; this module is the SQLite connection, the
schema (``migrations/NNNN_*.sql``) and the statements that differ from PostgreSQL's.

Example:
    >>> from dupq.storage.records import NewQuestion
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
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from dupq.errors import ConflictError
from dupq.filters import QuestionFilter, field_rows
from dupq.storage.migrations import packaged, statements
from dupq.storage.sql import in_chunks
from dupq.storage.store import PAIR_COLUMNS, QuestionRecords

#: State key naming the fields ``question_fields`` holds (a JSON list).
FIELDS_STATE = "filter_fields"


class QuestionStore(QuestionRecords):
    """SQLite-backed store of questions, labelled pairs, state, model records (and the jobs table).

    Args:
        path: Database file (created with its schema if missing) or ``":memory:"``.
    """

    mark = "?"
    source_sql = "json_extract(meta, '$.source')"

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
        """Apply the migrations (``dupq/storage/sqlite/migrations/NNNN_*.sql``) the database lacks, in one
        transaction; ``PRAGMA user_version`` holds the number of the last one applied."""
        with self.transaction() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            for number, _name, sql in packaged("dupq.storage.sqlite")[version:]:
                for stmt in statements(sql):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {number}")

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

    def _transaction(self) -> AbstractContextManager[Any]:
        return self.transaction()

    def _rows(self, sql: str, params: tuple | list = ()) -> list[Any]:
        return self.query(sql, params)

    def _existing(self, c: Any, column: str, values: list[str]) -> list[str]:
        found: list[str] = []
        for chunk in in_chunks(values):
            found += [r[0] for r in c.execute(f"SELECT {column} FROM questions WHERE {column} IN "
                                              f"({self._marks(len(chunk))})", chunk)]
        return found

    def _insert_questions(self, c: Any, rows: list[tuple[str, str, str, str]]) -> None:
        c.executemany("INSERT INTO questions(id, text, meta, created_at) VALUES (?, ?, ?, ?)", rows)
        fields = self._indexed_fields(c)
        if fields:
            c.executemany("INSERT INTO question_fields(seq, field, value) SELECT seq, ?, ? FROM questions WHERE id=?",
                          [(f, v, r[0]) for r in rows for f, v in field_rows(json.loads(r[2]), fields)])

    def _insert_pairs(self, c: Any, rows: list[tuple]) -> None:
        c.executemany(f"INSERT INTO pairs({PAIR_COLUMNS}) VALUES ({self._marks(7)})", rows)

    def _insert_pair(self, c: Any, row: tuple) -> int:
        return int(c.execute(f"INSERT INTO pairs({PAIR_COLUMNS}) VALUES ({self._marks(7)})", row).lastrowid)

    # -- scoped search (dupq/filters.py) ---------------------------------------------------------------------
    def _indexed_fields(self, c: Any = None) -> tuple[str, ...]:
        """The fields ``question_fields`` holds (state ``filter_fields``)."""
        row = (c or self._conn).execute("SELECT value FROM state WHERE key=?", (FIELDS_STATE,)).fetchone()
        return tuple(json.loads(row[0])) if row else ()

    def index_fields(self, fields: Sequence[str], *, batch: int = 10_000) -> bool:
        """Make ``question_fields`` hold exactly the values of ``fields`` (``Settings.filter_fields``): rebuilt
        from every question's ``meta`` in one transaction when the declared fields changed; True if it was."""
        fields = tuple(fields)
        with self.transaction() as c:
            if self._indexed_fields(c) == fields and c.execute("SELECT 1 FROM state WHERE key=?",
                                                               (FIELDS_STATE,)).fetchone():
                return False
            c.execute("DELETE FROM question_fields")
            last = 0
            while fields:
                rows = c.execute("SELECT seq, meta FROM questions WHERE seq > ? ORDER BY seq LIMIT ?",
                                 (last, batch)).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                c.executemany("INSERT INTO question_fields(seq, field, value) VALUES (?, ?, ?)",
                              [(r[0], f, v) for r in rows for f, v in field_rows(json.loads(r[1]), fields)])
            c.execute("INSERT INTO state(key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                      "value=excluded.value", (FIELDS_STATE, json.dumps(list(fields))))
        return True

    def scope(self, qf: QuestionFilter) -> SqliteScope:
        """The questions ``qf`` selects, looked up in ``question_fields``.

        Raises:
            ConflictError: A field of the filter is not indexed in this home yet (a reader beside a writer
                that has not rebuilt ``question_fields`` for the current ``filter_fields``).
        """
        missing = qf.fields - set(self._indexed_fields())
        if missing:
            raise ConflictError(f"filter field(s) {', '.join(sorted(missing))} not indexed in this home yet: "
                                "open it once with a writer (dupq serve, or any writing command)",
                                code="filter_not_indexed")
        return SqliteScope(self, qf)


class SqliteScope:
    """A filter's questions in a SQLite home (:class:`dupq.index.base.Scope`).

    :meth:`ids` reads a positive clause's rows from the ``(field, value, seq)`` index and joins the questions by
    rowid (streamed: a ``LIMIT`` stops it early, where ``seq IN (subquery)`` would first materialise every match);
    the other clauses are ``[NOT] EXISTS`` lookups in the primary key ``(seq, field, value)``, as in :meth:`keep`."""

    def __init__(self, store: QuestionStore, qf: QuestionFilter) -> None:
        self.store = store
        self.filter = qf
        clauses = sorted(qf.clauses, key=lambda c: (c.negate, len(c.keys)))
        self._driver = clauses[0] if not clauses[0].negate else None
        self._where, self._params = self._exists(clauses)
        self._rest, self._rest_params = self._exists(clauses[1:] if self._driver else clauses)

    @staticmethod
    def _exists(clauses: Sequence[Any]) -> tuple[str, list[str]]:
        parts, params = [], []
        for c in clauses:
            parts.append(f"{'NOT ' if c.negate else ''}EXISTS (SELECT 1 FROM question_fields f WHERE f.seq = q.seq "
                         f"AND f.field = ? AND f.value IN ({', '.join('?' * len(c.keys))}))")
            params += [c.field, *c.keys]
        return " AND ".join(parts) or "1", params

    def ids(self, limit: int | None = None) -> list[str] | None:
        d = self._driver
        if d is None:
            sql, params = f"SELECT q.id FROM questions q WHERE {self._where}", list(self._params)
        else:  # one value: one row per question (the primary key); several: a question may hold two of them
            marks = ", ".join("?" * len(d.keys))
            sql = (f"SELECT {'DISTINCT ' if len(d.keys) > 1 else ''}q.id FROM question_fields d "
                   f"JOIN questions q ON q.seq = d.seq WHERE d.field = ? AND d.value IN ({marks}) AND {self._rest}")
            params = [d.field, *d.keys, *self._rest_params]
        if limit is None:
            return [r[0] for r in self.store.query(sql, params)]
        rows = self.store.query(sql + " LIMIT ?", [*params, limit + 1])
        return None if len(rows) > limit else [r[0] for r in rows]

    def keep(self, ids: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for chunk in in_chunks(ids):
            sql = f"SELECT q.id FROM questions q WHERE q.id IN ({', '.join('?' * len(chunk))}) AND {self._where}"
            out.update(r[0] for r in self.store.query(sql, [*chunk, *self._params]))
        return out
