"""Exact (brute-force) search: one matrix product over every stored vector.

Exact search is the default for small banks and the ground truth for approximate indexes.

Example:
    >>> import numpy as np
    >>> idx = ExactIndex(VectorLog(2))
    >>> idx.add(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32))
    >>> [h.id for h in idx.search(np.array([[0.9, 0.1]], dtype=np.float32), 1)[0]]
    ['a']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dupq.index.base import Hit, Scope
from dupq.index.storage import VectorLog
from dupq.models.energy import Energy


def top_hits(scores: np.ndarray, rows: np.ndarray, row_ids: Sequence[str], k: int, energy: Energy) -> list[Hit]:
    """The ``k`` best of ``scores`` (:meth:`Energy.rank_scores` of ``rows``), best first, as reported hits."""
    if k < len(scores):
        top = np.argpartition(-scores, k - 1)[:k]
    else:
        top = np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    reported = energy.reported(scores[top])
    return [Hit(row_ids[rows[i]], float(s)) for i, s in zip(top, reported, strict=True)]


class ExactIndex:
    """Brute-force top-k by the model's energy (cosine: dot product of unit vectors; Euclidean: distance)."""

    def __init__(self, log: VectorLog) -> None:
        self.log = log

    def __len__(self) -> int:
        return len(self.log)

    def ids(self) -> set[str]:
        """Ids of the indexed questions."""
        return self.log.ids()

    @property
    def revision(self) -> int:
        """The store revision the last :meth:`save` recorded (-1: never saved)."""
        return self.log.revision

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        self.log.add(ids, vectors)

    def remove(self, ids: list[str]) -> None:
        self.log.remove(ids)

    def save(self, revision: int) -> None:
        self.log.save(revision)

    def close(self) -> None:
        """Nothing to release: every change is on disk after :meth:`save`."""

    def search(self, queries: np.ndarray, k: int, scope: Scope | None = None) -> list[list[Hit]]:
        """Top-k hits per query row, best first (with ``scope``: among the questions it holds)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if scope is not None:
            return search_rows(self.log, queries, self.log.rows_of(scope.ids() or []), k)
        vecs, alive, ids = self.log.snapshot()
        n_alive = int(alive.sum())
        if n_alive == 0:
            return [[] for _ in queries]
        k = min(k, n_alive)
        energy = self.log.energy
        scores = energy.rank_scores(queries, vecs)
        scores[:, ~alive] = -np.inf
        rows = np.arange(len(ids))
        return [top_hits(row, rows, ids, k, energy) for row in scores]


def search_rows(log: VectorLog, queries: np.ndarray, rows: np.ndarray, k: int, chunk: int = 65536) -> list[list[Hit]]:
    """Exact top-k per query among the given log ``rows`` (alive ones): a scoped search's exact scan.

    Reads only those rows (``chunk`` at a time, so a scope of a million rows never holds a second copy)."""
    rows = rows[log.alive[rows]] if len(rows) else rows
    if len(rows) == 0:
        return [[] for _ in queries]
    energy, ids = log.energy, log.row_ids()
    best: list[tuple[np.ndarray, np.ndarray]] = []  # per chunk: (scores, rows) of its top k per query
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        scores = energy.rank_scores(queries, log.get_rows(part))
        if len(part) > k:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            best.append((np.take_along_axis(scores, top, axis=1), part[top]))
        else:
            best.append((scores, np.broadcast_to(part, scores.shape)))
    scores = np.concatenate([s for s, _ in best], axis=1)
    cand = np.concatenate([r for _, r in best], axis=1)
    return [top_hits(s, r, ids, min(k, len(s)), energy) for s, r in zip(scores, cand, strict=True)]
