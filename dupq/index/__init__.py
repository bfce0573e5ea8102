"""Vector indexes over the stored questions' embeddings, one per model version.

``open_index`` gives the index for a folder ``index/<version>/``; the service keeps it consistent with the
store (see :mod:`dupq.service`).
"""

from __future__ import annotations

from pathlib import Path

from dupq.index.base import Hit, VectorIndex
from dupq.index.exact import ExactIndex
from dupq.index.storage import VectorLog

__all__ = ["ExactIndex", "Hit", "VectorIndex", "VectorLog", "open_index"]


def open_index(path: str | Path | None, dim: int, energy: str) -> tuple[VectorIndex, bool]:
    """Load the index persisted at ``path``, or start an empty one.

    Returns:
        The index and whether it was loaded from disk intact (False: new or unreadable, needs a rebuild).
    """
    if path is not None:
        try:
            log = VectorLog.load(path)
            if log.dim == dim and log.energy == energy:
                return ExactIndex(log), True
        except (FileNotFoundError, ValueError, KeyError, OSError):
            pass  # missing or damaged: rebuilt from the store by the caller
    return ExactIndex(VectorLog(dim, path, energy=energy)), False
