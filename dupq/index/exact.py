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

import numpy as np

from dupq.index.base import Hit
from dupq.index.storage import VectorLog


class ExactIndex:
    """Brute-force top-k by the model's energy (cosine: dot product of unit vectors; Euclidean: distance)."""

    def __init__(self, log: VectorLog) -> None:
        self.log = log

    def __len__(self) -> int:
        return len(self.log)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        self.log.add(ids, vectors)

    def remove(self, ids: list[str]) -> None:
        self.log.remove(ids)

    def save(self, revision: int) -> None:
        self.log.save(revision)

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k hits per query row, best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        vecs, alive, ids = self.log.vectors, self.log.alive, self.log.row_ids()
        n_alive = len(self.log)
        if n_alive == 0:
            return [[] for _ in queries]
        k = min(k, n_alive)
        if self.log.energy == "cosine":
            scores = queries @ vecs.T  # unit vectors: the dot product is the cosine
        else:
            # Rank by negative squared distance; report the distance itself.
            scores = 2 * queries @ vecs.T - (vecs * vecs).sum(1)[None, :] - (queries * queries).sum(1)[:, None]
        scores[:, ~alive] = -np.inf
        out = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            top = top[np.argsort(-row[top], kind="stable")]
            if self.log.energy == "cosine":
                out.append([Hit(ids[r], float(row[r])) for r in top])
            else:
                out.append([Hit(ids[r], float(np.sqrt(max(-row[r], 0.0)))) for r in top])
        return out
