"""Energy: one object per energy function, and no module left that branches on the energy's name."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from dupq.models.energy import Energy

A = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]], dtype=np.float32)
B = np.array([[0.0, 1.0], [2.0, 2.0], [3.0, 4.0]], dtype=np.float32)


def test_names_round_trip_and_unknown_names_fail() -> None:
    assert Energy.from_name("cosine") is Energy.COSINE and Energy.from_name("euclidean") is Energy.EUCLIDEAN
    assert Energy.from_name(Energy.COSINE) is Energy.COSINE
    assert Energy.names() == ("cosine", "euclidean")
    assert pickle.loads(pickle.dumps(Energy.EUCLIDEAN)) is Energy.EUCLIDEAN
    with pytest.raises(ValueError, match="energy must be one of"):
        Energy.from_name("manhattan")


def test_ordering_and_threshold_direction() -> None:
    assert Energy.COSINE.higher_is_better and Energy.COSINE.sign == 1.0
    assert not Energy.EUCLIDEAN.higher_is_better and Energy.EUCLIDEAN.sign == -1.0
    assert Energy.COSINE.is_duplicate(0.5, 0.5) and not Energy.COSINE.is_duplicate(0.49, 0.5)
    assert Energy.EUCLIDEAN.is_duplicate(1.0, 1.0) and not Energy.EUCLIDEAN.is_duplicate(1.01, 1.0)
    np.testing.assert_array_equal(Energy.EUCLIDEAN.is_duplicate(np.array([0.2, 3.0]), 1.0), [True, False])


def test_pair_energy_by_hand() -> None:
    np.testing.assert_allclose(Energy.COSINE.pair_energy(A, B), [0.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(Energy.EUCLIDEAN.pair_energy(A, B), [math.sqrt(2), math.sqrt(2), 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="shape mismatch"):
        Energy.COSINE.pair_energy(A, B[:2])


@pytest.mark.parametrize("energy", [Energy.COSINE, Energy.EUCLIDEAN])
def test_bank_scores_rank_best_first_and_report_the_pair_energy(energy: Energy) -> None:
    rng = np.random.default_rng(0)
    bank = energy.prepare(rng.normal(size=(50, 8)).astype(np.float32))
    queries = energy.prepare(rng.normal(size=(4, 8)).astype(np.float32))
    rank = energy.rank_scores(queries, bank)
    reported = energy.reported(rank)
    for q, row_rank, row_reported in zip(queries, rank, reported, strict=True):
        direct = energy.pair_energy(np.repeat(q[None], len(bank), 0), bank)
        np.testing.assert_allclose(row_reported, direct, atol=1e-4)
        best = np.argsort(-row_rank, kind="stable")
        # The best by rank score is the best by the energy's own direction.
        assert best[0] == np.argsort(-energy.sign * direct, kind="stable")[0]
    np.testing.assert_allclose(energy.scores(queries, bank), reported)


def test_prepare_normalises_only_for_cosine() -> None:
    np.testing.assert_allclose(np.linalg.norm(Energy.COSINE.prepare(A), axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(Energy.EUCLIDEAN.prepare(A), A)


def test_default_margin_is_the_same_geometry_for_both() -> None:
    # A cosine distance m between unit vectors is the Euclidean distance sqrt(2 m).
    assert Energy.EUCLIDEAN.default_margin == pytest.approx(math.sqrt(2 * Energy.COSINE.default_margin))
    from dupq.training import DEFAULT_MARGIN, TrainConfig

    assert DEFAULT_MARGIN == {"cosine": Energy.COSINE.default_margin, "euclidean": Energy.EUCLIDEAN.default_margin}
    assert TrainConfig(energy=Energy.EUCLIDEAN).energy == "euclidean"  # stored by name (JSON)


def test_training_and_index_settings() -> None:
    from sentence_transformers.sentence_transformer.losses import SiameseDistanceMetric

    assert Energy.COSINE.distance_metric() == SiameseDistanceMetric.COSINE_DISTANCE
    assert Energy.EUCLIDEAN.distance_metric() == SiameseDistanceMetric.EUCLIDEAN
    assert (Energy.COSINE.usearch_metric, Energy.COSINE.graph_dtype) == ("cos", "i8")
    assert (Energy.EUCLIDEAN.usearch_metric, Energy.EUCLIDEAN.graph_dtype) == ("l2sq", "f16")


def test_encoder_holds_an_energy_and_keeps_its_name() -> None:
    from dupq.models.encoder import SiameseEncoder

    enc = SiameseEncoder(model=None, energy="euclidean", threshold=1.0)
    assert enc.energy is Energy.EUCLIDEAN and enc.energy_name == "euclidean" and not enc.higher_is_better
