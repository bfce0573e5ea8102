"""Dense ranking of a corpus by an encoder's energy and the scores of labelled pairs: every dev number's source."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from dupq.data import Pair
from dupq.evaluation.metrics import pair_metrics, retrieval_metrics
from dupq.evaluation.tasks import RetrievalTask, retrieval_task_from_pairs
from dupq.models.energy import Energy

Encode = Callable[[list[str]], ArrayLike]


ScoreFn = Callable[[list[str], list[str]], ArrayLike]


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
    distractors: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Pair and retrieval metrics of an encoder on labelled pairs.

    Each unique question is encoded once. Pair scores are ``energy``'s pair energy (an
    :class:`Energy` or its name: cosine similarity, or Euclidean distance, lower = more
    duplicate) of the two embeddings, fed to :func:`pair_metrics` with ``threshold``.
    Retrieval uses :func:`retrieval_task_from_pairs` and the same embeddings; ``distractors``
    (questions relevant to no query, e.g. a bank's other questions) join its corpus, so that
    retrieval on a few dev pairs is not ranked among a handful of candidates only.

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
    if distractors:
        known = set(task.corpus.values())
        extra = [t for t in dict.fromkeys(distractors) if t not in known]
        task = RetrievalTask({**task.corpus, **{f"d{i}": t for i, t in enumerate(extra)}}, task.queries,
                             task.qrels, exclude_self=task.exclude_self)
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
