"""The interface every vector index implements, so the service never knows which one it holds.

A backend (the in-process :class:`~dupq.index.ExactIndex` / :class:`~dupq.index.AnnIndex`, or a database
such as pgvector) implements :class:`VectorIndex`; how it stores vectors is its own business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dupq.filters import QuestionFilter


@dataclass(frozen=True)
class Hit:
    """One search result: a question id and its energy (similarity or distance) to the query."""

    id: str
    score: float


@runtime_checkable
class Scope(Protocol):
    """The questions a scoped (filtered) search may return, as the store answers for them.

    The store builds it for a :class:`~dupq.filters.QuestionFilter` (``Store.scope``); an in-process index asks
    it which ids match, a database index (pgvector) puts :attr:`filter` into its own query.
    """

    filter: QuestionFilter

    def ids(self, limit: int | None = None) -> list[str] | None:
        """Every matching id, or None when more than ``limit`` match."""
        ...

    def keep(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that match."""
        ...


@runtime_checkable
class VectorIndex(Protocol):
    """Top-k search over the vectors of one model version, kept in step with the store's revisions."""

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        """Insert vectors (an id already present is replaced)."""
        ...

    def remove(self, ids: list[str]) -> None:
        """Delete ids (unknown ones are ignored)."""
        ...

    def search(self, queries: np.ndarray, k: int, scope: Scope | None = None) -> list[list[Hit]]:
        """Top-k hits per query row, best first by the model's energy, scored with that energy.

        With a ``scope``: the best k among the questions in it (a pre-filter): never one outside it, and k
        whenever at least k are in it."""
        ...

    def save(self, revision: int) -> None:
        """Make the changes so far durable, recording the store ``revision`` they reflect."""
        ...

    def close(self) -> None:
        """Finish background work and release resources; the index is not used afterwards."""
        ...

    def __len__(self) -> int:
        """Number of indexed questions."""
        ...

    def ids(self) -> set[str]:
        """Ids of the indexed questions."""
        ...

    @property
    def revision(self) -> int:
        """The store revision the last :meth:`save` recorded (-1: never saved)."""
        ...
