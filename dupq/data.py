"""Reading, validating and splitting question-pair and question files.

Every problem in an input file raises :class:`DataError` with a message that
starts with ``file:line:`` so the user can jump straight to the bad row. Question texts
get the API's normal form (:func:`dupq.text.normalize_question`: whitespace collapsed),
so a pair from a file and the same pair from the API have one :func:`dupq.text.pair_key`.
A question over the length limit is not a malformed file: a pair file's row with one is
dropped and counted (:attr:`PairSet.invalid`); a question file's row with one, or with an
id the API would refuse, is read as None for the importer to count as invalid.

Example:
    >>> pairs = read_pairs("pairs.tsv")  # doctest: +SKIP
    >>> len(pairs), pairs.dropped_repeats, pairs.conflicts  # doctest: +SKIP
    (7901, 0, 0)
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dupq.errors import ValidationError
from dupq.text import clean_id, normalize_question, pair_key

__all__ = [
    "DataError",
    "Pair",
    "PairSet",
    "QuestionFile",
    "QuestionRecord",
    "Split",
    "dedupe_pairs",
    "detect_format",
    "duplicate_clusters",
    "iter_questions",
    "read_pairs",
    "read_pairs_by_source",
    "split_by_cluster",
]

_SUFFIX_FORMATS = {
    ".tsv": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    # A ".json" file is read as JSON lines, the only JSON layout that streams.
    ".json": "jsonl",
    ".txt": "txt",
}
_LABEL_COLUMNS = ("is_duplicate", "label")
_TEXT_COLUMNS = ("text", "question")


class DataError(ValueError):
    """A problem in an input file; the message names the file and usually the line.

    Example:
        >>> str(DataError("pairs.tsv", 17, "label must be 0 or 1, got '2'"))
        "pairs.tsv:17: label must be 0 or 1, got '2'"
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Pair:
    """A labelled question pair; ``label`` is 1 for duplicates, 0 otherwise.

    Example:
        >>> Pair("How to learn Python?", "Best way to learn Python?", 1).label
        1
    """

    question1: str
    question2: str
    label: int

    def __post_init__(self) -> None:
        # bool is an int subclass; True/False would silently pass a membership test.
        if type(self.label) is not int or self.label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {self.label!r}")


@dataclass
class PairSet:
    """Cleaned pairs plus what cleaning removed.

    Invariant: pairs read = ``len(pairs) + dropped_repeats + dropped_self + conflicts + invalid``
    (``invalid``: rows of a pair file with a question over the length limit).

    Example:
        >>> ps = dedupe_pairs([Pair("a", "b", 1), Pair("b", "a", 1), Pair("c", "c", 1)])
        >>> len(ps), ps.dropped_repeats, ps.dropped_self
        (1, 1, 1)
    """

    pairs: list[Pair]
    dropped_repeats: int = 0
    dropped_self: int = 0
    conflicts: int = 0
    invalid: int = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)


@dataclass(frozen=True)
class QuestionRecord:
    """One question to import, with an optional external id and free-form metadata.

    Example:
        >>> QuestionRecord("How do I learn Python?", id="42", meta={"tag": "python"}).id
        '42'
    """

    text: str
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Split:
    """Result of :func:`split_by_cluster`; ``dropped`` counts pairs that crossed splits.

    Example:
        >>> split = split_by_cluster([Pair("a", "b", 1), Pair("c", "d", 1)], dev_fraction=0.5)
        >>> len(split.train) + len(split.dev) + split.dropped
        2
    """

    train: list[Pair]
    dev: list[Pair]
    dropped: int


def detect_format(path: str | Path) -> str:
    """Return ``"tsv"``, ``"csv"``, ``"jsonl"`` or ``"txt"`` from the file suffix.

    ``.json`` and ``.ndjson`` are read as JSON lines (one object per line).

    Example:
        >>> detect_format(Path("pairs.TSV"))
        'tsv'
    """
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIX_FORMATS[suffix]
    except KeyError:
        known = ", ".join(sorted(_SUFFIX_FORMATS))
        raise DataError(
            path,
            None,
            f"unknown file type {suffix or '(no suffix)'!r}; expected one of {known}",
        ) from None


# --- low-level row readers -------------------------------------------------------------


def _csv_reader(f: Any, fmt: str) -> Iterator[list[str]]:
    # TSV files carry raw quotes inside questions, so quoting is off; CSV uses standard quoting.
    if fmt == "tsv":
        return csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    # strict: a stray or unclosed quote is an error rather than silently merging rows.
    return csv.reader(f, strict=True)


def _table_rows(path: Path, f: Any, fmt: str) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The stripped header of an open TSV/CSV file and a lazy iterator of its ``(line, row)`` data rows."""
    reader = _csv_reader(f, fmt)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(path, 1, f"malformed header: {exc}") from None
    if not header:
        raise DataError(path, 1, "empty file: expected a header row")
    header = [name.strip() for name in header]

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        while True:
            # A quoted CSV field can span lines, so a record starts after the last one read.
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(path, line, f"malformed row: {exc}") from None
            if not fields:
                continue  # blank line
            if len(fields) != len(header):
                raise DataError(
                    path,
                    line,
                    f"malformed row: expected {len(header)} fields, got {len(fields)}",
                )
            yield line, dict(zip(header, fields, strict=True))

    return header, rows()


def _jsonl_rows(path: Path, f: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line, object)`` for each non-blank line of an open JSON-lines file."""
    for line, raw in enumerate(f, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(path, line, f"invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(path, line, f"expected a JSON object, got {type(obj).__name__}")
        yield line, obj


class _TooLong(Exception):
    """A question over the length limit: the row is invalid, the file is not malformed."""


def _text(path: Path, line: int, name: str, value: Any) -> str:
    """Validate one question text and return its normal form (:func:`normalize_question`).

    Over the length limit: raises :class:`_TooLong` (the caller drops and counts the row).
    """
    if value is None:
        raise DataError(path, line, f"missing {name}")
    if not isinstance(value, str):
        raise DataError(path, line, f"{name} must be a string, got {type(value).__name__}")
    try:
        return normalize_question(value, field=name)
    except ValidationError as e:
        if e.code != "question_too_long":
            raise DataError(path, line, f"{name} is empty") from None
        raise _TooLong(str(e)) from None


def _label(path: Path, line: int, value: Any) -> int:
    """Parse a 0/1 label: int 0/1, strings "0"/"1", or JSON true/false."""
    if isinstance(value, bool):
        return int(value)
    if type(value) is int and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise DataError(path, line, f"label must be 0 or 1, got {value!r}")


def _require(path: Path, header: Sequence[str], names: Sequence[str]) -> None:
    missing = [name for name in names if name not in header]
    if missing:
        raise DataError(
            path,
            1,
            f"missing column {', '.join(map(repr, missing))}; header is {list(header)}",
        )


# --- pairs ---------------------------------------------------------------------------


def _pair(path: Path, line: int, q1: Any, q2: Any, label: Any) -> Pair | None:
    """One row's pair, or None when a question is over the length limit."""
    try:
        text1 = _text(path, line, "question1", q1)
        text2 = _text(path, line, "question2", q2)
    except _TooLong:
        _label(path, line, label)  # a bad label is still a malformed file
        return None
    return Pair(text1, text2, _label(path, line, label))


def _iter_raw_pairs(path: Path) -> Iterator[Pair | None]:
    """The rows of a pair file as pairs (None: a row dropped as invalid)."""
    for pair, _ in _iter_raw_sourced(path):
        yield pair


def _iter_raw_sourced(path: Path) -> Iterator[tuple[Pair | None, str | None]]:
    """The rows of a pair file as (pair or None, the row's ``source`` value or None)."""
    fmt = detect_format(path)
    if fmt == "txt":
        raise DataError(path, None, "pair files must be .tsv, .csv or .jsonl, not .txt")
    with open(path, encoding="utf-8-sig", newline="" if fmt != "jsonl" else None) as f:
        if fmt == "jsonl":
            for line, obj in _jsonl_rows(path, f):
                label_key = next((k for k in _LABEL_COLUMNS if k in obj), None)
                if label_key is None:
                    raise DataError(path, line, "missing key 'is_duplicate' (or 'label')")
                source = obj.get("source")
                pair = _pair(path, line, obj.get("question1"), obj.get("question2"), obj[label_key])
                yield pair, None if source is None else str(source)
            return
        header, rows = _table_rows(path, f, fmt)
        label_col = next((c for c in _LABEL_COLUMNS if c in header), None)
        _require(
            path,
            header,
            ["question1", "question2"] + ([] if label_col else ["is_duplicate"]),
        )
        for line, row in rows:
            yield _pair(path, line, row["question1"], row["question2"], row[label_col]), row.get("source")


def dedupe_pairs(pairs: Iterable[Pair]) -> PairSet:
    """Drop self-pairs and repeats; the latest label wins when a pair's labels conflict.

    Pairs are unordered: ``(a, b)`` and ``(b, a)`` are the same pair. A pair keeps the
    position of its first occurrence; a conflicting later label replaces the stored pair
    (and its orientation). Texts are compared exactly (by :func:`dupq.text.pair_key`), so
    normalise them beforehand (:func:`dupq.text.normalize_question`; :func:`read_pairs` does).

    Example:
        >>> ps = dedupe_pairs([Pair("a", "b", 0), Pair("b", "a", 1)])
        >>> ps.pairs, ps.conflicts
        ([Pair(question1='b', question2='a', label=1)], 1)
    """
    kept: dict[str, Pair] = {}
    repeats = selfs = conflicts = 0
    for pair in pairs:
        if pair.question1 == pair.question2:
            selfs += 1
            continue
        key = pair_key(pair.question1, pair.question2)
        previous = kept.get(key)
        if previous is None:
            kept[key] = pair
        elif previous.label == pair.label:
            repeats += 1
        else:
            # Later annotations are taken as corrections of earlier ones.
            conflicts += 1
            kept[key] = pair
    return PairSet(list(kept.values()), repeats, selfs, conflicts)


def read_pairs(path: str | Path) -> PairSet:
    """Read, validate and dedupe a pair file (TSV, CSV or JSONL).

    Tables need a header with ``question1``, ``question2`` and ``is_duplicate`` (or
    ``label``); other columns are ignored. JSONL objects use the same keys. Questions are
    normalised like the API's; a row with a question over the length limit is dropped and
    counted in :attr:`PairSet.invalid`. See :func:`dedupe_pairs` for the other cleaning rules.

    Example:
        >>> ps = read_pairs("qqp_pairs_dev.tsv")  # doctest: +SKIP
        >>> ps.pairs[0].label  # doctest: +SKIP
        0
    """
    path = Path(path)
    invalid = 0

    def valid() -> Iterator[Pair]:
        nonlocal invalid
        for pair in _iter_raw_pairs(path):
            if pair is None:
                invalid += 1
            else:
                yield pair

    pairs = dedupe_pairs(valid())
    pairs.invalid = invalid
    return pairs


def read_pairs_by_source(path: str | Path) -> dict[str, list[Pair]]:
    """The pairs of :func:`read_pairs`, grouped by the file's ``source`` column (key: the file name without one).

    Training uses the groups to tell labelled data (a group with both labels) from positive-only data (a
    group of duplicates only, such as QQP's paraphrase sources): see :func:`dupq.training.data.split_by_labels`.

    Example:
        >>> groups = read_pairs_by_source("qqp_pairs_train.tsv")  # doctest: +SKIP
        >>> {name: len(ps) for name, ps in groups.items()}          # doctest: +SKIP
    """
    path = Path(path)
    source_of: dict[str, str] = {}
    raw: list[Pair] = []
    for pair, source in _iter_raw_sourced(path):
        if pair is None:
            continue
        raw.append(pair)
        source_of[pair_key(pair.question1, pair.question2)] = source or path.name  # the latest row wins
    groups: dict[str, list[Pair]] = {}
    for pair in dedupe_pairs(raw).pairs:
        groups.setdefault(source_of[pair_key(pair.question1, pair.question2)], []).append(pair)
    return groups


# --- questions -----------------------------------------------------------------------


def _optional_id(path: Path, line: int, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(path, line, f"id must be a string or integer, got {type(value).__name__}")
    return str(value).strip() or None


def _question(path: Path, line: int, name: str, text: Any, qid: Any, meta: dict[str, Any]) -> QuestionRecord | None:
    """The one validator of an imported question: its text in normal form, its id as the API takes it.

    None: a valid row that is not a valid question (over the length limit, or an id the API refuses), for
    the importer to count; a malformed row (a missing or empty text, an id of the wrong type) raises.
    """
    try:
        normal: str | None = _text(path, line, name, text)
    except _TooLong:
        normal = None
    qid = _optional_id(path, line, qid)
    if normal is None:
        return None
    try:
        return QuestionRecord(normal, clean_id(qid), meta)
    except ValidationError:
        return None


class QuestionFile:
    """A question file to import, read in one pass (one open, each row validated once by :func:`_question`).

    Iterating yields a :class:`QuestionRecord` per question, or None for a row that is not a valid question:

    * ``.txt``: one question per line; blank lines are skipped.
    * ``.jsonl``: objects with ``text`` (or ``question``), optional ``id`` and optional
      ``meta`` object; any other keys are added to ``meta``.
    * ``.tsv``/``.csv``: a header with ``question1`` and ``question2`` marks a pair file
      and both questions of each row are yielded (the caller dedupes by text); otherwise
      a ``text`` (or ``question``) column, an optional ``id`` column, and all other
      columns go to ``meta``.

    :attr:`size` and :attr:`bytes_read` measure the progress of a walk without reading the file twice.

    Example:
        >>> [q.text for q in QuestionFile("questions.txt")]  # doctest: +SKIP
        ['How do I learn Python?', 'What is BM25?']
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.format = detect_format(self.path)
        self._raw: Any = None

    @property
    def bytes_read(self) -> int:
        """How much of the file the walk has read so far (read ahead in blocks)."""
        if self._raw is None:
            return 0
        return self.size if self._raw.closed else min(self._raw.tell(), self.size)

    def __iter__(self) -> Iterator[QuestionRecord | None]:
        table = self.format in ("tsv", "csv")
        with open(self.path, "rb") as self._raw, io.TextIOWrapper(
            self._raw, encoding="utf-8-sig", newline="" if table else None
        ) as f:
            yield from self._records(f)

    def _records(self, f: Any) -> Iterator[QuestionRecord | None]:
        path = self.path
        if self.format == "txt":
            for line, raw in enumerate(f, start=1):
                if raw.strip():
                    yield _question(path, line, "text", raw, None, {})
        elif self.format == "jsonl":
            for line, obj in _jsonl_rows(path, f):
                text_key = next((k for k in _TEXT_COLUMNS if k in obj), "text")
                meta = obj.get("meta") or {}
                if not isinstance(meta, dict):
                    raise DataError(path, line, f"meta must be an object, got {type(meta).__name__}")
                extras = {k: v for k, v in obj.items() if k not in (text_key, "id", "meta")}
                # the explicit meta object wins over loose keys
                yield _question(path, line, text_key, obj.get(text_key), obj.get("id"), {**extras, **meta})
        else:
            header, rows = _table_rows(path, f, self.format)
            if "question1" in header and "question2" in header:
                for line, row in rows:
                    yield _question(path, line, "question1", row["question1"], None, {})
                    yield _question(path, line, "question2", row["question2"], None, {})
                return
            text_col = next((c for c in _TEXT_COLUMNS if c in header), None)
            if text_col is None:
                raise DataError(path, 1, f"missing column 'text' (or 'question'); header is {header}")
            for line, row in rows:
                meta = {k: v for k, v in row.items() if k not in (text_col, "id")}
                yield _question(path, line, text_col, row[text_col], row.get("id"), meta)


def iter_questions(path: str | Path) -> Iterator[QuestionRecord | None]:
    """Stream the questions of a file to import (:class:`QuestionFile`; None: an invalid row).

    Example:
        >>> [q.text for q in iter_questions("questions.txt")]  # doctest: +SKIP
        ['How do I learn Python?', 'What is BM25?']
    """
    return iter(QuestionFile(path))


# --- clusters and splits -------------------------------------------------------------


class _UnionFind:
    """Disjoint sets over hashable items, with path halving and union by size."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self.parent:
            self.parent[item] = item
            self.size[item] = 1

    def find(self, item: str) -> str:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def labels(self) -> dict[str, int]:
        """Dense component ids, numbered by each component's first-added item."""
        ids: dict[str, int] = {}
        out: dict[str, int] = {}
        for item in self.parent:  # dicts keep insertion order -> deterministic ids
            out[item] = ids.setdefault(self.find(item), len(ids))
        return out


def _components(pairs: Iterable[Pair], positive_only: bool) -> dict[str, int]:
    uf = _UnionFind()
    for pair in pairs:
        uf.add(pair.question1)
        uf.add(pair.question2)
        if pair.label == 1 or not positive_only:
            uf.union(pair.question1, pair.question2)
    return uf.labels()


def duplicate_clusters(pairs: Iterable[Pair]) -> dict[str, int]:
    """Map each question to its duplicate cluster (transitive closure of positive pairs).

    Questions seen only in negative pairs get singleton clusters. Cluster ids are dense
    and numbered by first appearance, so they are stable for the same input order.

    Example:
        >>> duplicate_clusters([Pair("a", "b", 1), Pair("b", "c", 1), Pair("c", "d", 0)])
        {'a': 0, 'b': 0, 'c': 0, 'd': 1}
    """
    return _components(pairs, positive_only=True)


def split_by_cluster(pairs: Iterable[Pair], dev_fraction: float = 0.1, seed: int = 0) -> Split:
    """Split pairs into train and dev so that no question appears in both.

    Whole duplicate clusters go to one side. To avoid losing negative pairs, clusters
    are grouped by the connected components of *all* pairs (positive and negative) and
    a component moves as a unit; only a component with more questions than the dev
    target is broken into its duplicate clusters, and the negative pairs that then cross
    between train and dev are dropped (counted in ``Split.dropped``). Units are shuffled
    with ``seed`` and added to dev first-fit, never exceeding
    ``round(dev_fraction * n_questions)`` questions. Each side keeps the input order.

    Example:
        >>> pairs = [Pair("a", "b", 1), Pair("c", "d", 0), Pair("e", "f", 1), Pair("g", "h", 1)]
        >>> split = split_by_cluster(pairs, dev_fraction=0.25, seed=1)
        >>> len(split.train), len(split.dev), split.dropped
        (3, 1, 0)
    """
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be between 0 and 1, got {dev_fraction}")
    pairs = list(pairs)
    clusters = _components(pairs, positive_only=True)
    components = _components(pairs, positive_only=False)
    target = round(dev_fraction * len(clusters))

    component_sizes: dict[int, int] = {}
    for comp in components.values():
        component_sizes[comp] = component_sizes.get(comp, 0) + 1
    # A unit is a whole component, or a single cluster when its component can't fit in dev.
    unit_of = {
        q: ("cluster", clusters[q]) if component_sizes[comp] > target else ("component", comp)
        for q, comp in components.items()
    }
    unit_sizes: dict[tuple[str, int], int] = {}
    for unit in unit_of.values():  # insertion order = first appearance -> deterministic
        unit_sizes[unit] = unit_sizes.get(unit, 0) + 1

    units = list(unit_sizes)
    random.Random(seed).shuffle(units)
    dev_units: set[tuple[str, int]] = set()
    dev_questions = 0
    for unit in units:
        if dev_questions + unit_sizes[unit] <= target:
            dev_units.add(unit)
            dev_questions += unit_sizes[unit]
            if dev_questions == target:
                break

    train: list[Pair] = []
    dev: list[Pair] = []
    dropped = 0
    for pair in pairs:
        in_dev1 = unit_of[pair.question1] in dev_units
        in_dev2 = unit_of[pair.question2] in dev_units
        if in_dev1 and in_dev2:
            dev.append(pair)
        elif not in_dev1 and not in_dev2:
            train.append(pair)
        else:
            dropped += 1
    return Split(train, dev, dropped)
