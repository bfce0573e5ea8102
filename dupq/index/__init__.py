"""Vector indexes over the stored questions' embeddings, one per model version.

``open_index`` gives the index for a folder ``index/<version>/``; :func:`sync_index` makes it hold exactly
the stored questions. Both kinds search one :class:`VectorLog` (the one copy of the vectors):
:class:`ExactIndex` (brute force, the ground truth) and :class:`AnnIndex` (exact below ``ann_min_size``,
an HNSW graph from there on; dupq/index/ann.py).
"""

from __future__ import annotations

from pathlib import Path

from dupq.index.ann import GRAPH_META, AnnIndex, AnnParams
from dupq.index.base import Hit, VectorIndex
from dupq.index.exact import ExactIndex
from dupq.index.storage import VectorLog
from dupq.index.sync import sync_index
from dupq.models.energy import Energy

__all__ = [
    "AnnIndex",
    "AnnParams",
    "ExactIndex",
    "Hit",
    "VectorIndex",
    "VectorLog",
    "open_index",
    "sync_index",
]


def open_index(
    path: str | Path | None,
    dim: int,
    energy: Energy | str,
    *,
    ann_min_size: int | None,
    read_only: bool = False,
) -> tuple[VectorIndex, bool]:
    """Load the index persisted at ``path``, or start an empty one.

    Args:
        path: The version's index folder (None: in memory only).
        dim: Vector dimension of the model.
        energy: The model's energy (an :class:`~dupq.models.energy.Energy` or its name).
        ann_min_size: Bank size from which searches go through an HNSW graph (built in the background,
            then kept up to date), normally ``Settings.ann_min_size``; None gives a plain :class:`ExactIndex`.
        read_only: Never write the folder (a reader beside the serving process): a saved graph is used,
            a missing one is not built (searches stay exact).

    Returns:
        The index and whether it was loaded from disk intact (False: new or unreadable, needs a rebuild).
    """
    energy = Energy.from_name(energy)
    log, intact = None, False
    if path is not None:
        try:
            log = VectorLog.load(path)
            intact = log.dim == dim and log.energy is energy
        except (FileNotFoundError, ValueError, KeyError, OSError):
            pass  # missing or damaged: rebuilt from the store by the caller
    if not intact:
        if path is not None and not read_only:
            (Path(path) / GRAPH_META).unlink(missing_ok=True)  # a graph of the old files means nothing now
        log = VectorLog(dim, path, energy=energy)
    assert log is not None
    if ann_min_size is None:
        return ExactIndex(log), intact
    return AnnIndex(log, min_size=ann_min_size, read_only=read_only), intact
