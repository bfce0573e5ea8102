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

from dupq.storage.records import (
    CanonicalLink,
    DuplicateIdError,
    LinkError,
    NewQuestion,
    Question,
    StoredPair,
    created_now,
    new_id,
    new_questions,
)
from dupq.storage.sql import SqlAccess, in_chunks
from dupq.text import pair_key

PAIR_COLUMNS = "question1, question2, pair_key, label, source, model_version, created_at"
#: How far a chain of canonical links is followed when read (a guard only: writes refuse cycles and link each
#: question to the end of its target's chain, so chains grow only when a canonical question is closed later).
MAX_CHAIN = 1000
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
        for chunk in in_chunks(ids):
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

    # -- canonical links: a question closed as a duplicate of another ----------------------------------------
    # One link per closed question, to the question it was closed onto. Reading follows the chain to its end (the
    # canonical question, which is open); writing refuses a cycle, and links a question closed onto an already
    # closed one straight to that one's end. Writers of links are serialised like writers of questions
    # (``_adding``: on PostgreSQL the revision row), so two nodes cannot close A onto B and B onto A at once.
    def _chain_sql(self, n: int) -> str:
        """Every step of the chains that start at ``n`` ids: rows ``(start, node, depth)``; a start's end is its
        deepest node. Ids that are not closed have no row."""
        return (
            "WITH RECURSIVE up(start, node, depth) AS ("
            f"SELECT question_id, canonical_id, 1 FROM canonical_links WHERE question_id IN ({self._marks(n)}) "
            "UNION ALL SELECT up.start, l.canonical_id, up.depth + 1 FROM up "
            f"JOIN canonical_links l ON l.question_id = up.node WHERE up.depth < {MAX_CHAIN}) "
            "SELECT start, node, depth FROM up"
        )

    @staticmethod
    def _ends(rows: Iterable[Any]) -> dict[str, str]:
        best: dict[str, tuple[int, str]] = {}
        for start, node, depth in rows:
            if start not in best or depth > best[start][0]:
                best[start] = (int(depth), node)
        return {start: node for start, (_, node) in best.items()}

    def canonical_of(self, ids: list[str]) -> dict[str, str]:
        """The canonical question (the end of the chain) of each closed id among ``ids``; open ids are left out.

        Example:
            >>> store.canonical_of(["a", "b", "c"])   # doctest: +SKIP
            {'a': 'c'}
        """
        out: dict[str, str] = {}
        ids = list(dict.fromkeys(ids))
        for chunk in in_chunks(ids):
            out.update(self._ends(tuple(r) for r in self._rows(self._chain_sql(len(chunk)), chunk)))
        return out

    def _end_in(self, c: Any, qid: str) -> str:
        """The end of ``qid``'s chain (``qid`` itself when it is open), read inside transaction ``c``."""
        return self._ends(tuple(r) for r in c.execute(self._chain_sql(1), (qid,)).fetchall()).get(qid, qid)

    def canonical_link(self, qid: str) -> CanonicalLink | None:
        """The link of ``qid`` (None: it is open or unknown), with the end of its chain as ``canonical_id``."""
        rows = self._rows("SELECT question_id, canonical_id, pair_seq, actor, created_at FROM canonical_links "
                          f"WHERE question_id={self.mark}", (qid,))
        if not rows:
            return None
        r = rows[0]
        end = self.canonical_of([qid]).get(qid, r[1])
        return CanonicalLink(r[0], end, r[1], None if r[2] is None else int(r[2]), r[3], r[4])

    def duplicates_of(self, qid: str, limit: int = 100) -> list[str]:
        """The ids closed directly onto ``qid``, oldest link first (at most ``limit``)."""
        rows = self._rows(f"SELECT question_id FROM canonical_links WHERE canonical_id={self.mark} "
                          f"ORDER BY created_at, question_id LIMIT {self.mark}", (qid, limit))
        return [r[0] for r in rows]

    def pair_link(self, pair_id: int) -> str | None:
        """The question whose link holds labelled pair ``pair_id`` (the pair its closing stored), if any."""
        rows = self._rows(f"SELECT question_id FROM canonical_links WHERE pair_seq={self.mark}", (int(pair_id),))
        return rows[0][0] if rows else None

    def link_count(self) -> int:
        """How many questions are closed as duplicates."""
        return int(self._rows("SELECT COUNT(*) FROM canonical_links")[0][0])

    def _close(self, c: Any, qid: str, target: str, *, actor: str, pair_source: str | None,
               labelled: set[str] | None, created: str) -> tuple[CanonicalLink, bool]:
        """Close ``qid`` onto the end of ``target``'s chain inside transaction ``c``; ``(link, made)``.

        Raises :class:`LinkError` before writing anything. Already closed onto the same end: the link as it is,
        ``made`` False. ``pair_source``: store the pair (``qid``, end) labelled 1 with this source, unless its key
        is in ``labelled`` (None: always); the link remembers it so that reopening removes exactly it.
        """
        marks = self._marks(2)
        texts = {r[0]: r[1] for r in c.execute(f"SELECT id, text FROM questions WHERE id IN ({marks})",
                                               (qid, target)).fetchall()}
        for i in (qid, target):
            if i not in texts:
                raise LinkError("missing", f"no question with id {i!r}")
        if qid == target:
            raise LinkError("cycle", f"question {qid!r} cannot be a duplicate of itself")
        end = self._end_in(c, target)
        if end == qid:
            raise LinkError("cycle", f"{target!r} is already a duplicate of {qid!r}: closing {qid!r} onto it "
                            "would make a cycle")
        row = c.execute("SELECT canonical_id, pair_seq, actor, created_at FROM canonical_links "
                        f"WHERE question_id={self.mark}", (qid,)).fetchone()
        if row is not None:
            have = self._end_in(c, qid)
            if have != end:
                raise LinkError("closed", f"question {qid!r} is already closed as a duplicate of {have!r}; "
                                "reopen it first")
            return CanonicalLink(qid, have, row[0], None if row[1] is None else int(row[1]), row[2], row[3]), False
        if end not in texts:
            texts[end] = c.execute(f"SELECT text FROM questions WHERE id={self.mark}", (end,)).fetchone()[0]
        pair_seq = None
        key = pair_key(texts[qid], texts[end])
        if pair_source is not None and texts[qid] != texts[end] and (labelled is None or key not in labelled):
            pair_seq = self._insert_pair(c, (texts[qid], texts[end], key, 1, pair_source, None, created))
            if labelled is not None:
                labelled.add(key)
        c.execute(f"INSERT INTO canonical_links(question_id, canonical_id, pair_seq, actor, created_at) "
                  f"VALUES ({self._marks(5)})", (qid, end, pair_seq, actor, created))
        return CanonicalLink(qid, end, end, pair_seq, actor, created), True

    def close_duplicate(self, qid: str, target: str, *, actor: str,
                        pair_source: str | None = "canonical") -> tuple[CanonicalLink, bool]:
        """Close ``qid`` as a duplicate of ``target`` (of the end of its chain, if it is closed itself).

        Stores the pair (``qid``, canonical) labelled 1 with ``pair_source`` (None: no pair) in the same
        transaction. Returns ``(link, made)``; ``made`` is False when ``qid`` was already closed onto that
        canonical question (nothing written).

        Raises:
            LinkError: ``missing`` (an id is not stored), ``cycle`` (``target`` is ``qid`` or one of its
                duplicates), ``closed`` (``qid`` is closed onto another question).
        """
        with self._adding() as c:
            link, made = self._close(c, qid, target, actor=actor, pair_source=pair_source, labelled=None,
                                     created=created_now())
            if made:  # closed by hand again: imports may close it from now on (they skip kept-open questions)
                c.execute(f"DELETE FROM kept_open WHERE question_id={self.mark}", (qid,))
            return link, made

    def close_duplicates(self, links: Iterable[tuple[str, str]], *, actor: str, pair_source: str | None,
                         labelled: set[str] | None = None) -> list[str]:
        """Close many (an import's links) in one transaction; what became of each, in order: ``made`` (linked),
        ``existing`` (already so), ``kept_open`` (a person reopened the question: :meth:`reopen` with
        ``keep_open``), or the :class:`LinkError` kind (``missing``, ``cycle``, ``closed``); nothing is raised. A
        pair is stored for a link made unless its key is in ``labelled`` (extended in place)."""
        out: list[str] = []
        created = created_now()
        links = list(links)
        with self._adding() as c:
            kept = self._kept_open_in(c, [qid for qid, _ in links])
            for qid, target in links:
                if qid in kept:
                    out.append("kept_open")
                    continue
                try:
                    made = self._close(c, qid, target, actor=actor, pair_source=pair_source, labelled=labelled,
                                       created=created)[1]
                    out.append("made" if made else "existing")
                except LinkError as e:
                    out.append(e.kind)
        return out

    def _kept_open_in(self, c: Any, ids: list[str]) -> set[str]:
        """The ids among ``ids`` that a person reopened (read inside transaction ``c``)."""
        out: set[str] = set()
        ids = list(dict.fromkeys(ids))
        for chunk in in_chunks(ids):
            out.update(r[0] for r in c.execute(f"SELECT question_id FROM kept_open WHERE question_id IN "
                                               f"({self._marks(len(chunk))})", chunk).fetchall())
        return out

    def kept_open(self, qid: str) -> dict[str, str] | None:
        """Whether a person reopened ``qid`` (imports then leave it open): ``{"reopened_from", "actor",
        "reopened_at"}``, or None."""
        rows = self._rows(f"SELECT reopened_from, actor, reopened_at FROM kept_open WHERE question_id={self.mark}",
                          (qid,))
        return dict(zip(("reopened_from", "actor", "reopened_at"), rows[0], strict=True)) if rows else None

    def reopen(self, qid: str, *, actor: str = "api", keep_open: bool = True) -> CanonicalLink:
        """Remove ``qid``'s link and the pair closing stored (only that pair); returns the link as it was.

        Questions closed onto ``qid`` stay closed onto it (it is now their canonical question). ``keep_open``
        records that ``actor`` reopened it, so that no later import's duplicate link closes it again (False: an
        undo, which puts back the state before a close, records nothing).

        Raises:
            LinkError: ``missing`` (no such question) or ``open`` (it is not closed).
        """
        with self._adding() as c:
            row = c.execute("SELECT canonical_id, pair_seq, actor, created_at FROM canonical_links "
                            f"WHERE question_id={self.mark}", (qid,)).fetchone()
            if row is None:
                if c.execute(f"SELECT 1 FROM questions WHERE id={self.mark}", (qid,)).fetchone() is None:
                    raise LinkError("missing", f"no question with id {qid!r}")
                raise LinkError("open", f"question {qid!r} is not closed as a duplicate")
            end = self._end_in(c, qid)
            c.execute(f"DELETE FROM canonical_links WHERE question_id={self.mark}", (qid,))
            if row[1] is not None:
                c.execute(f"DELETE FROM pairs WHERE seq={self.mark}", (int(row[1]),))
            if keep_open:
                c.execute(f"INSERT INTO kept_open(question_id, reopened_from, actor, reopened_at) "
                          f"VALUES ({self._marks(4)}) ON CONFLICT (question_id) DO UPDATE SET "
                          "reopened_from=excluded.reopened_from, actor=excluded.actor, "
                          "reopened_at=excluded.reopened_at", (qid, end, actor, created_now()))
            return CanonicalLink(qid, end, row[0], None if row[1] is None else int(row[1]), row[2], row[3])

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
