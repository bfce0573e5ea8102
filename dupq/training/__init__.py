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

from dupq.training.config import DEFAULT_MARGIN, ONLINE_MARGIN, TrainConfig, TrainingCancelled, TrainResult
from dupq.training.data import PreparedData, add_mined_negatives, prepare_data, split_by_labels
from dupq.training.losses import LOSSES, RANKING_LOSSES, build_loss
from dupq.training.recipe import train
from dupq.training.twin import average_weights

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
