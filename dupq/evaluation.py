"""Metrics for duplicate detection: pair classification and duplicate retrieval.

Pair metrics score labelled pairs (AP, best F1/accuracy and their thresholds, and
precision/recall/F1/accuracy at a served threshold). Retrieval metrics rank the corpus
for each query question and check where its duplicates land (MRR@10, nDCG@10, R@1,
R@10). Both are hand-rolled in numpy rather than taken from sentence-transformers'
``BinaryClassificationEvaluator`` / ``InformationRetrievalEvaluator``: those need a
model object (not any ``encode`` callable), the IR evaluator cannot exclude a query's
own entry from the corpus (every query here is also a corpus question and would rank
itself first), neither supports a Euclidean energy, and the threshold search is a
Python loop. Thresholds follow the same conventions as sentence-transformers
(midpoints, inclusive), which the tests cross-check.

Example:
    >>> import numpy as np
    >>> m = pair_metrics(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 0]))
    >>> m["ap"], m["best_f1"], round(m["best_f1_threshold"], 6)
    (1.0, 1.0, 0.85)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bm25s
import numpy as np
from numpy.typing import ArrayLike

from dupq.data import DataError, Pair, duplicate_clusters
from dupq.energy import Energy

__all__ = [
    "RetrievalTask",
    "calibrate_threshold",
    "evaluate_bm25",
    "evaluate_bm25_on_task",
    "evaluate_bm25_pairs",
    "evaluate_encoder",
    "evaluate_encoder_on_task",
    "evaluate_retrieval",
    "format_results",
    "load_beir",
    "pair_metrics",
    "rank_bm25",
    "rank_by_scores",
    "rank_dense",
    "retrieval_metrics",
    "retrieval_task_from_pairs",
]

Encode = Callable[[list[str]], ArrayLike]
ScoreFn = Callable[[list[str], list[str]], ArrayLike]
Objective = Literal["f1", "accuracy"]

# --- pair metrics ----------------------------------------------------------------------


@dataclass
class _Sweep:
    """Confusion counts for every cut between distinct scores, best first.

    Scores are oriented so that higher means "more duplicate"; cut ``j`` predicts
    duplicate for every score ``>= values[j]`` and ``thresholds[j]`` is the midpoint
    to the next distinct score (the lowest cut uses the lowest score itself).
    """

    values: np.ndarray
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    n: int


def _check_pairs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} != {y.size}")
    if s.size == 0:
        raise ValueError("no scores to evaluate")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return s, y.astype(np.int64)


def _sweep(s: np.ndarray, y: np.ndarray) -> _Sweep:
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: tied pairs are always cut together.
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    values = s_sorted[ends]
    tp = np.cumsum(y_sorted)[ends]
    fp = (ends + 1) - tp
    thresholds = values.copy()
    mids = (values[:-1] + values[1:]) / 2
    # A midpoint of two adjacent floats can round onto the lower one, which would then
    # be included; fall back to the upper score, which is still a correct cut.
    thresholds[:-1] = np.where(mids > values[1:], mids, values[:-1])
    return _Sweep(values, thresholds, tp, fp, int(y.sum()), int(s.size))


def _best(sweep: _Sweep, objective: Objective) -> tuple[float, float]:
    """Return ``(best value, oriented threshold)``; ties go to the highest threshold."""
    if objective == "f1":
        f1 = 2 * sweep.tp / (sweep.tp + sweep.fp + sweep.positives)
        j = int(np.argmax(f1))
        return float(f1[j]), float(sweep.thresholds[j])
    if objective == "accuracy":
        negatives = sweep.n - sweep.positives
        accuracy = (sweep.tp + negatives - sweep.fp) / sweep.n
        # Predicting no duplicates at all is a valid cut too (threshold above every
        # score); being the highest threshold, it wins ties.
        if accuracy.max() > negatives / sweep.n:
            j = int(np.argmax(accuracy))
            return float(accuracy[j]), float(sweep.thresholds[j])
        return negatives / sweep.n, float(np.nextafter(sweep.values[0], np.inf))
    raise ValueError(f"objective must be 'f1' or 'accuracy', got {objective!r}")


def _average_precision(sweep: _Sweep) -> float:
    if sweep.positives == 0:
        return math.nan
    precision = sweep.tp / (sweep.tp + sweep.fp)
    recall_gain = np.diff(sweep.tp, prepend=0) / sweep.positives
    return float(np.sum(recall_gain * precision))


def calibrate_threshold(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    higher_is_better: bool = True,
    objective: Objective = "f1",
) -> float:
    """Return the threshold that maximises F1 or accuracy on labelled pairs.

    Duplicate means ``score >= threshold`` (``<=`` for distances, i.e.
    ``higher_is_better=False``). The threshold is the midpoint between the two distinct
    scores it separates, so it does not sit on any observed score.

    Example:
        >>> calibrate_threshold([0.9, 0.8, 0.3], [1, 1, 0])
        0.55
    """
    s, y = _check_pairs(scores, labels)
    sign = 1.0 if higher_is_better else -1.0
    return sign * _best(_sweep(sign * s, y), objective)[1]


def pair_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    higher_is_better: bool = True,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Classification metrics for scored, labelled pairs.

    ``ap`` is average precision over all pairs ranked by score (tied scores form one
    step, as in scikit-learn; NaN when there are no positives). ``best_f1`` and
    ``best_accuracy`` come with the thresholds achieving them (see
    :func:`calibrate_threshold`). ``precision``/``recall``/``f1``/``accuracy`` are
    measured at ``threshold`` (the served one) or, when it is None, at
    ``best_f1_threshold``; ``threshold`` in the result is the one used.

    Example:
        >>> m = pair_metrics([0.2, 0.4, 0.9], [0, 1, 1], higher_is_better=False)
        >>> round(m["ap"], 4), m["best_f1"], m["best_f1_threshold"]
        (0.5833, 0.8, 0.9)
    """
    s, y = _check_pairs(scores, labels)
    sign = 1.0 if higher_is_better else -1.0
    sweep = _sweep(sign * s, y)
    best_f1, f1_cut = _best(sweep, "f1")
    best_accuracy, accuracy_cut = _best(sweep, "accuracy")
    used = sign * f1_cut if threshold is None else float(threshold)

    predicted = sign * s >= sign * used
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    positives = sweep.positives
    return {
        "ap": _average_precision(sweep),
        "best_f1": best_f1,
        "best_f1_threshold": sign * f1_cut,
        "best_accuracy": best_accuracy,
        "best_accuracy_threshold": sign * accuracy_cut,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / positives if positives else 0.0,
        "f1": 2 * tp / (tp + fp + positives) if tp + fp + positives else 0.0,
        "accuracy": (tp + (sweep.n - positives - fp)) / sweep.n,
        "threshold": used,
        "n": sweep.n,
        "positives": positives,
    }


# --- retrieval tasks -------------------------------------------------------------------


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


# --- retrieval metrics -----------------------------------------------------------------


def retrieval_metrics(
    ranked: dict[str, list[str]],
    qrels: dict[str, set[str]],
    ks: Sequence[int] = (1, 10),
) -> dict[str, float | int]:
    """MRR, nDCG (binary relevance) and recall of rankings, averaged over queries.

    Returns ``recall@k`` for every ``k`` in ``ks`` and ``mrr@K``/``ndcg@K`` at
    ``K = max(ks)``, plus ``queries`` (the number evaluated: those in ``qrels`` with at
    least one relevant id; a query missing from ``ranked`` scores zero). Recall@k is
    ``|relevant in top k| / |relevant|``. Values are NaN when no query qualifies.

    Example:
        >>> retrieval_metrics({"q": ["a", "b"]}, {"q": {"b"}})
        {'mrr@10': 0.5, 'ndcg@10': 0.6309297535714575, 'recall@1': 0.0, 'recall@10': 1.0, 'queries': 1}
    """
    cutoff = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, cutoff + 2))
    ideal = np.cumsum(discounts)  # ideal[r - 1] = best DCG with r relevant documents
    mrr, ndcg, recall = [], [], {k: [] for k in ks}
    for qid, relevant in qrels.items():
        if not relevant:
            continue
        hits = np.array([doc in relevant for doc in ranked.get(qid, [])[:cutoff]], dtype=bool)
        first = np.flatnonzero(hits)
        mrr.append(1.0 / (first[0] + 1) if first.size else 0.0)
        ndcg.append(float(discounts[: hits.size][hits].sum() / ideal[min(len(relevant), cutoff) - 1]))
        for k in ks:
            recall[k].append(float(hits[:k].sum()) / len(relevant))
    n = len(mrr)

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else math.nan

    return {
        f"mrr@{cutoff}": mean(mrr),
        f"ndcg@{cutoff}": mean(ndcg),
        **{f"recall@{k}": mean(recall[k]) for k in ks},
        "queries": n,
    }


def _top_k(
    scores: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    doc_column: dict[str, int],
    exclude_self: bool,
    top_k: int,
) -> dict[str, list[str]]:
    """Rank one chunk of a (queries x docs) higher-is-better score matrix in place."""
    scores[np.isnan(scores)] = -np.inf
    if exclude_self:
        for row, qid in enumerate(query_ids):
            if (col := doc_column.get(qid)) is not None:
                scores[row, col] = -np.inf
    k = min(top_k + int(exclude_self), scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    # Best score first; equal scores in corpus order so rankings are reproducible.
    order = np.lexsort((top, -top_scores), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    ranked = {}
    for qid, row in zip(query_ids, top, strict=True):
        ids = [doc_ids[c] for c in row if not (exclude_self and doc_ids[c] == qid)]
        ranked[qid] = ids[:top_k]
    return ranked


def rank_by_scores(
    task: RetrievalTask,
    score_fn: ScoreFn,
    *,
    higher_is_better: bool = True,
    top_k: int = 100,
    chunk_size: int = 256,
) -> dict[str, list[str]]:
    """Rank the corpus for every query with ``score_fn(query_texts, doc_texts)``.

    ``score_fn`` returns a ``(len(query_texts), len(doc_texts))`` matrix; it is called
    on chunks of ``chunk_size`` queries against the whole corpus to bound memory.

    Example:
        >>> task = RetrievalTask({"a": "x", "b": "xy"}, {"q": "xy"}, {"q": {"b"}})
        >>> rank_by_scores(task, lambda q, d: np.array([[len(t) for t in d]] * len(q)))
        {'q': ['b', 'a']}
    """
    doc_ids = list(task.corpus)
    doc_texts = list(task.corpus.values())
    doc_column = {doc: i for i, doc in enumerate(doc_ids)}
    query_ids = list(task.queries)
    ranked: dict[str, list[str]] = {}
    for start in range(0, len(query_ids), chunk_size):
        chunk = query_ids[start : start + chunk_size]
        scores = np.array(score_fn([task.queries[q] for q in chunk], doc_texts), dtype=np.float64)
        if scores.shape != (len(chunk), len(doc_ids)):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(chunk), len(doc_ids))}")
        if not higher_is_better:
            scores = -scores
        ranked.update(_top_k(scores, chunk, doc_ids, doc_column, task.exclude_self, top_k))
    return ranked


def evaluate_retrieval(
    task: RetrievalTask,
    score_fn: ScoreFn,
    *,
    higher_is_better: bool = True,
    ks: Sequence[int] = (1, 10),
    chunk_size: int = 256,
) -> dict[str, float | int]:
    """Rank with ``score_fn`` (see :func:`rank_by_scores`) and return :func:`retrieval_metrics`.

    Example:
        >>> task = RetrievalTask({"a": "x", "b": "xy"}, {"q": "xy"}, {"q": {"b"}})
        >>> evaluate_retrieval(task, lambda q, d: np.array([[len(t) for t in d]] * len(q)))["mrr@10"]
        1.0
    """
    ranked = rank_by_scores(task, score_fn, higher_is_better=higher_is_better, top_k=max(ks), chunk_size=chunk_size)
    return retrieval_metrics(ranked, task.qrels, ks)


# --- dense encoders --------------------------------------------------------------------


def _encode(encode: Encode, texts: list[str]) -> np.ndarray:
    if not texts:
        raise ValueError("nothing to encode")
    embeddings = np.asarray(encode(texts), dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise ValueError(f"encode returned shape {embeddings.shape} for {len(texts)} texts")
    return embeddings




def _rank_embeddings(
    task: RetrievalTask,
    docs: np.ndarray,
    queries: np.ndarray,
    energy: Energy,
    top_k: int,
    chunk_size: int,
) -> dict[str, list[str]]:
    doc_ids = list(task.corpus)
    doc_column = {doc: i for i, doc in enumerate(doc_ids)}
    query_ids = list(task.queries)
    docs, queries = energy.prepare(docs), energy.prepare(queries)
    ranked: dict[str, list[str]] = {}
    for start in range(0, len(query_ids), chunk_size):
        scores = energy.rank_scores(queries[start : start + chunk_size], docs)  # higher is better
        chunk = query_ids[start : start + chunk_size]
        ranked.update(_top_k(scores, chunk, doc_ids, doc_column, task.exclude_self, top_k))
    return ranked


def rank_dense(
    task: RetrievalTask,
    encode: Encode,
    *,
    energy: Energy | str = Energy.COSINE,
    top_k: int = 100,
    chunk_size: int = 1024,
) -> dict[str, list[str]]:
    """Rank the corpus for every query by embedding similarity.

    Each distinct text is encoded once and ranked by ``energy`` (an :class:`Energy` or its
    name): cosine by the dot product of L2-normalised embeddings, Euclidean by distance
    between raw embeddings (smallest first). Scores are computed ``chunk_size`` queries at a time.

    Example:
        >>> task = RetrievalTask({"a": "x", "b": "y"}, {"q": "y"}, {"q": {"b"}})
        >>> rank_dense(task, lambda t: np.array([[s == "x", s == "y"] for s in t], float))
        {'q': ['b', 'a']}
    """
    energy = Energy.from_name(energy)
    texts = list(dict.fromkeys([*task.corpus.values(), *task.queries.values()]))
    row = {text: i for i, text in enumerate(texts)}
    embeddings = _encode(encode, texts)
    docs = embeddings[[row[t] for t in task.corpus.values()]]
    queries = embeddings[[row[t] for t in task.queries.values()]]
    return _rank_embeddings(task, docs, queries, energy, top_k, chunk_size)


def pair_scores(encode: Encode, pairs: Iterable[Pair], *, energy: Energy | str = Energy.COSINE) -> np.ndarray:
    """``energy``'s pair energy of each pair's two embeddings (each unique question encoded once).

    Example:
        >>> pair_scores(model_encode, read_pairs("dev.tsv").pairs)[:2]  # doctest: +SKIP
        array([0.91, 0.43])
    """
    energy = Energy.from_name(energy)
    pairs = list(pairs)
    texts = list(dict.fromkeys(q for p in pairs for q in (p.question1, p.question2)))
    row = {text: i for i, text in enumerate(texts)}
    return _pair_energies(_encode(encode, texts), row, pairs, energy)


def _pair_energies(embeddings: np.ndarray, row: Mapping[str, int], pairs: Sequence[Pair], energy: Energy) -> np.ndarray:
    """``energy``'s pair energy of each pair, from the embeddings of its questions (``row``: text -> row)."""
    left = embeddings[[row[p.question1] for p in pairs]]
    return energy.pair_energy(left, embeddings[[row[p.question2] for p in pairs]])


def evaluate_encoder(
    encode: Encode,
    pairs: Iterable[Pair],
    *,
    energy: Energy | str = Energy.COSINE,
    threshold: float | None = None,
    ks: Sequence[int] = (1, 10),
) -> dict[str, dict[str, Any]]:
    """Pair and retrieval metrics of an encoder on labelled pairs.

    Each unique question is encoded once. Pair scores are ``energy``'s pair energy (an
    :class:`Energy` or its name: cosine similarity, or Euclidean distance, lower = more
    duplicate) of the two embeddings, fed to :func:`pair_metrics` with ``threshold``.
    Retrieval uses :func:`retrieval_task_from_pairs` and the same embeddings.

    Example:
        >>> from sentence_transformers import SentenceTransformer  # doctest: +SKIP
        >>> model = SentenceTransformer(path, device="cpu")  # doctest: +SKIP
        >>> encode = lambda t: model.encode(t, batch_size=64, normalize_embeddings=True)  # doctest: +SKIP
        >>> evaluate_encoder(encode, read_pairs("dev.tsv"))["pairs"]["ap"]  # doctest: +SKIP
        0.823
    """
    energy = Energy.from_name(energy)
    pairs = list(pairs)
    task = retrieval_task_from_pairs(pairs)
    texts = list(task.corpus.values())  # every unique question, in corpus-id order
    row = {text: i for i, text in enumerate(texts)}
    embeddings = _encode(encode, texts)

    scores = _pair_energies(embeddings, row, pairs, energy)
    labels = np.array([p.label for p in pairs])
    column = {qid: i for i, qid in enumerate(task.corpus)}
    queries = embeddings[[column[q] for q in task.queries]]
    ranked = _rank_embeddings(task, embeddings, queries, energy, max(ks), chunk_size=1024)
    return {
        "pairs": pair_metrics(scores, labels, higher_is_better=energy.higher_is_better, threshold=threshold),
        "retrieval": retrieval_metrics(ranked, task.qrels, ks),
    }


# --- BM25 baseline ---------------------------------------------------------------------


def _bm25_tokens(texts: list[str]) -> list[list[str]]:
    # Lowercased word tokens without English stopwords (bm25s defaults).
    return bm25s.tokenize(texts, lower=True, stopwords="en", return_ids=False, show_progress=False)


def _bm25_index(texts: list[str]) -> bm25s.BM25:
    retriever = bm25s.BM25()
    retriever.index(_bm25_tokens(texts), show_progress=False)
    return retriever


def rank_bm25(task: RetrievalTask, top_k: int = 100) -> dict[str, list[str]]:
    """Rank the corpus for every query with BM25 (bm25s, lowercase, English stopwords).

    Example:
        >>> task = RetrievalTask({"a": "cook rice", "b": "learn python"}, {"q": "python"}, {"q": {"b"}})
        >>> rank_bm25(task, top_k=1)
        {'q': ['b']}
    """
    doc_ids = list(task.corpus)
    query_ids = list(task.queries)
    retriever = _bm25_index(list(task.corpus.values()))
    k = min(top_k + int(task.exclude_self), len(doc_ids))
    docs, _ = retriever.retrieve(_bm25_tokens(list(task.queries.values())), k=k, show_progress=False)
    ranked = {}
    for qid, row in zip(query_ids, docs, strict=True):
        ids = [doc_ids[c] for c in row if not (task.exclude_self and doc_ids[c] == qid)]
        ranked[qid] = ids[:top_k]
    return ranked


def evaluate_bm25_pairs(pairs: Iterable[Pair], *, threshold: float | None = None) -> dict[str, Any]:
    """BM25 pair metrics, so BM25 sits in the same table as the encoders.

    The index holds every unique question of ``pairs`` (so IDF comes from this pair
    set). A pair's score is symmetric: the mean of BM25(question2 | question1 as
    query) and BM25(question1 | question2 as query). Scores are raw BM25 (higher =
    more duplicate), so thresholds are on that unnormalised scale.

    Example:
        >>> pairs = [Pair("learn python", "python course", 1), Pair("learn python", "cook rice", 0)]
        >>> evaluate_bm25_pairs(pairs)["ap"]
        1.0
    """
    pairs = list(pairs)
    texts = list(dict.fromkeys(t for p in pairs for t in (p.question1, p.question2)))
    row = {text: i for i, text in enumerate(texts)}
    tokens = _bm25_tokens(texts)
    retriever = _bm25_index(texts)

    # Score each text as a query once and read off all of its partners' scores.
    partners: dict[int, list[tuple[int, int]]] = {}
    for n, p in enumerate(pairs):
        a, b = row[p.question1], row[p.question2]
        partners.setdefault(a, []).append((n, b))
        partners.setdefault(b, []).append((n, a))
    scores = np.zeros(len(pairs))
    for query, targets in partners.items():
        if not tokens[query]:
            continue  # only stopwords: BM25 scores every document 0
        doc_scores = retriever.get_scores(tokens[query])
        for n, doc in targets:
            scores[n] += doc_scores[doc] / 2
    labels = np.array([p.label for p in pairs])
    return pair_metrics(scores, labels, threshold=threshold)


def evaluate_bm25(
    pairs: Iterable[Pair], *, threshold: float | None = None, ks: Sequence[int] = (1, 10)
) -> dict[str, dict[str, Any]]:
    """BM25 counterpart of :func:`evaluate_encoder`: ``{"pairs": ..., "retrieval": ...}``.

    Example:
        >>> pairs = [Pair("learn python", "python course", 1), Pair("learn python", "cook rice", 0)]
        >>> evaluate_bm25(pairs)["retrieval"]["recall@1"]
        1.0
    """
    pairs = list(pairs)
    task = retrieval_task_from_pairs(pairs)
    return {
        "pairs": evaluate_bm25_pairs(pairs, threshold=threshold),
        "retrieval": retrieval_metrics(rank_bm25(task, top_k=max(ks)), task.qrels, ks),
    }


# --- reports ---------------------------------------------------------------------------


def evaluate_encoder_on_task(
    encode: Encode, task: RetrievalTask, *, energy: Energy | str = Energy.COSINE, ks: Sequence[int] = (1, 10)
) -> dict[str, dict[str, Any]]:
    """Retrieval metrics of an encoder on a task (e.g. from :func:`load_beir`): ``{"retrieval": ...}``.

    Example:
        >>> task = RetrievalTask({"a": "x", "b": "y"}, {"q": "y"}, {"q": {"b"}})
        >>> enc = lambda t: np.array([[s == "x", s == "y"] for s in t], float)
        >>> evaluate_encoder_on_task(enc, task)["retrieval"]["mrr@10"]
        1.0
    """
    ranked = rank_dense(task, encode, energy=energy, top_k=max(ks))
    return {"retrieval": retrieval_metrics(ranked, task.qrels, ks)}


def evaluate_bm25_on_task(task: RetrievalTask, *, ks: Sequence[int] = (1, 10)) -> dict[str, dict[str, Any]]:
    """BM25 retrieval metrics on a task: ``{"retrieval": ...}``.

    Example:
        >>> task = RetrievalTask({"a": "cook rice", "b": "learn python"}, {"q": "python"}, {"q": {"b"}})
        >>> evaluate_bm25_on_task(task)["retrieval"]["recall@1"]
        1.0
    """
    return {"retrieval": retrieval_metrics(rank_bm25(task, top_k=max(ks)), task.qrels, ks)}


_PAIR_COLUMNS = [
    ("AP", "ap"),
    ("best F1", "best_f1"),
    ("F1 thr", "best_f1_threshold"),
    ("best acc", "best_accuracy"),
    ("acc thr", "best_accuracy_threshold"),
    ("served thr", "threshold"),
    ("P@served", "precision"),
    ("R@served", "recall"),
]
_RETRIEVAL_COLUMNS = [("MRR@10", "mrr@10"), ("nDCG@10", "ndcg@10"), ("R@1", "recall@1"), ("R@10", "recall@10")]


def format_results(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A plain-text table of ``{name: {"pairs"?: ..., "retrieval"?: ...}}``, one row per model.

    Example:
        >>> print(format_results({"m": {"retrieval": {"mrr@10": 1.0, "ndcg@10": 1.0, "recall@1": 1.0,
        ...                                           "recall@10": 1.0}}}))
        model  MRR@10  nDCG@10     R@1    R@10
        m      1.0000   1.0000  1.0000  1.0000
    """
    columns: list[tuple[str, str, str]] = []
    if any("pairs" in r for r in results.values()):
        columns += [("pairs", head, key) for head, key in _PAIR_COLUMNS]
    if any("retrieval" in r for r in results.values()):
        columns += [("retrieval", head, key) for head, key in _RETRIEVAL_COLUMNS]

    def cell(result: dict[str, dict[str, Any]], part: str, key: str) -> str:
        value = result.get(part, {}).get(key)
        return "-" if value is None else f"{value:.4f}"

    table = [["model", *(head for _, head, _ in columns)]]
    table += [[name, *(cell(r, part, key) for part, _, key in columns)] for name, r in results.items()]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in table
    ]
    return "\n".join(line.rstrip() for line in lines)
