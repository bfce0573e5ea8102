"""The interface every vector index implements, so the service never knows which one it holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dupq.index.storage import VectorLog


@dataclass(frozen=True)
class Hit:
    """One search result: a question id and its energy (similarity or distance) to the query."""

    id: str
    score: float


class VectorIndex(Protocol):
    """Top-k search over a :class:`VectorLog` (the one copy of the vectors)."""

    log: VectorLog

    def add(self, ids: list[str], vectors: np.ndarray) -> None: ...

    def remove(self, ids: list[str]) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]: ...

    def save(self, revision: int) -> None: ...
