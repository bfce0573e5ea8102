"""The length-grouped batch samplers: every row once per epoch, batches of similar length, seeded order."""

from __future__ import annotations

import random

from datasets import Dataset

from dupq.training.samplers import GROUP_WINDOW, LengthGroupedBatchSampler, LengthGroupedNoDuplicatesBatchSampler


def _pairs(n: int, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    q1 = ["q" * rng.randint(5, 400) + f" {i}" for i in range(n)]
    q2 = ["w" * rng.randint(5, 400) + f" {i}" for i in range(n)]
    return Dataset.from_dict({"sentence1": q1, "sentence2": q2, "label": [float(i % 2) for i in range(n)]})


def _lengths(ds: Dataset, batch: list[int]) -> list[int]:
    return [len(ds[i]["sentence1"]) + len(ds[i]["sentence2"]) for i in batch]


def test_cross_sampler_covers_every_row_once_in_length_groups():
    ds = _pairs(1000)
    sampler = LengthGroupedBatchSampler(ds, batch_size=8, drop_last=False, valid_label_columns=["label"], seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(sampler) == 125
    # Labels do not constrain a batch (no duplicate check on 0.0/1.0): batches hold both labels.
    assert any(len({ds[i]["label"] for i in b}) == 2 for b in batches)
    # Within a window rows are sorted by length, so a batch spans far less than a random one would.
    spread = sum(max(_lengths(ds, b)) - min(_lengths(ds, b)) for b in batches) / len(batches)
    rng = random.Random(0)
    order = list(range(1000))
    rng.shuffle(order)
    random_spread = sum(
        max(_lengths(ds, order[i:i + 8])) - min(_lengths(ds, order[i:i + 8])) for i in range(0, 1000, 8)
    ) / 125
    assert spread < random_spread / 4


def test_cross_sampler_is_seeded_and_changes_with_the_epoch():
    ds = _pairs(300)
    a = LengthGroupedBatchSampler(ds, batch_size=16, drop_last=False, valid_label_columns=["label"], seed=1)
    b = LengthGroupedBatchSampler(ds, batch_size=16, drop_last=False, valid_label_columns=["label"], seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_cross_sampler_drop_last_drops_only_the_short_batch():
    ds = _pairs(16 * GROUP_WINDOW + 5)
    batches = list(LengthGroupedBatchSampler(ds, batch_size=16, drop_last=True, seed=0))
    assert all(len(b) == 16 for b in batches)
    assert len(batches) == GROUP_WINDOW


def test_twin_sampler_still_refuses_a_repeated_text_in_a_batch():
    texts = [f"question {i % 50}" for i in range(400)]
    ds = Dataset.from_dict({"anchor": texts, "positive": [t + " again" for t in texts]})
    batches = list(LengthGroupedNoDuplicatesBatchSampler(ds, batch_size=8, drop_last=False, seed=0))
    for b in batches:
        anchors = [ds[i]["anchor"] for i in b]
        assert len(set(anchors)) == len(anchors)
