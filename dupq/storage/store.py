"""QuestionRecords: the store's rules and queries written once, for SQLite and PostgreSQL alike.

Every question write bumps ``state.revision`` in its transaction; explicit ids are checked before anything
is written; ``skip_existing`` skips known ids, known texts and repeats (:func:`new_questions`). A backend
supplies its :class:`~dupq.storage.sql.SqlAccess` (placeholder, transaction, query) and the few statements
that differ in kind: how a batch
is written (SQLite: ``executemany``; PostgreSQL: binary ``COPY``), how ids are looked up in bulk, how the
``source`` of a question's JSON metadata is read, and the lock a batch of new questions takes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from dupq.storage.records import DuplicateIdError, NewQuestion, Question, StoredPair, created_now, new_id, new_questions
from dupq.storage.sql import SqlAccess
from dupq.text import pair_key

PAIR_COLUMNS = "question1, question2, pair_key, label, source, model_version, created_at"
_MODEL_COLUMNS = "version, path, parent, created_at, config"


class QuestionRecords(SqlAccess):
    """Questions, labelled pairs, state and model records in a SQL database (see the module)."""

    #: The SQL expression of a question's ``meta.source``.
    source_sql: str

    # -- what a backend supplies besides its SqlAccess -------------------------------------------------------
    def _adding(self) -> AbstractContextManager[Any]:
        """The transaction of a batch of new questions: "is this text or id taken?" then insert must not
        interleave with another writer's batch."""
        return self._transaction()

    def _existing(self, c: Any, column: str, values: list[str]) -> list[str]:
        """The ``values`` already stored in ``questions.<column>`` (id or text)."""
        raise NotImplementedError

    def _insert_questions(self, c: Any, rows: list[tuple[str, str, str, str]]) -> None:
        """Insert ``(id, text, meta JSON, created_at)`` rows."""
        raise NotImplementedError

    def _insert_pairs(self, c: Any, rows: list[tuple]) -> None:
        """Insert rows of :data:`PAIR_COLUMNS`."""
        raise NotImplementedError

    def _insert_pair(self, c: Any, row: tuple) -> int:
        """Insert one row of :data:`PAIR_COLUMNS` and return its ``seq``."""
        raise NotImplementedError

    def _bump(self, c: Any) -> None:
        c.execute("UPDATE state SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'revision'")

    # -- state ----------------------------------------------------------------------------------------------
    def revision(self) -> int:
        """Counter bumped by every write to questions."""
        return int(self._rows("SELECT value FROM state WHERE key='revision'")[0][0])

    def get_state(self, key: str, default: str | None = None) -> str | None:
        rows = self._rows(f"SELECT value FROM state WHERE key={self.mark}", (key,))
        return rows[0][0] if rows else default

    def set_state(self, key: str, value: str) -> None:
        self.set_states({key: value})

    def set_states(self, values: dict[str, str]) -> None:
        """Set several state keys in one transaction: readers see all of them changed or none."""
        with self._transaction() as c:
            for key, value in values.items():
                c.execute(f"INSERT INTO state(key, value) VALUES ({self._marks(2)}) "
                          "ON CONFLICT (key) DO UPDATE SET value=excluded.value", (key, value))

    def init_state(self, key: str, value: str) -> None:
        """Set ``key`` only if it is not set yet (by any process)."""
        with self._transaction() as c:
            c.execute(f"INSERT INTO state(key, value) VALUES ({self._marks(2)}) ON CONFLICT (key) DO NOTHING",
                      (key, value))

    # -- questions ------------------------------------------------------------------------------------------
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
        created = created_now()
        with self._adding() as c:
            explicit = [q.id for q in items if q.id is not None]
            if skip_existing:
                taken_texts = set(self._existing(c, "text", list({q.text for q in items})))
                items = new_questions(items, set(self._existing(c, "id", explicit)), taken_texts)
            else:
                taken = self._existing(c, "id", explicit)
                repeated = {i for i in explicit if explicit.count(i) > 1}
                if taken or repeated:
                    raise DuplicateIdError(sorted(set(taken) | repeated))
            out = [Question(q.id if q.id is not None else new_id(), q.text, dict(q.meta), created) for q in items]
            if out:
                self._insert_questions(c, [(q.id, q.text, json.dumps(q.meta, ensure_ascii=False), created)
                                           for q in out])
                self._bump(c)
        return out

    def get(self, qid: str) -> Question | None:
        rows = self._rows(f"SELECT id, text, meta, created_at FROM questions WHERE id={self.mark}", (qid,))
        return _question(rows[0]) if rows else None

    def get_many(self, ids: list[str]) -> dict[str, Question]:
        out: dict[str, Question] = {}
        for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[i : i + 500]
            marks = self._marks(len(chunk))
            rows = self._rows(f"SELECT id, text, meta, created_at FROM questions WHERE id IN ({marks})", chunk)
            out.update((r[0], _question(r)) for r in rows)
        return out

    def list(self, offset: int = 0, limit: int = 50) -> list[Question]:
        """Questions in insertion order."""
        rows = self._rows(f"SELECT id, text, meta, created_at FROM questions ORDER BY seq LIMIT {self.mark} "
                          f"OFFSET {self.mark}", (limit, offset))
        return [_question(r) for r in rows]

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM questions")[0][0])

    def delete(self, qid: str) -> bool:
        """Delete one question (on PostgreSQL, by cascade, its vectors of every version); False when it did
        not exist."""
        with self._transaction() as c:
            n = c.execute(f"DELETE FROM questions WHERE id={self.mark}", (qid,)).rowcount
            if n:
                self._bump(c)
        return bool(n)

    def iter_texts(self, batch: int = 4096) -> Iterator[list[tuple[str, str]]]:
        """All ``(id, text)`` in insertion order, in batches (keyset paging, so memory stays bounded)."""
        last = 0
        while True:
            rows = self._rows(f"SELECT seq, id, text FROM questions WHERE seq > {self.mark} ORDER BY seq "
                              f"LIMIT {self.mark}", (last, batch))
            if not rows:
                return
            last = rows[-1][0]
            yield [(r[1], r[2]) for r in rows]

    def ids(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM questions")}

    def existing_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` are stored (an id-only lookup: a re-import checks a batch without reading it back)."""
        with self._transaction() as c:
            return set(self._existing(c, "id", list(ids)))

    def question_counts(self) -> dict[str, int]:
        """Stored questions per ``meta.source`` (``bank``/``import``/``web``/``api``; unknown: ``other``)."""
        rows = self._rows(f"SELECT COALESCE({self.source_sql}, 'other'), COUNT(*) FROM questions GROUP BY 1")
        return {r[0]: int(r[1]) for r in rows}

    # -- labelled pairs -------------------------------------------------------------------------------------
    def add_pairs(
        self, pairs: Iterable[tuple[str, str, int]], *, source: str, model_version: str | None = None
    ) -> int:
        """Store labelled pairs in one transaction; returns how many. Conflicting labels are all kept."""
        created = created_now()
        rows = [(q1, q2, pair_key(q1, q2), int(label), source, model_version, created) for q1, q2, label in pairs]
        with self._transaction() as c:
            self._insert_pairs(c, rows)
        return len(rows)

    def pairs(self) -> list[StoredPair]:
        """Every stored pair in the order it was given (so "latest wins" is the last occurrence)."""
        rows = self._rows("SELECT question1, question2, label, source, model_version, created_at FROM pairs "
                          "ORDER BY seq")
        return [StoredPair(r[0], r[1], int(r[2]), r[3], r[4], r[5]) for r in rows]

    def pair_counts(self) -> dict[str, int]:
        """Stored pairs per source."""
        return {r[0]: int(r[1]) for r in self._rows("SELECT source, COUNT(*) FROM pairs GROUP BY source")}

    # single labelled pairs with an id (the page's in-place feedback and its undo; the review queue)
    def add_pair(self, q1: str, q2: str, label: int, *, source: str, model_version: str | None = None) -> int:
        """Store one labelled pair and return its id (the row's ``seq``), so that exactly this label can be undone."""
        with self._transaction() as c:
            return self._insert_pair(c, (q1, q2, pair_key(q1, q2), int(label), source, model_version, created_now()))

    def get_pair(self, pair_id: int) -> dict[str, Any] | None:
        """One stored pair: ``{"id", "question1", "question2", "label", "source", "model_version", "created_at"}``."""
        rows = self._rows("SELECT seq, question1, question2, label, source, model_version, created_at FROM pairs "
                          f"WHERE seq={self.mark}", (int(pair_id),))
        if not rows:
            return None
        r = rows[0]
        keys = ("id", "question1", "question2", "label", "source", "model_version", "created_at")
        return dict(zip(keys, (int(r[0]), r[1], r[2], int(r[3]), r[4], r[5], r[6]), strict=True))

    def delete_pair(self, pair_id: int, *, source: str | None = None) -> bool:
        """Delete the one pair with this id (and this source, if given); False when there is none."""
        sql, params = f"DELETE FROM pairs WHERE seq={self.mark}", [int(pair_id)]
        if source is not None:
            sql, params = sql + f" AND source={self.mark}", [*params, source]
        with self._transaction() as c:
            return bool(c.execute(sql, params).rowcount)

    def labelled_keys(self) -> set[str]:
        """The order-free keys of every labelled pair (the review queue skips pairs that already have a label)."""
        return {r[0] for r in self._rows("SELECT DISTINCT pair_key FROM pairs")}

    # -- model version records (dupq.storage.registry) ------------------------------------------------------
    def model_record(self, version: str) -> dict[str, Any] | None:
        """The record of ``version``: ``{"version", "path", "parent", "created_at", "config"}`` (config: JSON)."""
        rows = self._rows(f"SELECT {_MODEL_COLUMNS} FROM models WHERE version={self.mark}", (version,))
        return _model(rows[0]) if rows else None

    def model_records(self) -> list[dict[str, Any]]:
        """Every version record, oldest first."""
        return [_model(r) for r in self._rows(f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY created_at, version")]

    def put_model_record(self, version: str, *, path: str, parent: str | None, created_at: str, config: str) -> None:
        """Insert or replace the record of ``version``."""
        with self._transaction() as c:
            c.execute(
                f"INSERT INTO models({_MODEL_COLUMNS}) VALUES ({self._marks(5)}) ON CONFLICT (version) DO UPDATE SET "
                "path=excluded.path, parent=excluded.parent, created_at=excluded.created_at, config=excluded.config",
                (version, path, parent, created_at, config),
            )

    def delete_model_record(self, version: str) -> None:
        with self._transaction() as c:
            c.execute(f"DELETE FROM models WHERE version={self.mark}", (version,))


def _question(r: Any) -> Question:
    meta = r[2] if isinstance(r[2], dict) else json.loads(r[2])  # PostgreSQL's jsonb arrives decoded
    return Question(r[0], r[1], meta, r[3])


def _model(r: Any) -> dict[str, Any]:
    return {"version": r[0], "path": r[1], "parent": r[2], "created_at": r[3], "config": r[4]}
