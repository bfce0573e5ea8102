"""The moderators' review queue: the pairs the serving model is least sure about, to be labelled by a person.

Feedback labels what a searcher happened to see; the queue instead *picks* the pairs whose score lies closest
to the served threshold (active learning by uncertainty sampling), where one label moves the decision boundary
most. Candidates come from two places:

- **recent searches** (kept in memory by :class:`RecentSearches`, the last ``maxlen``): the question typed and
  each result the serving version returned for it;
- **nearest neighbours among stored questions**: each of (up to ``sample``) stored questions against its
  ``per_question`` nearest stored neighbours, by the serving version's index.

Pairs already labelled (any source, either order) and self-pairs are left out; the rest are sorted by
``|score - threshold|``, nearest first. Labels given in the queue are stored as pairs with source ``review``,
which the next retrain uses like every other stored pair. A "same" label of two stored questions may also close
one as a duplicate of the other (:func:`label_pair`); undoing that label reopens it (:func:`undo_label`).

Example:
    >>> recent = RecentSearches()                                          # doctest: +SKIP
    >>> uncertain_pairs(svc, recent, limit=20)[0]                          # doctest: +SKIP
    {'question1': ..., 'question2': ..., 'score': 0.751, 'margin': 0.0004, 'origin': 'neighbours', ...}
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from typing import Any

from dupq.text import pair_key

#: Searches remembered for the queue (per process, in memory: a restart forgets them).
RECENT_SEARCHES = 500
#: Stored questions whose neighbours are candidates (the most recently added ones).
NEIGHBOUR_SAMPLE = 1000
#: Neighbours taken per stored question.
PER_QUESTION = 5


class RecentSearches:
    """A bounded, thread-safe memory of recent searches: ``(question, model version, [(id, text, score)])``.

    While a person types, each pause sends a longer prefix of the same question; a search whose question
    extends (or repeats) the one recorded just before replaces it, so the queue sees the finished question.
    """

    def __init__(self, maxlen: int = RECENT_SEARCHES) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def record(self, question: str, version: str, results: list[dict[str, Any]]) -> None:
        item = {
            "question": question,
            "version": version,
            "results": [(r["id"], r["text"], float(r["score"])) for r in results],
            "at": time.time(),
        }
        with self._lock:
            if self._items:
                last = self._items[-1]["question"]
                if question.startswith(last) or last.startswith(question):
                    self._items.pop()
            self._items.append(item)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _NeighbourCache:
    """Neighbour candidates of one service for one (version, store revision): recomputed after a write or a swap."""

    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self.pairs: list[dict[str, Any]] = []
        self.lock = threading.Lock()


_caches: weakref.WeakKeyDictionary[Any, _NeighbourCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def neighbour_pairs(
    svc: Any, *, sample: int = NEIGHBOUR_SAMPLE, per_question: int = PER_QUESTION
) -> list[dict[str, Any]]:
    """Each of the ``sample`` most recent stored questions paired with its nearest stored neighbours."""
    serving = svc.serving
    key = (serving.version, svc.store.revision())
    with _caches_lock:
        _cache = _caches.setdefault(svc, _NeighbourCache())
    with _cache.lock:
        if _cache.key == key:
            return _cache.pairs
        total = svc.store.count()
        questions = svc.store.list(max(0, total - sample), sample)
        out: list[dict[str, Any]] = []
        if len(questions) > 1:
            vecs = serving.encoder.encode([q.text for q in questions], batch_size=svc.settings.encode_batch_size)
            hits = serving.index.search(vecs, min(per_question + 1, total))
            ids = {h.id for row in hits for h in row}
            texts = svc.store.get_many(list(ids))
            for q, row in zip(questions, hits, strict=True):
                for h in row:
                    if h.id == q.id or h.id not in texts:
                        continue
                    out.append(
                        {
                            "question1": q.text,
                            "question2": texts[h.id].text,
                            "id1": q.id,
                            "id2": h.id,
                            "score": float(h.score),
                            "origin": "neighbours",
                        }
                    )
        _cache.key, _cache.pairs = key, out
        return out


def search_pairs(svc: Any, recent: RecentSearches) -> list[dict[str, Any]]:
    """The (question, result) pairs of recent searches answered by the serving version (others' scores differ)."""
    version = svc.version
    out = []
    for s in recent.items():
        if s["version"] != version:
            continue
        for rid, text, score in s["results"]:
            out.append(
                {
                    "question1": s["question"],
                    "question2": text,
                    "id1": None,
                    "id2": rid,
                    "score": score,
                    "origin": "search",
                }
            )
    return out


def uncertain_pairs(
    svc: Any,
    recent: RecentSearches | None = None,
    *,
    limit: int = 20,
    sample: int = NEIGHBOUR_SAMPLE,
    per_question: int = PER_QUESTION,
) -> list[dict[str, Any]]:
    """Unlabelled candidate pairs, the ones scored nearest the served threshold first.

    Each item: ``question1``, ``question2``, ``id1`` (None for a searched question), ``id2``, ``score``,
    ``margin`` (``|score - threshold|``), ``duplicate`` (what the model says now) and ``origin``
    (``search`` or ``neighbours``). Empty when the serving version has no threshold.
    """
    enc = svc.encoder
    threshold = enc.threshold
    if threshold is None:
        return []
    labelled = svc.store.labelled_keys()
    seen: set[str] = set()
    candidates = (search_pairs(svc, recent) if recent is not None else []) + neighbour_pairs(
        svc, sample=sample, per_question=per_question
    )
    best: list[dict[str, Any]] = []
    for c in candidates:
        if c["question1"] == c["question2"]:
            continue
        k = pair_key(c["question1"], c["question2"])
        if k in labelled or k in seen:
            continue
        seen.add(k)
        best.append({**c, "margin": abs(c["score"] - threshold), "duplicate": bool(enc.is_duplicate(c["score"]))})
    best.sort(key=lambda c: c["margin"])
    return best[:limit]


def label_pair(svc: Any, question1: Any, question2: Any, label: Any, *, close: str | None = None,
               id1: str | None = None, id2: str | None = None) -> dict[str, Any]:
    """Store a moderator's label (source ``review``); with ``label`` 1 and ``close``, also close one question as a
    duplicate of the other: ``"1"`` closes ``id1`` onto ``id2``, ``"2"`` closes ``id2`` onto ``id1``.

    Closing stores the label itself (the pair of the closed question and its canonical one, source ``review``), so
    the one label is both: :func:`undo_label` then reopens the question. Returns ``{"pair": ..., "closed": ...}``
    (``closed``: what :meth:`dupq.service.DupQ.close_as_duplicate` returned, or None).

    Raises:
        ValidationError: ``close`` is not ``"1"``/``"2"``, or an id is missing (a searched question is not stored:
            it cannot be closed). With label 0, ``close`` is ignored.
        NotFoundError, ConflictError: as :meth:`dupq.service.DupQ.close_as_duplicate`.
    """
    from dupq.errors import ValidationError

    if close not in (None, "", "1", "2"):
        raise ValidationError("close must be 1 (the first question) or 2 (the second)", code="invalid_option")
    if not close or label != 1:  # "different" never closes anything
        return {"pair": svc.add_pair(question1, question2, label, source="review", model_version=svc.version),
                "closed": None}
    if not id1 or not id2:
        raise ValidationError("both questions must be stored ones to close one as a duplicate", code="invalid_option")
    qid, canonical = (id1, id2) if close == "1" else (id2, id1)
    closed = svc.close_as_duplicate(qid, canonical, actor="review", pair_source="review")
    if closed["pair_id"] is None or not closed["closed"]:  # already closed so: the label is stored on its own
        pair = svc.add_pair(question1, question2, label, source="review", model_version=svc.version)
    else:
        pair = svc.store.get_pair(closed["pair_id"])
    return {"pair": pair, "closed": closed}


def undo_label(svc: Any, pair_id: int) -> dict[str, Any]:
    """Undo one review label: the question its "same and close" closed is reopened (which removes the label),
    otherwise the label alone is removed. Returns ``{"undone": pair_id, "reopened": id or None}``."""
    qid = svc.store.pair_link(pair_id)
    pair = svc.store.get_pair(pair_id)
    if qid is not None and pair is not None and pair["source"] == "review":
        svc.reopen(qid, actor="review", keep_open=False)  # an undo puts back the state before the close
        return {"undone": pair_id, "reopened": qid}
    svc.delete_pair(pair_id, source="review")
    return {"undone": pair_id, "reopened": None}
