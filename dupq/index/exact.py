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

from dupq.index.base import Hit
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

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k hits per query row, best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
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
