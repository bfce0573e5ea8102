"""Approximate nearest-neighbour search for large banks: an HNSW graph (usearch) over a :class:`VectorLog`.

Why usearch (measured on 100k real question embeddings, ``scripts/bench_speed.py --sections libs``;
docs/benchmarks.md): usearch, FAISS HNSW and hnswlib reach the same recall@10 at the same graph settings
(0.99 at ef=128), all well under a millisecond a query. Only usearch also deletes in place (FAISS's HNSW
cannot remove entries; hnswlib can only mark them), stores its vectors in int8 or f16 (hnswlib: float32
only), and saves/restores a graph without a rebuild: what an index that takes adds and deletes while it
serves needs, in the least memory.

Vectors are held once:
    * :class:`VectorLog` keeps the float32 vectors in ``vectors.f32`` and memory-maps it (no heap copy).
    * The graph keeps its own compact copy to walk the graph: int8 for the cosine energy (384 MB at
      1M x 384, a quarter of a float32 copy), f16 for Euclidean vectors.
    * Each query takes the graph's best ``candidates`` rows and re-ranks them exactly with their float32
      rows read from the memory map, so reported scores are exact energies (the duplicate threshold sees
      the same number exact search gives) and quantisation never reorders the top-k (measured: int8 with
      re-ranking reaches the recall of f16 and of FAISS's float32 graph).
    At 1M questions the process holds the int8 copy, the graph links and the ids, not the 1.5 GB of a
    float32 copy; the float32 rows it re-ranks come from the page cache.

Lifecycle:
    * Below ``min_size`` stored vectors there is no graph: search is exact (:class:`ExactIndex`), which is
      also the ground truth the graph is tested against.
    * Crossing ``min_size`` (on open or while adding) builds the graph in a background thread; searches
      stay exact until it is ready, then switch.
    * Adds and deletes go to the log, then to the graph (``catch-up``: new alive rows are inserted, rows
      deleted since are removed), so the graph follows the log incrementally.
    * The graph is saved beside the log (``ann.usearch`` + ``ann.json``: which log rows and deletions it
      covers) when it lags its last save by a quarter, and on :meth:`AnnIndex.close`. On open it is
      restored and caught up from the log: never rebuilt unless missing or unreadable.
    * When deleted entries reach ``rebuild_dead_fraction`` of the graph, a fresh graph of the alive rows is
      built in a background thread; searches keep using the old graph until the swap, and changes made
      meanwhile are caught up from the log before it.

Example:
    >>> import numpy as np
    >>> idx = AnnIndex(VectorLog(8), min_size=1, background=False)
    >>> vecs = np.eye(8, dtype=np.float32)
    >>> idx.add([f"q{i}" for i in range(8)], vecs)
    >>> [h.id for h in idx.search(vecs[3:4], 1)[0]]
    ['q3']
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dupq.config import ANN_REBUILD_DEAD_FRACTION
from dupq.index.base import Hit, Scope
from dupq.index.exact import ExactIndex, search_rows, top_hits
from dupq.index.storage import VectorLog, write_atomic
from dupq.models.energy import Energy
from dupq.system import cpu_threads

log = logging.getLogger(__name__)

GRAPH_FILE = "ann.usearch"
GRAPH_META = "ann.json"
#: Bump when the graph file's meaning changes, so old graphs are rebuilt.
GRAPH_FORMAT = 1
#: Inserting from several threads at once makes usearch's graph slightly worse (measured on 1k clustered
#: vectors: recall@10 0.993-1.0 instead of always 1.0), so builds smaller than this insert from one thread,
#: which is fast enough at that size; larger ones use every core.
PARALLEL_BUILD_MIN = 50_000


def _threads_for(rows: int) -> int:
    return cpu_threads() if rows >= PARALLEL_BUILD_MIN else 1


#: A filtered search scans its scope exactly up to ``SCOPE_EXACT_PER_ROOT * sqrt(bank size)`` matching questions
#: and goes through the graph above. An exact scan costs about 2.5 us per matching question (store lookup, row
#: gather, dot product), the graph about 0.14 ms per 1/selectivity (the candidates it must see for k matches):
#: they cross at sqrt(56 n) ~ 7.5 sqrt(n) (2,400 at 100k, 7,500 at 1M); measured at 100k with
#: scripts/bench_filter.py (docs/benchmarks.md "Scoped search": 1k matching 2.3 ms exact vs 14 ms graph; 10k
#: matching 48 ms exact vs 2.0 ms graph).
SCOPE_EXACT_PER_ROOT = 7.5
#: ...and looks at no more than this many graph candidates before it scans its scope exactly.
SCOPE_GRAPH_MAX = 8192

#: Settings baked into a built graph; the others (expansion_search, candidates) apply at search time.
BUILD_PARAMS = ("connectivity", "expansion_add", "dtype")


def _build_params(params: AnnParams) -> dict[str, Any]:
    return {k: v for k, v in asdict(params).items() if k in BUILD_PARAMS}


@dataclass(frozen=True)
class AnnParams:
    """HNSW settings (chosen by measurement, docs/benchmarks.md).

    Attributes:
        connectivity: Links per node ("M").
        expansion_add: Candidate list while inserting ("efConstruction").
        expansion_search: Candidate list while searching ("ef").
        candidates: Graph hits re-ranked exactly per query (at least k).
        dtype: Scalar type of the graph's own vector copy; None: the energy's
            (:attr:`dupq.models.energy.Energy.graph_dtype`: ``i8`` for cosine, ``f16`` for Euclidean).
        scope_exact_max: A filtered search scores every question in its scope exactly when at most this many
            match; above, it goes through the graph (:meth:`AnnIndex._scoped`). None: ``SCOPE_EXACT_PER_ROOT``
            times the square root of the bank size.
        scope_graph_max: Most graph candidates a filtered search looks at before it scans its scope exactly.
    """

    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 192
    candidates: int = 32
    dtype: str | None = None
    scope_exact_max: int | None = None
    scope_graph_max: int = SCOPE_GRAPH_MAX

    def dtype_for(self, energy: Energy) -> str:
        return self.dtype or energy.graph_dtype


class _Graph:
    """usearch HNSW keyed by log row number: the one place that knows the library's API."""

    def __init__(self, dim: int, energy: Energy, params: AnnParams, index: Any = None) -> None:
        from usearch.index import Index

        self.params = params
        self.index = index or Index(
            ndim=dim,
            metric=energy.usearch_metric,
            dtype=params.dtype_for(energy),
            connectivity=params.connectivity,
            expansion_add=params.expansion_add,
            expansion_search=params.expansion_search,
        )
        self.index.expansion_search = params.expansion_search
        self.removed = 0  # entries removed since this graph was built (they still cost search time)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, rows: np.ndarray, vectors: np.ndarray, *, threads: int = 1) -> None:
        if len(rows):
            self.index.add(np.asarray(rows, dtype=np.uint64), np.ascontiguousarray(vectors), threads=threads)

    def remove(self, rows: list[int]) -> None:
        if rows:
            self.removed += int(np.sum(self.index.remove(np.asarray(rows, dtype=np.uint64))))

    def search(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """Candidate rows per query (best first by the graph's approximate distance)."""
        m = self.index.search(queries, count, threads=1)
        if queries.shape[0] == 1 and not hasattr(m, "counts"):
            return [m.keys.astype(np.int64)]
        return [m.keys[i, : m.counts[i]].astype(np.int64) for i in range(queries.shape[0])]

    def dead_fraction(self) -> float:
        total = len(self) + self.removed
        return 0.0 if total == 0 else self.removed / total

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        self.index.save(str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int, energy: Energy, params: AnnParams) -> _Graph:
        from usearch.index import Index

        index = Index.restore(str(path))
        if index is None or index.ndim != dim:
            raise ValueError(f"{path} is not a usable graph")
        return cls(dim, energy, params, index=index)


class AnnIndex:
    """Top-k search over a :class:`VectorLog`: exact below ``min_size``, an HNSW graph from there on.

    Args:
        log: The vectors (the one float32 copy; memory-mapped when persisted).
        min_size: Stored vectors from which a graph is built and used (``Settings.ann_min_size``).
        params: Graph settings.
        rebuild_dead_fraction: Share of removed entries in the graph that triggers a background rebuild.
        background: Build graphs in a thread (True) or inline (False: for tests and benchmarks).
        read_only: Never build or save a graph (a reader beside the process that owns the folder): a saved
            graph is restored and caught up in memory, else searches are exact.
    """

    def __init__(
        self,
        log: VectorLog,
        *,
        min_size: int,
        params: AnnParams | None = None,
        rebuild_dead_fraction: float = ANN_REBUILD_DEAD_FRACTION,
        background: bool = True,
        read_only: bool = False,
    ) -> None:
        self.log = log
        self.read_only = read_only
        self.min_size = max(1, int(min_size))
        self.params = params or AnnParams()
        self.rebuild_dead_fraction = rebuild_dead_fraction
        self.background = background
        self._lock = threading.RLock()  # graph mutations, swaps and graph searches
        self._graph: _Graph | None = None
        self._rows = 0  # log rows [0, _rows) have been offered to the graph
        self._deleted = 0  # entries of the log's deletion list applied to the graph
        self._saved = (0, 0)  # (_rows, _deleted) of the graph file on disk
        self._job: threading.Thread | None = None
        self._closed = False
        self._load_graph()
        self._maybe_build()

    # -- state ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.log)

    def ids(self) -> set[str]:
        """Ids of the indexed questions."""
        return self.log.ids()

    @property
    def revision(self) -> int:
        """The store revision the last :meth:`save` recorded (-1: never saved)."""
        return self.log.revision

    @property
    def uses_graph(self) -> bool:
        """Whether searches currently go through the graph (False: exact)."""
        return self._graph is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background build or rebuild; True when none is running any more."""
        job = self._job
        if job is not None:
            job.join(timeout)
            return not job.is_alive()
        return True

    # -- writes ---------------------------------------------------------------------------------------
    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            self.log.add(ids, vectors)
            self._catch_up(self._graph)
        self._maybe_build()

    def remove(self, ids: list[str]) -> None:
        with self._lock:
            self.log.remove(ids)
            self._catch_up(self._graph)
        self._maybe_build()

    def save(self, revision: int) -> None:
        """Commit the log; also save the graph when it covers a quarter more than its last save."""
        with self._lock:
            self.log.save(revision)
            g = self._graph
            if g is not None and self.log.path is not None and not self.read_only:
                lag = (self._rows - self._saved[0]) + (self._deleted - self._saved[1])
                if lag >= max(1, self._rows // 4):
                    self._save_graph(g)

    def close(self) -> None:
        """Stop taking background work and save the graph if it changed since its last save."""
        self._closed = True
        self.wait()
        with self._lock:
            g = self._graph
            if g is None or self.log.path is None or self.read_only:
                return
            if (self._rows, self._deleted) != self._saved:
                self._save_graph(g)

    # -- search ---------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, scope: Scope | None = None) -> list[list[Hit]]:
        """Top-k hits per query row, best first, scored exactly (graph candidates re-ranked in float32).

        With a ``scope`` (a filter): the graph's candidates, widened until 2k of them match; when the first
        candidates hold fewer, and at most ``params.scope_exact_max`` questions match, an exact scan of them
        (:meth:`_scoped`)."""
        queries = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        with self._lock:
            g = self._graph
            if g is None:
                return ExactIndex(self.log).search(queries, k, scope)
            if scope is not None:
                probe: list[list[str] | None] = []  # the scope's ids if it is selective, asked once per call
                return [self._scoped(g, q, k, scope, probe) for q in queries]
            cands = g.search(queries, max(k, self.params.candidates))
            return [self._rerank(q, rows, k) for q, rows in zip(queries, cands, strict=True)]

    def _selective(self, scope: Scope, probe: list[list[str] | None]) -> list[str] | None:
        """The scope's ids when at most ``scope_exact_max`` match (an exact scan is cheaper), else None."""
        if not probe:
            limit = self.params.scope_exact_max
            probe.append(scope.ids(limit=int(SCOPE_EXACT_PER_ROOT * len(self.log) ** 0.5) if limit is None else limit))
        return probe[0]

    def _scoped(self, g: _Graph, q: np.ndarray, k: int, scope: Scope, probe: list[list[str] | None]) -> list[Hit]:
        """The best k in ``scope`` through the graph: its best ``count`` candidates, of which the store keeps
        those in scope; ``count`` grows (to the share in scope seen so far) until 2k are found or the graph
        holds no more, and the best k of those by the exact energy answer. The graph's best candidates hold the
        best k of the scope once k of them are in it, so the recall is the graph's own (2k: a margin for the
        graph's misses, as the unfiltered search re-ranks ``candidates`` > k); past ``scope_graph_max``
        candidates an exact scan of the scope answers."""
        ids = self.log.row_ids()
        seen: dict[int, bool] = {}  # row -> in scope
        count = max(self.params.candidates, 2 * k)
        while True:
            rows = g.search(q[None, :], count)[0]
            exhausted = len(rows) < count
            rows = rows[self.log.alive[rows]] if len(rows) else rows
            new = [int(r) for r in rows if int(r) not in seen]
            if new:
                kept = scope.keep([ids[r] for r in new])
                seen.update((r, ids[r] in kept) for r in new)
            good = np.array([r for r in rows if seen[int(r)]], dtype=np.int64)
            if len(good) >= 2 * k or exhausted:  # 2k found, or every alive entry was a candidate
                return self._rerank(q, good, k)
            selective = self._selective(scope, probe)  # asked only now: an unselective scope never pays for it
            if selective is not None:
                return search_rows(self.log, q[None, :], self.log.rows_of(selective), k)[0]
            if count >= self.params.scope_graph_max:
                return search_rows(self.log, q[None, :], self.log.rows_of(scope.ids() or []), k)[0]
            share = max(len(good), 1) / max(len(rows), 1)
            count = min(self.params.scope_graph_max, max(4 * count, int(3 * k / share)))

    def _rerank(self, q: np.ndarray, rows: np.ndarray, k: int) -> list[Hit]:
        rows = rows[self.log.alive[rows]] if len(rows) else rows
        if len(rows) == 0:
            return []
        scores = self.log.energy.rank_scores(q[None, :], self.log.get_rows(rows))[0]
        return top_hits(scores, rows, self.log.row_ids(), k, self.log.energy)

    # -- the graph ------------------------------------------------------------------------------------
    def _catch_up(self, g: _Graph | None) -> None:
        """Apply to ``g`` what the log did since: remove rows deleted since, insert new alive rows."""
        if g is None:
            return
        g.remove([r for r in self.log.deleted_rows(self._deleted) if r < self._rows])  # later rows: never inserted
        self._deleted = self.log.deleted_count
        n = self.log.n_rows
        if n > self._rows:
            rows = self._rows + np.flatnonzero(self.log.alive[self._rows : n])
            g.add(rows, self.log.get_rows(rows), threads=_threads_for(len(rows)))
            self._rows = n

    def _maybe_build(self) -> None:
        """Start a build when the bank reached ``min_size`` without a graph, or a rebuild when it decayed."""
        if self.read_only or self._closed or (self._job is not None and self._job.is_alive()):
            return
        g = self._graph
        if g is None and len(self.log) < self.min_size:
            return
        if g is not None and g.dead_fraction() < self.rebuild_dead_fraction:
            return
        if self.background:
            self._job = threading.Thread(target=self._build, name="dupq-ann-build", daemon=True)
            self._job.start()
        else:
            self._build()

    def _build(self) -> None:
        """Build a graph of the alive rows off the lock, then catch it up and swap it in under the lock."""
        try:
            with self._lock:
                n = self.log.n_rows
                alive = self.log.alive[:n].copy()
                deleted = self.log.deleted_count
                log_ = self.log
            g = _Graph(log_.dim, log_.energy, self.params)
            rows_all = np.flatnonzero(alive)
            threads = _threads_for(len(rows_all))
            # Off the lock while writers add and save: VectorLog.get_rows reads a consistent (map, tail)
            # pair, and rows below the snapshot's n stay readable whatever a save swaps in.
            for start in range(0, len(rows_all), 65536):  # memory-mapped rows, a chunk at a time
                rows = rows_all[start : start + 65536]
                g.add(rows, log_.get_rows(rows), threads=threads)
            with self._lock:
                if self.log is not log_:
                    return
                # Rows deleted after the snapshot that the new graph holds must go too.
                g.remove([r for r in self.log.deleted_rows(deleted) if r < n])
                self._rows, self._deleted = n, self.log.deleted_count
                self._catch_up(g)
                self._graph = g
                self._saved = (-1, -1)  # the file on disk is an older graph
                if self.log.path is not None and not self.read_only:
                    self._save_graph(g)
            log.info("ANN graph ready: %d vectors", len(g))
        except Exception:  # noqa: BLE001 - searches stay exact (or on the old graph); the next write retries
            log.exception("building the ANN graph failed")

    def _save_graph(self, g: _Graph) -> None:
        assert self.log.path is not None
        self.log.path.mkdir(parents=True, exist_ok=True)
        # Meta first says "no graph"; the graph file is replaced; then the meta names what it covers.
        # A crash in between leaves a graph without meta: rebuilt, never trusted stale.
        meta_path = self.log.path / GRAPH_META
        meta_path.unlink(missing_ok=True)
        g.save(self.log.path / GRAPH_FILE)
        meta = {
            "format": GRAPH_FORMAT,
            "rows": self._rows,
            "deleted": self._deleted,
            "removed": g.removed,
            "params": asdict(self.params),
        }
        write_atomic(meta_path, json.dumps(meta))
        self._saved = (self._rows, self._deleted)

    def _load_graph(self) -> None:
        """Restore the saved graph, if it matches this log, and catch it up; otherwise leave it to a build."""
        path = self.log.path
        if path is None or not (path / GRAPH_META).is_file():
            return
        try:
            meta = json.loads((path / GRAPH_META).read_text())
            rows, deleted = int(meta["rows"]), int(meta["deleted"])
            if (
                meta.get("format") != GRAPH_FORMAT
                or {k: meta.get("params", {}).get(k) for k in BUILD_PARAMS} != _build_params(self.params)
                or rows > self.log.n_rows
                or deleted > self.log.deleted_count
            ):
                raise ValueError("graph does not match this log or these settings")
            g = _Graph.load(path / GRAPH_FILE, self.log.dim, self.log.energy, self.params)
            g.removed = int(meta.get("removed", 0))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            log.warning("ignoring the saved ANN graph in %s (%s); it will be rebuilt", path, e)
            return
        with self._lock:
            self._rows, self._deleted = rows, deleted
            self._saved = (rows, deleted)
            self._catch_up(g)
            self._graph = g

