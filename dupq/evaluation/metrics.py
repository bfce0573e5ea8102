"""Metrics for duplicate detection: pair classification and duplicate retrieval.

Pair metrics score labelled pairs (AP, best F1/accuracy and their thresholds, and
precision/recall/F1/accuracy at a served threshold). Retrieval metrics rank the corpus
for each query question and check where its duplicates land (MRR@10, nDCG@10, R@1,
R@10). Both are hand-rolled in numpy rather than taken from sentence-transformers'
``BinaryClassificationEvaluator`` / ``InformationRetrievalEvaluator``: those need a
model object (not any ``encode`` callable), the IR evaluator cannot exclude a query's
own entry from the corpus (every query here is also a corpus question and would rank
itself first), neither supports a Euclidean energy, and the threshold search is a
Python loop. Thresholds follow the same conventions as sentence-transformers
(midpoints, inclusive), which the tests cross-check.

Example:
    >>> import numpy as np
    >>> m = pair_metrics(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 0]))
    >>> m["ap"], m["best_f1"], round(m["best_f1_threshold"], 6)
    (1.0, 1.0, 0.85)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["THRESHOLD_POLICIES", "calibrate_threshold", "pair_metrics", "parse_threshold_policy", "retrieval_metrics"]

Objective = Literal["f1", "accuracy"]

# --- pair metrics ----------------------------------------------------------------------


@dataclass
class _Sweep:
    """Confusion counts for every cut between distinct scores, best first.

    Scores are oriented so that higher means "more duplicate"; cut ``j`` predicts
    duplicate for every score ``>= values[j]`` and ``thresholds[j]`` is the midpoint
    to the next distinct score (the lowest cut uses the lowest score itself).
    """

    values: np.ndarray
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    n: int


def _check_pairs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} != {y.size}")
    if s.size == 0:
        raise ValueError("no scores to evaluate")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return s, y.astype(np.int64)


def _sweep(s: np.ndarray, y: np.ndarray) -> _Sweep:
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: tied pairs are always cut together.
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    values = s_sorted[ends]
    tp = np.cumsum(y_sorted)[ends]
    fp = (ends + 1) - tp
    thresholds = values.copy()
    mids = (values[:-1] + values[1:]) / 2
    # A midpoint of two adjacent floats can round onto the lower one, which would then
    # be included; fall back to the upper score, which is still a correct cut.
    thresholds[:-1] = np.where(mids > values[1:], mids, values[:-1])
    return _Sweep(values, thresholds, tp, fp, int(y.sum()), int(s.size))


def _best(sweep: _Sweep, objective: Objective) -> tuple[float, float]:
    """Return ``(best value, oriented threshold)``; ties go to the highest threshold."""
    if objective == "f1":
        f1 = 2 * sweep.tp / (sweep.tp + sweep.fp + sweep.positives)
        j = int(np.argmax(f1))
        return float(f1[j]), float(sweep.thresholds[j])
    if objective == "accuracy":
        negatives = sweep.n - sweep.positives
        accuracy = (sweep.tp + negatives - sweep.fp) / sweep.n
        # Predicting no duplicates at all is a valid cut too (threshold above every
        # score); being the highest threshold, it wins ties.
        if accuracy.max() > negatives / sweep.n:
            j = int(np.argmax(accuracy))
            return float(accuracy[j]), float(sweep.thresholds[j])
        return negatives / sweep.n, float(np.nextafter(sweep.values[0], np.inf))
    raise ValueError(f"objective must be 'f1' or 'accuracy', got {objective!r}")


def _average_precision(sweep: _Sweep) -> float:
    if sweep.positives == 0:
        return math.nan
    precision = sweep.tp / (sweep.tp + sweep.fp)
    recall_gain = np.diff(sweep.tp, prepend=0) / sweep.positives
    return float(np.sum(recall_gain * precision))


#: The operating points a version's threshold can be calibrated for (``TrainConfig.threshold_policy``).
THRESHOLD_POLICIES = ("max_f1", "precision:P", "recall:R")


def parse_threshold_policy(policy: str) -> tuple[str, float | None]:
    """``"max_f1"`` -> ``("max_f1", None)``; ``"precision:0.9"`` -> ``("precision", 0.9)``; ``"recall:R"`` alike.

    The target must be a number in (0, 1]; anything else is a ``ValueError``.

    Example:
        >>> parse_threshold_policy("precision:0.95"), parse_threshold_policy("max_f1")
        (('precision', 0.95), ('max_f1', None))
    """
    if not isinstance(policy, str):
        raise ValueError(f"threshold_policy must be a string, got {policy!r}")
    text = policy.strip().lower()
    if text in ("max_f1", "f1"):
        return "max_f1", None
    kind, sep, target = text.partition(":")
    if sep and kind in ("precision", "recall"):
        try:
            value = float(target)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and 0.0 < value <= 1.0:
            return kind, value
    raise ValueError(f"threshold_policy must be max_f1, precision:P or recall:R with 0 < P, R <= 1; got {policy!r}")


def _policy_cut(sweep: _Sweep, policy: str) -> tuple[int, bool]:
    """Index of the cut a precision/recall policy picks, and whether its target is met."""
    kind, target = parse_threshold_policy(policy)
    assert target is not None
    precision = sweep.tp / (sweep.tp + sweep.fp)
    recall = sweep.tp / max(sweep.positives, 1)
    if kind == "precision":  # the lowest cut (most recall) whose precision reaches P
        ok = np.flatnonzero(precision >= target - 1e-12)
        if ok.size:
            return int(ok[-1]), True
        best = precision.max()  # unreachable: the most precise cut, the one with most recall among ties
        return int(np.flatnonzero(precision == best)[-1]), False
    ok = np.flatnonzero(recall >= target - 1e-12)  # the highest cut (most precision) whose recall reaches R
    return int(ok[0]), True


def calibrate_threshold(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    higher_is_better: bool = True,
    objective: Objective | str = "f1",
) -> float:
    """Return the threshold of an operating point on labelled pairs: max F1, max accuracy, or a policy.

    ``objective`` is ``"f1"`` (= ``"max_f1"``), ``"accuracy"``, ``"precision:P"`` (the lowest threshold
    whose precision is at least P, i.e. the most recall at that precision; where no cut reaches P, the most
    precise one) or ``"recall:R"`` (the highest threshold whose recall is at least R). Duplicate means
    ``score >= threshold`` (``<=`` for distances, i.e. ``higher_is_better=False``). The threshold is the
    midpoint between the two distinct scores it separates, so it does not sit on any observed score.
    :func:`pair_metrics` at the returned threshold gives the precision and recall reached.

    Example:
        >>> calibrate_threshold([0.9, 0.8, 0.3], [1, 1, 0])
        0.55
        >>> round(calibrate_threshold([0.9, 0.8, 0.6, 0.3], [1, 0, 1, 0], objective="precision:1.0"), 4)
        0.85
        >>> round(calibrate_threshold([0.9, 0.8, 0.6, 0.3], [1, 0, 1, 0], objective="recall:1.0"), 4)
        0.45
    """
    s, y = _check_pairs(scores, labels)
    sign = 1.0 if higher_is_better else -1.0
    sweep = _sweep(sign * s, y)
    if objective in ("f1", "accuracy", "max_f1"):
        return sign * _best(sweep, "f1" if objective == "max_f1" else objective)[1]  # type: ignore[arg-type]
    try:
        j, _ = _policy_cut(sweep, objective)
    except ValueError:
        raise ValueError(f"objective must be 'f1', 'accuracy', 'max_f1', 'precision:P' or 'recall:R', "
                         f"got {objective!r}") from None
    return sign * float(sweep.thresholds[j])


def pair_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    higher_is_better: bool = True,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Classification metrics for scored, labelled pairs.

    ``ap`` is average precision over all pairs ranked by score (tied scores form one
    step, as in scikit-learn; NaN when there are no positives). ``best_f1`` and
    ``best_accuracy`` come with the thresholds achieving them (see
    :func:`calibrate_threshold`). ``precision``/``recall``/``f1``/``accuracy`` are
    measured at ``threshold`` (the served one) or, when it is None, at
    ``best_f1_threshold``; ``threshold`` in the result is the one used.

    Example:
        >>> m = pair_metrics([0.2, 0.4, 0.9], [0, 1, 1], higher_is_better=False)
        >>> round(m["ap"], 4), m["best_f1"], m["best_f1_threshold"]
        (0.5833, 0.8, 0.9)
    """
    s, y = _check_pairs(scores, labels)
    sign = 1.0 if higher_is_better else -1.0
    sweep = _sweep(sign * s, y)
    best_f1, f1_cut = _best(sweep, "f1")
    best_accuracy, accuracy_cut = _best(sweep, "accuracy")
    used = sign * f1_cut if threshold is None else float(threshold)

    predicted = sign * s >= sign * used
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    positives = sweep.positives
    return {
        "ap": _average_precision(sweep),
        "best_f1": best_f1,
        "best_f1_threshold": sign * f1_cut,
        "best_accuracy": best_accuracy,
        "best_accuracy_threshold": sign * accuracy_cut,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / positives if positives else 0.0,
        "f1": 2 * tp / (tp + fp + positives) if tp + fp + positives else 0.0,
        "accuracy": (tp + (sweep.n - positives - fp)) / sweep.n,
        "threshold": used,
        "n": sweep.n,
        "positives": positives,
    }


# --- retrieval tasks -------------------------------------------------------------------














# --- retrieval metrics -----------------------------------------------------------------


def retrieval_metrics(
    ranked: dict[str, list[str]],
    qrels: dict[str, set[str]],
    ks: Sequence[int] = (1, 10),
) -> dict[str, float | int]:
    """MRR, nDCG (binary relevance) and recall of rankings, averaged over queries.

    Returns ``recall@k`` for every ``k`` in ``ks`` and ``mrr@K``/``ndcg@K`` at
    ``K = max(ks)``, plus ``queries`` (the number evaluated: those in ``qrels`` with at
    least one relevant id; a query missing from ``ranked`` scores zero). Recall@k is
    ``|relevant in top k| / |relevant|``. Values are NaN when no query qualifies.

    Example:
        >>> retrieval_metrics({"q": ["a", "b"]}, {"q": {"b"}})
        {'mrr@10': 0.5, 'ndcg@10': 0.6309297535714575, 'recall@1': 0.0, 'recall@10': 1.0, 'queries': 1}
    """
    cutoff = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, cutoff + 2))
    ideal = np.cumsum(discounts)  # ideal[r - 1] = best DCG with r relevant documents
    mrr, ndcg, recall = [], [], {k: [] for k in ks}
    for qid, relevant in qrels.items():
        if not relevant:
            continue
        hits = np.array([doc in relevant for doc in ranked.get(qid, [])[:cutoff]], dtype=bool)
        first = np.flatnonzero(hits)
        mrr.append(1.0 / (first[0] + 1) if first.size else 0.0)
        ndcg.append(float(discounts[: hits.size][hits].sum() / ideal[min(len(relevant), cutoff) - 1]))
        for k in ks:
            recall[k].append(float(hits[:k].sum()) / len(relevant))
    n = len(mrr)

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else math.nan

    return {
        f"mrr@{cutoff}": mean(mrr),
        f"ndcg@{cutoff}": mean(ndcg),
        **{f"recall@{k}": mean(recall[k]) for k in ks},
        "queries": n,
    }








# --- dense encoders --------------------------------------------------------------------
















# --- BM25 baseline ---------------------------------------------------------------------












# --- reports ---------------------------------------------------------------------------








