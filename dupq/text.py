"""Question text rules shared by every way in (API, import, pair files, training): one normal form, one pair key,
one rule for explicit question ids.

Example:
    >>> normalize_question("  How do I\\tboil an egg?\\n")
    'How do I boil an egg?'
    >>> pair_key("b?", "a?") == pair_key("a?", "b?")
    True
"""

from __future__ import annotations

from typing import Any

from dupq.config import MAX_ID_CHARS, MAX_QUESTION_CHARS
from dupq.errors import ValidationError

__all__ = ["clean_id", "normalize_question", "pair_key"]

#: Separates the two texts of a pair key; never part of a normalised question (control character).
_SEP = "\x1f"


def normalize_question(text: Any, *, field: str = "question") -> str:
    """Validate one question text and return its normal form (whitespace runs collapsed to one space).

    Args:
        text: The text as given.
        field: Name of the field in error messages.

    Raises:
        ValidationError: ``invalid_type`` (not a string), ``invalid_text`` (a lone surrogate),
            ``empty_question``, ``question_too_long``
            (over :data:`dupq.config.MAX_QUESTION_CHARS` characters after collapsing).

    Example:
        >>> normalize_question("   ")
        Traceback (most recent call last):
        ...
        dupq.errors.ValidationError: question must not be empty
    """
    if not isinstance(text, str):
        raise ValidationError(f"{field} must be a string", code="invalid_type")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but no text: it cannot be stored
        raise ValidationError(f"{field} is not valid Unicode text (lone surrogate)", code="invalid_text") from None
    text = " ".join(text.split())  # tabs/newlines would break the line-based file formats
    if not text:
        raise ValidationError(f"{field} must not be empty", code="empty_question")
    if len(text) > MAX_QUESTION_CHARS:
        raise ValidationError(
            f"{field} is {len(text)} characters; the limit is {MAX_QUESTION_CHARS}", code="question_too_long"
        )
    return text


def clean_id(qid: Any) -> str | None:
    """Validate an explicit question id (None: one is generated).

    Example:
        >>> clean_id("q-1"), clean_id(None)
        ('q-1', None)
        >>> clean_id("two words")
        Traceback (most recent call last):
        ...
        dupq.errors.ValidationError: id must be 1-... printable characters without whitespace
    """
    if qid is None:
        return None
    if not isinstance(qid, str):
        raise ValidationError("id must be a string", code="invalid_type")
    if not qid or len(qid) > MAX_ID_CHARS or any(c.isspace() or not c.isprintable() for c in qid):
        raise ValidationError(f"id must be 1-{MAX_ID_CHARS} printable characters without whitespace", code="invalid_id")
    return qid


def pair_key(q1: str, q2: str) -> str:
    """Order-free key of a pair of normalised questions: ``(a, b)`` and ``(b, a)`` are the same pair.

    The store persists it (``pairs.pair_key``), so its form is an on-disk format.

    Example:
        >>> pair_key("b?", "a?")
        'a?\\x1fb?'
    """
    a, b = sorted((q1, q2))
    return a + _SEP + b
