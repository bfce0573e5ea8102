"""Hard negatives for positive-only pair data, mined with the current encoder.

Contrastive loss needs negative pairs, but most duplicate data (e.g. the QQP paraphrase sets) lists only
positives. A pair is *positive-only* when neither of its questions appears in a labelled negative pair
(:func:`positive_only_pairs`); ``negatives_per_positive`` hard negatives are mined per such pair. For an
anchor question, a *hard* negative is a question of the same pool that the encoder already
ranks close to it but that is not in its duplicate cluster. Mining uses
``sentence_transformers.util.mine_hard_negatives``: every other member of the anchor's duplicate cluster
(transitive closure of the positives) is passed as one of its positives, so the library never returns a
cluster-mate; a candidate must also score at least 5% below the anchor's hardest positive
(``relative_margin=0.05``, the NV-Retriever "TopK-PercPos" recipe), and the nearest candidates (one per
1,000 in the pool, ``RANGE_MIN`` = 10 at most) are skipped: both keep out unlabelled duplicates, the main risk
of mining on QQP. What still gets through is judged by a teacher: :func:`teacher_filter` keeps only the mined
pairs the version's cross-encoder scores as non-duplicates (:func:`dupq.training.recipe.train` does this whenever
mining is on and the cross-encoder is trained; mining is off by default, see docs/training.md).

Example:
    >>> from dupq.data import Pair
    >>> pairs = [Pair("How do I learn Python?", "Best way to learn Python?", 1), ...]   # doctest: +SKIP
    >>> mined = mine_negatives(pairs, model, count=100, seed=0)                        # doctest: +SKIP
    >>> all(p.label == 0 for p in mined)                                               # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from dupq.data import Pair, duplicate_clusters
from dupq.text import pair_key

__all__ = [
    "MAX_CORPUS",
    "RANGE_MIN",
    "RELATIVE_MARGIN",
    "label_silver",
    "mine_negatives",
    "negatives_needed",
    "neighbour_pairs",
    "positive_only_pairs",
    "teacher_filter",
]

#: A mined negative must score below ``(1 - RELATIVE_MARGIN)`` times the anchor's hardest positive.
RELATIVE_MARGIN = 0.05
#: Candidates ranked above this are never taken: on QQP dev, 31 of 40 sampled questions whose nearest
#: neighbour lies outside their labelled cluster had an unlabelled duplicate there (docs/benchmarks.md), and a
#: false negative teaches the model the opposite of the truth. Unlabelled duplicates crowd the top in
#: proportion to the pool, so one rank is skipped per RANGE_MIN_POOL candidates, up to RANGE_MIN.
RANGE_MIN = 10
RANGE_MIN_POOL = 1000
#: Most candidate questions embedded: the anchors' cluster-mates, then a random sample of the others.
#: Embedding is the cost of mining (a few minutes per 10k questions on a busy 2-core CPU); this bounds it.
MAX_CORPUS = 10_000


def positive_only_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """The positive pairs that have no labelled negative: neither question appears in a negative pair.

    Example:
        >>> positive_only_pairs([Pair("a", "b", 1), Pair("c", "d", 1), Pair("a", "e", 0)])
        [Pair(question1='c', question2='d', label=1)]
    """
    in_negative = {q for p in pairs if p.label == 0 for q in (p.question1, p.question2)}
    return [p for p in pairs if p.label == 1 and in_negative.isdisjoint((p.question1, p.question2))]


def negatives_needed(pairs: Sequence[Pair], negatives_per_positive: float) -> int:
    """How many negatives to mine: ``negatives_per_positive`` per positive pair without a labelled negative.

    Example:
        >>> negatives_needed([Pair("a", "b", 1), Pair("c", "d", 1), Pair("a", "e", 0)], 2.0)
        2
    """
    if negatives_per_positive < 0:
        raise ValueError(f"negatives_per_positive must be >= 0, got {negatives_per_positive}")
    return round(negatives_per_positive * len(positive_only_pairs(pairs)))


def mine_negatives(
    pairs: Sequence[Pair],
    model: Any,
    count: int,
    *,
    seed: int = 0,
    batch_size: int = 64,
    max_corpus: int | None = MAX_CORPUS,
) -> list[Pair]:
    """Mine up to ``count`` hard negative pairs for the positive-only pairs among ``pairs``.

    Anchors are the first questions of :func:`positive_only_pairs` (shuffled with ``seed``); each gets
    ``ceil(count / anchors)`` negatives. Candidates are the anchors' cluster-mates (which the library masks out)
    plus the other questions of ``pairs``, sampled down to ``max_corpus`` in all. A negative is never in the
    anchor's duplicate cluster and never repeats a pair of ``pairs``. Fewer than ``count`` come back when the
    margin leaves too few candidates.

    Args:
        pairs: Labelled pairs; their positives define the duplicate clusters, their questions the candidates.
        model: The SentenceTransformer that ranks candidates (the model about to be fine-tuned).
        count: Negatives wanted.
        seed: Seed for the choice of anchors and candidates.
        batch_size: Encoding batch size (the library shows its own encoding progress bars).
        max_corpus: Cap on the candidate pool (None: every question of ``pairs``).

    Returns:
        Pairs ``(anchor, negative, 0)``.
    """
    targets = positive_only_pairs(pairs)
    if count <= 0 or not targets:
        return []
    clusters = duplicate_clusters(pairs)
    members: dict[int, list[str]] = {}
    for question, cluster in clusters.items():
        members.setdefault(cluster, []).append(question)
    rng = random.Random(seed)
    anchors = list(dict.fromkeys(p.question1 for p in targets))
    rng.shuffle(anchors)
    per_anchor = math.ceil(count / len(anchors))
    anchors = anchors[: math.ceil(count / per_anchor)]

    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    # Every cluster-mate is a positive of the anchor, so the library masks all of them out (and adds them to
    # the candidates itself); the anchors are embedded once, as queries.
    rows = [(a, m) for a in anchors for m in members[clusters[a]] if m != a]
    taken = set(anchors) | {m for _, m in rows}
    others = [q for q in clusters if q not in taken]
    rng.shuffle(others)
    if max_corpus is not None:
        others = others[: max(0, max_corpus - (len(taken) - len(anchors)))]
    dataset = Dataset.from_dict({"anchor": [a for a, _ in rows], "positive": [m for _, m in rows]})
    try:
        import faiss  # noqa: F401

        use_faiss = True  # exact inner-product search without a (queries x corpus) matrix in memory
    except ImportError:
        use_faiss = False
    mined = mine_hard_negatives(
        dataset,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        corpus=others,
        num_negatives=per_anchor,
        relative_margin=RELATIVE_MARGIN,
        range_min=min(RANGE_MIN, (len(others) + len(taken)) // RANGE_MIN_POOL),
        sampling_strategy="top",
        output_format="labeled-pair",
        batch_size=batch_size,
        faiss_batch_size=1024,
        use_faiss=use_faiss,
        verbose=False,
    )
    seen = {pair_key(p.question1, p.question2) for p in pairs}
    out: list[Pair] = []
    for anchor, other, label in zip(mined["anchor"], mined["positive"], mined["label"], strict=True):
        key = pair_key(anchor, other)
        # The cluster check repeats the library's mask on purpose: it is the guarantee callers rely on.
        if label != 0 or clusters.get(other) == clusters[anchor] or key in seen:
            continue
        seen.add(key)
        out.append(Pair(anchor, other, 0))
    return out[:count]


def neighbour_pairs(
    pairs: Sequence[Pair],
    model: Any,
    count: int,
    *,
    per_question: int = 2,
    seed: int = 0,
    batch_size: int = 64,
    max_corpus: int | None = MAX_CORPUS,
) -> list[tuple[str, str]]:
    """Unlabelled candidate pairs among the nearest neighbours of the training questions (Augmented SBERT).

    Augmented SBERT (Thakur et al., 2021) lets a cross-encoder label new "silver" pairs for the bi-encoder; the
    pairs worth labelling are the ones the bi-encoder finds close (its semantic-search sampling), since random
    pairs are trivially non-duplicates. Each sampled question of ``pairs`` (at most ``max_corpus`` of them)
    gets its ``per_question`` nearest other questions of the sample, skipping every pair already in ``pairs``
    and every question of its own known duplicate cluster (those pairs carry no new information).

    Args:
        pairs: Training pairs: their questions are the pool, their positives the known clusters.
        model: The SentenceTransformer that ranks neighbours (the starting model).
        count: Candidate pairs wanted (fewer come back from a small pool).
        per_question: Neighbours taken per question.
        seed: Seed of the question sample and of the final choice.
        batch_size: Encoding batch size.
        max_corpus: Cap on the questions embedded (None: all).

    Returns:
        ``(question, neighbour)`` tuples, no pair twice (in either order).
    """
    if count <= 0:
        return []
    clusters = duplicate_clusters(pairs)
    questions = sorted({q for p in pairs for q in (p.question1, p.question2)})
    rng = random.Random(seed)
    rng.shuffle(questions)
    if max_corpus is not None:
        questions = questions[:max_corpus]
    if len(questions) < 2:
        return []
    from sentence_transformers.util import semantic_search

    vectors = model.encode(
        questions, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
    )
    # Extra hits per question absorb the ones skipped below (itself, cluster-mates, known pairs).
    hits = semantic_search(vectors, vectors, top_k=min(len(questions), per_question + 6))
    seen = {pair_key(p.question1, p.question2) for p in pairs}
    out: list[tuple[str, str]] = []
    for i, row in enumerate(hits):
        anchor, taken = questions[i], 0
        for hit in row:
            other = questions[hit["corpus_id"]]
            key = pair_key(anchor, other)
            same_cluster = anchor in clusters and clusters.get(other) == clusters[anchor]
            if other == anchor or same_cluster or key in seen:
                continue
            seen.add(key)
            out.append((anchor, other))
            taken += 1
            if taken == per_question:
                break
    rng.shuffle(out)
    return out[:count]


def label_silver(
    candidates: Sequence[tuple[str, str]], score: Callable[[list[tuple[str, str]]], Any], threshold: float
) -> list[Pair]:
    """Silver pairs: each candidate labelled 1 where the teacher's ``score`` reaches ``threshold``, else 0.

    Example:
        >>> label_silver([("a", "b"), ("a", "c")], lambda ps: [0.9, 0.1], threshold=0.5)
        [Pair(question1='a', question2='b', label=1), Pair(question1='a', question2='c', label=0)]
    """
    items = list(candidates)
    if not items:
        return []
    scores = [float(s) for s in score(items)]
    return [Pair(a, b, int(s >= threshold)) for (a, b), s in zip(items, scores, strict=True)]


def teacher_filter(mined: Sequence[Pair], is_duplicate: Callable[[list[Pair]], Any]) -> tuple[list[Pair], int]:
    """Keep the mined negatives a teacher does not call duplicates; returns ``(kept, rejected count)``.

    ``is_duplicate`` maps pairs to booleans (the cross-encoder's score against its calibrated threshold).

    Example:
        >>> teacher_filter([Pair("a", "b", 0), Pair("a", "c", 0)], lambda ps: [p.question2 == "b" for p in ps])
        ([Pair(question1='a', question2='c', label=0)], 1)
    """
    pairs = list(mined)
    if not pairs:
        return [], 0
    flags = [bool(f) for f in is_duplicate(pairs)]
    kept = [p for p, dup in zip(pairs, flags, strict=True) if not dup]
    return kept, len(pairs) - len(kept)
