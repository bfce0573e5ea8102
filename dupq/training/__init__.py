"""Fine-tuning a model version: the twin encoder with contrastive loss, its cross-encoder re-ranker.

- :mod:`~dupq.training.config`: :class:`TrainConfig` (every option, declared once) and :class:`TrainResult`;
- :mod:`~dupq.training.data`: cleaning, the cluster split and the routing of pairs to the losses;
- :mod:`~dupq.training.recipe`: :func:`train`, the recipe as a sequence of phases;
- :mod:`~dupq.training.twin` and :mod:`~dupq.training.cross`: the two trainers;
- :mod:`~dupq.training.losses`, :mod:`~dupq.training.samplers`, :mod:`~dupq.training.mining`: their parts;
- :mod:`~dupq.training.budget`: the wall-time budget; :mod:`~dupq.training.distributed`: data-parallel runs;
- :mod:`~dupq.training.versions`: a new registered version from pairs (``dupq train`` and the retrain worker).

Example:
    >>> from dupq.data import read_pairs
    >>> result = train(read_pairs("pairs.tsv").pairs, TrainConfig(max_steps=500),      # doctest: +SKIP
    ...                start="dupq-data/models/base", output_dir=Path("dupq-data/models/v1"))
    >>> result.metrics["dev"]["pairs"]["ap"], result.thresholds                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dupq.training.config import DEFAULT_MARGIN, ONLINE_MARGIN, TrainConfig, TrainingCancelled, TrainResult
    from dupq.training.data import PreparedData, add_mined_negatives, prepare_data, split_by_labels
    from dupq.training.losses import LOSSES, RANKING_LOSSES, build_loss
    from dupq.training.recipe import train
    from dupq.training.twin import average_weights

#: Where each name lives; loaded on first use, so that reading the options (:mod:`~dupq.training.config`: the
#: CLI's help, the API contract in the web process) does not import torch and the trainers.
_HOME = {
    "DEFAULT_MARGIN": "config", "ONLINE_MARGIN": "config", "TrainConfig": "config", "TrainingCancelled": "config",
    "TrainResult": "config", "LOSSES": "config", "RANKING_LOSSES": "config",
    "PreparedData": "data", "add_mined_negatives": "data", "prepare_data": "data", "split_by_labels": "data",
    "build_loss": "losses", "train": "recipe", "average_weights": "twin",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MARGIN",
    "LOSSES",
    "ONLINE_MARGIN",
    "RANKING_LOSSES",
    "PreparedData",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "add_mined_negatives",
    "average_weights",
    "build_loss",
    "prepare_data",
    "split_by_labels",
    "train",
]
