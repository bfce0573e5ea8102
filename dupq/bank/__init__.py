"""Embedded default question bank for dupq.

The bank is a JSON Lines file (``questions.jsonl``) shipped inside this
package. Each line holds one question with the fields ``id``, ``text``,
``topic`` and ``group``; ``group`` names a set of questions that ask the
same thing in different words, or is ``null`` for questions without a
duplicate in the bank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["BANK_PATH", "bank_groups", "load_default_bank"]

BANK_PATH: Path = Path(__file__).parent / "questions.jsonl"
"""Path of the bundled ``questions.jsonl`` file."""


def load_default_bank() -> list[dict[str, Any]]:
    """Load the bundled question bank.

    Returns:
        The records in file order, each shaped as
        ``{"id": str, "text": str, "meta": {"topic": str, "group": str | None}}``.

    Raises:
        ValueError: If a line is not valid JSON or lacks a required field.
    """
    records: list[dict[str, Any]] = []
    with BANK_PATH.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                record = {
                    "id": str(raw["id"]),
                    "text": str(raw["text"]),
                    "meta": {"topic": str(raw["topic"]), "group": raw.get("group")},
                }
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                msg = f"{BANK_PATH}:{lineno}: bad bank record: {exc}"
                raise ValueError(msg) from exc
            records.append(record)
    return records


def bank_groups(records: list[dict[str, Any]] | None = None) -> dict[str, list[str]]:
    """Map each duplicate group to the ids of its questions.

    Args:
        records: Records as returned by :func:`load_default_bank`. When
            ``None``, the default bank is loaded.

    Returns:
        A dict from group name to the ids of its members, in record order,
        holding only groups with at least two members.
    """
    if records is None:
        records = load_default_bank()
    groups: dict[str, list[str]] = {}
    for record in records:
        group = record.get("meta", {}).get("group")
        if group:
            groups.setdefault(str(group), []).append(record["id"])
    return {name: ids for name, ids in groups.items() if len(ids) >= 2}
