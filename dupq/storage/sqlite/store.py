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

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from dupq.storage.migrations import packaged, statements
from dupq.storage.store import PAIR_COLUMNS, QuestionRecords


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
        for i in range(0, len(values), 500):  # stay under SQLite's bound-parameter limit
            chunk = values[i : i + 500]
            found += [r[0] for r in c.execute(f"SELECT {column} FROM questions WHERE {column} IN "
                                              f"({self._marks(len(chunk))})", chunk)]
        return found

    def _insert_questions(self, c: Any, rows: list[tuple[str, str, str, str]]) -> None:
        c.executemany("INSERT INTO questions(id, text, meta, created_at) VALUES (?, ?, ?, ?)", rows)

    def _insert_pairs(self, c: Any, rows: list[tuple]) -> None:
        c.executemany(f"INSERT INTO pairs({PAIR_COLUMNS}) VALUES ({self._marks(7)})", rows)

    def _insert_pair(self, c: Any, row: tuple) -> int:
        return int(c.execute(f"INSERT INTO pairs({PAIR_COLUMNS}) VALUES ({self._marks(7)})", row).lastrowid)
