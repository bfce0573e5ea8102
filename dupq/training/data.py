"""The training data of one run: cleaned, split by cluster, routed by kind (contrastive / ranking), mined."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dupq.data import Pair, dedupe_pairs, split_by_cluster
from dupq.errors import TrainingDataError
from dupq.models.cross import (
    CrossScorer,
)
from dupq.training.config import Progress, TrainConfig
from dupq.training.mining import label_silver, mine_negatives, negatives_needed, neighbour_pairs, teacher_filter
from dupq.training.progress import emit


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
    (:func:`dupq.training.mining.positive_only_pairs`) would strip the labelled data of nearly all its positives.

    The second list is what teaches retrieval order through the in-batch ranking loss: the groups of duplicates
    only (positive-only pairs) or, for ``groups`` that have none (one file's sources, such as AskUbuntu's) and
    with ``rank_labelled``, the labelled duplicates, which then stay in the labelled list too. Without them a
    domain is learnt only as pair labels and its retrieval order is forgotten (measured: held-out AskUbuntu
    nDCG@10 -0.62 instead of -1.09 points against the base, at the same dev AP).

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

    Without ``dev_pairs`` the pairs are split by duplicate cluster (:func:`dupq.data.split_by_cluster`;
    ``config.dev_fraction``, None: :func:`dupq.training.selection.auto_dev_fraction`). With
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
        from dupq.training.selection import auto_dev_fraction

        fraction = config.dev_fraction if config.dev_fraction is not None else auto_dev_fraction(len(cleaned.pairs))
        split = split_by_cluster(cleaned.pairs, dev_fraction=fraction, seed=config.seed)
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

    Candidates come from the training questions only (:func:`dupq.training.mining.mine_negatives`); with a ``teacher``
    (the cross-encoder: pairs -> duplicate yes/no) a candidate it calls a duplicate is dropped
    (:func:`dupq.training.mining.teacher_filter`). A dev set without any negative gets mined ones from its own
    questions, since a threshold cannot be calibrated on positives alone.
    """
    pool = data.train + data.ranking
    want = negatives_needed(pool, config.negatives_per_positive)
    mined: list[Pair] = []
    candidates = rejected = 0
    dev = data.dev
    if want:
        emit(progress, step=0, total=want, phase="mining")
        mined = mine_negatives(pool, model, want, seed=config.seed)
        candidates = len(mined)
        if teacher is not None and mined:
            mined, rejected = teacher_filter(mined, teacher)
        emit(progress, step=len(mined), total=want, phase="mining")
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
    training questions (:func:`dupq.training.mining.neighbour_pairs`, ranked by ``model``), labelled by the
    cross-encoder ``scorer`` against its calibrated threshold (:func:`dupq.training.mining.label_silver`)."""
    emit(progress, step=0, total=config.silver_pairs, phase="silver")
    candidates = neighbour_pairs(data.train + data.ranking, model, config.silver_pairs, seed=config.seed)
    silver = label_silver(candidates, lambda ps: scorer.score(ps, batch_size=64), scorer.threshold)
    emit(progress, step=len(silver), total=config.silver_pairs, phase="silver")
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
