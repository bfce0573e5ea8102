"""SiameseEncoder: tied weights, energy maths, thresholds, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dupq.config import BASE_THRESHOLD
from dupq.models.encoder import SiameseEncoder


@pytest.fixture(scope="module")
def enc() -> SiameseEncoder:
    return SiameseEncoder.from_pretrained()


def test_tied_weights_one_module_embeds_both_sides(enc: SiameseEncoder) -> None:
    a = ["How do I reverse a list in Python?", "How long do I boil an egg?"]
    b = ["How long do I boil an egg?", "How do I reverse a list in Python?"]
    ea, eb = enc.encode(a), enc.encode(b)
    # The same text gives the same vector on either side: one set of weights, not two copies.
    np.testing.assert_allclose(ea[0], eb[1], atol=1e-6)
    np.testing.assert_allclose(ea[1], eb[0], atol=1e-6)
    # Training updates reach both sides at once because there is only one parameter set.
    params = list(enc.model.parameters())
    assert len({id(p) for p in params}) == len(params)


def test_encode_is_float32_and_unit_norm_for_cosine(enc: SiameseEncoder) -> None:
    e = enc.encode(["one question", "another question?"])
    assert e.dtype == np.float32 and e.shape == (2, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, enc.dim)
    with pytest.raises(TypeError):
        enc.encode("not a list")


def test_energy_maths_by_hand() -> None:
    cos = SiameseEncoder(model=None, energy="cosine", threshold=0.5)
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(cos.pair_energy(a, b), [0.0, 1.0, 1.0], atol=1e-6)
    euc = SiameseEncoder(model=None, energy="euclidean", threshold=1.0)
    # sqrt(1+1), sqrt(1+1), 0
    np.testing.assert_allclose(euc.pair_energy(a, b), [np.sqrt(2), np.sqrt(2), 0.0], atol=1e-6)
    assert cos.higher_is_better and not euc.higher_is_better
    assert cos.is_duplicate(0.5) and not cos.is_duplicate(0.49)
    assert euc.is_duplicate(1.0) and not euc.is_duplicate(1.01)
    np.testing.assert_array_equal(euc.is_duplicate(np.array([0.2, 3.0])), [True, False])
    with pytest.raises(ValueError):
        SiameseEncoder(model=None, energy="manhattan")
    with pytest.raises(ValueError):
        cos.pair_energy(a, b[:2])


def test_score_pairs_ranks_paraphrase_above_unrelated(enc: SiameseEncoder) -> None:
    s = enc.score_pairs(
        ["How do I reverse a list in Python?", "How do I reverse a list in Python?"],
        ["What is the way to flip the order of items in a Python list?", "Do I need a visa for Japan?"],
    )
    assert s[0] > enc.threshold > s[1]


def test_base_model_uses_calibrated_threshold(enc: SiameseEncoder) -> None:
    assert enc.threshold == BASE_THRESHOLD and enc.energy_name == "cosine"


def test_save_and_load_round_trip(enc: SiameseEncoder, tmp_path) -> None:
    enc.metadata = {"note": "round trip"}
    enc.save(tmp_path / "v1")
    meta = json.loads((tmp_path / "v1" / "dupq.json").read_text())
    assert meta["energy"] == "cosine" and meta["threshold"] == BASE_THRESHOLD and meta["base_model"]
    back = SiameseEncoder.load(tmp_path / "v1", cached=False, backend="torch")  # the exact round trip
    assert back.threshold == enc.threshold and back.metadata["note"] == "round trip"
    text = ["Is a Roth IRA better than a traditional IRA?"]
    np.testing.assert_allclose(back.encode(text), enc.encode(text), atol=1e-5)
    enc.metadata = {}


def test_load_rejects_a_folder_without_dupq_json(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        SiameseEncoder.load(tmp_path)
