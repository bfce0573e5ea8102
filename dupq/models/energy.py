"""Energy functions of the twin encoder: everything that depends on "cosine or Euclidean", in one object.

An :class:`Energy` (in the spirit of sentence-transformers' ``SimilarityFunction``) knows how embeddings
are prepared (L2-normalised or raw), the energy of a pair, the query x bank scores used for ranking and the
scores reported from them, which direction is better, how a threshold decides "duplicate", the matching
contrastive-loss distance and margin, and the HNSW metric. Callers hold an ``Energy`` and never branch on
its name; the name (``"cosine"``/``"euclidean"``) is what dupq.json, index manifests and the API store.

Example:
    >>> import numpy as np
    >>> e = Energy.from_name("euclidean")
    >>> e is Energy.EUCLIDEAN, e.higher_is_better, e.name
    (True, False, 'euclidean')
    >>> bank = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    >>> e.scores(np.array([[3.0, 4.0]], dtype=np.float32), bank).round(3).tolist()
    [[5.0, 0.0]]
    >>> e.is_duplicate(np.array([0.5, 2.0]), threshold=1.0).tolist()
    [True, False]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["Energy"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True, eq=False)
class Energy:
    """One energy function; use the instances :attr:`COSINE` and :attr:`EUCLIDEAN` (or :meth:`from_name`).

    Attributes:
        name: The stored name (dupq.json, manifests, API responses).
        normalize: Whether embeddings are L2-normalised (then a dot product is the cosine).
        higher_is_better: True for a similarity, False for a distance.
        default_margin: Contrastive margin in the units of :meth:`distance_metric`'s distance.
        usearch_metric: The HNSW graph's metric (usearch name), ranking like this energy.
        graph_dtype: Scalar type of the graph's own vector copy (see dupq/index/ann.py).
        similarity_fn_name: The sentence-transformers similarity saved in the model's config.
    """

    name: str
    normalize: bool
    higher_is_better: bool
    default_margin: float
    usearch_metric: str
    graph_dtype: str
    similarity_fn_name: str
    _distance: str

    COSINE: ClassVar[Energy]
    EUCLIDEAN: ClassVar[Energy]
    _BY_NAME: ClassVar[dict[str, Energy]]

    @classmethod
    def from_name(cls, name: str | Energy) -> Energy:
        """The energy called ``name`` (an :class:`Energy` is returned as is).

        Example:
            >>> Energy.from_name("cosine") is Energy.COSINE
            True
            >>> Energy.from_name("dot")
            Traceback (most recent call last):
            ...
            ValueError: energy must be one of ('cosine', 'euclidean'), got 'dot'
        """
        if isinstance(name, Energy):
            return name
        try:
            return cls._BY_NAME[name]
        except (KeyError, TypeError):
            raise ValueError(f"energy must be one of {cls.names()}, got {name!r}") from None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names of every energy, for validation messages and choices."""
        return tuple(cls._BY_NAME)

    def __repr__(self) -> str:
        return f"Energy.{self.name.upper()}"

    def __reduce__(self) -> Any:
        return (Energy.from_name, (self.name,))  # unpickles to the same singleton

    # -- scores ---------------------------------------------------------------------------------------
    @property
    def sign(self) -> float:
        """``+1`` or ``-1``: reported scores times this rank higher-is-better (evaluation, thresholds)."""
        return 1.0 if self.higher_is_better else -1.0

    def prepare(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings as this energy compares them: unit rows for cosine, unchanged for Euclidean."""
        return _unit(embeddings) if self.normalize else embeddings

    def pair_energy(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise energy of pairs ``(a[i], b[i])``: cosine similarity or Euclidean distance.

        Example:
            >>> Energy.COSINE.pair_energy(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]])).tolist()
            [1.0]
        """
        a = np.atleast_2d(np.asarray(a, dtype=np.float32))
        b = np.atleast_2d(np.asarray(b, dtype=np.float32))
        if a.shape != b.shape:
            raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
        if self.normalize:
            return np.einsum("ij,ij->i", _unit(a), _unit(b))
        return np.linalg.norm(a - b, axis=1)

    def rank_scores(self, queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Query x row scores where higher is always better, cheap to compute for a whole bank.

        Cosine (rows already unit length): the dot product. Euclidean: the negative squared distance
        ``2 q.v - |v|^2 - |q|^2``, which ranks like the distance without a square root per row; turn the
        ones you keep into reported scores with :meth:`reported`.

        Example:
            >>> Energy.EUCLIDEAN.rank_scores(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])).tolist()
            [[-25.0]]
        """
        dots = queries @ matrix.T
        if self.normalize:
            return dots
        return 2 * dots - (matrix * matrix).sum(1)[None, :] - (queries * queries).sum(1)[:, None]

    def reported(self, rank_scores: np.ndarray) -> np.ndarray:
        """The energies (cosine similarity or Euclidean distance) of :meth:`rank_scores` values.

        Example:
            >>> Energy.EUCLIDEAN.reported(np.array([-25.0, 1e-9])).tolist()
            [5.0, 0.0]
        """
        if self.normalize:
            return rank_scores
        return np.sqrt(np.maximum(-rank_scores, 0.0))

    def scores(self, queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Reported energies of every query x row (:meth:`rank_scores` then :meth:`reported`)."""
        return self.reported(self.rank_scores(queries, matrix))

    def is_duplicate(self, scores: np.ndarray | float, threshold: float) -> np.ndarray | bool:
        """Whether scores are at least as alike as ``threshold`` (>= for a similarity, <= for a distance).

        Example:
            >>> Energy.COSINE.is_duplicate(0.8, 0.75), Energy.EUCLIDEAN.is_duplicate(0.8, 0.75)
            (True, False)
        """
        s = np.asarray(scores)
        out = s >= threshold if self.higher_is_better else s <= threshold
        return bool(out) if out.ndim == 0 else out

    # -- training -------------------------------------------------------------------------------------
    def distance_metric(self) -> Any:
        """The ``SiameseDistanceMetric`` the contrastive loss uses (cosine distance ``1 - cos``, or L2)."""
        from sentence_transformers.sentence_transformer.losses import SiameseDistanceMetric

        return getattr(SiameseDistanceMetric, self._distance)


#: Cosine margin: chosen by the dev sweep in docs/benchmarks.md.
_COSINE_MARGIN = 0.7

Energy.COSINE = Energy(
    name="cosine",
    normalize=True,
    higher_is_better=True,
    default_margin=_COSINE_MARGIN,
    usearch_metric="cos",
    # Unit vectors quantise well to int8, and the float32 re-ranking restores exact scores.
    graph_dtype="i8",
    similarity_fn_name="cosine",
    _distance="COSINE_DISTANCE",
)
Energy.EUCLIDEAN = Energy(
    name="euclidean",
    normalize=False,
    higher_is_better=False,
    # The encoder's output is L2-normalised by the model itself, so a cosine distance m is the Euclidean
    # distance sqrt(2 m): the same geometry as the cosine default, not a separate sweep.
    default_margin=math.sqrt(2 * _COSINE_MARGIN),
    usearch_metric="l2sq",
    graph_dtype="f16",  # unbounded components would clip in int8
    similarity_fn_name="euclidean",
    _distance="EUCLIDEAN",
)
Energy._BY_NAME = {e.name: e for e in (Energy.COSINE, Energy.EUCLIDEAN)}
