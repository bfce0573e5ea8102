"""The re-ranking score: the cross-encoder's logit and the twin's pair score fused by a logistic regression.

A cross-encoder trained on a few thousand labelled pairs scores pairs a little worse than the twin it re-ranks
for (docs/benchmarks.md, Quality), but the two err on different pairs: a logistic regression on both scores,
fit on the dev pairs the thresholds are calibrated on, ranks better than either (three parameters, so fitting
them on dev is calibration, like the thresholds). The fused score is a probability; ``threshold`` is its max-F1
cut on dev. Serving needs only numpy (:meth:`ScoreFusion.score`); fitting imports scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: ``scorer`` of a search or an evaluation that the fused score decided.
FUSED_SCORER = "cross-encoder+twin"


@dataclass(frozen=True)
class ScoreFusion:
    """``sigmoid(twin_weight * twin_score + cross_weight * cross_logit + bias)``, and its calibrated threshold.

    Args:
        twin_weight: Weight of the twin's pair score (its energy: cosine similarity, or Euclidean distance,
            whose weight then comes out negative).
        cross_weight: Weight of the cross-encoder's logit.
        bias: Intercept.
        threshold: Max-F1 threshold on the fused probability, on the pairs it was fit on.
        metrics: Pair metrics on those pairs: ``{"fused": ..., "twin": ..., "cross": ...}`` (AP, best F1).

    Example:
        >>> f = ScoreFusion(twin_weight=8.0, cross_weight=2.0, bias=-7.5, threshold=0.5)
        >>> [round(float(s), 3) for s in f.score([0.9, 0.5], [1.0, -2.0])]
        [0.846, 0.001]
    """

    twin_weight: float
    cross_weight: float
    bias: float
    threshold: float
    metrics: dict[str, Any] | None = None

    def score(
        self, twin_scores: Sequence[float] | np.ndarray, cross_logits: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        """Fused duplicate probability of each pair (higher = duplicate)."""
        z = (self.twin_weight * np.asarray(twin_scores, dtype=np.float64)
             + self.cross_weight * np.asarray(cross_logits, dtype=np.float64) + self.bias)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))

    def is_duplicate(self, scores: np.ndarray | float) -> np.ndarray | bool:
        return np.asarray(scores) >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreFusion:
        return cls(
            twin_weight=float(data["twin_weight"]),
            cross_weight=float(data["cross_weight"]),
            bias=float(data["bias"]),
            threshold=float(data["threshold"]),
            metrics=data.get("metrics"),
        )
