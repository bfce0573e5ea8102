"""How a version's recipe is chosen on the user's own dev pairs (issue 24), and the record of why.

The rule, applied by :func:`dupq.training.recipe.train` and recorded in dupq.json under ``"selection"``:

1. **Dev pairs.** The user's dev pairs (``dupq train --dev``); without them a split by duplicate cluster of the
   training pairs, ``dev_fraction`` of the questions, by default :func:`auto_dev_fraction`: 300 pairs' worth,
   between 10% and 30% (200 pairs -> 30%, 1,000 -> 30%, 3,000 and more -> 10%): a dev set big enough to select
   on.
2. **Steps.** ``epochs=None`` (the default) gives :func:`auto_epochs`: enough passes for at least
   :data:`MIN_AUTO_STEPS` optimiser steps, at most :data:`MAX_AUTO_EPOCHS` (one epoch on big data: the
   recommended command is unchanged). Dev pair AP (a sample of at most ``EVAL_MAX_PAIRS`` dev pairs) is
   evaluated :data:`AUTO_EVALS` times during a multi-epoch run (4 times in a one-epoch run), the best checkpoint
   is kept, and training stops after :data:`PATIENCE` evaluations without a better dev AP.
3. **WiSE-FT weight.** ``base_weight=None`` (the default) evaluates, on the same dev sample and without any
   retraining, the result averaged with the starting weights at each of :data:`WISE_CANDIDATES`
   (:func:`dupq.training.twin.average_weights`), and :func:`choose_base_weight` keeps the one with the best dev
   pair AP among those whose retrieval nDCG@10 is not below the starting model's on every check; where none
   is, the one whose worst nDCG@10 shortfall is smallest (each check's retrieval corpus also holds up to
   :data:`CHECK_DISTRACTORS` training questions). The checks (:func:`source_checks`): the dev pairs;
   and where the training pairs come from several sources (files), each source's own dev pairs, or, for a
   source without dev pairs of its own, a small cluster split of its pairs (:data:`SOURCE_CHECK_FRACTION`,
   more for a small source; held out of training). A given ``base_weight`` is used as it is (its dev metrics
   are still recorded).
4. **Re-ranker.** ``cross_encoder=None`` (the default) trains the cross-encoder only from
   :data:`CROSS_MIN_PAIRS` labelled training pairs (measured: dev AP 0.60 at 200 pairs and 0.65 at 1,000, below
   the untuned twin; 0.849 at 18,558 with a fused AP above the twin's), and keeps it only if the fusion with the
   twin beats the twin out of fold on dev (:func:`out_of_fold`: :data:`FUSION_FOLDS` folds over dev duplicate
   clusters, the fusion fit on the others, the fold scored; AP compared with the twin's on the same pairs).
   Otherwise the version has no re-ranker and dupq.json says why. ``cross_encoder=True`` trains and keeps it,
   ``False`` never trains it.
5. **Threshold.** Calibrated on all dev pairs for ``threshold_policy``
   (:func:`dupq.evaluation.metrics.calibrate_threshold`).
6. **Refit.** ``refit=None`` (the default): where dupq made the dev split itself from fewer than
   :data:`REFIT_MAX_PAIRS` labelled pairs (:func:`refit_rule`), the held-out dev pairs are too many labels to
   leave unused (30% of a 200-pair set), so once steps, WiSE-FT weight and threshold are chosen the twin is
   trained again from the starting weights on train + dev, with the same schedule scaled to the larger data and
   stopped at the chosen step's share of it, and averaged with the chosen weight. The recorded dev metrics and
   the threshold stay those of the selection run (held out); the refit itself is not scored on dev (it has
   seen it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dupq.data import Pair, duplicate_clusters, split_by_cluster

#: The rule in one paragraph: printed by ``dupq train`` and saved in dupq.json's ``"selection"``.
RULE = (
    "epochs: the given number, or enough for 300 optimiser steps (at most 40 epochs; 1 on big data), with the "
    "best dev-AP checkpoint kept and training stopped after 3 evaluations without a better dev AP; WiSE-FT "
    "weight: the given one, or among 0, 0.25, 0.5 the best dev pair AP whose dev nDCG@10 (and each source's) "
    "is not below the starting model's (none: the smallest shortfall); cross-encoder: trained from 5,000 "
    "labelled training pairs and kept only if its fusion with the twin beats the twin's dev AP out of fold "
    "(5 folds over dev clusters); threshold: calibrated on dev for the threshold policy; refit: where dupq "
    "split dev from fewer than 5,000 labelled pairs, the twin trained again on train + dev with the chosen "
    "steps and weight (dev metrics and threshold from the selection run)"
)

#: Epochs=None: at least this many optimiser steps (several epochs over small data, as the ST examples do).
MIN_AUTO_STEPS = 300
#: Epochs=None: at most this many passes over the training pairs.
MAX_AUTO_EPOCHS = 40
#: Dev evaluations of a multi-epoch run (early stopping needs more than the 4 of a one-epoch run).
AUTO_EVALS = 10
#: Evaluations without a better dev AP before training stops (transformers' EarlyStoppingCallback).
PATIENCE = 3
#: WiSE-FT weights tried when ``base_weight`` is None (0 = the fine-tuned weights as they are).
WISE_CANDIDATES = (0.0, 0.25, 0.5)
#: Fewest labelled training pairs the cross-encoder is trained on when ``cross_encoder`` is None.
CROSS_MIN_PAIRS = 5000
#: Folds over dev duplicate clusters for the re-ranker's out-of-fold check.
FUSION_FOLDS = 5
#: Share of a source's duplicate clusters held out as its own check when it has no dev pairs of its own: 5%,
#: or more for a small source (enough for :data:`SOURCE_CHECK_MIN_PAIRS` pairs, at most 30%).
SOURCE_CHECK_FRACTION = 0.05
SOURCE_CHECK_MIN_PAIRS = 50
#: A source's held-out check keeps at most this many pairs (a seeded sample).
SOURCE_CHECK_MAX_PAIRS = 1000
#: Training questions added to each check's retrieval corpus as distractors (a seeded sample): a few hundred dev
#: pairs alone make a corpus so small that nDCG@10 is 1.0 for any model, and the constraint would check nothing.
CHECK_DISTRACTORS = 2000
#: Dev pairs the automatic dev fraction aims at, and its bounds.
AUTO_DEV_PAIRS = 300
AUTO_DEV_BOUNDS = (0.1, 0.3)


#: Labelled pairs (training + dev split) below which ``refit=None`` trains again on train + dev.
REFIT_MAX_PAIRS = 5000


def refit_rule(config_value: bool | None, *, labelled_pairs: int, dev_given: bool, world: int,
               reranker_kept: bool, budget_bound: bool) -> tuple[bool, str]:
    """Whether the selected recipe is trained again on train + dev, and why (``config_value``:
    ``TrainConfig.refit``).

    Example:
        >>> kw = dict(world=1, reranker_kept=False, budget_bound=False)
        >>> refit_rule(None, labelled_pairs=200, dev_given=False, **kw)[0]
        True
        >>> refit_rule(None, labelled_pairs=200, dev_given=True, **kw)[0], refit_rule(None, labelled_pairs=9000,
        ...     dev_given=False, **kw)[0]
        (False, False)
    """
    if config_value is False:
        return False, "refit=false"
    if world > 1:
        return False, "not refit: data-parallel runs train once"
    if reranker_kept:
        return False, "not refit: the kept re-ranker's fusion was fitted on the selection run's twin scores"
    if config_value is True:
        return True, "refit=true: trained again on train + dev with the selected steps and WiSE-FT weight"
    if dev_given:
        return False, "not refit: the dev pairs were given (--dev), not split from the training pairs"
    if budget_bound:
        return False, "not refit: the time budget leaves no room for it (it cut the run, or the refit would not fit)"
    if labelled_pairs >= REFIT_MAX_PAIRS:
        return False, (f"not refit: {labelled_pairs} labelled pairs (>= {REFIT_MAX_PAIRS}), the dev split is a "
                       "small share of them")
    return True, (f"refit: {labelled_pairs} labelled pairs (< {REFIT_MAX_PAIRS}): trained again on train + dev "
                  "with the selected steps and WiSE-FT weight")


def auto_dev_fraction(n_pairs: int) -> float:
    """The dev share of a cluster split of ``n_pairs`` pairs: ``AUTO_DEV_PAIRS`` pairs' worth, within bounds.

    Example:
        >>> auto_dev_fraction(200), auto_dev_fraction(2000), auto_dev_fraction(95000)
        (0.3, 0.15, 0.1)
    """
    low, high = AUTO_DEV_BOUNDS
    return round(min(high, max(low, AUTO_DEV_PAIRS / max(n_pairs, 1))), 4)


def auto_epochs(steps_per_epoch: int) -> int:
    """Passes over the training data for ``epochs=None``: at least :data:`MIN_AUTO_STEPS` steps in all.

    Example:
        >>> auto_epochs(8), auto_epochs(40), auto_epochs(900)
        (38, 8, 1)
    """
    return max(1, min(MAX_AUTO_EPOCHS, math.ceil(MIN_AUTO_STEPS / max(steps_per_epoch, 1))))


def cross_rule(config_value: bool | None, labelled_pairs: int) -> tuple[bool, str]:
    """Whether to train the cross-encoder, and why (``config_value``: ``TrainConfig.cross_encoder``).

    Example:
        >>> cross_rule(None, 200)[0], cross_rule(None, 18000)[0], cross_rule(True, 200)[0]
        (False, True, True)
    """
    if config_value is False:
        return False, "cross_encoder=false"
    if config_value is True:
        return True, "cross_encoder=true: trained and kept whatever the out-of-fold check says"
    if labelled_pairs < CROSS_MIN_PAIRS:
        return False, (f"not trained: {labelled_pairs} labelled training pairs, fewer than {CROSS_MIN_PAIRS} "
                       "(a cross-encoder from the MiniLM weights scored dev AP 0.60 at 200 pairs and 0.65 at "
                       "1,000, below the untuned twin)")
    return True, f"trained: {labelled_pairs} labelled training pairs (>= {CROSS_MIN_PAIRS})"


# --- the WiSE-FT weight -----------------------------------------------------------------------------------


def choose_base_weight(candidates: Sequence[dict[str, Any]], start: Mapping[str, Mapping[str, float]],
                       *, objective: str = "dev") -> tuple[dict[str, Any], str]:
    """The candidate with the best ``objective`` check's AP among those whose nDCG@10 is not below ``start``'s
    on every check; where none is, the one with the smallest worst nDCG@10 shortfall (ties: the better AP).

    ``candidates``: ``{"base_weight": w, "checks": {name: {"ap", "ndcg@10", ...}}}``; ``start``: the starting
    model's metrics on the same checks. Returns the chosen candidate and the reason, in words.

    Example:
        >>> start = {"dev": {"ap": 0.80, "ndcg@10": 0.85}}
        >>> cands = [{"base_weight": 0.0, "checks": {"dev": {"ap": 0.86, "ndcg@10": 0.84}}},
        ...          {"base_weight": 0.25, "checks": {"dev": {"ap": 0.85, "ndcg@10": 0.86}}},
        ...          {"base_weight": 0.5, "checks": {"dev": {"ap": 0.83, "ndcg@10": 0.87}}}]
        >>> choose_base_weight(cands, start)[0]["base_weight"]
        0.25
    """
    if not candidates:
        raise ValueError("no WiSE-FT candidate to choose from")

    def shortfall(c: dict[str, Any]) -> float:  # the worst nDCG@10 drop below the start over the checks
        return max([0.0, *(start[k]["ndcg@10"] - m["ndcg@10"] for k, m in c["checks"].items() if k in start)])

    def ap(c: dict[str, Any]) -> float:
        return float(c["checks"][objective]["ap"])

    for c in candidates:
        c["meets_constraint"] = shortfall(c) <= 0.0
    ok = [c for c in candidates if c["meets_constraint"]]
    checks = ", ".join(sorted(start))
    if ok:
        best = max(ok, key=ap)  # max keeps the first of equals: the smaller weight, listed first
        return best, (f"best {objective} AP ({ap(best):.4f}) among the weights whose nDCG@10 is not below the "
                      f"starting model's on every check ({checks})")
    best = min(candidates, key=lambda c: (shortfall(c), -ap(c)))
    return best, (f"no weight keeps nDCG@10 at the starting model's on every check ({checks}): the smallest "
                  f"worst shortfall ({shortfall(best):.4f}) was taken")


# --- per-source checks ------------------------------------------------------------------------------------


def _keys(pairs: Sequence[Pair]) -> set[tuple[str, str]]:
    from dupq.text import pair_key

    return {pair_key(p.question1, p.question2) for p in pairs}


def hold_out_sources(sources: Mapping[str, Sequence[Pair]], dev_pairs: Sequence[Pair] | None,
                     seed: int) -> tuple[dict[str, list[Pair]], set[str]]:
    """The held-out checks of the sources that will have no dev pairs of their own, and their questions.

    With the user's ``dev_pairs``, a source has dev pairs of its own when one of its questions is a dev
    question (Quora's training file shares 3,767 questions with its dev file; AskUbuntu's none). Without them
    every source gets its share of the cluster split, so none is held out here (:func:`source_checks` finds
    a source left without a duplicate in dev and holds it out then). Only with two or more sources.
    """
    if len(sources) < 2 or dev_pairs is None:
        return {}, set()
    dev_questions = {q for p in dev_pairs for q in (p.question1, p.question2)}
    held: dict[str, list[Pair]] = {}
    for name, pairs in sources.items():
        if any(q in dev_questions for p in pairs for q in (p.question1, p.question2)):
            continue
        check = _holdout(pairs, seed)
        if check:
            held[name] = check
    return held, {q for ps in held.values() for p in ps for q in (p.question1, p.question2)}


def _holdout(pairs: Sequence[Pair], seed: int) -> list[Pair]:
    if sum(p.label for p in pairs) == 0:
        return []
    fraction = min(0.3, max(SOURCE_CHECK_FRACTION, SOURCE_CHECK_MIN_PAIRS / len(pairs)))
    split = split_by_cluster(list(pairs), dev_fraction=fraction, seed=seed)
    check = list(split.dev)
    if len(check) > SOURCE_CHECK_MAX_PAIRS:
        check = random.Random(seed).sample(check, SOURCE_CHECK_MAX_PAIRS)
    return check if any(p.label for p in check) else []


def source_checks(sources: Mapping[str, Sequence[Pair]] | None, dev: Sequence[Pair],
                  held: Mapping[str, Sequence[Pair]]) -> dict[str, list[Pair]]:
    """The per-source checks besides ``"dev"``: each held-out split, and each source's own pairs in ``dev``
    (those with a duplicate among them; the others are not checked, nor counted). Only with two or more
    sources: with one, ``"dev"`` is its check."""
    if not sources or len(sources) < 2:
        return {}
    dev_keys = {k: p for p in dev for k in _keys([p])}
    checks: dict[str, list[Pair]] = {}
    for name, pairs in sources.items():
        if name in held:
            checks[f"source:{name}"] = list(held[name])
            continue
        own = [dev_keys[k] for k in _keys(pairs) if k in dev_keys]
        if any(p.label for p in own):
            checks[f"source:{name}"] = own
    return checks


def check_distractors(pairs: Sequence[Pair], seed: int, n: int = CHECK_DISTRACTORS) -> list[str]:
    """At most ``n`` questions of the training pairs (a seeded sample), for the checks' retrieval corpus.

    Example:
        >>> len(check_distractors([Pair("a", "b", 1), Pair("a", "c", 0)], seed=0))
        3
    """
    questions = sorted({q for p in pairs for q in (p.question1, p.question2)})
    if len(questions) > n:
        questions = random.Random(seed).sample(questions, n)
    return questions


def drop_questions(pairs: Sequence[Pair] | None, questions: set[str]) -> list[Pair] | None:
    """``pairs`` without those that share a question with ``questions`` (None stays None)."""
    if pairs is None or not questions:
        return None if pairs is None else list(pairs)
    return [p for p in pairs if p.question1 not in questions and p.question2 not in questions]


# --- the re-ranker's out-of-fold check ----------------------------------------------------------------------


def cluster_folds(pairs: Sequence[Pair], k: int = FUSION_FOLDS, seed: int = 0) -> list[int]:
    """A fold in ``range(k)`` per pair; the pairs of one duplicate cluster share a fold.

    Example:
        >>> folds = cluster_folds([Pair("a", "b", 1), Pair("b", "c", 1), Pair("d", "e", 0)], k=2)
        >>> folds[0] == folds[1], len(folds)
        (True, 3)
    """
    clusters = duplicate_clusters(pairs)
    ids = sorted(set(clusters.values()))
    random.Random(seed).shuffle(ids)
    fold_of = {c: i % k for i, c in enumerate(ids)}
    return [fold_of[clusters[p.question1]] for p in pairs]


def out_of_fold(twin_scores: Sequence[float] | np.ndarray, cross_logits: Sequence[float] | np.ndarray,
                pairs: Sequence[Pair], *, higher_is_better: bool = True, k: int = FUSION_FOLDS,
                seed: int = 0) -> dict[str, Any]:
    """Pair AP of the fused re-ranking score out of fold (fit on the other folds, score this one) vs the twin's.

    Returns ``{"fused_ap", "twin_ap", "cross_ap", "folds", "n"}``; ``fused_ap`` is None when some fold's
    training part lacks a label (too few dev pairs to check).
    """
    from dupq.evaluation.metrics import pair_metrics
    from dupq.training.fusion import fit_fusion

    t = np.asarray(twin_scores, dtype=np.float64)
    c = np.asarray(cross_logits, dtype=np.float64)
    y = np.asarray([p.label for p in pairs], dtype=np.int64)
    folds = np.asarray(cluster_folds(pairs, k, seed))
    fused = np.zeros(len(y))
    ok = True
    for f in range(k):
        test = folds == f
        if not test.any():
            continue
        fit = ~test
        if set(np.unique(y[fit]).tolist()) != {0, 1}:
            ok = False
            break
        fusion = fit_fusion(t[fit], c[fit], y[fit], higher_is_better=higher_is_better)
        fused[test] = fusion.score(t[test], c[test])
    return {
        "fused_ap": float(pair_metrics(fused, y)["ap"]) if ok else None,
        "twin_ap": float(pair_metrics(t, y, higher_is_better=higher_is_better)["ap"]),
        "cross_ap": float(pair_metrics(c, y)["ap"]),
        "folds": k,
        "n": int(len(y)),
    }


def keep_reranker(config_value: bool | None, oof: dict[str, Any]) -> tuple[bool, str]:
    """Whether the version keeps its cross-encoder (and fusion), and why."""
    if oof["fused_ap"] is None:
        verdict, why = False, "too few dev pairs of both labels for the out-of-fold check"
    else:
        verdict = oof["fused_ap"] > oof["twin_ap"]
        why = (f"out-of-fold re-ranked dev AP {oof['fused_ap']:.4f} vs the twin's {oof['twin_ap']:.4f} "
               f"({oof['folds']} folds over dev clusters)")
    if config_value is True:
        return True, f"kept (cross_encoder=true); {why}"
    return verdict, ("kept: " if verdict else "removed: ") + why
