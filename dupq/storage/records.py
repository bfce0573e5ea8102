"""The records both stores keep and return, and the rules they share (what an import skips, new ids).

Example:
    >>> [q.text for q in new_questions([NewQuestion("a"), NewQuestion("b"), NewQuestion("a")], set(), {"b"})]
    ['a']
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


class StoreError(Exception):
    """Base class of store errors."""


class DuplicateIdError(StoreError):
    """An explicit question id is already taken."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"question id already exists: {', '.join(ids[:5])}")
        self.ids = ids


class LinkError(StoreError):
    """A canonical link that cannot be made: ``kind`` says why (``missing``: an id is not stored; ``cycle``: the
    canonical is the question itself or one of its duplicates; ``closed``: already closed onto another question;
    ``open``: reopening a question that is not closed)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CanonicalLink:
    """``question_id`` is closed as a duplicate of ``canonical_id`` (the end of its chain, an open question).

    ``target_id`` is the question it was closed onto (the stored link; differs from ``canonical_id`` when that
    question was itself closed later), ``pair_id`` the labelled pair closing stored (None: none was stored).
    """

    question_id: str
    canonical_id: str
    target_id: str
    pair_id: int | None
    actor: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NewQuestion:
    """A question to add; ``id`` is generated when None."""

    text: str
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredPair:
    """A labelled pair as stored: every label given is kept (see :meth:`QuestionStore.pairs`)."""

    question1: str
    question2: str
    label: int
    source: str
    model_version: str | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Question:
    """A stored question."""

    id: str
    text: str
    meta: dict[str, Any]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def created_now() -> str:
    """Now, as a question, pair or model record's ``created_at`` (UTC, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_questions(items: Iterable[NewQuestion], taken_ids: set[str], taken_texts: set[str]) -> list[NewQuestion]:
    """The items whose text and id are neither taken (already stored) nor repeated earlier in ``items``.

    Both backends' stores add through it, so the rule of what is skipped is one rule. ``taken_ids`` and
    ``taken_texts`` are extended in place.
    """
    kept: list[NewQuestion] = []
    for q in items:
        if q.text in taken_texts or (q.id is not None and q.id in taken_ids):
            continue
        taken_texts.add(q.text)
        if q.id is not None:
            taken_ids.add(q.id)
        kept.append(q)
    return kept


def new_id() -> str:
    return uuid.uuid4().hex[:16]
