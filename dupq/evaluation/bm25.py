"""BM25 (bm25s), the lexical baseline of `dupq eval --baselines`, on pairs and on retrieval tasks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import bm25s
import numpy as np

from dupq.data import Pair
from dupq.evaluation.metrics import pair_metrics, retrieval_metrics
from dupq.evaluation.tasks import RetrievalTask, retrieval_task_from_pairs


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


def evaluate_bm25_on_task(task: RetrievalTask, *, ks: Sequence[int] = (1, 10)) -> dict[str, dict[str, Any]]:
    """BM25 retrieval metrics on a task: ``{"retrieval": ...}``.

    Example:
        >>> task = RetrievalTask({"a": "cook rice", "b": "learn python"}, {"q": "python"}, {"q": {"b"}})
        >>> evaluate_bm25_on_task(task)["retrieval"]["recall@1"]
        1.0
    """
    return {"retrieval": retrieval_metrics(rank_bm25(task, top_k=max(ks)), task.qrels, ks)}
