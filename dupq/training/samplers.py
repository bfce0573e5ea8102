"""Batch samplers that cut CPU training steps down to the length of their texts (``batch_sampler=`` of a trainer).

A batch is padded to its longest text, so on a CPU most of a randomly drawn batch's compute is padding: QQP
questions average ~15 word pieces, a 64-question batch pads to ~40-50, and an AskUbuntu pair in a cross-encoder
batch pads 31 short QQP pairs to its own length. Both samplers pool ``GROUP_WINDOW`` batches' worth of rows,
sort them by length, cut them into batches again and shuffle those batches (``group_by_length`` in
transformers), so each epoch still sees every row once, in a seeded random batch order.

Example:
    >>> from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments  # doctest: +SKIP
    >>> CrossEncoderTrainingArguments("ckpt", batch_sampler=LengthGroupedBatchSampler)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler

__all__ = ["GROUP_WINDOW", "LengthGroupedBatchSampler", "LengthGroupedNoDuplicatesBatchSampler"]

#: Batches pooled before regrouping by length (see :class:`LengthGroupedNoDuplicatesBatchSampler`).
GROUP_WINDOW = 16


class LengthGroupedNoDuplicatesBatchSampler(NoDuplicatesBatchSampler):
    """The library's no-duplicates batch sampler, with batches regrouped by text length.

    Questions average ~15 word pieces but a batch is padded to its longest one (~40-50 for 64 QQP questions),
    so most of the compute of a CPU step is padding. This pools ``GROUP_WINDOW`` consecutive no-duplicate
    batches, sorts their rows by length, cuts them into batches again (still refusing a repeated text inside a
    batch) and shuffles those batches, like ``group_by_length`` in transformers.

    Example:
        >>> SentenceTransformerTrainingArguments(  # doctest: +SKIP
        ...     "ckpt", batch_sampler=LengthGroupedNoDuplicatesBatchSampler)
    """

    def __iter__(self) -> Iterator[list[int]]:
        columns = [self.dataset[c] for c in self.dataset.column_names if c != "dataset_name"]
        rows = list(zip(*columns, strict=True))
        lengths = [max(len(str(v)) for v in r) for r in rows]
        rng = random.Random(self.seed + self.epoch)
        pool: list[int] = []
        for batch in super().__iter__():
            pool.extend(batch)
            if len(pool) >= self.batch_size * GROUP_WINDOW:
                batches, pool = self._regroup(pool, rows, lengths, flush=False)
                rng.shuffle(batches)
                yield from batches
        batches, _ = self._regroup(pool, rows, lengths, flush=True)
        rng.shuffle(batches)
        yield from batches

    def _regroup(
        self, pool: list[int], rows: list[tuple], lengths: list[int], *, flush: bool
    ) -> tuple[list[list[int]], list[int]]:
        todo = sorted(pool, key=lengths.__getitem__)
        batches: list[list[int]] = []
        while todo:
            batch: list[int] = []
            seen: set[Any] = set()
            deferred: list[int] = []
            for i in todo:
                if len(batch) < self.batch_size and seen.isdisjoint(rows[i]):
                    batch.append(i)
                    seen.update(rows[i])
                else:
                    deferred.append(i)
            if len(batch) < self.batch_size and not flush:
                return batches, batch + deferred  # an incomplete batch waits for the next window
            batches.append(batch)
            todo = deferred
        return batches, []


class LengthGroupedBatchSampler(DefaultBatchSampler):
    """Seeded random batches of rows of similar total text length (the cross-encoder's: a pair is one sequence).

    No duplicate check: a pointwise loss (``BinaryCrossEntropyLoss``) has no in-batch negatives to protect.
    Label columns (``valid_label_columns``) and ``dataset_name`` do not count towards a row's length.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            dataset, batch_size, drop_last, valid_label_columns=valid_label_columns, generator=generator, seed=seed
        )
        self.dataset = dataset

    def __iter__(self) -> Iterator[list[int]]:
        skip = {*(self.valid_label_columns or ()), "dataset_name"}
        columns = [self.dataset[c] for c in self.dataset.column_names if c not in skip]
        lengths = [sum(len(v) for v in row if isinstance(v, str)) for row in zip(*columns, strict=True)]
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(lengths)))
        rng.shuffle(order)
        window = self.batch_size * GROUP_WINDOW
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lengths.__getitem__)
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        rng.shuffle(batches)
        yield from batches
