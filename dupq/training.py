"""Fine-tuning the twin encoder with contrastive loss on labelled question pairs (the data-aware recipe).

:func:`train` runs the whole recipe:

1. clean and split the pairs by duplicate cluster (no question in both train and dev);
2. route them by kind (:func:`split_by_labels`): *labelled* pairs (data with both labels) go to the margin
   contrastive loss, the backbone (``OnlineContrastiveLoss`` by default, ``ContrastiveLoss`` selectable, with
   the distance that matches the energy); *positive-only* pairs (duplicates without labelled negatives, such
   as QQP's paraphrase sets; capped at ``max_positive_only``) go to an in-batch ranking loss with protection
   against false negatives (``GISTEmbedLoss`` guided by a frozen copy of the starting model: an in-batch
   "negative" the guide scores above the true pair is masked out), as a second dataset of one
   multi-dataset run (proportional sampler);
3. train the cross-encoder teacher on the labelled pairs (:mod:`dupq.cross`; saved in ``<version>/cross``);
4. only when ``negatives_per_positive > 0``: mine hard negatives (:mod:`dupq.mining`) and keep only those the
   teacher scores as non-duplicates (most unfiltered Quora neighbours are unlabelled duplicates);
5. fine-tune with ``SentenceTransformerTrainer`` (a length-grouped no-duplicates batch sampler), evaluate on dev
   during training and keep the best checkpoint, optionally average weights back (WiSE-FT), calibrate the
   decision threshold on dev, and write a model version folder that only ever exists complete (written as a
   temporary sibling, then renamed).

Example:
    >>> from dupq.data import read_pairs
    >>> result = train(read_pairs("pairs.tsv").pairs, TrainConfig(max_steps=500),      # doctest: +SKIP
    ...                start=packaged_model_path(), output_dir=Path("dupq-data/models/v1"))
    >>> result.metrics["dev"]["pairs"]["ap"], result.thresholds                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dupq.budget import (
    PROBE_STEPS,
    Deadline,
    Plan,
    StepCosts,
    StepTimer,
    plan_run,
    plan_twin,
    probe_sample,
    reserve_after_twin,
    surely_fits,
)
from dupq.cross import (
    CROSS_DIR,
    CrossResult,
    CrossScorer,
    common_args,
    cross_step_seconds,
    has_cross,
    save_fusion,
    train_cross_encoder,
)
from dupq.data import Pair, dedupe_pairs, split_by_cluster
from dupq.energy import Energy
from dupq.errors import TrainingDataError
from dupq.evaluation import evaluate_encoder, pair_metrics
from dupq.fusion import ScoreFusion
from dupq.losses import LOSSES, RANKING_LOSSES, build_loss, build_ranking_loss
from dupq.mining import label_silver, mine_negatives, negatives_needed, neighbour_pairs, teacher_filter
from dupq.model import BASE_MODEL_NAME, PACKAGED, SiameseEncoder, load_sentence_transformer, packaged_model_path
from dupq.samplers import LengthGroupedNoDuplicatesBatchSampler

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MARGIN",
    "LOSSES",
    "ONLINE_MARGIN",
    "RANKING_LOSSES",
    "LengthGroupedNoDuplicatesBatchSampler",
    "PreparedData",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "build_loss",
    "calibrate_thresholds",
    "add_dev_negatives",
    "add_mined_negatives",
    "add_silver_pairs",
    "prepare_data",
    "split_by_labels",
    "average_weights",
    "train",
]

#: Default contrastive margin per energy name (:attr:`dupq.energy.Energy.default_margin`, where it is decided).
DEFAULT_MARGIN = {name: Energy.from_name(name).default_margin for name in Energy.names()}
#: Default margin of ``online-contrastive`` per energy: 0.5 in cosine distance (the issue-10 research, the
#: plain recipe's value), the same pair geometry in Euclidean distance (``sqrt(2 * 0.5)`` on unit vectors).
ONLINE_MARGIN = {"cosine": 0.5, "euclidean": math.sqrt(2 * 0.5)}
#: In-training dev evaluations (checkpoint selection) use at most this many dev pairs, a fixed random sample,
#: to keep them cheap on a CPU; threshold calibration and the reported dev metrics use every dev pair.
EVAL_MAX_PAIRS = 2000
#: Dev evaluations per run when ``eval_steps`` is None (the last step is always evaluated too).
DEFAULT_EVALS = 4

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
    ranking term on the labelled duplicates to the contrastive loss (:mod:`dupq.losses`; 0 = none), and
    ``base_weight`` averages that share of the starting weights back into the result (WiSE-FT,
    :func:`average_weights`; 0 = none). ``cross_encoder`` trains the version's cross-encoder (teacher and
    re-ranker) with its own ``cross_epochs`` / ``cross_learning_rate`` on at most ``cross_max_pairs`` labelled
    pairs (a seeded sample; None: all); ``cross_max_steps`` caps its steps (None: ``max_steps``, so a
    ``max_steps`` smoke run stays small for both models). ``silver_pairs`` (0: none) is how many Augmented-SBERT
    silver pairs the cross-encoder labels among the training questions' nearest neighbours
    (:func:`dupq.mining.neighbour_pairs`) for the contrastive loss. ``bf16`` (default on:
    same dev AP as fp32, faster; docs/benchmarks.md) is ignored where the hardware has no native bf16.
    ``time_budget_minutes`` (None: none) bounds the wall time of :func:`train`: on a machine too slow for the
    full recipe in that time it trains fewer steps, the cross-encoder first (:mod:`dupq.budget`); with 40
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
    #: The time budget's plan (:meth:`dupq.budget.Plan.to_dict`); None: no budget, or the run surely fit.
    budget: dict[str, Any] | None = None


# --- building blocks ---------------------------------------------------------------------------------------


def calibrate_thresholds(scores: Any, labels: Any, *, higher_is_better: bool = True) -> dict[str, float]:
    """Max-F1 and max-accuracy decision thresholds of scored dev pairs (dupq serves ``"f1"``).

    Example:
        >>> t = calibrate_thresholds([0.9, 0.8, 0.6, 0.3], [1, 0, 1, 0])
        >>> round(t["f1"], 4), round(t["accuracy"], 4)
        (0.45, 0.85)
    """
    m = pair_metrics(scores, labels, higher_is_better=higher_is_better)
    return {"f1": float(m["best_f1_threshold"]), "accuracy": float(m["best_accuracy_threshold"])}


@dataclass
class PreparedData:
    """Training and dev pairs after cleaning, splitting, routing and mining, with the counts saved in dupq.json.

    ``train`` goes to the contrastive loss (labelled pairs, plus mined negatives, plus the positive-only pairs
    when ``ranking_loss="none"``), ``ranking`` to the in-batch ranking loss (positive-only pairs, and the
    labelled duplicates of a domain without them: :func:`split_by_labels`, :func:`ranking_parts`), and
    ``labelled`` is the labelled part of ``train`` (what the cross-encoder trains on).
    """

    train: list[Pair]
    dev: list[Pair]
    counts: dict[str, int]
    ranking: list[Pair] = field(default_factory=list)
    labelled: list[Pair] = field(default_factory=list)


def _questions(pairs: Sequence[Pair]) -> set[str]:
    return {q for p in pairs for q in (p.question1, p.question2)}


def split_by_labels(
    groups: Mapping[str, Sequence[Pair]], *, rank_labelled: bool = True
) -> tuple[list[Pair], list[Pair]]:
    """Labelled pairs (groups with both labels, or negatives only) and the pairs of the ranking loss.

    A group is one source of pairs (the ``source`` column of a pair file, :func:`dupq.data.read_pairs_by_source`;
    a whole file without one). Routing by group, not by pair, matters: on QQP 7,473 of the 7,700 labelled
    duplicates share no question with a labelled negative, so a per-pair rule
    (:func:`dupq.mining.positive_only_pairs`) would strip the labelled data of nearly all its positives.

    The second list is what teaches retrieval order through the in-batch ranking loss: the groups of duplicates
    only (positive-only pairs) or, for ``groups`` that have none (one file's sources, such as AskUbuntu's) and
    with ``rank_labelled``, the labelled duplicates, which then stay in the labelled list too. Without them a
    domain is learnt only as pair labels and its retrieval order is forgotten (docs/benchmarks.md, fifth
    session: AskUbuntu nDCG@10 -0.62 instead of -1.09 points at WiSE 0.5, same dev AP).

    Example:
        >>> lab, pos = split_by_labels({"a": [Pair("a", "b", 1), Pair("a", "c", 0)], "b": [Pair("d", "e", 1)]})
        >>> len(lab), len(pos)
        (2, 1)
        >>> lab, pos = split_by_labels({"a": [Pair("a", "b", 1), Pair("a", "c", 0)]})
        >>> len(lab), len(pos)
        (2, 1)
    """
    labelled: list[Pair] = []
    positive_only: list[Pair] = []
    for pairs in groups.values():
        (positive_only if pairs and all(p.label == 1 for p in pairs) else labelled).extend(pairs)
    if rank_labelled and not positive_only:
        positive_only = [p for p in labelled if p.label == 1]
    return labelled, positive_only


def ranking_parts(data: PreparedData) -> dict[str, list[Pair]]:
    """The ranking loss's pairs as datasets: ``positive_only``, and ``labelled_duplicates`` (those that are
    also labelled pairs); empty ones left out."""
    from dupq.text import pair_key

    labelled = {pair_key(p.question1, p.question2) for p in data.labelled if p.label == 1}
    parts: dict[str, list[Pair]] = {"positive_only": [], "labelled_duplicates": []}
    for p in data.ranking:
        parts["labelled_duplicates" if pair_key(p.question1, p.question2) in labelled else "positive_only"].append(p)
    return {k: v for k, v in parts.items() if v}


def prepare_data(
    pairs: Sequence[Pair],
    dev_pairs: Sequence[Pair] | None,
    config: TrainConfig,
    model: Any = None,
    *,
    positive_only: Sequence[Pair] | None = None,
    teacher: Callable[[list[Pair]], Any] | None = None,
    progress: Progress | None = None,
) -> PreparedData:
    """Clean, split, route and (with ``model``) add mined negatives; no question is in both train and dev.

    Without ``dev_pairs`` the pairs are split by duplicate cluster (:func:`dupq.data.split_by_cluster`). With
    them, training pairs that share a question with dev are dropped, so dev numbers stay honest.
    ``positive_only`` pairs (duplicates without labelled negatives, :func:`split_by_labels`) go to the ranking
    loss, at most ``config.max_positive_only`` of them (a seeded sample), unless ``config.ranking_loss`` is
    ``"none"``. When ``model`` is given, mining runs (:func:`add_mined_negatives`, filtered by ``teacher``).

    Example:
        >>> data = prepare_data([Pair("a", "b", 1), Pair("c", "d", 0), Pair("e", "f", 1)], None,
        ...                     TrainConfig(dev_fraction=0.34))
        >>> len(data.train) + len(data.dev), data.counts["dropped_crossing_pairs"]
        (3, 0)
    """
    from dupq.text import pair_key

    # A duplicate given both as a labelled pair and for the ranking loss (split_by_labels' labelled duplicates
    # of a domain without positive-only pairs) goes to both losses and is not counted against the cap.
    labelled_keys = {pair_key(p.question1, p.question2) for p in pairs}
    extra, both_keys = [], set()
    for p in positive_only or []:
        if p.label == 1:
            key = pair_key(p.question1, p.question2)
            (both_keys.add(key) if key in labelled_keys else extra.append(p))
    cleaned = dedupe_pairs([*pairs, *extra])
    ranked_keys = {pair_key(p.question1, p.question2) for p in extra}
    if dev_pairs is None:
        split = split_by_cluster(cleaned.pairs, dev_fraction=config.dev_fraction, seed=config.seed)
        train_pairs, dev, dropped = split.train, split.dev, split.dropped
    else:
        dev = dedupe_pairs(dev_pairs).pairs
        dev_questions = _questions(dev)
        train_pairs = [p for p in cleaned.pairs if dev_questions.isdisjoint((p.question1, p.question2))]
        dropped = len(cleaned.pairs) - len(train_pairs)
    labelled = [p for p in train_pairs if p.label == 0 or pair_key(p.question1, p.question2) not in ranked_keys]
    pos_only = [p for p in train_pairs if p.label == 1 and pair_key(p.question1, p.question2) in ranked_keys]
    available = len(pos_only)
    if config.max_positive_only is not None and len(pos_only) > config.max_positive_only:
        pos_only = random.Random(config.seed).sample(pos_only, config.max_positive_only)
    if not labelled and not pos_only:
        raise TrainingDataError("no training pairs left after cleaning and the train/dev split")
    if not dev or not any(p.label for p in dev):
        raise TrainingDataError("the dev set has no duplicate pair: cannot evaluate or calibrate a threshold")
    labelled_ranked = [p for p in labelled if p.label == 1 and pair_key(p.question1, p.question2) in both_keys]
    ranking = pos_only + labelled_ranked if config.ranking_loss != "none" else []
    contrastive = labelled if config.ranking_loss != "none" else labelled + pos_only
    positives = sum(p.label for p in contrastive)
    counts = {
        "input_pairs": len(pairs) + len(extra),
        "dropped_repeats": cleaned.dropped_repeats + cleaned.dropped_self + cleaned.conflicts,
        "train_pairs": len(contrastive) + len(ranking),
        "positives": positives,
        "negatives": len(contrastive) - positives,
        "labelled_pairs": len(labelled),
        "positive_only_pairs": available,
        "positive_only_used": len(pos_only),
        "labelled_duplicates_ranked": len(labelled_ranked) if ranking else 0,
        "ranking_pairs": len(ranking),
        "mined_negatives": 0,
        "mined_candidates": 0,
        "mined_rejected_by_teacher": 0,
        "dev_pairs": len(dev),
        "dev_mined_negatives": 0,
        "dropped_crossing_pairs": dropped,
    }
    data = PreparedData(contrastive, dev, counts, ranking=ranking, labelled=labelled)
    if model is not None:
        data = add_mined_negatives(data, model, config, teacher=teacher, progress=progress)
    return data


def add_mined_negatives(
    data: PreparedData,
    model: Any,
    config: TrainConfig,
    *,
    teacher: Callable[[list[Pair]], Any] | None = None,
    progress: Progress | None = None,
) -> PreparedData:
    """Add ``config.negatives_per_positive`` mined hard negatives per positive-only pair to the contrastive set.

    Candidates come from the training questions only (:func:`dupq.mining.mine_negatives`); with a ``teacher``
    (the cross-encoder: pairs -> duplicate yes/no) a candidate it calls a duplicate is dropped
    (:func:`dupq.mining.teacher_filter`). A dev set without any negative gets mined ones from its own
    questions, since a threshold cannot be calibrated on positives alone.
    """
    pool = data.train + data.ranking
    want = negatives_needed(pool, config.negatives_per_positive)
    mined: list[Pair] = []
    candidates = rejected = 0
    dev = data.dev
    if want:
        _emit(progress, step=0, total=want, phase="mining")
        mined = mine_negatives(pool, model, want, seed=config.seed)
        candidates = len(mined)
        if teacher is not None and mined:
            mined, rejected = teacher_filter(mined, teacher)
        _emit(progress, step=len(mined), total=want, phase="mining")
    counts = {
        **data.counts,
        "train_pairs": data.counts["train_pairs"] + len(mined),
        "mined_negatives": len(mined),
        "mined_candidates": candidates,
        "mined_rejected_by_teacher": rejected,
    }
    return add_dev_negatives(
        PreparedData(data.train + mined, dev, counts, ranking=data.ranking, labelled=data.labelled), model, config
    )


def add_silver_pairs(
    data: PreparedData, model: Any, config: TrainConfig, scorer: CrossScorer, *, progress: Progress | None = None
) -> PreparedData:
    """Add ``config.silver_pairs`` Augmented-SBERT pairs to the contrastive set: near neighbours among the
    training questions (:func:`dupq.mining.neighbour_pairs`, ranked by ``model``), labelled by the cross-encoder
    ``scorer`` against its calibrated threshold (:func:`dupq.mining.label_silver`)."""
    _emit(progress, step=0, total=config.silver_pairs, phase="silver")
    candidates = neighbour_pairs(data.train + data.ranking, model, config.silver_pairs, seed=config.seed)
    silver = label_silver(candidates, lambda ps: scorer.score(ps, batch_size=64), scorer.threshold)
    _emit(progress, step=len(silver), total=config.silver_pairs, phase="silver")
    counts = {
        **data.counts,
        "train_pairs": data.counts["train_pairs"] + len(silver),
        "silver_pairs": len(silver),
        "silver_duplicates": sum(p.label for p in silver),
    }
    return PreparedData(data.train + silver, data.dev, counts, ranking=data.ranking, labelled=data.labelled)


def add_dev_negatives(data: PreparedData, model: Any, config: TrainConfig) -> PreparedData:
    """Give a dev set of duplicates only mined negatives from its own questions (a threshold cannot be
    calibrated on positives alone); ``negatives_per_positive`` of them per pair, at least one. Other dev sets
    are returned as they are.

    A cluster split of stored pairs (the retrain worker) often leaves dev without negatives: a labelled
    negative joins two clusters, so it crosses the split and is dropped.
    """
    if not all(p.label for p in data.dev):
        return data
    ratio = max(config.negatives_per_positive, 1.0)
    dev_mined = mine_negatives(data.dev, model, negatives_needed(data.dev, ratio), seed=config.seed)
    if not dev_mined:
        raise TrainingDataError("the dev set has only duplicates and no negative could be mined for it")
    dev = data.dev + dev_mined
    counts = {**data.counts, "dev_pairs": len(dev), "dev_mined_negatives": len(dev_mined)}
    return PreparedData(data.train, dev, counts, ranking=data.ranking, labelled=data.labelled)


def _emit(progress: Progress | None, **event: Any) -> None:
    if progress is not None:
        event.setdefault("loss", None)
        event.setdefault("epoch", None)
        progress(event)


def _encode_fn(model: Any, energy: Energy, batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
            normalize_embeddings=energy.normalize,
        )

    return encode


def _flat_metrics(result: dict[str, dict[str, Any]]) -> dict[str, float]:
    p, r = result["pairs"], result["retrieval"]
    return {
        "ap": p["ap"],
        "best_f1": p["best_f1"],
        "best_accuracy": p["best_accuracy"],
        "mrr@10": r["mrr@10"],
        "ndcg@10": r["ndcg@10"],
        "recall@1": r["recall@1"],
        "recall@10": r["recall@10"],
    }


def _dev_evaluator(dev: Sequence[Pair], energy: Energy, seed: int, progress: Progress | None) -> Any:
    """A sentence-transformers evaluator (pair AP first) over a fixed sample of the dev pairs."""
    from sentence_transformers.sentence_transformer.evaluation import BaseEvaluator

    sample = list(dev)
    if len(sample) > EVAL_MAX_PAIRS:
        sample = random.Random(seed).sample(sample, EVAL_MAX_PAIRS)

    class DevEvaluator(BaseEvaluator):
        """Pair AP (the checkpoint-selection metric) plus retrieval metrics, through dupq.evaluation.

        The library's BinaryClassificationEvaluator needs scikit-learn and has no retrieval view, and its
        InformationRetrievalEvaluator cannot exclude a query from its own corpus, so this one reuses
        dupq.evaluation (the same code that reports dev metrics).
        """

        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = "ap"
            self.seconds = 0.0
            self.history: list[dict[str, Any]] = []

        def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1):
            t0 = time.perf_counter()
            _emit(progress, step=steps, total=None, epoch=epoch, phase="evaluating")
            metrics = _flat_metrics(evaluate_encoder(_encode_fn(model, energy), sample, energy=energy))
            self.history.append({"step": steps, "epoch": epoch, **metrics})
            self.seconds += time.perf_counter() - t0
            return self.prefix_name_to_metrics(metrics, "dev")

    return DevEvaluator()


def _load_start(start: SiameseEncoder | str | Path) -> tuple[Any, str, str]:
    """A private (uncached) copy of the starting model, its base-model name and a description of it."""
    if isinstance(start, SiameseEncoder):
        # The encoder's module may be the instance the service serves from: train a deep copy, never it.
        return copy.deepcopy(start.model), start.base_model, "encoder"
    folder = Path(start)
    if (folder / "dupq.json").is_file():
        meta = SiameseEncoder.read_config(folder)
        weights = meta.get("weights", ".")
        src = packaged_model_path() if weights == PACKAGED else str(folder / weights)
        return load_sentence_transformer(src, cached=False), meta.get("base_model", BASE_MODEL_NAME), str(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    return load_sentence_transformer(str(folder), cached=False), str(folder), str(folder)


def _callbacks(
    progress: Progress | None, should_stop: Callable[[], bool] | None, phase: str = "training"
) -> list[Any]:
    from transformers import TrainerCallback

    class Relay(TrainerCallback):
        """Forwards step/loss to ``progress`` and polls ``should_stop`` after every optimiser step."""

        def __init__(self) -> None:
            self.loss: float | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
            _emit(progress, step=state.global_step, total=state.max_steps, loss=self.loss, epoch=state.epoch,
                  phase=phase)
            if should_stop is not None and should_stop():
                # Raising unwinds trainer.train() at once; train() then removes every temporary folder.
                raise TrainingCancelled(f"training stopped at step {state.global_step}")

    return [Relay()]


def average_weights(model: Any, start: Mapping[str, Any], base_weight: float) -> None:
    """Replace ``model``'s weights by ``(1 - base_weight) * fine-tuned + base_weight * start``, in place.

    This is WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): interpolating the
    fine-tuned weights with the ones training started from keeps most of the in-domain gain and gives back
    most of what fine-tuning forgot out of domain (docs/benchmarks.md). Non-float buffers are kept as they are.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> start = {k: v.clone() for k, v in model.state_dict().items()}
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)  # stands for fine-tuning
        >>> average_weights(model, start, 0.25)
        >>> bool(torch.allclose(model.weight, start["weight"] + 0.75))
        True
    """
    if not 0.0 <= base_weight < 1.0:
        raise ValueError(f"base_weight must be >= 0 and < 1, got {base_weight}")
    state = model.state_dict()
    missing = sorted(set(state) - set(start))
    if missing:
        raise ValueError(f"the starting weights lack {len(missing)} tensor(s), e.g. {missing[0]}")
    merged = {
        k: (1 - base_weight) * v + base_weight * start[k].to(device=v.device, dtype=v.dtype)
        if v.is_floating_point()
        else v
        for k, v in state.items()
    }
    model.load_state_dict(merged)


def _temp_sibling(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# --- the recipe ------------------------------------------------------------------------------------------


def _cross_init(start: SiameseEncoder | str | Path) -> str:
    """Where the cross-encoder starts: the start version's cross-encoder, a plain SentenceTransformer folder
    given as the start (``--base``), else the packaged MiniLM weights."""
    if not isinstance(start, SiameseEncoder):
        folder = Path(start)
        if has_cross(folder):
            return str(folder / CROSS_DIR)
        if folder.is_dir() and not (folder / "dupq.json").is_file():
            return str(folder)
    return packaged_model_path()


def train(
    pairs: Sequence[Pair],
    config: TrainConfig,
    *,
    start: SiameseEncoder | str | Path,
    output_dir: Path,
    dev_pairs: Sequence[Pair] | None = None,
    positive_only: Sequence[Pair] | None = None,
    parent: str | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_progress_bar: bool = True,
) -> TrainResult | None:
    """Fine-tune a twin encoder (and its cross-encoder) and write a complete model version at ``output_dir``.

    Args:
        pairs: Labelled pairs (repeats and self-pairs are dropped again here): the contrastive loss's data.
        config: Hyper-parameters.
        start: Where fine-tuning starts: a dupq version folder (``models/<version>``; ``models/base`` is the
            packaged model), any SentenceTransformer folder, or an encoder. It is copied, never trained in
            place.
        output_dir: The final version folder (``models/<version>``); it must not exist. The version is built in
            a temporary sibling and renamed, so the folder only ever exists complete (cross-encoder included).
        dev_pairs: Dev pairs for checkpoint selection, threshold calibration and the reported metrics; None
            splits ``pairs`` by duplicate cluster with ``config.dev_fraction``.
        positive_only: Duplicate pairs without labelled negatives (:func:`split_by_labels`): the ranking loss's
            data (``config.ranking_loss``), at most ``config.max_positive_only`` of them.
        parent: Parent version name, saved in dupq.json.
        progress: Called with ``{"step", "total", "loss", "epoch", "phase"}``; phase is ``"cross-encoder"``,
            ``"silver"``, ``"mining"``, ``"training"`` or ``"evaluating"``.
        should_stop: Polled after every step; when it returns True, :class:`TrainingCancelled` is raised and
            nothing is left at ``output_dir``.
        show_progress_bar: Show the trainers' progress bars (one per phase).

    Returns:
        The version name and path, dev metrics (``{"dev": {"pairs", "retrieval"}}``), thresholds
        (``{"f1", "accuracy"}``; the max-F1 one is served), data counts, wall seconds, training throughput in
        pairs/s (excluding dev evaluations), the cross-encoder's summary and the seconds of each phase. None on
        a data-parallel rank other than 0 (:mod:`dupq.distributed`): rank 0 alone evaluates and saves.

    Raises:
        TrainingCancelled: ``should_stop`` asked to stop.
        ValueError: No training pairs, or a dev set without duplicates.
        FileExistsError: ``output_dir`` already exists.
    """
    t_start = time.perf_counter()
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists")
    output_dir.parent.mkdir(parents=True, exist_ok=True)

    from transformers import set_seed

    set_seed(config.seed)
    rank, local_rank, world = _process_group()  # (0, 0, 1) unless data-parallel (dupq.distributed)
    phases: dict[str, float] = {}
    model, base_model_name, started_from = _load_start(start)
    # A CPU copy of the starting weights for the final average (about 90 MB for MiniLM-L6), made by the rank
    # that saves the version.
    start_weights = (
        {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if config.base_weight and rank == 0
        else None
    )
    _check_stop(should_stop)
    data = _on_rank0(world, rank, lambda: add_dev_negatives(  # before the cross-encoder: it calibrates on dev too
        prepare_data(pairs, dev_pairs, config, positive_only=positive_only, progress=progress), model, config))
    phases["prepare"] = time.perf_counter() - t_start
    _check_stop(should_stop)
    energy = Energy.from_name(config.energy)
    model.similarity_fn_name = energy.similarity_fn_name  # saved in the model's config, so plain ST users see it

    bf16 = config.bf16 and _bf16_supported()
    if config.bf16 and not bf16:
        log.warning("bf16 requested but this machine has no native bf16 support: training in fp32")
    # Data-parallel ranks share one checkpoint path (rank 0 saves, every rank loads the best one back); only
    # rank 0 stages the version beside its final folder, the others a scratch folder nothing reads.
    checkpoints = Path(_on_rank0(world, rank, lambda: tempfile.mkdtemp(prefix="dupq-train-")))
    checkpoints.mkdir(parents=True, exist_ok=True)  # a rank on another host: the same path on its disk
    staging = (_temp_sibling(output_dir) if rank == 0
               else Path(tempfile.gettempdir()) / f"dupq-rank{rank}-{uuid.uuid4().hex[:8]}")
    try:
        staging.mkdir(parents=True)
        # -- the time budget (dupq/budget.py): time this machine's steps, plan both phases to fit -----------
        cross_pairs: list[Pair] = []
        if config.cross_encoder:
            if {p.label for p in data.labelled} == {0, 1} and {p.label for p in data.dev} == {0, 1}:
                cross_pairs = list(data.labelled)
                if config.cross_max_pairs is not None and len(cross_pairs) > config.cross_max_pairs:
                    cross_pairs = random.Random(config.seed).sample(cross_pairs, config.cross_max_pairs)
            else:
                log.warning("no cross-encoder: it needs labelled training and dev pairs with both labels")
        cross_full = (config.cross_max_steps or config.max_steps
                      or max(1, math.ceil(config.cross_epochs * math.ceil(len(cross_pairs) / config.batch_size))))
        cross_full = cross_full if cross_pairs else 0
        guide = None
        if data.ranking and config.ranking_loss == "gist":
            guide = copy.deepcopy(model)  # frozen: the starting model judges which in-batch negatives are false
            guide.requires_grad_(False)
            guide.eval()
        plan: Plan | None = None
        costs: StepCosts | None = None
        eval_pairs = min(EVAL_MAX_PAIRS, len(data.dev))
        if config.time_budget_minutes is not None:
            budget_s = config.time_budget_minutes * 60
            twin_full, ranking_share = _twin_steps(data, config, world)
            if world > 1:
                log.warning("the time budget is not applied to data-parallel runs: each rank trains every step")
            elif not surely_fits(budget_s, cross_steps=cross_full, twin_steps=twin_full,
                                 batch_size=config.batch_size, dev_pairs=len(data.dev), evals=DEFAULT_EVALS,
                                 eval_pairs=eval_pairs):
                _emit(progress, step=0, total=None, phase="budget")
                costs = _probe_costs(model, data, cross_pairs, config, energy, guide, bf16, start, checkpoints)
                set_seed(config.seed)  # the probes drew random numbers: the run proper starts as an unprobed one
                plan = plan_run(costs, budget_s=budget_s, elapsed_s=time.perf_counter() - t_start,
                                cross_steps=cross_full, twin_steps=twin_full, twin_ranking_share=ranking_share,
                                dev_pairs=len(data.dev), evals=DEFAULT_EVALS, eval_pairs=eval_pairs)
                log.info(plan.describe())
                _emit(progress, step=0, total=None, phase="budget", message=plan.describe())
        phases["budget"] = time.perf_counter() - t_start - phases["prepare"]
        _check_stop(should_stop)

        # -- the cross-encoder teacher (inside the staging folder: the version stays atomic) --------------
        cross_result: CrossResult | None = None
        t0 = time.perf_counter()
        if cross_pairs:
            _emit(progress, step=0, total=None, phase="cross-encoder")
            cross_result = train_cross_encoder(
                cross_pairs,
                data.dev,
                staging / CROSS_DIR,
                init=_cross_init(start),
                epochs=config.cross_epochs,
                max_steps=(plan.cross_steps if plan is not None and plan.cross_steps < cross_full
                           else config.cross_max_steps or config.max_steps),
                batch_size=config.batch_size,
                learning_rate=config.cross_learning_rate,
                warmup_ratio=config.warmup_ratio,
                seed=config.seed,
                bf16=bf16,
                callbacks=_callbacks(progress, should_stop, phase="cross-encoder"),
                show_progress_bar=show_progress_bar,
                use_cpu=not _has_accelerator(),
            )
        phases["cross_encoder"] = time.perf_counter() - t0
        _check_stop(should_stop)

        # -- silver pairs: the teacher labels near neighbours of the training questions (Augmented SBERT) ---
        t0 = time.perf_counter()
        if config.silver_pairs > 0 and cross_result is not None:
            data = _on_rank0(world, rank, lambda: add_silver_pairs(
                data, model, config, CrossScorer.load(staging / CROSS_DIR, backend="torch"), progress=progress))
        phases["silver"] = time.perf_counter() - t0
        _check_stop(should_stop)

        # -- mined negatives, judged by the teacher ----------------------------------------------------------
        t0 = time.perf_counter()
        if config.negatives_per_positive > 0:
            teacher = None
            if cross_result is not None:
                scorer = CrossScorer.load(staging / CROSS_DIR, backend="torch")

                def teacher(ps: list[Pair]) -> Any:
                    return scorer.is_duplicate(scorer.score([(p.question1, p.question2) for p in ps], batch_size=64))

            data = _on_rank0(world, rank, lambda: add_mined_negatives(data, model, config, teacher=teacher,
                                                                     progress=progress))
        phases["mining"] = time.perf_counter() - t0
        _check_stop(should_stop)

        # -- the twin: contrastive loss on the labelled pairs, ranking loss on the positive-only ones -------
        t0 = time.perf_counter()
        datasets, losses = _twin_datasets(model, data, config, energy, guide)
        twin_full, ranking_share = _twin_steps(data, config, world)
        max_steps = config.max_steps
        deadline: Deadline | None = None
        if plan is not None and costs is not None:  # plan the twin again from the time actually left
            predicted_cross = plan.cross_steps * costs.cross + costs.score_seconds(len(data.dev))
            planned = plan.twin_steps
            plan = plan_twin(plan, costs, elapsed_s=time.perf_counter() - t_start, twin_steps=twin_full,
                             twin_ranking_share=ranking_share, dev_pairs=len(data.dev), evals=DEFAULT_EVALS,
                             eval_pairs=eval_pairs)
            if plan.twin_steps != planned:
                note = (f"time budget: the cross-encoder took {phases['cross_encoder']:.0f} s (predicted "
                        f"{predicted_cross:.0f} s), so the twin trains {plan.twin_steps} of {twin_full} steps")
                log.info(note)
                _emit(progress, step=0, total=None, phase="budget", message=note)
            if plan.twin_steps < twin_full:
                max_steps = plan.twin_steps
            # The plan is a forecast; the budget is a bound: if the twin's steps run slower than the probe said
            # (18% slower in one measured run, docs/benchmarks.md), stop it while the final evaluation still fits.
            deadline = Deadline(t_start + plan.budget_s
                                - reserve_after_twin(costs, dev_pairs=len(data.dev), eval_pairs=eval_pairs))
        total_steps = max_steps or twin_full
        eval_steps = config.eval_steps or max(1, math.ceil(total_steps / DEFAULT_EVALS))
        evaluator = _dev_evaluator(data.dev, energy, config.seed, progress)
        trainer = _twin_trainer(model, datasets, losses, config, output_dir=checkpoints, max_steps=max_steps,
                                total_steps=total_steps, bf16=bf16, world=world, evaluator=evaluator,
                                eval_steps=eval_steps,
                                callbacks=[*_callbacks(progress, should_stop),
                                           *([deadline.callback] if deadline is not None else [])],
                                show_progress_bar=show_progress_bar)
        t_train = time.perf_counter()
        trainer.train()
        if deadline is not None and deadline.stopped_at is not None:
            note = (f"time budget: the twin's steps ran slower than predicted, so it stopped at step "
                    f"{deadline.stopped_at} of {total_steps} to keep the budget")
            log.info(note)  # the CLI prints it from the progress event (a warning would print it twice)
            _emit(progress, step=deadline.stopped_at, total=total_steps, phase="budget", message=note)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank has loaded the best checkpoint back before its folder goes
            if rank != 0:
                return None  # rank 0 averages, evaluates, calibrates and saves the version
        # Mixed precision leaves model.forward wrapped in autocast; drop it so the dev metrics and thresholds
        # below are measured in fp32, as the saved model is loaded and served.
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        if start_weights is not None:
            average_weights(model, start_weights, config.base_weight)
        train_seconds = time.perf_counter() - t_train - evaluator.seconds
        steps = trainer.state.global_step
        pairs_per_second = steps * config.batch_size * world / train_seconds if train_seconds > 0 else 0.0
        phases["twin"] = time.perf_counter() - t0

        # Final dev numbers and thresholds on every dev pair, with the best checkpoint's weights.
        t0 = time.perf_counter()
        _emit(progress, step=steps, total=steps, phase="evaluating")
        # The recorder keeps the dev vectors, so the (score, label) sample for the plots costs no second encoding.
        from dupq.plots import PairScoreRecorder

        recorder = PairScoreRecorder(_encode_fn(model, energy))
        dev_result = evaluate_encoder(recorder, data.dev, energy=energy)
        thresholds = {
            "f1": float(dev_result["pairs"]["best_f1_threshold"]),
            "accuracy": float(dev_result["pairs"]["best_accuracy_threshold"]),
        }
        metrics = {"dev": dev_result}
        if cross_result is not None:  # the re-ranking score: cross-encoder logit + twin score (dupq/fusion.py)
            cross_result.fusion = _fit_fusion(cross_result, recorder.scores(data.dev, config.energy), data.dev,
                                              energy, staging / CROSS_DIR)
        cross = cross_result.summary() if cross_result is not None else None
        best_step = _best_step(trainer.state.best_model_checkpoint)
        phases["evaluate"] = time.perf_counter() - t0
        phases["total"] = time.perf_counter() - t_start
        phase_seconds = {k: round(v, 1) for k, v in phases.items()}
        budget = None
        if plan is not None:
            budget = {**plan.to_dict(), "actual_s": round(phases["total"], 1),
                      "twin_stopped_at": deadline.stopped_at if deadline is not None else None}
        encoder = SiameseEncoder(
            model,
            energy=energy,
            threshold=thresholds["f1"],
            base_model=base_model_name,
            metadata={
                "loss": config.loss,
                "margin": config.margin,
                "ranking_loss": config.ranking_loss if data.ranking else None,
                "thresholds": thresholds,
                "threshold_objective": "f1",
                "training": config.to_dict(),
                "data": data.counts,
                "metrics": metrics,
                "history": evaluator.history,
                # For the admin page's and `dupq eval --report`'s plots (dupq/plots.py).
                "loss_history": [
                    {"step": int(e["step"]), "loss": round(float(e["loss"]), 5)}
                    for e in trainer.state.log_history
                    if "loss" in e and "step" in e
                ],
                "dev_scores": recorder.sample(data.dev, config.energy, seed=config.seed),
                "best_step": best_step,
                "steps": steps,
                "processes": world,
                "global_batch_size": config.batch_size * world,
                "precision": "bf16" if bf16 else "fp32",
                "parent": parent,
                "started_from": started_from,
                "cross": cross,
                "phase_seconds": phase_seconds,
                "budget": budget,
                "seconds": round(time.perf_counter() - t_start, 1),
                "pairs_per_second": round(pairs_per_second, 2),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        _check_stop(should_stop)
        encoder.save(staging)
        os.rename(staging, output_dir)  # atomic: the version appears complete or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if rank != 0:
            shutil.rmtree(staging, ignore_errors=True)
        if local_rank == 0:  # one rank per node removes the shared checkpoint folder
            shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(
        version=output_dir.name,
        path=output_dir,
        metrics=metrics,
        thresholds=thresholds,
        counts=data.counts,
        seconds=time.perf_counter() - t_start,
        pairs_per_second=pairs_per_second,
        history=evaluator.history,
        cross=cross,
        phase_seconds=phase_seconds,
        budget=budget,
    )


def _twin_steps(data: PreparedData, config: TrainConfig, world: int) -> tuple[int, float]:
    """The twin's optimiser steps (every rank takes ``batch_size`` pairs per step) and the ranking-loss share."""
    contrastive = math.ceil(len(data.train) / config.batch_size)
    ranking = sum(math.ceil(len(part) / config.batch_size) for part in ranking_parts(data).values())
    steps_per_epoch = math.ceil((contrastive + ranking) / world)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    return total, ranking / (contrastive + ranking) if contrastive + ranking else 0.0


def _twin_datasets(model: Any, data: PreparedData, config: TrainConfig, energy: Energy,
                   guide: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The twin's training datasets and their losses: contrastive on the labelled pairs, ranking on the rest."""
    from datasets import Dataset

    datasets: dict[str, Any] = {}
    losses: dict[str, Any] = {}
    if data.train:
        datasets["labelled"] = Dataset.from_dict(
            {
                "sentence1": [p.question1 for p in data.train],
                "sentence2": [p.question2 for p in data.train],
                "label": [p.label for p in data.train],
            }
        )
        losses["labelled"] = build_loss(
            model, loss=config.loss, energy=energy, margin=config.margin, ranking_weight=config.ranking_weight
        )
    if data.ranking:
        ranking_loss = build_ranking_loss(model, config.ranking_loss, guide=guide)
        # Positive-only pairs and labelled duplicates are separate datasets, so that each batch's in-batch
        # negatives come from one domain (a labelled domain's own questions, not QQP's).
        for name, part in ranking_parts(data).items():
            datasets[name] = Dataset.from_dict(
                {"anchor": [p.question1 for p in part], "positive": [p.question2 for p in part]}
            )
            losses[name] = ranking_loss
    return datasets, losses


def _twin_trainer(model: Any, datasets: dict[str, Any], losses: dict[str, Any], config: TrainConfig, *,
                  output_dir: Path, max_steps: int | None, total_steps: int, bf16: bool, world: int,
                  evaluator: Any, eval_steps: int | None, callbacks: Sequence[Any], show_progress_bar: bool) -> Any:
    """The twin's SentenceTransformerTrainer (``total_steps``: what ``max_steps`` or the epochs come to); with
    ``evaluator=None`` (a probe) it neither evaluates nor saves."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import PrinterCallback

    checkpointing: dict[str, Any] = (
        {
            "eval_strategy": "steps",
            "eval_steps": eval_steps,
            "save_strategy": "steps",
            "save_steps": eval_steps,
            "save_total_limit": 1,  # with load_best_model_at_end the best checkpoint is kept as well
            "save_only_model": True,  # no optimizer state: 3x smaller checkpoints, and we never resume
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_dev_ap",
            "greater_is_better": True,
        }
        if evaluator is not None
        else {"eval_strategy": "no", "save_strategy": "no"}
    )
    if world > 1:
        import torch.distributed as dist

        # Data-parallel: the launcher's process group (gloo on CPUs, NCCL on GPUs); each node's first rank
        # saves checkpoints on its own disk, so every rank can load the best one back.
        checkpointing.update(ddp_backend=str(dist.get_backend()), save_on_each_node=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        **common_args(epochs=config.epochs, max_steps=max_steps, total_steps=total_steps,
                      batch_size=config.batch_size, learning_rate=config.learning_rate,
                      warmup_ratio=config.warmup_ratio, seed=config.seed, bf16=bf16,
                      show_progress_bar=show_progress_bar, use_cpu=not _has_accelerator()),
        # No text twice in a batch (BatchSamplers.NO_DUPLICATES), with batches grouped by length; with two
        # datasets each batch comes from one of them, drawn in proportion to their sizes.
        batch_sampler=LengthGroupedNoDuplicatesBatchSampler,
        multi_dataset_batch_sampler="proportional",
        **checkpointing,
    )
    single = len(datasets) == 1
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=next(iter(datasets.values())) if single else datasets,
        loss=next(iter(losses.values())) if single else losses,
        evaluator=evaluator,
        callbacks=list(callbacks),
    )
    if not show_progress_bar:
        trainer.remove_callback(PrinterCallback)  # it would print every log dict to stdout
    return trainer


def _pair_length(p: Pair) -> int:  # what the cross-encoder's sampler groups by
    return len(p.question1) + len(p.question2)


def _row_length(p: Pair) -> int:  # what the twin's sampler groups by
    return max(len(p.question1), len(p.question2))


def _probe_costs(model: Any, data: PreparedData, cross_pairs: Sequence[Pair], config: TrainConfig, energy: Energy,
                 guide: Any, bf16: bool, start: SiameseEncoder | str | Path, scratch: Path) -> StepCosts:
    """Time :data:`dupq.budget.PROBE_STEPS` real optimiser steps of each model on this machine (throwaway copies
    of the models, on training pairs of the mean length); nothing of it reaches the version."""
    t0 = time.perf_counter()
    n = PROBE_STEPS * config.batch_size
    probe = replace(data, train=probe_sample(data.train, n, _row_length),
                    ranking=probe_sample(data.ranking, n, _row_length))
    folder = Path(tempfile.mkdtemp(prefix="probe-", dir=scratch))
    try:
        twin = ranking = 0.0
        for kind in ("train", "ranking"):
            if not getattr(probe, kind):
                continue
            only = replace(probe, train=probe.train if kind == "train" else [],
                           ranking=probe.ranking if kind == "ranking" else [])
            copy_ = copy.deepcopy(model)
            datasets, losses = _twin_datasets(copy_, only, config, energy, guide)
            timer = StepTimer()
            _twin_trainer(copy_, datasets, losses, config, output_dir=folder / kind, max_steps=PROBE_STEPS,
                          total_steps=PROBE_STEPS, bf16=bf16, world=1, evaluator=None, eval_steps=None,
                          callbacks=[timer.callback], show_progress_bar=False).train()
            seconds = timer.seconds_per_step()
            twin, ranking = (seconds, ranking) if kind == "train" else (twin, seconds)
            del copy_, datasets, losses
        twin, ranking = twin or ranking, ranking or twin
        cross = 0.0
        if cross_pairs:
            cross = cross_step_seconds(probe_sample(cross_pairs, n, _pair_length), init=_cross_init(start),
                                       scratch=folder / "cross", batch_size=config.batch_size,
                                       learning_rate=config.cross_learning_rate, bf16=bf16,
                                       use_cpu=not _has_accelerator())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return StepCosts(cross=cross, twin=twin, ranking=ranking, batch_size=config.batch_size,
                     probe_seconds=time.perf_counter() - t0)


def _process_group() -> tuple[int, int, int]:
    """(rank, local rank, world size) of this process: (0, 0, 1) unless a ``torch.distributed`` process group is
    up (``dupq train --nproc N``: :mod:`dupq.distributed` starts one per rank before calling :func:`train`)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_node_local_rank(fallback_rank=0), dist.get_world_size()
    return 0, 0, 1


def _on_rank0(world: int, rank: int, compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 only, its result sent to every rank (data-parallel): data that is prepared once,
    so every rank trains on the same pairs in the same order (the samplers are seeded alike)."""
    if world == 1:
        return compute()
    import torch.distributed as dist

    box = [compute() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _bf16_supported() -> bool:
    """Whether bf16 autocast runs natively (AVX512-BF16/AMX on a CPU); emulated bf16 is slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _fit_fusion(result: CrossResult, twin_scores: np.ndarray, dev: Sequence[Pair], energy: Energy,
                folder: Path) -> ScoreFusion:
    """Fit the re-ranking fusion on dev (the twin's final scores, the cross-encoder's logits) and save it."""
    logits = result.dev_logits
    if logits is None or len(logits) != len(dev):  # dev gained mined negatives after the cross-encoder
        logits = CrossScorer.load(folder, backend="torch").logits([(p.question1, p.question2) for p in dev],
                                                                   batch_size=64)
    fusion = ScoreFusion.fit(twin_scores, logits, [p.label for p in dev], higher_is_better=energy.higher_is_better)
    save_fusion(folder, fusion)
    return fusion


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TrainingCancelled("training stopped before it finished")


def _best_step(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(checkpoint.rsplit("-", 1)[-1])
    except ValueError:
        return None
