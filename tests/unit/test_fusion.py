"""The re-ranking fusion (dupq/models/fusion.py, fitted by dupq/training/fusion.py): a logistic regression on the
twin's score and the cross-encoder's logit."""

from __future__ import annotations

import numpy as np
import pytest

from dupq.evaluation import pair_metrics
from dupq.models.fusion import ScoreFusion
from dupq.training.fusion import fit_fusion


def noisy_scores(seed: int = 0, n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two scorers that each see the label through their own independent noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    twin = 0.6 + 0.15 * (y - 0.5) + rng.normal(0, 0.12, n)  # a cosine-like score
    logits = 3.0 * (y - 0.5) + rng.normal(0, 2.5, n)  # a logit-like one, on another scale
    return twin, logits, y


def test_fit_ranks_better_than_either_scorer_and_calibrates_a_threshold() -> None:
    twin, logits, y = noisy_scores()
    fusion = fit_fusion(twin, logits, y)
    assert fusion.twin_weight > 0 and fusion.cross_weight > 0
    fused = fusion.score(twin, logits)
    assert np.all((fused >= 0) & (fused <= 1))
    ap = pair_metrics(fused, y)["ap"]
    assert ap > pair_metrics(twin, y)["ap"] + 0.01 and ap > pair_metrics(logits, y)["ap"] + 0.01
    # Checked on pairs it was not fit on: the gain is not in-sample only.
    t2, l2, y2 = noisy_scores(seed=1)
    assert pair_metrics(fusion.score(t2, l2), y2)["ap"] > max(pair_metrics(t2, y2)["ap"], pair_metrics(l2, y2)["ap"])
    assert fusion.threshold == pytest.approx(pair_metrics(fused, y)["best_f1_threshold"])
    assert fusion.metrics["fused"]["ap"] == pytest.approx(ap) and fusion.metrics["n"] == len(y)
    assert list(fusion.is_duplicate(np.array([fusion.threshold, fusion.threshold - 1e-9]))) == [True, False]


def test_a_distance_gets_a_negative_weight() -> None:
    twin, logits, y = noisy_scores()
    fusion = fit_fusion(2.0 - twin, logits, y, higher_is_better=False)  # lower = more duplicate
    assert fusion.twin_weight < 0 < fusion.cross_weight
    assert fusion.metrics["twin"]["ap"] == pytest.approx(pair_metrics(twin, y)["ap"])


def test_round_trip_and_bad_input() -> None:
    twin, logits, y = noisy_scores(n=200)
    fusion = fit_fusion(twin, logits, y)
    again = ScoreFusion.from_dict(fusion.to_dict())
    assert again == fusion
    np.testing.assert_allclose(again.score(twin, logits), fusion.score(twin, logits))
    with pytest.raises(ValueError, match="both labels"):
        fit_fusion(twin, logits, np.ones_like(y))
    with pytest.raises(ValueError, match="differ in length"):
        fit_fusion(twin[:-1], logits, y)
