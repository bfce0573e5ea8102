"""PgQuestionStore: the :class:`dupq.storage.Store` interface over PostgreSQL (shared by every node).

Same rows, same rules and mostly the same queries (:class:`dupq.storage.store.QuestionRecords`); this module
is the pool's connections and what differs: bulk adds go through binary ``COPY`` (one round trip per batch),
a batch of new questions locks the revision row (nodes add at once), ids are looked up with ``= ANY``. The
vector tables reference ``questions.seq`` with ``ON DELETE CASCADE``: a delete removes the question's vectors
of every version in the same statement.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg.types.json import Jsonb

from dupq.filters import QuestionFilter
from dupq.index.pgvector import field_index_sql, filter_sql
from dupq.storage.postgres.db import Database, PgAccess
from dupq.storage.store import PAIR_COLUMNS, QuestionRecords


def _as_is(text: str) -> str:
    return text


#: Batches this large or larger are written with binary COPY rather than one INSERT ... SELECT unnest.
COPY_MIN = 64


class PgQuestionStore(PgAccess, QuestionRecords):
    """Questions, labelled pairs, state and model records in a PostgreSQL :class:`~dupq.storage.postgres.db.Database`.

    Args:
        db: The database (its pool is shared with the job store, the registry and the vector index).
    """

    source_sql = "meta->>'source'"
    shared = True  # several processes on several hosts write this store at once

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.url
        self._closed = threading.Event()

    def close(self) -> None:
        """Nothing to release here: the :class:`Database` owner closes the pool."""
        self._closed.set()

    @contextmanager
    def _adding(self) -> Iterator[Any]:
        with self.db.transaction() as c:
            # Serialise writers of the questions table: "is this text / id taken?" then insert must not
            # interleave with another node's batch (the revision row is the lock).
            c.execute("SELECT value FROM state WHERE key='revision' FOR UPDATE")
            yield c

    def _existing(self, c: Any, column: str, values: list[str]) -> list[str]:
        if not values:
            return []
        return [r[0] for r in c.execute(f"SELECT {column} FROM questions WHERE {column} = ANY(%s)", (values,))]

    def _insert_questions(self, c: Any, rows: list[tuple[str, str, str, str]]) -> None:
        if len(rows) >= COPY_MIN:
            with c.cursor().copy("COPY questions (id, text, meta, created_at) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["text", "text", "jsonb", "text"])
                for r in rows:  # the meta is JSON text already: sent as it is (a plain str would become a jsonb string)
                    cp.write_row((r[0], r[1], Jsonb(r[2], dumps=_as_is), r[3]))
        else:
            c.cursor().executemany(
                "INSERT INTO questions(id, text, meta, created_at) VALUES (%s, %s, %s::jsonb, %s)", rows
            )

    def _insert_pairs(self, c: Any, rows: list[tuple]) -> None:
        with c.cursor().copy(f"COPY pairs ({PAIR_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["text", "text", "text", "int2", "text", "text", "text"])
            for r in rows:
                cp.write_row(r)

    def _insert_pair(self, c: Any, row: tuple) -> int:
        return int(c.execute(f"INSERT INTO pairs({PAIR_COLUMNS}) VALUES ({self._marks(7)}) RETURNING seq",
                             row).fetchone()[0])

    # -- scoped search (dupq/filters.py) ---------------------------------------------------------------------
    def index_fields(self, fields: Sequence[str]) -> bool:
        """Create the GIN index of each declared field that lacks one (``meta -> 'FIELD'``); True if one was.

        Indexes of fields no longer declared are left (other nodes may still declare them; a filter is exact
        without an index, only slower): ``DROP INDEX questions_filter_...`` when none does."""
        made = False
        with self.db.transaction() as c:
            c.execute("SELECT pg_advisory_xact_lock(hashtext('dupq-filter-fields'))")
            for f in fields:
                name, create = field_index_sql(f)
                if c.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                    c.execute(create)
                    made = True
        return made

    def scope(self, qf: QuestionFilter) -> PgScope:
        """The questions ``qf`` selects (the vector query puts ``qf`` in its own ``WHERE``)."""
        return PgScope(self, qf)


class PgScope:
    """A filter's questions in PostgreSQL (:class:`dupq.index.base.Scope`): the condition of
    :func:`dupq.index.pgvector.filter_sql`, which the vector query uses directly."""

    def __init__(self, store: PgQuestionStore, qf: QuestionFilter) -> None:
        self.store = store
        self.filter = qf
        self._where, self._params = filter_sql(qf)

    def ids(self, limit: int | None = None) -> list[str] | None:
        sql = f"SELECT q.id FROM questions q WHERE {self._where}"
        if limit is None:
            return [r[0] for r in self.store._rows(sql, self._params)]
        rows = self.store._rows(sql + " LIMIT %s", [*self._params, limit + 1])
        return None if len(rows) > limit else [r[0] for r in rows]

    def keep(self, ids: Sequence[str]) -> set[str]:
        sql = f"SELECT q.id FROM questions q WHERE q.id = ANY(%s) AND {self._where}"
        return {r[0] for r in self.store._rows(sql, [list(ids), *self._params])}
