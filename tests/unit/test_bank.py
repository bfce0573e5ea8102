"""Tests for the embedded default question bank (no model needed)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from dupq.bank import BANK_PATH, bank_groups, load_default_bank


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    """Load the default bank once per module."""
    return load_default_bank()


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def test_file_is_valid_jsonl() -> None:
    """Every line is a JSON object with exactly the four bank fields."""
    lines = BANK_PATH.read_text(encoding="utf-8").splitlines()
    for line in lines:
        raw = json.loads(line)
        assert set(raw) == {"id", "text", "topic", "group"}
        assert raw["group"] is None or isinstance(raw["group"], str)


def test_record_shape(records: list[dict[str, Any]]) -> None:
    """Loaded records use the id/text/meta shape."""
    for rec in records:
        assert set(rec) == {"id", "text", "meta"}
        assert set(rec["meta"]) == {"topic", "group"}
        assert rec["text"].strip()


def test_size(records: list[dict[str, Any]]) -> None:
    """The bank holds at least 300 questions."""
    assert len(records) >= 300


def test_ids_unique(records: list[dict[str, Any]]) -> None:
    """Question ids are unique."""
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))


def test_texts_unique(records: list[dict[str, Any]]) -> None:
    """Texts are unique, ignoring case and whitespace."""
    texts = [_norm(r["text"]) for r in records]
    assert len(texts) == len(set(texts))


def test_no_tabs_or_newlines(records: list[dict[str, Any]]) -> None:
    """Texts contain no tabs or line breaks."""
    for rec in records:
        assert "\t" not in rec["text"]
        assert "\n" not in rec["text"]
        assert "\r" not in rec["text"]


def test_topics(records: list[dict[str, Any]]) -> None:
    """The bank covers at least five topics."""
    topics = {r["meta"]["topic"] for r in records}
    assert len(topics) >= 5


def test_groups_sizes(records: list[dict[str, Any]]) -> None:
    """There are at least 60 groups, each of 2 to 4 questions."""
    groups = bank_groups(records)
    assert len(groups) >= 60
    for ids in groups.values():
        assert 2 <= len(ids) <= 4
    counts: dict[str, int] = {}
    for rec in records:
        group = rec["meta"]["group"]
        if group is not None:
            counts[group] = counts.get(group, 0) + 1
    assert all(2 <= n <= 4 for n in counts.values()), "singleton or oversized group"


def test_group_within_one_topic(records: list[dict[str, Any]]) -> None:
    """Every duplicate group stays within a single topic."""
    by_id = {r["id"]: r for r in records}
    for group, ids in bank_groups(records).items():
        topics = {by_id[i]["meta"]["topic"] for i in ids}
        assert len(topics) == 1, group


def test_bank_groups_default_matches(records: list[dict[str, Any]]) -> None:
    """bank_groups() with no argument uses the default bank."""
    assert bank_groups() == bank_groups(records)


def test_reverse_list_group_present(records: list[dict[str, Any]]) -> None:
    """The reverse-a-list question belongs to a duplicate group."""
    target = "how do i reverse a list in python?"
    match = [r for r in records if _norm(r["text"]) == target]
    assert len(match) == 1
    group = match[0]["meta"]["group"]
    assert group is not None
    assert len(bank_groups(records)[group]) >= 2
