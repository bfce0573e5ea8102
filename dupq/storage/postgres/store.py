"""PgQuestionStore: :class:`dupq.storage.sqlite.store.QuestionStore`'s interface over PostgreSQL (shared by every node).

Same rows, same semantics: every question write bumps ``state.revision`` in its transaction; explicit ids
are checked before anything is written; ``skip_existing`` skips known ids, known texts and repeats. Bulk
adds go through binary ``COPY`` (one round trip per batch). The vector tables reference ``questions.seq``
with ``ON DELETE CASCADE``: a delete removes the question's vectors of every version in the same statement.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from dupq.storage.postgres.db import Database
from dupq.storage.sqlite.store import DuplicateIdError, NewQuestion, Question, StoredPair, _now, new_id, new_questions
from dupq.text import pair_key

#: Batches this large or larger are written with binary COPY rather than one INSERT ... SELECT unnest.
COPY_MIN = 64


class PgQuestionStore:
    """Questions, labelled pairs, state and model records in a PostgreSQL :class:`~dupq.storage.postgres.db.Database`.

    Args:
        db: The database (its pool is shared with the job store, the registry and the vector index).
    """

    shared = True  # several processes on several hosts write this store at once

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.url
        self._closed = threading.Event()

    def close(self) -> None:
        """Nothing to release here: the :class:`Database` owner closes the pool."""
        self._closed.set()

    @staticmethod
    def _bump(c: Any) -> None:
        c.execute("UPDATE state SET value = (value::bigint + 1)::text WHERE key = 'revision'")

    # -- state ------------------------------------------------------------------------------------
    def revision(self) -> int:
        """Counter bumped by every write to questions."""
        with self.db.connection() as c:
            return int(c.execute("SELECT value FROM state WHERE key='revision'").fetchone()[0])

    def get_state(self, key: str, default: str | None = None) -> str | None:
        with self.db.connection() as c:
            row = c.execute("SELECT value FROM state WHERE key=%s", (key,)).fetchone()
        return row[0] if row else default

    def set_state(self, key: str, value: str) -> None:
        self.set_states({key: value})

    def set_states(self, values: dict[str, str]) -> None:
        """Set several state keys in one transaction: readers see all of them changed or none."""
        with self.db.transaction() as c:
            c.cursor().executemany(
                "INSERT INTO state(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                list(values.items()),
            )

    def init_state(self, key: str, value: str) -> None:
        """Set ``key`` only if no node has set it yet."""
        with self.db.connection() as c:
            c.execute("INSERT INTO state(key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value))

    # -- questions --------------------------------------------------------------------------------
    def add(self, questions: Iterable[NewQuestion], *, skip_existing: bool = False) -> list[Question]:
        """Add questions in one transaction and return the stored ones, in input order (see QuestionStore.add).

        Raises:
            DuplicateIdError: An explicit id is taken (or repeated in the batch) and ``skip_existing`` is
                False; nothing is written.
        """
        items = list(questions)
        created = _now()
        with self.db.transaction() as c:
            # Serialise writers of the questions table: "is this text / id taken?" then insert must not
            # interleave with another node's batch (the revision row is the lock).
            c.execute("SELECT value FROM state WHERE key='revision' FOR UPDATE")
            if skip_existing:
                items = self._without_existing(c, items)
            else:
                explicit = [q.id for q in items if q.id is not None]
                taken = _existing(c, "id", explicit)
                repeated = {i for i in explicit if explicit.count(i) > 1}
                if taken or repeated:
                    raise DuplicateIdError(sorted(set(taken) | repeated))
            out = [Question(q.id if q.id is not None else new_id(), q.text, dict(q.meta), created) for q in items]
            if out:
                rows = [(q.id, q.text, json.dumps(q.meta, ensure_ascii=False), created) for q in out]
                if len(rows) >= COPY_MIN:
                    copy = "COPY questions (id, text, meta, created_at) FROM STDIN (FORMAT BINARY)"
                    with c.cursor().copy(copy) as cp:
                        cp.set_types(["text", "text", "jsonb", "text"])
                        for r in rows:
                            cp.write_row(r)
                else:
                    c.cursor().executemany(
                        "INSERT INTO questions(id, text, meta, created_at) VALUES (%s, %s, %s::jsonb, %s)", rows
                    )
                self._bump(c)
        return out

    @staticmethod
    def _without_existing(c: Any, items: list[NewQuestion]) -> list[NewQuestion]:
        taken_ids = set(_existing(c, "id", [q.id for q in items if q.id is not None]))
        taken_texts = set(_existing(c, "text", list({q.text for q in items})))
        return new_questions(items, taken_ids, taken_texts)

    def get(self, qid: str) -> Question | None:
        with self.db.connection() as c:
            row = c.execute("SELECT id, text, meta, created_at FROM questions WHERE id=%s", (qid,)).fetchone()
        return _question(row) if row else None

    def get_many(self, ids: list[str]) -> dict[str, Question]:
        if not ids:
            return {}
        with self.db.connection() as c:
            rows = c.execute("SELECT id, text, meta, created_at FROM questions WHERE id = ANY(%s)", (list(ids),))
            return {r[0]: _question(r) for r in rows}

    def list(self, offset: int = 0, limit: int = 50) -> list[Question]:
        """Questions in insertion order."""
        with self.db.connection() as c:
            rows = c.execute(
                "SELECT id, text, meta, created_at FROM questions ORDER BY seq LIMIT %s OFFSET %s", (limit, offset)
            ).fetchall()
        return [_question(r) for r in rows]

    def count(self) -> int:
        with self.db.connection() as c:
            return int(c.execute("SELECT COUNT(*) FROM questions").fetchone()[0])

    def delete(self, qid: str) -> bool:
        """Delete one question (and, by cascade, its vectors of every version); False when it did not exist."""
        with self.db.transaction() as c:
            n = c.execute("DELETE FROM questions WHERE id=%s", (qid,)).rowcount
            if n:
                self._bump(c)
        return bool(n)

    def iter_texts(self, batch: int = 4096) -> Iterator[list[tuple[str, str]]]:
        """All ``(id, text)`` in insertion order, in batches (keyset paging)."""
        last = 0
        while True:
            with self.db.connection() as c:
                rows = c.execute(
                    "SELECT seq, id, text FROM questions WHERE seq > %s ORDER BY seq LIMIT %s", (last, batch)
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(r[1], r[2]) for r in rows]

    def ids(self) -> set[str]:
        with self.db.connection() as c:
            return {r[0] for r in c.execute("SELECT id FROM questions")}

    def question_counts(self) -> dict[str, int]:
        """Stored questions per ``meta.source`` (unknown: ``other``)."""
        with self.db.connection() as c:
            rows = c.execute("SELECT COALESCE(meta->>'source', 'other'), COUNT(*) FROM questions GROUP BY 1")
            return {r[0]: int(r[1]) for r in rows}

    # -- labelled pairs ---------------------------------------------------------------------------
    def add_pairs(
        self, pairs: Iterable[tuple[str, str, int]], *, source: str, model_version: str | None = None
    ) -> int:
        """Store labelled pairs in one transaction; returns how many. Conflicting labels are all kept."""
        created = _now()
        rows = [(q1, q2, pair_key(q1, q2), int(label), source, model_version, created) for q1, q2, label in pairs]
        with self.db.transaction() as c:
            with c.cursor().copy(
                "COPY pairs (question1, question2, pair_key, label, source, model_version, created_at) "
                "FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.set_types(["text", "text", "text", "int2", "text", "text", "text"])
                for r in rows:
                    cp.write_row(r)
        return len(rows)

    def pairs(self) -> list[StoredPair]:
        """Every stored pair in the order it was given (so "latest wins" is the last occurrence)."""
        with self.db.connection() as c:
            rows = c.execute(
                "SELECT question1, question2, label, source, model_version, created_at FROM pairs ORDER BY seq"
            ).fetchall()
        return [StoredPair(r[0], r[1], int(r[2]), r[3], r[4], r[5]) for r in rows]

    def pair_counts(self) -> dict[str, int]:
        with self.db.connection() as c:
            return {r[0]: int(r[1]) for r in c.execute("SELECT source, COUNT(*) FROM pairs GROUP BY source")}

    def add_pair(self, q1: str, q2: str, label: int, *, source: str, model_version: str | None = None) -> int:
        """Store one labelled pair and return its id."""
        with self.db.connection() as c:
            row = c.execute(
                "INSERT INTO pairs(question1, question2, pair_key, label, source, model_version, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                (q1, q2, pair_key(q1, q2), int(label), source, model_version, _now()),
            ).fetchone()
        return int(row[0])

    def get_pair(self, pair_id: int) -> dict[str, Any] | None:
        with self.db.connection() as c:
            r = c.execute(
                "SELECT seq, question1, question2, label, source, model_version, created_at FROM pairs WHERE seq=%s",
                (int(pair_id),),
            ).fetchone()
        if r is None:
            return None
        keys = ("id", "question1", "question2", "label", "source", "model_version", "created_at")
        return dict(zip(keys, (int(r[0]), r[1], r[2], int(r[3]), r[4], r[5], r[6]), strict=True))

    def delete_pair(self, pair_id: int, *, source: str | None = None) -> bool:
        sql, params = "DELETE FROM pairs WHERE seq=%s", [int(pair_id)]
        if source is not None:
            sql, params = sql + " AND source=%s", [*params, source]
        with self.db.connection() as c:
            return bool(c.execute(sql, params).rowcount)

    def labelled_keys(self) -> set[str]:
        with self.db.connection() as c:
            return {r[0] for r in c.execute("SELECT DISTINCT pair_key FROM pairs")}

    # -- model version records (dupq.storage.sqlite.registry) ----------------------------------------------------
    def model_record(self, version: str) -> dict[str, Any] | None:
        with self.db.connection() as c:
            r = c.execute("SELECT version, path, parent, created_at, config FROM models WHERE version=%s",
                          (version,)).fetchone()
        return _model(r) if r else None

    def model_records(self) -> list[dict[str, Any]]:
        with self.db.connection() as c:
            rows = c.execute("SELECT version, path, parent, created_at, config FROM models "
                             "ORDER BY created_at, version").fetchall()
        return [_model(r) for r in rows]

    def put_model_record(self, version: str, *, path: str, parent: str | None, created_at: str, config: str) -> None:
        with self.db.connection() as c:
            c.execute(
                "INSERT INTO models(version, path, parent, created_at, config) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (version) DO UPDATE SET path=excluded.path, parent=excluded.parent, "
                "created_at=excluded.created_at, config=excluded.config",
                (version, path, parent, created_at, config),
            )

    def delete_model_record(self, version: str) -> None:
        with self.db.connection() as c:
            c.execute("DELETE FROM models WHERE version=%s", (version,))


def _existing(c: Any, column: str, values: list[str]) -> list[str]:
    if not values:
        return []
    return [r[0] for r in c.execute(f"SELECT {column} FROM questions WHERE {column} = ANY(%s)", (values,))]


def _question(r: Any) -> Question:
    meta = r[2] if isinstance(r[2], dict) else json.loads(r[2])
    return Question(r[0], r[1], meta, r[3])


def _model(r: Any) -> dict[str, Any]:
    return {"version": r[0], "path": r[1], "parent": r[2], "created_at": r[3], "config": r[4]}
