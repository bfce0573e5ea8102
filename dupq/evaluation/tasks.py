"""Retrieval tasks: queries, a corpus and their relevant documents, from labelled pairs or a BEIR folder."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dupq.data import DataError, Pair, duplicate_clusters


@dataclass
class RetrievalTask:
    """Queries to rank against a corpus, with the relevant corpus ids of each query.

    With ``exclude_self`` a corpus entry whose id equals the query id is the query
    itself and is never returned by the rankers.

    Example:
        >>> task = retrieval_task_from_pairs([Pair("a", "b", 1), Pair("b", "c", 0)])
        >>> task.corpus, task.qrels
        ({'q0': 'a', 'q1': 'b', 'q2': 'c'}, {'q0': {'q1'}, 'q1': {'q0'}})
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, set[str]]
    exclude_self: bool = True


def retrieval_task_from_pairs(pairs: Iterable[Pair]) -> RetrievalTask:
    """Build a duplicate-retrieval task from labelled pairs.

    The corpus is every unique question (ids ``q0``, ``q1``, ... by first appearance);
    each question with at least one duplicate is a query whose relevant documents are
    the other members of its duplicate cluster (transitive closure of positive pairs).

    Example:
        >>> task = retrieval_task_from_pairs([Pair("a", "b", 1), Pair("b", "c", 1)])
        >>> sorted(task.qrels["q0"])
        ['q1', 'q2']
    """
    clusters = duplicate_clusters(pairs)
    ids = {text: f"q{i}" for i, text in enumerate(clusters)}  # clusters keeps first appearance
    members: dict[int, list[str]] = {}
    for text, cluster in clusters.items():
        members.setdefault(cluster, []).append(ids[text])
    qrels = {
        ids[text]: set(members[cluster]) - {ids[text]}
        for text, cluster in clusters.items()
        if len(members[cluster]) > 1
    }
    corpus = {qid: text for text, qid in ids.items()}
    return RetrievalTask(corpus, {qid: corpus[qid] for qid in qrels}, qrels, exclude_self=True)


_ID_HEADERS = {"id", "_id", "doc_id", "docid", "doc-id", "corpus_id", "corpus-id", "pid"} | {
    "query_id",
    "queryid",
    "query-id",
    "qid",
}


def _read_beir_tsv(path: Path, columns: Sequence[str]) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise DataError(path, None, f"missing file (expected columns {', '.join(columns)})")
    rows: list[tuple[int, list[str]]] = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line, fields in enumerate(reader, start=1):
            if not fields or not any(x.strip() for x in fields):
                continue
            fields = [x.strip() for x in fields]
            if not rows and fields[0].lower() in _ID_HEADERS:
                continue  # header row
            if len(fields) != len(columns):
                raise DataError(
                    path,
                    line,
                    f"expected {len(columns)} columns ({', '.join(columns)}), got {len(fields)}",
                )
            if not all(fields):
                raise DataError(path, line, "empty field")
            rows.append((line, fields))
    return rows


def _read_beir_texts(path: Path, columns: Sequence[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line, (key, text) in _read_beir_tsv(path, columns):
        if key in texts:
            raise DataError(path, line, f"duplicate id {key!r}")
        texts[key] = text
    return texts


def load_beir(folder: str | Path) -> RetrievalTask:
    """Load a retrieval task from ``corpus.tsv``, ``queries.tsv`` and ``qrels.tsv``.

    Files are tab-separated without quoting: ``corpus.tsv`` is ``doc_id, text``,
    ``queries.tsv`` is ``query_id, text`` and ``qrels.tsv`` is
    ``query_id, doc_id, relevance`` (relevance > 0 means relevant). A header row is
    detected by an id-like first field (``id``, ``_id``, ``doc_id``, ``query-id``, ...).
    An id present in both queries and corpus is the same question, so that document
    is never counted as relevant to itself nor returned for it. Queries without any
    relevant document are dropped, since no metric is defined for them.

    Example:
        >>> task = load_beir("tests/fixtures/beir")  # doctest: +SKIP
        >>> sorted(task.qrels)  # doctest: +SKIP
        ['q1', 'q2']
    """
    folder = Path(folder)
    corpus = _read_beir_texts(folder / "corpus.tsv", ("doc_id", "text"))
    queries = _read_beir_texts(folder / "queries.tsv", ("query_id", "text"))
    qrels_path = folder / "qrels.tsv"
    qrels: dict[str, set[str]] = {}
    for line, (qid, doc_id, relevance) in _read_beir_tsv(qrels_path, ("query_id", "doc_id", "relevance")):
        try:
            grade = float(relevance)
        except ValueError:
            if line == 1:  # a header with unfamiliar column names
                continue
            raise DataError(qrels_path, line, f"relevance must be a number, got {relevance!r}") from None
        if qid not in queries:
            raise DataError(qrels_path, line, f"unknown query id {qid!r}")
        if doc_id not in corpus:
            raise DataError(qrels_path, line, f"unknown doc id {doc_id!r}")
        if grade > 0 and doc_id != qid:
            qrels.setdefault(qid, set()).add(doc_id)
    return RetrievalTask(corpus, {q: queries[q] for q in qrels}, qrels, exclude_self=True)
