"""PgVectorIndex: :class:`dupq.index.VectorIndex` over a pgvector table, one table per model version.

The table is the index every node searches: a vector added through one node is found by the next search on
any other; rows reference ``questions(seq)`` with ``ON DELETE CASCADE``, so a deleted question leaves every
version's table in the same transaction. Each table has an HNSW index, by default on the half-precision
expression ``embedding::halfvec(dim)`` (about half the size of a ``vector`` index at the same recall,
docs/benchmarks.md); the full-precision column re-scores the hits, so reported scores equal the exact
index's. Searches run with ``hnsw.iterative_scan = relaxed_order`` (set per connection by
:class:`dupq.storage.postgres.db.Database`) and are re-sorted by the exact score.

Example:
    >>> idx, intact = PgVectorIndex.open(db, "base", 384, "cosine")      # doctest: +SKIP
    >>> idx.search(query_vectors, 10)                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dupq.filters import QuestionFilter
from dupq.index.ann import SCOPE_EXACT_PER_ROOT
from dupq.index.base import Hit, Scope
from dupq.index.exact import top_hits

if TYPE_CHECKING:  # the connection pool is passed in: the index layer never opens a database itself
    from dupq.storage.postgres.db import Database
from dupq.models.energy import Energy

log = logging.getLogger(__name__)

#: HNSW index kinds: on the float32 column, or on its half-precision expression (the default).
KINDS = ("halfvec", "vector")
#: HNSW build parameters (pgvector defaults: m=16, ef_construction=64).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
#: Memory of one HNSW build: pgvector builds the graph in ``maintenance_work_mem`` and, once it no longer fits,
#: goes on inserting into the on-disk index tuple by tuple, many times slower. The measured index size per
#: vector (docs/benchmarks.md: 117 MB per 100k halfvec, 205 MB per 100k vector, m=16) with headroom, within
#: these bounds.
HNSW_BUILD_BYTES_PER_VECTOR = {"halfvec": 1600, "vector": 2600}
HNSW_BUILD_MEM_MB = (256, 8192)
#: A filtered search takes this many times k rows from the HNSW iterative scan before keeping the exact best k.
SCOPE_ROWS = 4
#: ``hnsw.ef_search`` of a filtered HNSW query at least (recall@10 0.926 at ef 100 with a 50% filter at 300k).
SCOPE_EF_SEARCH = 200
#: Missing vectors from which a catch-up drops the HNSW index, COPYs the rows and builds it once at the end.
BULK_MIN = 20_000
_OPS = {("cosine", "halfvec"): ("halfvec_cosine_ops", "<=>"), ("cosine", "vector"): ("vector_cosine_ops", "<=>"),
        ("euclidean", "halfvec"): ("halfvec_l2_ops", "<->"), ("euclidean", "vector"): ("vector_l2_ops", "<->")}


def _table(c: Any, version: str) -> tuple[str, int, str] | None:
    row = c.execute("SELECT tbl, dim, energy FROM vector_tables WHERE version=%s", (version,)).fetchone()
    return (row[0], int(row[1]), row[2]) if row else None


def vector_table_sql(table: str, dim: int) -> str:
    """The statement that creates a version's vector table ``table`` (also what a restore creates).

    Example:
        >>> vector_table_sql("vec_1", 384).split(", ")[-1]
        'embedding vector(384) NOT NULL)'
    """
    return (f"CREATE TABLE {table} (seq bigint PRIMARY KEY REFERENCES questions(seq) ON DELETE CASCADE, "
            f"embedding vector({int(dim)}) NOT NULL)")


def drop_vectors(db: Database, version: str) -> None:
    """Drop the vector table of ``version`` (retiring a version: no slow HNSW vacuum)."""
    with db.transaction() as c:
        t = _table(c, version)
        if t is not None:
            c.execute(f"DROP TABLE IF EXISTS {t[0]}")
            c.execute("DELETE FROM vector_tables WHERE version=%s", (version,))


class PgVectorIndex:
    """The vectors of one model version in table ``vec_<n>`` (see the module docstring).

    Args:
        db: The shared database.
        version: The model version.
        table: Its table name (from ``vector_tables``).
        dim: Vector dimension.
        energy: The model's energy: cosine or Euclidean distance operators.
        kind: ``"halfvec"`` or ``"vector"``: the type the HNSW index is built on.
    """

    def __init__(self, db: Database, version: str, table: str, dim: int, energy: Energy | str,
                 kind: str = "halfvec") -> None:
        if kind not in KINDS:
            raise ValueError(f"pg index kind must be one of {KINDS}, got {kind!r}")
        self.db = db
        self.version = version
        self.table = table
        self.dim = dim
        self.energy = Energy.from_name(energy)
        self.kind = kind
        ops, self._op = _OPS[(self.energy.name, kind)]
        self._ops = ops
        self._key = f"embedding::halfvec({dim})" if kind == "halfvec" else "embedding"

    @classmethod
    def open(cls, db: Database, version: str, dim: int, energy: Energy | str,
             kind: str = "halfvec") -> tuple[PgVectorIndex, bool]:
        """The index of ``version``, created (empty, with its HNSW index) if missing.

        Returns:
            The index and whether it existed with this dimension and energy (False: new, fill it).
        """
        energy = Energy.from_name(energy)
        with db.transaction() as c:
            c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"dupq-vectors-{version}",))
            t = _table(c, version)
            if t is not None and (t[1] != dim or t[2] != energy.name):
                c.execute(f"DROP TABLE IF EXISTS {t[0]}")
                c.execute("DELETE FROM vector_tables WHERE version=%s", (version,))
                t = None
            intact = t is not None
            if t is None:
                n = c.execute("SELECT nextval('vector_table_seq')").fetchone()[0]
                table = f"vec_{n}"
                c.execute("INSERT INTO vector_tables(version, tbl, dim, energy) VALUES (%s, %s, %s, %s)",
                          (version, table, dim, energy.name))
                c.execute(vector_table_sql(table, dim))
                idx = cls(db, version, table, dim, energy, kind)
                idx._create_hnsw(c)
                return idx, False
        return cls(db, version, t[0], dim, energy, kind), intact

    def _create_hnsw(self, c: Any) -> None:
        rows = int(c.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])
        low, high = HNSW_BUILD_MEM_MB
        mb = min(high, max(low, rows * HNSW_BUILD_BYTES_PER_VECTOR[self.kind] // 2**20 + 1))
        c.execute(f"SET LOCAL maintenance_work_mem = '{mb}MB'")
        c.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_hnsw ON {self.table} USING hnsw (({self._key}) "
                  f"{self._ops}) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")

    # -- VectorIndex ------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self.db.connection() as c:
            return int(c.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def ids(self) -> set[str]:
        with self.db.connection() as c:
            return {r[0] for r in c.execute(f"SELECT q.id FROM {self.table} v JOIN questions q USING (seq)")}

    @property
    def revision(self) -> int:
        with self.db.connection() as c:
            row = c.execute("SELECT revision FROM vector_tables WHERE version=%s", (self.version,)).fetchone()
        return int(row[0]) if row else -1

    def save(self, revision: int) -> None:
        """Every write is committed already; record the store revision they reflect."""
        with self.db.connection() as c:
            c.execute("UPDATE vector_tables SET revision=%s WHERE version=%s", (revision, self.version))

    def close(self) -> None:
        """Nothing to release (the pool belongs to the :class:`Database`)."""

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        """Insert the vectors of stored questions (an id already present is replaced; unknown ids skipped)."""
        if not ids:
            return
        vectors = self.energy.prepare(np.asarray(vectors, dtype=np.float32))
        with self.db.transaction() as c:
            seqs = dict(c.execute("SELECT id, seq FROM questions WHERE id = ANY(%s)", (list(ids),)).fetchall())
            rows = [(seqs[i], v) for i, v in zip(ids, vectors, strict=True) if i in seqs]
            if not rows:
                return
            copy_vectors(c, self.table, rows)

    def remove(self, ids: list[str]) -> None:
        """Delete ids (a deleted question's rows are gone already, by cascade)."""
        if ids:
            with self.db.connection() as c:
                c.execute(f"DELETE FROM {self.table} v USING questions q WHERE q.seq = v.seq AND q.id = ANY(%s)",
                          (list(ids),))

    def search(self, queries: np.ndarray, k: int, scope: Scope | None = None) -> list[list[Hit]]:
        """Top-k hits per query row through the HNSW index, re-scored and ordered by the exact energy.

        With a ``scope``: as the in-process index does (:meth:`dupq.index.AnnIndex.search`), a selective filter
        (at most ``SCOPE_EXACT_PER_ROOT * sqrt(rows)`` match; the GIN index of the filtered fields finds them) is
        answered by an exact scan of its questions; otherwise the filter is in the ``WHERE`` of the HNSW query
        (:func:`filter_sql`), which an iterative scan (``hnsw.iterative_scan``) answers; when that gives fewer
        than k (it stopped at ``hnsw.max_scan_tuples``), an exact scan of the scope answers: k whenever k match."""
        queries = self.energy.prepare(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        cast = f"::halfvec({self.dim})" if self.kind == "halfvec" else ""
        params: list[Any] = []
        if scope is None:
            sql = (f"SELECT q.id, v.embedding FROM (SELECT seq, embedding FROM {self.table} "
                   f"ORDER BY {self._key} {self._op} %s::vector{cast} LIMIT %s) v JOIN questions q USING (seq)")
        else:
            where, params = filter_sql(scope.filter)
            scoped = f"SELECT q.id, v.embedding FROM {self.table} v JOIN questions q ON q.seq = v.seq WHERE {where} "
            sql = scoped + f"ORDER BY v.{self._key} {self._op} %s::vector{cast} LIMIT %s"
            # "+ 0": an expression no index serves, so this one is an exact scan of the scope.
            exact = scoped + f"ORDER BY (v.embedding {self._op} %s::vector) + 0 LIMIT %s"
            listed = (f"SELECT q.id, v.embedding FROM {self.table} v JOIN questions q ON q.seq = v.seq WHERE "
                      f"v.seq = ANY(%s) ORDER BY (v.embedding {self._op} %s::vector) + 0 LIMIT %s")
        # A filtered scan takes SCOPE_ROWS x k rows (relaxed order) and keeps the best k by the exact score: the
        # iterative scan's later rows are less accurate (measured: recall@10 0.91 -> see docs/benchmarks.md).
        limit = k if scope is None else min(SCOPE_ROWS * k, 1000)
        out: list[list[Hit]] = []
        with self.db.transaction() as c:
            if limit > self.db.ef_search:
                c.execute(f"SET LOCAL hnsw.ef_search = {int(min(limit, 1000))}")
            cur = c.cursor(binary=True)
            seqs = None  # a selective scope's questions: scanned exactly
            if scope is not None:
                c.execute(f"SET LOCAL hnsw.ef_search = {max(self.db.ef_search, SCOPE_EF_SEARCH, min(limit, 1000))}")
                n = c.execute("SELECT GREATEST(reltuples, 0) FROM pg_class WHERE oid = to_regclass(%s)",
                              (self.table,)).fetchone()[0]
                most = int(SCOPE_EXACT_PER_ROOT * float(n or 0) ** 0.5)
                # The planner's estimate of the matches (the GIN index's statistics) decides whether to look:
                # listing an unselective scope's first matches costs a bitmap of all of them (26 ms at 150k).
                plan = c.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM questions q WHERE {where}", params).fetchone()[0]
                if plan[0]["Plan"]["Plan Rows"] <= 2 * most:
                    found = [r[0] for r in c.execute(f"SELECT q.seq FROM questions q WHERE {where} LIMIT %s",
                                                     (*params, most + 1))]
                    seqs = found if len(found) <= most else None
            for qv in queries:
                if seqs is not None:
                    rows = cur.execute(listed, (seqs, qv, k)).fetchall()
                else:
                    rows = cur.execute(sql, (*params, qv, limit)).fetchall()
                if scope is not None and seqs is None and len(rows) < k:
                    rows = cur.execute(exact, (*params, qv, k)).fetchall()
                if not rows:
                    out.append([])
                    continue
                ids = [r[0] for r in rows]
                mat = np.stack([np.asarray(r[1].to_numpy() if hasattr(r[1], "to_numpy") else r[1],
                                           dtype=np.float32) for r in rows])
                scores = self.energy.rank_scores(qv[None, :], mat)[0]
                out.append(top_hits(scores, np.arange(len(ids)), ids, min(k, len(ids)), self.energy))
        return out

    # -- catching up with the store (dupq.index.sync_index) -----------------------------------------
    def count_missing(self) -> int:
        """Stored questions without a vector in this version."""
        with self.db.connection() as c:
            return int(c.execute(f"SELECT COUNT(*) FROM questions q WHERE NOT EXISTS "
                                 f"(SELECT 1 FROM {self.table} v WHERE v.seq = q.seq)").fetchone()[0])

    def iter_missing(self, batch: int = 1024) -> Iterator[list[tuple[str, str]]]:
        """``(id, text)`` of the stored questions without a vector, in insertion order, in batches."""
        last = 0
        while True:
            with self.db.connection() as c:
                rows = c.execute(
                    f"SELECT q.seq, q.id, q.text FROM questions q WHERE q.seq > %s AND NOT EXISTS "
                    f"(SELECT 1 FROM {self.table} v WHERE v.seq = q.seq) ORDER BY q.seq LIMIT %s", (last, batch)
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(r[1], r[2]) for r in rows]

    def fill(self, encode: Any, *, batch_size: int = 64, progress: Any = None) -> int:
        """Embed and insert every stored question this version lacks; returns how many were added.

        Many missing (a new version's backfill): the HNSW index is dropped, the rows COPYed and the index
        built once, then ``ANALYZE`` (without it the planner ignores the new index).
        """
        missing = self.count_missing()
        if not missing:
            return 0
        bulk = missing >= BULK_MIN
        if bulk:
            with self.db.connection() as c:
                c.execute(f"DROP INDEX IF EXISTS {self.table}_hnsw")
        done = 0
        try:
            for todo in self.iter_missing(max(batch_size, 1024)):
                self.add([i for i, _ in todo], encode([t for _, t in todo], batch_size=batch_size))
                done += len(todo)
                if progress is not None:
                    progress(len(todo))
        finally:
            if bulk:
                with self.db.transaction() as c:
                    self._create_hnsw(c)
                with self.db.connection() as c:
                    c.execute(f"ANALYZE {self.table}")
        return done

    def ensure_hnsw(self) -> None:
        """Build the HNSW index if it is missing (a shared reindex dropped it to fill the table), then
        ``ANALYZE``; nothing to do when it exists."""
        with self.db.connection() as c:
            have = c.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self.table}_hnsw",)).fetchone()[0]
        if have:
            return
        with self.db.transaction() as c:
            self._create_hnsw(c)
        with self.db.connection() as c:
            c.execute(f"ANALYZE {self.table}")

    def size_bytes(self) -> dict[str, int]:
        """On-disk size of the table and of its HNSW index."""
        with self.db.connection() as c:
            t = c.execute("SELECT pg_table_size(%s), COALESCE(pg_relation_size(to_regclass(%s)), 0)",
                          (self.table, f"{self.table}_hnsw")).fetchone()
        return {"table": int(t[0]), "hnsw": int(t[1])}


def filter_sql(qf: QuestionFilter, alias: str = "q") -> tuple[str, list[Any]]:
    """The ``WHERE`` condition of a filter over ``questions`` (as ``alias``) and its parameters.

    Each clause is ``(meta -> 'FIELD') @> ANY(values)``: a ``jsonb`` scalar is contained in an equal scalar and in
    an array holding it (the filter's meaning, dupq/filters.py), and the expression is the one the GIN index of
    a declared field is built on (:func:`field_index_sql`), so the planner can use it. ``none`` negates it, a
    missing field counting as "has none of them".
    """
    parts: list[str] = []
    params: list[Any] = []
    for c in qf.clauses:
        cond = f"({alias}.meta -> '{c.field}') @> ANY(%s::jsonb[])"  # field names are checked: FIELD_PATTERN
        parts.append(f"NOT COALESCE({cond}, false)" if c.negate else cond)
        params.append(list(c.keys))
    return " AND ".join(parts) or "true", params


def field_index_sql(field: str) -> tuple[str, str]:
    """The name and ``CREATE INDEX`` statement of the GIN index of a filterable field (``jsonb_path_ops``: the
    smaller kind, enough for ``@>``)."""
    import hashlib

    name = "questions_filter_" + re.sub(r"[^a-z0-9_]", "_", field.lower())[:30] + "_"
    name += hashlib.sha1(field.encode()).hexdigest()[:8]
    return name, f"CREATE INDEX IF NOT EXISTS {name} ON questions USING gin ((meta -> '{field}') jsonb_path_ops)"


def copy_vectors(c: Any, table: str, rows: Sequence[tuple[int, np.ndarray]]) -> None:
    """Binary COPY into a staging table, then upsert (two nodes catching up at once must not conflict)."""
    c.execute(f"CREATE TEMP TABLE IF NOT EXISTS _dupq_stage (LIKE {table}) ON COMMIT DROP")
    with c.cursor().copy("COPY _dupq_stage (seq, embedding) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(["int8", "vector"])
        for seq, v in rows:
            cp.write_row((seq, v))
    c.execute(f"INSERT INTO {table} (seq, embedding) SELECT s.seq, s.embedding FROM _dupq_stage s "
              "JOIN questions q ON q.seq = s.seq ON CONFLICT (seq) DO UPDATE SET embedding = excluded.embedding")
    c.execute("DROP TABLE _dupq_stage")
