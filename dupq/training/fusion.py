"""Fitting the re-ranking fusion (:class:`dupq.models.fusion.ScoreFusion`) on labelled dev pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dupq.evaluation.metrics import pair_metrics
from dupq.models.fusion import ScoreFusion


def fit_fusion(
    twin_scores: Sequence[float] | np.ndarray,
    cross_logits: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    higher_is_better: bool = True,
) -> ScoreFusion:
    """Fit the weights on labelled pairs (both labels needed) and calibrate the threshold on them.

    ``higher_is_better`` says which way the twin's score points (False: a Euclidean distance); it only
    labels the twin's own metrics, the regression learns the sign.
    """
    from sklearn.linear_model import LogisticRegression

    t = np.asarray(twin_scores, dtype=np.float64).reshape(-1)
    c = np.asarray(cross_logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not len(t) == len(c) == len(y):
        raise ValueError(f"twin_scores, cross_logits and labels differ in length: {len(t)}, {len(c)}, {len(y)}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError("fitting the fusion needs pairs with both labels")
    reg = LogisticRegression(C=1.0).fit(np.stack([t, c], axis=1), y)
    (tw, cw), b = reg.coef_[0].tolist(), float(reg.intercept_[0])
    fused = ScoreFusion(twin_weight=tw, cross_weight=cw, bias=b, threshold=0.5).score(t, c)
    m = pair_metrics(fused, y)
    threshold = float(m["best_f1_threshold"])
    metrics = {
        "fused": _summary(pair_metrics(fused, y, threshold=threshold)),
        "twin": _summary(pair_metrics(t, y, higher_is_better=higher_is_better)),
        "cross": _summary(pair_metrics(c, y)),
        "n": int(len(y)),
    }
    return ScoreFusion(twin_weight=tw, cross_weight=cw, bias=b, threshold=threshold, metrics=metrics)


def _summary(m: dict[str, Any]) -> dict[str, float]:
    return {k: float(m[k]) for k in ("ap", "best_f1") if k in m}
