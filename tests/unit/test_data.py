"""Tests for dupq.data: pair/question readers, validation errors, cleaning, clusters and splits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from support import FIXTURES

from dupq.data import (
    DataError,
    Pair,
    QuestionFile,
    QuestionRecord,
    dedupe_pairs,
    detect_format,
    duplicate_clusters,
    iter_questions,
    read_pairs,
    split_by_cluster,
)

PY_A = "How do I learn Python?"
PY_B = "What is the best way to learn Python?"
RICE = "How do I cook rice?"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- formats -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.tsv", "tsv"), ("a.CSV", "csv"), ("a.jsonl", "jsonl"), ("a.json", "jsonl"), ("a.txt", "txt")],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(Path(name)) == fmt


def test_detect_format_unknown_suffix() -> None:
    with pytest.raises(DataError, match=r"pairs\.xlsx: unknown file type '\.xlsx'"):
        detect_format(Path("pairs.xlsx"))


def test_read_tsv_cleans_and_counts() -> None:
    ps = read_pairs(FIXTURES / "pairs.tsv")
    assert ps.pairs == [
        Pair(PY_A, PY_B, 1),
        # Quotes are literal in TSV (QUOTE_NONE) and surrounding whitespace is stripped.
        Pair('Is "BM25" still useful?', RICE, 0),
        # p4 says duplicate, the later p5 says not: the latest occurrence wins.
        Pair(RICE, "What is the best rice cooker?", 0),
    ]
    assert (ps.dropped_repeats, ps.dropped_self, ps.conflicts) == (1, 1, 1)
    assert len(ps) == 3 and list(ps) == ps.pairs


def test_read_csv_with_quoting_and_label_column() -> None:
    ps = read_pairs(FIXTURES / "pairs.csv")
    assert ps.pairs == [
        Pair("Hello, world?", "How to print hello world?", 1),
        Pair("A question over two lines?", "Single line?", 0),  # whitespace collapsed, as the API does
    ]


def test_read_jsonl() -> None:
    ps = read_pairs(FIXTURES / "pairs.jsonl")
    assert [p.label for p in ps] == [1, 0, 1]  # true, "0", label=1
    assert ps.pairs[0] == Pair(PY_A, "Best way to learn Python?", 1)


def test_read_pairs_rejects_txt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="must be .tsv, .csv or .jsonl"):
        read_pairs(write(tmp_path / "p.txt", "a\n"))


# --- errors name file and line -------------------------------------------------------

HEADER = "question1\tquestion2\tis_duplicate\n"


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (HEADER + "a\tb\t1\nc\td\t2\n", 3, "label must be 0 or 1, got '2'"),
        (HEADER + "a\tb\t1\nc\td\n", 3, "malformed row: expected 3 fields, got 2"),
        (HEADER + "a\tb\t1\n\t \td\t1\n", 3, "malformed row: expected 3 fields, got 4"),
        (HEADER + "a\t   \t1\n", 2, "question2 is empty"),
        (HEADER + "a\tb\tyes\n", 2, "label must be 0 or 1, got 'yes'"),
    ],
)
def test_tsv_errors(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = write(tmp_path / "pairs.tsv", body)
    with pytest.raises(DataError) as err:
        read_pairs(path)
    assert str(err.value) == f"{path}:{line}: {message}"
    assert err.value.line == line


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.tsv", "question1\tq2\tis_duplicate\na\tb\t1\n")
    with pytest.raises(DataError, match=r"pairs\.tsv:1: missing column 'question2'"):
        read_pairs(path)
    path = write(tmp_path / "nolabel.csv", "question1,question2\na,b\n")
    with pytest.raises(DataError, match=r"nolabel\.csv:1: missing column 'is_duplicate'"):
        read_pairs(path)


def test_csv_error_line_counts_multiline_records(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.csv", 'question1,question2,label\n"x\ny",b,1\nc,d,5\n')
    with pytest.raises(DataError, match=r"pairs\.csv:4: label must be 0 or 1, got '5'"):
        read_pairs(path)


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ('{"question1": "a", "question2": "b", "is_duplicate": 1}\n{"question1": "a",\n', 2, "invalid JSON"),
        ('\n["a", "b", 1]\n', 2, "expected a JSON object, got list"),
        ('{"question1": "a", "question2": "b", "label": 2}\n', 1, "label must be 0 or 1, got 2"),
        ('{"question1": "a", "question2": "b", "label": 1.0}\n', 1, "label must be 0 or 1, got 1.0"),
        ('{"question1": "a", "question2": " ", "label": 1}\n', 1, "question2 is empty"),
        ('{"question1": 3, "question2": "b", "label": 1}\n', 1, "question1 must be a string, got int"),
        ('{"question2": "b", "label": 1}\n', 1, "missing question1"),
        ('{"question1": "a", "question2": "b"}\n', 1, "missing key 'is_duplicate'"),
    ],
)
def test_jsonl_errors(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = write(tmp_path / "pairs.jsonl", body)
    with pytest.raises(DataError) as err:
        read_pairs(path)
    assert str(err.value).startswith(f"{path}:{line}: {message}")


# --- cleaning ------------------------------------------------------------------------


def test_dedupe_counts_and_latest_label_wins() -> None:
    pairs = [
        Pair("a", "b", 1),
        Pair("c", "c", 0),  # self-pair
        Pair("b", "a", 1),  # repeat (unordered)
        Pair("a", "b", 0),  # conflict: now 0
        Pair("b", "a", 0),  # repeat of the new label
        Pair("x", "y", 0),
    ]
    ps = dedupe_pairs(pairs)
    assert ps.pairs == [Pair("a", "b", 0), Pair("x", "y", 0)]
    assert (ps.dropped_repeats, ps.dropped_self, ps.conflicts) == (2, 1, 1)
    assert len(pairs) == len(ps) + ps.dropped_repeats + ps.dropped_self + ps.conflicts


def test_pair_rejects_bad_label() -> None:
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        Pair("a", "b", 2)
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        Pair("a", "b", True)  # type: ignore[arg-type]


# --- question import -----------------------------------------------------------------


def test_iter_questions_txt() -> None:
    assert list(iter_questions(FIXTURES / "questions.txt")) == [
        QuestionRecord(PY_A),
        QuestionRecord("What is BM25?"),
    ]


def test_iter_questions_jsonl() -> None:
    assert list(iter_questions(FIXTURES / "questions.jsonl")) == [
        QuestionRecord(PY_A, "a1", {"source": "qqp", "tag": "python"}),
        QuestionRecord("What is BM25?", "7", {}),
        QuestionRecord("No id here", None, {}),
    ]


def test_iter_questions_tsv_and_csv() -> None:
    assert list(iter_questions(FIXTURES / "questions.tsv")) == [
        QuestionRecord(PY_A, "x1", {"tag": "python"}),
        QuestionRecord("What is BM25?", None, {"tag": "ir"}),
    ]
    assert list(iter_questions(FIXTURES / "questions.csv")) == [QuestionRecord("Why, oh why?", None, {"lang": "en"})]


def test_iter_questions_pair_file_yields_both_sides() -> None:
    texts = [q.text for q in iter_questions(FIXTURES / "pairs.tsv")]
    assert texts[:4] == [PY_A, PY_B, 'Is "BM25" still useful?', RICE]
    assert len(texts) == 12  # no dedupe: the caller dedupes by text


def test_iter_questions_streams(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", '{"text": "fine"}\n{"text": ""}\n')
    records = iter_questions(path)
    assert next(records) == QuestionRecord("fine")  # yielded before the bad line is read
    with pytest.raises(DataError, match=r"q\.jsonl:2: text is empty"):
        next(records)


def test_iter_questions_validates_each_row_once(tmp_path: Path) -> None:
    from dupq.config import MAX_QUESTION_CHARS

    long = "x" * (MAX_QUESTION_CHARS + 1)
    rows = ['{"text": "  two   spaces "}', f'{{"text": "{long}"}}', '{"text": "ok", "id": "has space"}',
            '{"text": "b", "id": 7}']
    body = "\n".join(rows) + "\n"
    records = list(iter_questions(write(tmp_path / "q.jsonl", body)))
    # normal form once, here; over the limit and an id the API refuses: None, for the importer to count
    assert records == [QuestionRecord("two spaces"), None, None, QuestionRecord("b", "7")]
    with pytest.raises(DataError, match=r"q\.jsonl:1: id must be a string or integer"):
        list(iter_questions(write(tmp_path / "q.jsonl", f'{{"text": "{long}", "id": [1]}}\n')))


def test_question_file_reads_once_and_measures_progress(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", "id\ttext\n" + "".join(f"{i}\tquestion {i}?\n" for i in range(3000)))
    file = QuestionFile(path)
    assert file.bytes_read == 0 and file.size == path.stat().st_size
    seen = []
    for n, record in enumerate(file):
        seen.append(file.bytes_read)
        assert record == QuestionRecord(f"question {n}?", str(n), {})
    assert seen == sorted(seen) and 0 < seen[0] < file.size and file.bytes_read == file.size


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("q.tsv", "id\ttitle\n1\tx\n", r"q\.tsv:1: missing column 'text' \(or 'question'\)"),
        ("q.csv", 'text\n"\n', r"q\.csv:2: malformed row: unexpected end of data"),
        ("q.csv", 'text\n"ab"c\n', r"q\.csv:2: malformed row: ',' expected after '\"'"),
        ("q.jsonl", '{"text": "a", "meta": [1]}\n', r"q\.jsonl:1: meta must be an object"),
        ("q.jsonl", '"just a string"\n', r"q\.jsonl:1: expected a JSON object"),
        ("q.tsv", "text\tid\nhello\n", r"q\.tsv:2: malformed row: expected 2 fields, got 1"),
    ],
)
def test_iter_questions_errors(tmp_path: Path, name: str, body: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        list(iter_questions(write(tmp_path / name, body)))


# --- clusters and splits -------------------------------------------------------------


def test_duplicate_clusters_transitive_closure() -> None:
    # a=b, b=c, d=e are duplicates; c-d and f-a are negatives; g only in a negative.
    pairs = [Pair("a", "b", 1), Pair("c", "d", 0), Pair("b", "c", 1), Pair("d", "e", 1), Pair("f", "g", 0)]
    clusters = duplicate_clusters(pairs)
    assert clusters == {"a": 0, "b": 0, "c": 0, "d": 1, "e": 1, "f": 2, "g": 3}


def random_pairs(rng: random.Random) -> list[Pair]:
    n = rng.randint(2, 30)
    pairs = []
    for _ in range(rng.randint(1, 40)):
        a, b = rng.sample(range(n), 2)
        pairs.append(Pair(f"q{a}", f"q{b}", int(rng.random() < 0.4)))
    return pairs


@pytest.mark.parametrize("seed", range(25))
def test_split_never_shares_a_question(seed: int) -> None:
    rng = random.Random(seed)
    pairs = random_pairs(rng)
    fraction = rng.choice([0.1, 0.3, 0.5])
    split = split_by_cluster(pairs, dev_fraction=fraction, seed=seed)

    train_q = {q for p in split.train for q in (p.question1, p.question2)}
    dev_q = {q for p in split.dev for q in (p.question1, p.question2)}
    assert not train_q & dev_q
    assert len(split.train) + len(split.dev) + split.dropped == len(pairs)
    # Whole clusters: every positive pair survives, so no duplicate cluster is cut.
    assert split.dropped == sum(1 for p in pairs if p not in split.train and p not in split.dev)
    assert all(p in split.train or p in split.dev for p in pairs if p.label == 1)
    assert len(dev_q) <= round(fraction * len(duplicate_clusters(pairs)))
    # Deterministic for a seed.
    assert split_by_cluster(pairs, dev_fraction=fraction, seed=seed) == split


def test_split_keeps_small_components_whole() -> None:
    # 50 components of 4 questions: a duplicate pair plus a negative to another pair.
    pairs = []
    for i in range(50):
        pairs += [Pair(f"a{i}", f"b{i}", 1), Pair(f"c{i}", f"d{i}", 1), Pair(f"b{i}", f"c{i}", 0)]
    split = split_by_cluster(pairs, dev_fraction=0.2, seed=3)
    assert split.dropped == 0  # negatives never cross when their component moves as a unit
    assert (len(split.train), len(split.dev)) == (120, 30)


def test_split_breaks_a_giant_component_and_drops_crossing_pairs() -> None:
    # One component linking 20 duplicate pairs by negatives: it is too big for dev.
    pairs = [Pair(f"a{i}", f"b{i}", 1) for i in range(20)]
    pairs += [Pair(f"b{i}", f"a{i + 1}", 0) for i in range(19)]
    split = split_by_cluster(pairs, dev_fraction=0.25, seed=0)
    assert sum(p.label for p in split.dev) == 5  # 10 questions = 5 whole clusters
    assert split.dropped > 0


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="dev_fraction"):
        split_by_cluster([Pair("a", "b", 1)], dev_fraction=1.0)
