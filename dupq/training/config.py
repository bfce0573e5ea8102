"""The options of one fine-tuning run (:class:`TrainConfig`, validated once) and what it produced."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dupq.models.energy import Energy
from dupq.training.losses import LOSSES, RANKING_LOSSES

#: Default contrastive margin per energy name (:attr:`dupq.models.energy.Energy.default_margin`, where it is decided).
DEFAULT_MARGIN = {name: Energy.from_name(name).default_margin for name in Energy.names()}


#: Default margin of ``online-contrastive`` per energy: 0.5 in cosine distance (the issue-10 research, the
#: plain recipe's value), the same pair geometry in Euclidean distance (``sqrt(2 * 0.5)`` on unit vectors).
ONLINE_MARGIN = {"cosine": 0.5, "euclidean": math.sqrt(2 * 0.5)}


Progress = Callable[[dict[str, Any]], None]


class TrainingCancelled(Exception):
    """Training stopped because ``should_stop()`` returned True; nothing was written at ``output_dir``."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (validated on construction; JSON-friendly).

    ``loss`` is the contrastive loss of the labelled pairs; ``margin=None`` (the default) resolves to
    ``DEFAULT_MARGIN[energy]`` for ``contrastive`` and ``ONLINE_MARGIN[energy]`` for ``online-contrastive``, so
    after construction ``margin`` is always a float in the units of the energy's distance (cosine distance
    ``1 - cos``, or Euclidean). ``ranking_loss`` is the loss of the positive-only pairs (``"gist"``,
    ``"mnrl"``, or ``"none"``: they join the contrastive loss as positives, the old recipe), of which at most
    ``max_positive_only`` (None: all) are used, a seeded sample. ``negatives_per_positive`` hard negatives are
    mined per positive pair without a labelled negative (0, the default, turns mining off), and with the
    cross-encoder on only those it scores as non-duplicates are kept. ``ranking_weight`` adds an in-batch
    ranking term on the labelled duplicates to the contrastive loss (:mod:`dupq.training.losses`; 0 = none), and
    ``base_weight`` averages that share of the starting weights back into the result (WiSE-FT,
    :func:`average_weights`; 0 = none). ``cross_encoder`` trains the version's cross-encoder (teacher and
    re-ranker) with its own ``cross_epochs`` / ``cross_learning_rate`` on at most ``cross_max_pairs`` labelled
    pairs (a seeded sample; None: all); ``cross_max_steps`` caps its steps (None: ``max_steps``, so a
    ``max_steps`` smoke run stays small for both models). ``silver_pairs`` (0: none) is how many Augmented-SBERT
    silver pairs the cross-encoder labels among the training questions' nearest neighbours
    (:func:`dupq.training.mining.neighbour_pairs`) for the contrastive loss. ``bf16`` (default on:
    same dev AP as fp32, faster; docs/benchmarks.md) is ignored where the hardware has no native bf16.
    ``time_budget_minutes`` (None: none) bounds the wall time of :func:`train`: on a machine too slow for the
    full recipe in that time it trains fewer steps, the cross-encoder first (:mod:`dupq.training.budget`); with 40
    minutes the recommended command took 40.9 on a 2-core AVX2-only CPU (54.8 without). The
    defaults are the issue-10 recipe, each from a measured run (README "Training and evaluation",
    docs/benchmarks.md "The issue-10 recipe": online-contrastive m 0.5 + GIST on 10,000 positive-only pairs at
    lr 5e-5 was the best dev AP; WiSE-FT 0.5 keeps dev nDCG@10 at the base's and AskUbuntu AP within 0.4 point).

    Example:
        >>> c = TrainConfig(max_steps=200, energy="euclidean", loss="contrastive")
        >>> round(c.margin, 3), TrainConfig.from_dict(c.to_dict()) == c
        (1.183, True)
        >>> TrainConfig().margin, TrainConfig().ranking_loss
        (0.5, 'gist')
    """

    loss: str = "online-contrastive"
    margin: float | None = None
    energy: str = Energy.COSINE.name
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    seed: int = 0
    ranking_loss: str = "gist"
    max_positive_only: int | None = 10_000
    negatives_per_positive: float = 0.0
    ranking_weight: float = 0.0
    base_weight: float = 0.5
    cross_encoder: bool = True
    cross_epochs: float = 1.0
    cross_learning_rate: float = 5e-5
    cross_max_steps: int | None = None
    cross_max_pairs: int | None = 40_000
    silver_pairs: int = 0
    bf16: bool = True
    eval_steps: int | None = None
    dev_fraction: float = 0.1
    time_budget_minutes: float | None = 40.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        energy = Energy.from_name(self.energy)  # ValueError for an unknown name
        self.energy = energy.name  # the name: the config is saved as JSON in dupq.json
        if self.ranking_loss not in RANKING_LOSSES:
            raise ValueError(f"ranking_loss must be one of {RANKING_LOSSES}, got {self.ranking_loss!r}")
        if self.margin is None:
            self.margin = energy.default_margin if self.loss == "contrastive" else ONLINE_MARGIN[energy.name]
        _number(self, "margin", low=0.0, low_open=True)
        _number(self, "epochs", low=0.0, low_open=True)
        _number(self, "learning_rate", low=0.0, low_open=True)
        _number(self, "warmup_ratio", low=0.0, high=1.0)
        _number(self, "negatives_per_positive", low=0.0)
        _number(self, "ranking_weight", low=0.0)
        _number(self, "base_weight", low=0.0, high=1.0)
        _number(self, "dev_fraction", low=0.0, high=1.0, low_open=True)
        _number(self, "cross_epochs", low=0.0, low_open=True)
        _number(self, "cross_learning_rate", low=0.0, low_open=True)
        _integer(self, "batch_size", low=1)
        _integer(self, "seed", low=0)
        if self.max_steps is not None:
            _integer(self, "max_steps", low=1)
        if self.eval_steps is not None:
            _integer(self, "eval_steps", low=1)
        if self.cross_max_steps is not None:
            _integer(self, "cross_max_steps", low=1)
        if self.cross_max_pairs is not None:
            _integer(self, "cross_max_pairs", low=1)
        if self.max_positive_only is not None:
            _integer(self, "max_positive_only", low=0)
        if self.time_budget_minutes is not None:
            _number(self, "time_budget_minutes", low=0.0, low_open=True)
        _integer(self, "silver_pairs", low=0)
        for name in ("bf16", "cross_encoder"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys are an error (a typo must not silently fall back to a default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(data))


def _number(cfg: TrainConfig, name: str, *, low: float, high: float | None = None, low_open: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or (high is not None and value >= high):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}" + (f" and < {high}" if high is not None else "") + f", got {value}")
    setattr(cfg, name, float(value))


def _integer(cfg: TrainConfig, name: str, *, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class TrainResult:
    """What :func:`train` produced: the version folder, its dev metrics, thresholds and data counts."""

    version: str
    path: Path
    metrics: dict[str, Any]
    thresholds: dict[str, float]
    counts: dict[str, int]
    seconds: float
    pairs_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The cross-encoder's ``{"threshold", "metrics", "steps", "seconds", ...}`` (None: not trained).
    cross: dict[str, Any] | None = None
    #: Wall seconds per phase: prepare, budget (the probes), cross_encoder, silver, mining, twin, evaluate, total.
    phase_seconds: dict[str, float] = field(default_factory=dict)
    #: The time budget's plan (:meth:`dupq.training.budget.Plan.to_dict`); None: no budget, or the run surely fit.
    budget: dict[str, Any] | None = None
