"""Scoped search: a filter over question ``meta``, on the fields an operator declared filterable.

A filter is a JSON object ``{FIELD: VALUE | {"any": [VALUE, ...]} | {"none": [VALUE, ...]}}`` whose fields must
be among ``Settings.filter_fields`` (the fields the store indexes). Its meaning is exact and the same on every
backend (the store's index, pgvector's ``WHERE`` and :meth:`QuestionFilter.matches` agree, tested on both):

* ``VALUE`` (a string, number or boolean): the question's ``meta[FIELD]`` equals it, or, when that is a list,
  contains it. ``1`` and ``1.0`` are one value; ``1`` and ``"1"`` and ``true`` are three.
* ``{"any": [...]}``: it has at least one of the values (any-of); ``{"none": [...]}``: it has none of them
  (none-of: a question without the field matches).
* Several fields: all must hold (and).

Only scalars count as a field's values: the elements of a list that are strings, numbers or booleans; a nested
object or list, ``null`` and a missing field have no values (they match only ``none``).

Example:
    >>> f = QuestionFilter.parse({"tags": {"any": ["wifi", "dns"]}, "site": {"none": ["so"]}}, ("tags", "site"))
    >>> f.matches({"tags": ["wifi", "ubuntu"], "site": "askubuntu"}), f.matches({"tags": ["dns"], "site": "so"})
    (True, False)
    >>> value_key(1.0) == value_key(1) != value_key("1")
    True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dupq.errors import ValidationError

#: A filterable field's name (``Settings.filter_fields``): it goes into SQL as an identifier-like literal.
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
#: Most values in one ``any`` / ``none`` list.
MAX_FILTER_VALUES = 100
#: Longest string value in a filter, in characters.
MAX_FILTER_VALUE_CHARS = 300
#: The operators of a filter clause besides plain equality.
OPERATORS = ("any", "none")

Scalar = str | int | float | bool


def check_field_name(name: Any) -> str:
    """A declared field name, or ``ValueError`` saying why not."""
    if not isinstance(name, str) or not re.match(FIELD_PATTERN, name):
        raise ValueError(f"filter field names must match {FIELD_PATTERN}, got {name!r}")
    return name


def value_key(value: Scalar) -> str:
    """The canonical text of a scalar value: what the store indexes and a filter looks up.

    JSON text, with integral numbers written as integers (``1.0`` -> ``1``): numbers compare by value, as
    PostgreSQL's ``jsonb`` does; strings, numbers and booleans never equal each other.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


def meta_values(meta: Mapping[str, Any], name: str) -> set[str]:
    """The canonical values (:func:`value_key`) of field ``name`` of one question's ``meta``."""
    value = meta.get(name)
    items = value if isinstance(value, list) else [value]
    return {value_key(v) for v in items if _is_scalar(v)}


def field_rows(meta: Mapping[str, Any], fields: Iterable[str]) -> list[tuple[str, str]]:
    """``(field, value key)`` of every value of every declared field of ``meta`` (what the store indexes)."""
    return [(f, v) for f in fields for v in sorted(meta_values(meta, f))]


@dataclass(frozen=True)
class Clause:
    """One field's condition: the question has one of ``values`` (``negate``: none of them).

    Attributes:
        field: The meta field.
        values: The filter's values as given (JSON scalars, for a database that compares ``jsonb``).
        keys: Their canonical texts (:func:`value_key`).
        negate: True for ``none``.
    """

    field: str
    values: tuple[Scalar, ...]
    keys: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class QuestionFilter:
    """A parsed, validated filter: the clauses that must all hold (see the module)."""

    clauses: tuple[Clause, ...]

    @classmethod
    def parse(cls, raw: Any, fields: Sequence[str]) -> QuestionFilter | None:
        """Validate a request's filter against the declared ``fields``; None for no filter (None or ``{}``).

        Raises:
            ValidationError: Not an object, an undeclared field (the message names the declared ones), an
                unknown operator, an empty or over-long list, or a value that is not a string, number or boolean.
        """
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ValidationError("filter must be an object {field: value | {\"any\": [...]} | {\"none\": [...]}}",
                                  code="invalid_filter")
        clauses = []
        for name, spec in raw.items():
            if name not in fields:
                declared = ", ".join(fields) if fields else "none (the filter_fields setting is empty)"
                raise ValidationError(f"filter field {name!r} is not filterable; filterable fields: {declared}",
                                      code="unknown_filter_field")
            if isinstance(spec, dict):
                if len(spec) != 1 or next(iter(spec)) not in OPERATORS:
                    raise ValidationError(f"filter.{name} must be a value or one of {{\"any\": [...]}}, "
                                          "{\"none\": [...]}", code="invalid_filter")
                op, values = next(iter(spec.items()))
                if not isinstance(values, list) or not 1 <= len(values) <= MAX_FILTER_VALUES:
                    raise ValidationError(f"filter.{name}.{op} must be a list of 1-{MAX_FILTER_VALUES} values",
                                          code="invalid_filter")
                clauses.append(_clause(name, values, negate=op == "none"))
            else:
                clauses.append(_clause(name, [spec], negate=False))
        return cls(tuple(clauses)) if clauses else None

    def matches(self, meta: Mapping[str, Any]) -> bool:
        """Whether a question with this ``meta`` is in the filter's scope."""
        for c in self.clauses:
            hit = not meta_values(meta, c.field).isdisjoint(c.keys)
            if hit == c.negate:
                return False
        return True

    @property
    def fields(self) -> set[str]:
        return {c.field for c in self.clauses}

    def to_dict(self) -> dict[str, Any]:
        """The filter as a request states it."""
        out: dict[str, Any] = {}
        for c in self.clauses:
            out[c.field] = {"none" if c.negate else "any": list(c.values)}
        return out


def _clause(name: str, values: list[Any], *, negate: bool) -> Clause:
    kept: dict[str, Scalar] = {}
    for v in values:
        if not _is_scalar(v):
            raise ValidationError(f"filter.{name}: values must be strings, numbers or booleans, got {v!r}"[:200],
                                  code="invalid_filter")
        if isinstance(v, str) and (len(v) > MAX_FILTER_VALUE_CHARS or "\x00" in v):
            raise ValidationError(f"filter.{name}: a string value has at most {MAX_FILTER_VALUE_CHARS} characters "
                                  "and no NUL", code="invalid_filter")
        kept.setdefault(value_key(v), v)
    return Clause(name, tuple(kept.values()), tuple(kept), negate)
