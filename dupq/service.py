"""DupQ: the one service object behind the web app, the CLI and the tests.

It owns the store, the model registry, the current encoder and its vector index, and keeps the index
consistent with the store: every write goes to SQLite first (the source of truth), then to the index; an
index found stale on open (a crash between the two writes, a deleted folder) is synced from the store.

Example:
    >>> svc = DupQ.open("./dupq-data")                                   # doctest: +SKIP
    >>> res = svc.search("How do I reverse a list in Python?", k=3)      # doctest: +SKIP
    >>> [(r["text"], r["duplicate"]) for r in res["results"]]            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dupq.access import Access
from dupq.config import DEFAULT_HOME, MAX_K, Settings
from dupq.errors import BusyError, ConflictError, DatabaseUnavailableError, DupQError, NotFoundError, ValidationError
from dupq.filters import QuestionFilter
from dupq.index import VectorIndex, sync_index
from dupq.index.base import Hit
from dupq.models.encoder import SiameseEncoder
from dupq.retrain import Retrainer
from dupq.storage import open_backend
from dupq.storage.jobs import Job
from dupq.storage.records import DuplicateIdError, LinkError, NewQuestion, Question
from dupq.text import clean_id, normalize_question
from dupq.training.versions import NewVersion, train_new_version

log = logging.getLogger(__name__)


def clean_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValidationError("k must be an integer", code="invalid_type")
    if not 1 <= k <= MAX_K:
        raise ValidationError(f"k must be between 1 and {MAX_K}", code="k_out_of_range")
    return k


@dataclass(frozen=True)
class ImportReport:
    """What ``import_file`` did: questions read from the file, added, and skipped (already stored or repeated)."""

    read: int
    added: int
    skipped: int
    invalid: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "added": self.added,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class ExportReport:
    """What ``import_export`` did: the reader's counts (``parsed``: :meth:`dupq.sources.ImportReport.to_dict`),
    the questions added or skipped (``existing``: id already stored; ``same_text``: text stored under another id),
    the duplicate links turned into labelled pairs (``pairs_existing``: the pair already had a label;
    ``pairs_self``: both ends have one text; ``links_unstored``: an end is no longer stored), and into canonical
    links (``closed``: questions closed as duplicates now; ``closed_existing``: already so; ``closed_other``: already
    closed onto another question, e.g. the second original of a question closed against two; ``kept_open``: left
    open, and no pair stored, because a person reopened the question here (:meth:`DupQ.reopen`); ``cycles``: links
    refused because they would close a cycle, the first of them in ``cycle_samples`` as ``[id, original]``)."""

    parsed: dict[str, Any]
    added: int
    existing: int
    same_text: int
    pairs_added: int
    pairs_existing: int
    pairs_self: int
    links_unstored: int
    seconds: float
    embedded: bool = True
    closed: int = 0
    closed_existing: int = 0
    closed_other: int = 0
    kept_open: int = 0
    cycles: int = 0
    cycle_samples: list[list[str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.parsed,
            "added": self.added,
            "existing": self.existing,
            "same_text": self.same_text,
            "pairs_added": self.pairs_added,
            "pairs_existing": self.pairs_existing,
            "pairs_self": self.pairs_self,
            "links_unstored": self.links_unstored,
            "closed": self.closed,
            "closed_existing": self.closed_existing,
            "closed_other": self.closed_other,
            "kept_open": self.kept_open,
            "cycles": self.cycles,
            "cycle_samples": self.cycle_samples,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class Serving:
    """What answers searches: a model version, its encoder, its index and its cross-encoder (None: the
    version has none, e.g. ``base``). Swapped as one object."""

    version: str
    encoder: SiameseEncoder
    index: VectorIndex
    cross: Any = None  # dupq.models.cross.CrossScorer


@dataclass(frozen=True)
class Cluster:
    """One answer of a search: a canonical question and its hits (itself and/or its closed duplicates), best first.

    ``hits`` are ``(Hit, text)``; the cluster's score is its best hit's (``best_at``), whichever question of the
    cluster that is: a search that matches only a closed duplicate answers with the canonical question, scored by
    that duplicate's match. The closed duplicates that matched are attached to the answer as ``duplicates``.
    """

    id: str
    text: str
    hits: list[tuple[Any, str]]
    best_at: int = 0
    url: dict[str, str] = field(default_factory=dict)  # the canonical question's ``url`` (:func:`_url`), if any

    @property
    def best(self) -> Any:
        return self.hits[self.best_at][0]

    def rescored(self, scores: list[float]) -> Cluster:
        """The same cluster with each hit's score replaced (a re-ranking's, higher is better) and best re-chosen."""
        hits = [(Hit(h.id, s), t) for (h, t), s in zip(self.hits, scores, strict=True)]
        best = max(range(len(hits)), key=lambda i: (hits[i][0].score, -i))
        return Cluster(self.id, self.text, hits, best, self.url)

    def result(self, score: float, duplicate: Any) -> dict[str, Any]:
        """The API's result: the canonical question with the cluster's score, plus ``duplicates`` when any matched."""
        out: dict[str, Any] = {"id": self.id, "text": self.text, "score": round(float(score), 6),
                               "duplicate": bool(duplicate), **self.url}
        dups = [{"id": h.id, "text": t, "score": round(float(h.score), 6)} for h, t in self.hits if h.id != self.id]
        if dups:
            out["duplicates"] = dups
        return out


def clean_rerank(rerank: Any, default: bool) -> bool:
    """The request's ``rerank`` (None: the ``rerank`` setting); it must be a boolean."""
    if rerank is None:
        return default
    if not isinstance(rerank, bool):
        raise ValidationError("rerank must be true or false", code="invalid_type")
    return rerank


class DupQ:
    """The duplicate-question service over one dupq home.

    Args:
        settings: Where the home is and the batch sizes.
        read_only: Open without the writer lock (for ``dupq search`` beside a running server): a stale
            index is synced in memory only and writes are refused.
    """

    def __init__(self, settings: Settings, *, read_only: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only
        self._closed = False
        self._write = threading.RLock()  # serialises writers; searches never take it
        self._prepared: dict[str, Serving] = {}  # versions loaded ahead of their promotion (by the nodes)
        self._chunk_tools: dict[str, tuple[SiameseEncoder, VectorIndex]] = {}  # a shared reindex's version
        self._behind = False  # a write reached the store but not the index (the database went away between)
        self.nodes = None
        # The writer of a SQLite home holds its lock; on PostgreSQL any number of nodes share the state.
        self.backend = open_backend(settings, writer=not read_only)
        try:
            self.store = self.backend.store
            self.registry = self.backend.registry
            self.jobs = self.backend.jobs
            self.access = Access(self.backend, settings.admin_token)  # API keys and the audit log
            self.nodes = self.backend.nodes()
            self.retrainer = Retrainer(self.backend, promote=self.promote)
            self._serving = self._load_serving(self.registry.current())
            if not read_only:
                self._seed()
                # A job left behind by a dead web process: promote it if it got to "ready", else fail it
                # (on PostgreSQL: jobs whose lease ran out are taken over by the nodes' job runner).
                self.retrainer.recover()
                self.nodes.start(on_current=self._follow, on_ready=self._prepare, on_tick=self._tick,
                                 status=lambda: (self._serving.version, next(iter(self._prepared), None)),
                                 reindex_tools=self._reindex_tools, on_flip=self._flip_shared)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, home: str | Path = DEFAULT_HOME, *, read_only: bool = False, **settings: Any) -> DupQ:
        """Open the service on ``home`` with :class:`Settings` fields given as keywords (no environment)."""
        return cls(Settings(home=Path(home), **settings), read_only=read_only)

    def close(self) -> None:
        self._closed = True
        if self.nodes is not None:
            self.nodes.close()
            self.nodes = None
        if getattr(self, "retrainer", None) is not None:
            self.retrainer.close()
        serving = getattr(self, "_serving", None)
        if serving is not None:
            serving.index.close()  # an ANN index saves its graph if it changed since its last save
        if self.backend is not None:
            self.backend.close()  # and the home's writer lock
            self.backend = None

    def __enter__(self) -> DupQ:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving state ----------------------------------------------------------------------------
    @property
    def serving(self) -> Serving:
        return self._serving

    @property
    def encoder(self) -> SiameseEncoder:
        return self._serving.encoder

    @property
    def version(self) -> str:
        return self._serving.version

    def _load_serving(self, version: str, *, progress: bool = False) -> Serving:
        encoder = self.load_version(version)
        # Export (or read the cached export of) the fast runtime now, not in the first search; compiling
        # for searches is warm_up's (a server's), so that a one-shot command compiles only what it uses.
        encoder.warm_up()
        cross = self.registry.load_cross(version, backend=self.settings.backend)
        if cross is not None:
            _ = cross.runtime  # export the re-ranker here too (torch backend: nothing to do)
        index, intact = self.backend.open_index(version, encoder.dim, encoder.energy_name, read_only=self.read_only)
        serving = Serving(version, encoder, index, cross)
        if not intact or not self.backend.index_in_step(index):
            self._sync(serving, progress=progress)
        return serving

    def warm_up(self) -> None:
        """Compile every common question length of the serving model, and its re-ranker, now (a server,
        before its first request; opening the service compiles nothing a one-shot command may not use)."""
        self._warm(self._serving)

    @staticmethod
    def _warm(serving: Serving) -> None:
        serving.encoder.warm_up(full=True)
        if serving.cross is not None:
            serving.cross.score([("warm up", "warm up")])

    def _sync(self, serving: Serving, *, progress: bool = False) -> None:
        sync_index(
            self.store,
            serving.encoder,
            serving.index,
            batch_size=self.settings.encode_batch_size,
            progress=progress,
            save=not self.read_only,
            label=serving.version,
        )

    def _seed(self) -> None:
        """Load the seed bank into a store that is empty and was never seeded."""
        if self.settings.seed_bank is None or self.store.get_state("seeded") or self.store.count():
            return
        if self.settings.seed_bank == "default":
            from dupq.bank import load_default_bank

            items = [NewQuestion(r["text"], r["id"], {**r["meta"], "source": "bank"}) for r in load_default_bank()]
            self._add(items, skip_existing=True)
        else:
            self.import_file(self.settings.seed_bank, progress=False)
        self.store.set_state("seeded", "1")

    # -- search -----------------------------------------------------------------------------------
    def search(self, question: Any, k: Any = 10, rerank: Any = None, filter: Any = None) -> dict[str, Any]:  # noqa: A002
        """Top-k stored questions for ``question``, best first, each marked duplicate or not.

        ``filter`` (dupq/filters.py; None: every question): ``{FIELD: VALUE | {"any": [...]} | {"none": [...]}}`` on
        the ``filter_fields`` setting's fields: the best k among the questions that match (a pre-filter, before
        any re-ranking): never one that does not, and k whenever k match. An undeclared field or a malformed
        filter is a ``ValidationError`` (400).

        ``rerank`` (None: the ``rerank`` setting): the twin retrieves ``max(k, rerank_top_n)`` candidates, the
        version's cross-encoder re-scores them (OpenVINO), and the top k by that score come back, with
        ``score`` and ``duplicate`` from the re-ranking score (:meth:`dupq.models.cross.CrossScorer.rerank`: the
        cross-encoder's logit fused with the twin's score when the version has a fusion, else the
        cross-encoder's own; each with its calibrated threshold) and the twin's score as ``twin_score``.
        ``scorer`` says which decided: ``"twin"``, ``"cross-encoder+twin"`` or ``"cross-encoder"``. A version
        without a cross-encoder answers a rerank request with ``ConflictError`` (409, ``no_cross_encoder``).
        """
        t0 = time.perf_counter()
        text = normalize_question(question)
        k = clean_k(k)
        rerank = clean_rerank(rerank, self.settings.rerank)
        qf = QuestionFilter.parse(filter, self.settings.filter_fields)
        serving = self._serving  # one read: a concurrent swap cannot mix two models in one answer
        enc = serving.encoder
        if rerank and serving.cross is None:
            raise ConflictError(
                f"model {serving.version!r} has no cross-encoder to re-rank with; search without rerank, "
                "or promote a version trained with the cross-encoder",
                code="no_cross_encoder",
            )
        scope = self.store.scope(qf) if qf is not None else None
        qv = enc.encode([text])
        clusters = self._clusters(serving, qv, max(k, self.settings.rerank_top_n) if rerank else k, scope, qf)
        if not rerank:
            results = [c.result(c.best.score, enc.is_duplicate(c.best.score)) for c in clusters[:k]]
            scorer, threshold = "twin", enc.threshold
        else:
            # Every hit of the candidate clusters is re-scored (a closed duplicate may match better than its
            # canonical question); a cluster's score is its best hit's.
            cross = serving.cross
            pairs = [(text, t) for c in clusters for _, t in c.hits]
            scores = iter(cross.rerank(pairs, [h.score for c in clusters for h, _ in c.hits]))
            rescored = [c.rescored([float(next(scores)) for _ in c.hits]) for c in clusters]
            order = sorted(range(len(rescored)), key=lambda i: -rescored[i].best.score)[:k]  # stable: twin order
            results = []
            for i in order:
                c = rescored[i]
                r = c.result(c.best.score, cross.is_rerank_duplicate(c.best.score))
                r["twin_score"] = round(clusters[i].hits[c.best_at][0].score, 6)
                results.append(r)
            scorer, threshold = cross.scorer, cross.rerank_threshold
        return {
            "model": serving.version,
            "energy": enc.energy_name,
            "scorer": scorer,
            "threshold": threshold,
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
            "results": results,
        }


    def _clusters(self, serving: Serving, qv: Any, want: int, scope: Any = None,
                  qf: QuestionFilter | None = None) -> list[Cluster]:
        """The best ``want`` duplicate clusters for the query vector ``qv``, best first (fewer: the bank has fewer).

        A cluster is a canonical question and those of its hits that matched (itself, its closed duplicates);
        hits are grouped by the end of their chain of canonical links (:meth:`dupq.storage.Store.canonical_of`)
        in index order, so a cluster ranks by its best hit. The index is asked for ``want`` hits, then for twice
        as many each round while the hits make fewer than ``want`` clusters and the bank holds more.

        A filtered search (``scope``, ``qf``: dupq/filters.py) groups only the questions that match; a cluster
        whose canonical question does not match is answered by its best matching hit instead (a filtered search
        never answers with a question outside its filter), with its other matching hits attached.
        """
        fetch, found = want, {}
        while True:
            hits = serving.index.search(qv, fetch, scope)[0]
            missing = [h.id for h in hits if h.id not in found]
            found.update(self.store.get_many(missing) if missing else {})
            live = [h for h in hits if h.id in found]  # deleted between index search and lookup
            ends = self.store.canonical_of([h.id for h in live])
            if len({ends.get(h.id, h.id) for h in live}) >= want or len(hits) < fetch:
                break
            fetch *= 2
        groups: dict[str, list[tuple[Any, str]]] = {}
        for h in live:
            groups.setdefault(ends.get(h.id, h.id), []).append((h, found[h.id].text))
        unseen = [end for end in groups if end not in found]
        found.update(self.store.get_many(unseen) if unseen else {})
        clusters = []
        for end, members in list(groups.items())[:want]:
            if end not in found or (qf is not None and not qf.matches(found[end].meta or {})):
                end = members[0][0].id  # the best matching hit answers for its cluster
            clusters.append(Cluster(end, found[end].text, members, url=_url(found[end])))
        return clusters

    # -- questions --------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.read_only:
            raise BusyError("opened read-only: another dupq process owns this home")

    def _add(self, items: list[NewQuestion], *, skip_existing: bool, embed: bool = True) -> list[Question]:
        """Store then index one batch; the index catches up from the store if this is interrupted.

        ``embed=False`` stores only: the index stays behind the store until the next open syncs it."""
        self._check_writable()
        with self._write:
            try:
                added = self.store.add(items, skip_existing=skip_existing)
            except DuplicateIdError as e:
                raise ConflictError(str(e), code="duplicate_id") from None
            if added and embed:
                serving = self._serving
                try:
                    vecs = serving.encoder.encode([q.text for q in added], batch_size=self.settings.encode_batch_size)
                    serving.index.add([q.id for q in added], vecs)
                    serving.index.save(self.store.revision())
                except BaseException:
                    self._catch_up_after_failure(serving)
                    raise
            return added

    def _catch_up_after_failure(self, serving: Serving) -> None:
        """A write reached the store but not the index: sync the index now, or, when the database has gone away
        meanwhile, at the node's next tick after it is back (:meth:`_tick`): never leave the index behind."""
        try:
            self._sync(serving)
        except DatabaseUnavailableError:
            self._behind = True
            log.warning("the index is behind the store (the database went away mid-write); catching up once back")

    def _tick(self) -> None:
        """The node's tick (about once a second, on a shared database): catch the index up after a write the
        database cut short, then run jobs (:meth:`dupq.retrain.Retrainer.tick`)."""
        if self._behind and not self._closed:
            with self._write:
                self._sync(self._serving)
                self._behind = False
                log.warning("the index caught up with the store")
        self.retrainer.tick()

    def add_questions(self, questions: Iterable[dict[str, Any] | NewQuestion]) -> list[Question]:
        """Validate and add questions (all or nothing). Dicts take ``text``, optional ``id`` and ``meta``."""
        items = []
        for n, q in enumerate(questions):
            if isinstance(q, NewQuestion):
                q = {"text": q.text, "id": q.id, "meta": q.meta}
            if not isinstance(q, dict):
                raise ValidationError(f"questions[{n}] must be an object", code="invalid_type")
            meta = {} if q.get("meta") is None else q["meta"]
            if not isinstance(meta, dict):
                raise ValidationError(f"questions[{n}].meta must be an object", code="invalid_type")
            items.append(
                NewQuestion(
                    normalize_question(q.get("text"), field=f"questions[{n}].text"),
                    clean_id(q.get("id")),
                    {"source": "api", **meta},
                )
            )
        return self._add(items, skip_existing=False)

    def get(self, qid: str) -> Question:
        q = self.store.get(qid)
        if q is None:
            raise NotFoundError(f"no question with id {qid!r}")
        return q

    def question(self, qid: str) -> dict[str, Any]:
        """One stored question as the API shows it: its record plus ``duplicate_of``, the canonical question it
        is closed onto (the end of its chain; None: it is open)."""
        q = self.get(qid)
        return {**q.to_dict(), "duplicate_of": self.store.canonical_of([q.id]).get(q.id)}

    # -- duplicate clusters: a question closed as a duplicate of its canonical question ---------------------
    def close_as_duplicate(self, qid: Any, canonical: Any, *, actor: str = "api",
                           pair_source: str = "canonical") -> dict[str, Any]:
        """Close question ``qid`` as a duplicate of ``canonical``: searches then answer with the canonical question
        and attach ``qid`` when it matched.

        A chain resolves to its end: closing onto a question that is itself closed links to that one's canonical
        question, and questions already closed onto ``qid`` follow it there. In the same transaction the pair
        (``qid``, canonical) is stored labelled 1 with source ``pair_source`` for the next retrain; :meth:`reopen`
        removes exactly that pair. Closing again onto the same canonical question changes nothing.

        Args:
            qid: The question to close.
            canonical: The question it duplicates.
            actor: Who closed it (``api``, ``admin``, ``review``, ``cli``), kept with the link.
            pair_source: The labelled pair's source.

        Returns:
            ``{"id", "duplicate_of", "pair_id", "closed"}``: ``closed`` is False when it already was so
            (``pair_id``: the pair stored when it was closed, None if none was).

        Raises:
            NotFoundError: Either id is not stored (404).
            ConflictError: ``duplicate_cycle`` (``canonical`` is ``qid`` or one of its duplicates) or
                ``already_duplicate`` (``qid`` is closed onto another question: reopen it first) (409).

        Example:
            >>> svc.close_as_duplicate("py-rev-2", "py-rev-1")                 # doctest: +SKIP
            {'id': 'py-rev-2', 'duplicate_of': 'py-rev-1', 'pair_id': 7, 'closed': True}
        """
        self._check_writable()
        for name, value in (("id", qid), ("canonical", canonical)):
            if not isinstance(value, str) or not value:
                raise ValidationError(f"{name} must be a question id", code="invalid_type")
        try:
            link, made = self.store.close_duplicate(qid, canonical, actor=actor, pair_source=pair_source)
        except LinkError as e:
            raise _link_error(e) from None
        return {"id": link.question_id, "duplicate_of": link.canonical_id, "pair_id": link.pair_id, "closed": made}

    def duplicate_link(self, qid: str) -> dict[str, Any]:
        """The link of a question closed as a duplicate: ``{"id", "duplicate_of", "closed_onto", "pair_id",
        "actor", "created_at"}`` (``closed_onto``: the question it was closed onto; ``duplicate_of``: the end of
        the chain).

        Raises:
            NotFoundError: No such question, or (``not_duplicate``) it is not closed: the link does not exist.
        """
        link = self.store.canonical_link(qid)
        if link is None:
            self.get(qid)  # 404 not_found for an unknown question
            raise NotFoundError(f"question {qid!r} is not closed as a duplicate", code="not_duplicate")
        return {"id": link.question_id, "duplicate_of": link.canonical_id, "closed_onto": link.target_id,
                "pair_id": link.pair_id, "actor": link.actor, "created_at": link.created_at}

    def reopen(self, qid: Any, *, actor: str = "api", keep_open: bool = True) -> dict[str, Any]:
        """Reopen a question closed as a duplicate: its link and the pair closing stored (only that one) are removed.

        Args:
            qid: The question to reopen.
            actor: Who reopened it (``api``, ``admin``, ``cli``), kept with the record below.
            keep_open: Record that a person reopened it, so that a later import whose dump still links it leaves it
                open and stores no pair for that link (a moderator's decision outranks the dump); closing it again
                by hand clears the record. False (a review label's undo) records nothing.

        Returns ``{"id", "duplicate_of": None, "reopened_from", "pair_removed"}`` (the canonical question it was
        closed onto; the id of the pair removed, None if closing stored none).

        Raises:
            NotFoundError: No such question (404).
            ConflictError: ``not_duplicate``: it is not closed (409).
        """
        self._check_writable()
        if not isinstance(qid, str) or not qid:
            raise ValidationError("id must be a question id", code="invalid_type")
        try:
            link = self.store.reopen(qid, actor=actor, keep_open=keep_open)
        except LinkError as e:
            raise _link_error(e) from None
        return {"id": qid, "duplicate_of": None, "reopened_from": link.canonical_id, "pair_removed": link.pair_id}

    def duplicate_count(self) -> int:
        """How many stored questions are closed as duplicates."""
        return self.store.link_count()

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[Question], int]:
        return self.store.list(offset, limit), self.store.count()

    def delete(self, qid: str) -> None:
        self._check_writable()
        with self._write:
            if not self.store.delete(qid):
                raise NotFoundError(f"no question with id {qid!r}")
            serving = self._serving
            try:
                serving.index.remove([qid])
                serving.index.save(self.store.revision())
            except BaseException:
                self._catch_up_after_failure(serving)
                raise

    def import_file(self, path: str | Path, *, progress: bool = True) -> ImportReport:
        """Import a question file (TSV, CSV, JSONL, plain text, or the questions of a pair file).

        Questions already stored (same text or id) and repeats are skipped; questions over the length limit
        or with an invalid id are counted as invalid and skipped (a malformed file raises ``DataError`` naming
        the line). The file is read once (:class:`dupq.data.QuestionFile` validates each row); each batch is
        one transaction, so an interrupted import keeps what it committed.
        """
        from dupq.data import QuestionFile

        self._check_writable()
        t0 = time.perf_counter()
        file = QuestionFile(path)
        read = added = invalid = 0
        bar = _progress(file.size, f"importing {file.path.name}", progress, unit="B")
        for batch in _batched(file, self.settings.import_batch_size):
            items = [NewQuestion(r.text, r.id, {"source": "import", **r.meta}) for r in batch if r is not None]
            invalid += len(batch) - len(items)
            read += len(batch)
            added += len(self._add(items, skip_existing=True))
            bar.update(file.bytes_read - bar.n)
            bar.set_postfix(added=added, skipped=read - added - invalid, refresh=False)
        bar.close()
        return ImportReport(read, added, read - added - invalid, invalid, time.perf_counter() - t0)

    def import_export(
        self,
        path: str | Path,
        *,
        fmt: str | None = None,
        site: str | None = None,
        progress: bool = False,
        embed: bool = True,
    ) -> ExportReport:
        """Import a community's export (:mod:`dupq.sources`): a Stack Exchange site folder or GitHub issues.

        Questions go in with their stable ids (``site:PostId``, ``owner/repo#N``) and the export's ``meta`` (plus
        ``source: "import"``), in batches of ``import_batch_size``, each one transaction, encoded and indexed as
        :meth:`import_file` does. A question whose id is already stored is skipped and left exactly as it is (a
        re-import of the same or a newer dump adds only what is new); one whose text is stored under another id
        is skipped too (the store's rule). Then each duplicate link becomes a labelled pair (label 1, source
        ``stackexchange`` / ``github``, the two questions' stored texts), unless that pair already has a label
        from any source: a re-import adds none, and a person's label is never outvoted by an import.

        Nothing is half-imported when the export turns out unreadable (``DataError``): a GitHub file, whose JSON
        array can break off after questions were read, is read through once before anything is stored; a Stack
        Exchange dump raises only before its first question (a broken row is counted as malformed and skipped,
        never raised); and should an error still come after a batch was stored, the questions this import added
        are deleted again before it is raised. Malformed rows are skipped and counted with their file and line.
        An interruption (Ctrl-C, a crash) keeps the batches committed; importing again finishes the job.

        Args:
            path: The site folder (or its ``Posts.xml``), or a GitHub issues ``.json`` / ``.jsonl``.
            fmt: ``"stackexchange"`` or ``"github"``; default: :func:`dupq.sources.detect`.
            site: The site or repository of the ids; default: the folder's name / each issue's repository.
            progress: Show a progress bar (bytes read).
            embed: False: store only, without encoding (bulk loads, measuring the store); the index is left
                behind the store and is synced the next time the service opens.

        Raises:
            DataError: The path is no readable export (no ``Posts.xml``, not JSON, an unknown format).
        """
        from dupq.data import DataError
        from dupq.sources import read_export

        self._check_writable()
        t0 = time.perf_counter()
        export = read_export(path, fmt=fmt, site=site, progress=progress)
        if export.format == "github":  # its JSON can break off mid-file: read it through before storing anything
            for _ in read_export(path, fmt="github", site=site).questions():
                pass
        added: list[str] = []  # what this import stored, to take back on a late DataError
        same_text: dict[str, str] = {}  # new ids skipped because their text is stored under another id
        existing = 0
        try:
            for batch in _batched(export.questions(), self.settings.import_batch_size):
                stored = self.store.existing_ids([r.id for r in batch])
                new = [NewQuestion(r.text, r.id, {"source": "import", **r.meta}) for r in batch if r.id not in stored]
                existing += len(batch) - len(new)
                done = self._add(new, skip_existing=True, embed=embed) if new else []
                added.extend(q.id for q in done)
                if len(done) < len(new):
                    kept = {q.id for q in done}
                    same_text.update((q.id, q.text) for q in new if q.id not in kept and q.id not in same_text)
        except DataError:
            self._take_back(added)
            raise
        links = export.links()
        labelled = self.store.labelled_keys()
        canonical = self._link_canonical(links, labelled, source=export.format)
        rest = [link for link, status in zip(links, canonical.pop("status"), strict=True)
                if status not in ("made", "kept_open")]  # a reopened question's link stores no pair either
        pairs = self._link_pairs(rest, same_text, labelled, source=export.format)
        pairs["pairs_added"] += canonical.pop("pairs_added")
        pairs["pairs_existing"] += canonical.pop("pairs_existing")
        return ExportReport(
            parsed=export.report.to_dict(),
            added=len(added),
            existing=existing,
            same_text=len(same_text),
            seconds=time.perf_counter() - t0,
            embedded=embed,
            **pairs,
            **canonical,
        )

    def _link_canonical(self, links: list[Any], labelled: set[str], *, source: str) -> dict[str, Any]:
        """Close each linked question of an export as a duplicate of its original (the first link of a question
        wins; a chain resolves to its end), storing the pair of each new link unless it has a label already
        (``labelled``, extended). A link that would close a cycle, that finds its question closed onto another
        one already, or whose question a person reopened, is counted, never raised; ``status``: per link, what
        :meth:`dupq.storage.Store.close_duplicates` did with it."""
        from dupq.sources import MAX_SAMPLES

        self._check_writable()
        before = len(labelled)
        status = self.store.close_duplicates([tuple(link) for link in links], actor="import", pair_source=source,
                                             labelled=labelled) if links else []
        made = status.count("made")
        cycles = [list(link) for link, s in zip(links, status, strict=True) if s == "cycle"]
        return {
            "status": status,
            "pairs_added": len(labelled) - before,
            "pairs_existing": made - (len(labelled) - before),
            "closed": made,
            "closed_existing": status.count("existing"),
            "closed_other": status.count("closed"),
            "kept_open": status.count("kept_open"),
            "cycles": len(cycles),
            "cycle_samples": cycles[:MAX_SAMPLES],
        }

    def _link_pairs(self, links: list[Any], same_text: dict[str, str], labelled: set[str], *,
                    source: str) -> dict[str, int]:
        """Store an export's duplicate links as labelled pairs (label 1) of their stored texts, once each."""
        from dupq.text import pair_key

        ids = sorted({qid for link in links for qid in link})
        text = {qid: q.text for qid, q in self.store.get_many(ids).items()}
        rows: list[tuple[str, str, int]] = []
        counts = {"pairs_existing": 0, "pairs_self": 0, "links_unstored": 0}
        for link in links:
            a = text.get(link.question_id) or same_text.get(link.question_id)
            b = text.get(link.canonical_id) or same_text.get(link.canonical_id)
            if a is None or b is None:  # deleted since it was stored (or a concurrent writer's)
                counts["links_unstored"] += 1
            elif a == b:  # both ends have one text: nothing to learn
                counts["pairs_self"] += 1
            elif pair_key(a, b) in labelled:
                counts["pairs_existing"] += 1
            else:
                labelled.add(pair_key(a, b))
                rows.append((a, b, 1))
        if rows:
            self._check_writable()
            self.store.add_pairs(rows, source=source)
        return {"pairs_added": len(rows), **counts}

    def _take_back(self, ids: list[str]) -> None:
        """Delete the questions an import added (it failed part-way), from the store and the index."""
        if not ids:
            return
        with self._write:
            for qid in ids:
                self.store.delete(qid)
            self._serving.index.remove(ids)
            self._serving.index.save(self.store.revision())
        log.warning("import failed part-way: took back the %d questions it had added", len(ids))

    def reindex(self, *, progress: bool = True) -> int:
        """Re-embed every stored question into the current version's index; returns the number of vectors.

        SQLite: into a new index (the folder is rebuilt from scratch); PostgreSQL: into the table other nodes
        are searching, in place (rows replaced) (:meth:`dupq.storage.Backend.index_to_rebuild`)."""
        self._check_writable()
        with self._write:
            old = self._serving
            index = self.backend.index_to_rebuild(old.version, old.index, old.encoder.dim, old.encoder.energy_name)
            revision = self.store.revision()  # read first: a write meanwhile leaves the index marked stale
            bar = _progress(self.store.count(), f"indexing {old.version}", progress)
            for batch in self.store.iter_texts():
                vectors = old.encoder.encode([t for _, t in batch], batch_size=self.settings.encode_batch_size)
                index.add([i for i, _ in batch], vectors)
                bar.update(len(batch))
            bar.close()
            index.save(revision)
            self._serving = Serving(old.version, old.encoder, index, old.cross)
            return len(index)

    # -- model versions --------------------------------------------------------------------------
    def promote(self, version: str, *, progress: bool = False, rollback: bool = False) -> None:
        """Make ``version`` current: build its index completely, then switch model + index in one step.

        Searches keep being answered by the old version until the switch (they never take the write lock);
        the registry pointer changes only after the new index is complete and saved. While the version
        loads, the home's one writer (SQLite) holds writes back, so nothing is left to catch up; nodes sharing
        a database (PostgreSQL) let writes go on, have the other live nodes load the version too (the switch is
        then instant everywhere) and catch up what was added meanwhile (:class:`dupq.storage.Nodes`).
        """
        self._check_writable()
        with self.nodes.loading(self._write):
            if version == self.version:
                return
            if version not in self._prepared and self._promote_shared(version, progress=progress, rollback=rollback):
                return
            serving = self._prepared.pop(version, None) or self._load_serving(version, progress=progress)
            self._warm(serving)  # the swapped-in model answers its first searches at full speed
            self.nodes.announce(version)
            with self._write:
                if not self.backend.index_in_step(serving.index):
                    self._sync(serving)  # the questions added while it loaded
                self.registry.set_current(version, rollback=rollback)
                self._serving = serving  # one reference assignment: atomic for readers

    def _promote_shared(self, version: str, *, progress: bool, rollback: bool) -> bool:
        """Nodes (PostgreSQL): have every node embed a share of ``version``'s missing vectors, in chunks
        (:mod:`dupq.storage.postgres.reindex`), and wait until the node that completed the last one moved the
        pointer; then serve it here too. False where nothing is shared (SQLite, or less than one chunk to
        embed): the caller embeds it all itself."""
        wait = self.nodes.share_reindex(version, lambda: self._reindex_tools(version)[1], rollback=rollback)
        if wait is None:
            self._chunk_tools.pop(version, None)  # no run of it: nothing for this node's runner to embed
            return False
        bar = _progress(None, f"indexing {version} (chunks, every node)", progress, unit="chunk")

        def shown(done: int, chunks: int) -> None:
            bar.total = chunks
            bar.update(done - bar.n)

        try:
            wait(shown)  # this node's runner embeds chunks too; searches go to the old version meanwhile
        finally:
            bar.close()
        self._follow(version)  # the follower would switch within a second anyway
        return True

    def _reindex_tools(self, version: str) -> tuple[SiameseEncoder, VectorIndex]:
        """The encoder and index a shared reindex of ``version`` embeds this node's chunks with (one version
        kept: a node takes part in one run at a time)."""
        tools = self._chunk_tools.get(version)
        if tools is None:
            encoder = self.load_version(version)
            index, _ = self.backend.open_index(version, encoder.dim, encoder.energy_name)
            tools = (encoder, index)
            self._chunk_tools = {version: tools}
        return tools

    def _flip_shared(self, version: str, point: Any) -> None:
        """Nodes: this node completed the last chunk of ``version``'s shared reindex (or took over the switch
        from a node that died): load it, have the others load it, catch up the questions added since the run
        began, then move the pointer (``point()``: exactly once, fenced by the run) and serve it."""
        if self._closed:
            raise RuntimeError("closing: another node takes the switch over")
        serving = self._prepared.pop(version, None) or self._load_serving(version)
        self._warm(serving)
        self.nodes.announce(version)
        with self._write:
            self._sync(serving)
            if point():
                self._serving = serving
                self._chunk_tools = {}
                log.info("now serving %s (shared reindex complete; the pointer moved here)", version)

    def _prepare(self, version: str) -> None:
        """Nodes: load a version that became ``ready`` (files, model, warm-up, vectors) before its switch."""
        if self._closed or version == self._serving.version or version in self._prepared:
            return
        if not self.registry.exists(version):
            return
        self._prepared = {version: self._load_serving(version)}  # only the latest candidate is kept

    def _follow(self, version: str) -> None:
        """Serve ``version`` because the shared pointer says so (another node promoted it): no pointer write."""
        if self._closed or version == self._serving.version:
            return
        t0 = time.perf_counter()
        serving = self._prepared.pop(version, None) or self._load_serving(version)  # writes go on meanwhile
        with self._write:
            # The follower read the pointer before this node may have moved it (its own promotion, under this
            # lock): a stale read must not switch back to the old version, so the pointer is read again here.
            if self._closed or version == self._serving.version or self.registry.current() != version:
                return
            self._sync(serving)  # one anti-join: the questions added while it loaded
            self._serving = serving
            self._chunk_tools.pop(version, None)
            log.info("now serving %s (promoted elsewhere; switched in %.2fs)", version, time.perf_counter() - t0)

    def rollback(self, *, progress: bool = False) -> str:
        """Switch back to the version served before the current one (rebuilding its index if gone)."""
        target = self.registry.previous()
        if target is None:
            raise NotFoundError(f"model {self.version!r} has no earlier version to roll back to")
        self.promote(target, progress=progress, rollback=True)
        return target

    def models(self) -> dict[str, Any]:
        return {"current": self.version, "versions": self.registry.list()}

    # -- labelled pairs -----------------------------------------------------------------------------
    def add_pairs(
        self, pairs: Iterable[dict[str, Any]], *, source: str = "api", model_version: str | None = None
    ) -> int:
        """Validate and store labelled pairs (all or nothing); every label is kept, latest wins in training."""
        self._check_writable()
        rows = []
        for n, p in enumerate(pairs):
            if not isinstance(p, dict):
                raise ValidationError(f"pairs[{n}] must be an object", code="invalid_type")
            rows.append(_pair_row(p.get("question1"), p.get("question2"), p.get("label", p.get("is_duplicate")),
                                  where=f"pairs[{n}]"))
        return self.store.add_pairs(rows, source=source, model_version=model_version)

    def import_pairs(self, path: str | Path) -> dict[str, int]:
        """Import a labelled pair file (validated by :func:`dupq.data.read_pairs`) as source ``import``."""
        from dupq.data import read_pairs

        self._check_writable()
        ps = read_pairs(path)
        added = self.store.add_pairs([(p.question1, p.question2, p.label) for p in ps.pairs], source="import")
        return {
            "added": added,
            "repeats": ps.dropped_repeats,
            "self_pairs": ps.dropped_self,
            "conflicts": ps.conflicts,
            "invalid": ps.invalid,
        }

    # -- new versions and retraining jobs ------------------------------------------------------------
    def train_version(self, pairs: Any, config: Any, *, start: str = "current", dev_pairs: Any = None,
                      show_progress_bar: bool = True, base: Any = None, positive_only: Any = None,
                      progress: Any = None, sources: Any = None) -> NewVersion:
        """Train and register a new version from ``start`` (``dupq train``); it is not served until promoted.

        ``base``: a SentenceTransformer folder to start from instead (``--base``); ``positive_only``: duplicate
        pairs for the ranking loss (:func:`dupq.training.data.split_by_labels`); ``progress``: phase events.
        """
        self._check_writable()
        new = train_new_version(self.registry, pairs, config, start=start, base=base, dev_pairs=dev_pairs,
                                positive_only=positive_only, progress=progress, sources=sources,
                                show_progress_bar=show_progress_bar)
        self.registry.register(new.version, parent=new.parent)
        return new

    def train_data_parallel(self, pairs: Any, config: Any, launch: Any, *, start: str = "current",
                            dev_pairs: Any = None, base: Any = None, positive_only: Any = None,
                            sources: Any = None, show_progress_bar: bool = True,
                            logs_dir: Any = None) -> NewVersion | None:
        """``dupq train --nproc N [--nnodes M]``: train through torchrun (:mod:`dupq.training.distributed`).

        Node 0 holds this home's writer lock while its ranks train (they never open the home) and registers the
        version once all of them are done; another node only reads its start version and gets None back.
        """
        from dupq.training.distributed import train_version

        new = train_version(self.registry, pairs, config, launch, start=start, base=base, dev_pairs=dev_pairs,
                            positive_only=positive_only, sources=sources, show_progress_bar=show_progress_bar,
                            progress=show_progress_bar, logs_dir=logs_dir)
        if new is not None:
            self._check_writable()
            self.registry.register(new.version, parent=new.parent)
        return new

    def version_path(self, version: str) -> Path:
        """The folder of ``version`` (its dupq.json, weights, cross-encoder)."""
        return self.registry.path(version)

    def quantize_version(self, version: str, dev_pairs: Any, *, calibration: Any = None,
                         tolerance: float | None = None, subset_size: int | None = None,
                         smooth_quant_alpha: float | None = None, dev_name: str | None = None) -> dict[str, Any]:
        """``dupq models quantize``: make ``version``'s int8 export, check it against fp32 on ``dev_pairs`` and
        record the decision (:func:`dupq.training.quantize.quantize_version`); returns the record.

        ``calibration``: questions to calibrate on (default: a seeded sample of the stored questions). The
        served version keeps its runtime until the next start or promotion; its index was embedded in the old
        precision (``dupq reindex`` re-embeds it in the new one).
        """
        from dupq.config import INT8_TOLERANCE
        from dupq.models.quantize import CALIBRATION_SIZE
        from dupq.training.quantize import calibration_sample, quantize_version

        self._check_writable()
        if not self.registry.exists(version):
            raise NotFoundError(f"unknown model version {version!r}")
        n = subset_size or CALIBRATION_SIZE
        if calibration is None:
            calibration = calibration_sample([t for batch in self.store.iter_texts() for _, t in batch], n)
        if tolerance is not None and tolerance < 0:
            raise ValidationError(f"tolerance must be >= 0, got {tolerance}")
        try:
            record = quantize_version(self.registry.path(version), dev_pairs, calibration,
                                      tolerance=INT8_TOLERANCE if tolerance is None else tolerance, subset_size=n,
                                      smooth_quant_alpha=smooth_quant_alpha,
                                      shared_export_cache=self.settings.export_cache, dev_name=dev_name)
        except ValueError as e:
            raise ValidationError(str(e)) from None
        self.registry.update_config(version)
        return record

    def serving_precision(self, version: str) -> tuple[str, str]:
        """What ``version`` serves in here (this home's backend and ``inference_precision``, its int8 check, the
        CPU) and why: ``("int8" | "bf16" | "fp32", reason)``."""
        return self.load_version(version).serving_precision

    def start_training(self, options: dict[str, Any] | None = None) -> Job:
        """Queue a retrain on the stored pairs in a worker process; returns the job (one at a time).

        Options: those of :class:`dupq.training.config.TrainConfig` (loss, margin, epochs, max_steps, ...) plus
        ``from``: ``"current"`` (default: continue from the served version), ``"base"`` (the packaged model)
        or a version name.
        """
        self._check_writable()
        return self.retrainer.request(options)

    def cancel_job(self, job_id: str) -> Job:
        return self.retrainer.cancel(job_id)

    def job(self, job_id: str) -> Job:
        return self.jobs.get(job_id)

    def list_jobs(self, limit: int = 20) -> list[Job]:
        return self.jobs.list(limit)

    def latest_job(self) -> Job | None:
        """The active job, else the most recent one."""
        return self.jobs.active() or next(iter(self.jobs.list(1)), None)

    # -- counts --------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.store.count()

    def question_counts(self) -> dict[str, int]:
        return self.store.question_counts()

    def pair_counts(self) -> dict[str, int]:
        return self.store.pair_counts()

    def versions(self) -> list[dict[str, Any]]:
        """Every version's record, with ``precision`` / ``precision_reason``: what it serves in here."""
        from dupq.models.quantize import cpu_bf16, resolve_precision

        out = self.registry.list()
        for v in out:
            local = self.settings.models_dir / v["version"]
            try:
                if (local / "dupq.json").is_file():  # never fetched for a listing (PostgreSQL: from the database)
                    v["precision"], v["precision_reason"] = self._encoder_at(local).serving_precision
                elif self.settings.backend != "openvino":
                    v["precision"], v["precision_reason"] = "fp32", "torch backend: fp32"
                else:  # not on this node yet: its int8 export comes with its files
                    v["precision"], v["precision_reason"] = resolve_precision(
                        self.settings.inference_precision, v.get("int8"),
                        int8_ready=(v.get("int8") or {}).get("calibration") is not None, cpu_bf16=cpu_bf16())
            except (FileNotFoundError, OSError, ValueError):
                v["precision"], v["precision_reason"] = None, "version files unreadable"
        return out

    def _encoder_at(self, folder: Path) -> SiameseEncoder:
        return SiameseEncoder.load(folder, backend=self.settings.backend, precision=self.settings.inference_precision,
                                   shared_export_cache=self.settings.export_cache)

    def version_config(self, version: str) -> dict[str, Any]:
        """The dupq.json of ``version`` (training config, metrics, histories); ``FileNotFoundError`` if gone."""
        return SiameseEncoder.read_config(self.registry.path(version))

    def training_pairs(self) -> list[Any]:
        """The stored labelled pairs as a retrain would use them (latest label wins)."""
        from dupq.retrain import stored_pairs

        return stored_pairs(self.store)

    def load_version(self, version: str | None = None) -> SiameseEncoder:
        """The encoder of ``version`` (default: the current one), with this home's backend."""
        encoder = self.registry.load(version or self.version)
        encoder.set_backend(self.settings.backend)
        return encoder

    def health(self) -> dict[str, Any]:
        """Liveness: the process is up and serves a version. The counts come from the store and the index, and
        are None while the database is unavailable (the process is alive all the same: :meth:`ready` says
        whether it can answer searches)."""
        questions = indexed = None
        try:
            with self.backend.waiting_at_most(0.5):  # a liveness probe answers within about a second
                questions, indexed = self.store.count(), len(self._serving.index)
        except DatabaseUnavailableError:
            questions = indexed = None
        return {"status": "ok", "model": self.version, "questions": questions, "indexed": indexed}

    def stats(self, *, jobs: int = 1000) -> dict[str, Any]:
        """What an operator watches (``GET /metrics``): the serving version, questions, labelled pairs by source,
        the index's vectors, the latest ``jobs`` jobs and the database pool (psycopg_pool's stats; empty on
        SQLite). ``database`` is False, and the counts None, while the database is unavailable."""
        out: dict[str, Any] = {"model": self.version, "database": True, "questions": None, "pairs": None,
                               "indexed": None, "jobs": None, "pool": self.backend.pool_stats()}
        try:
            with self.backend.waiting_at_most(1.0):  # a scrape answers in seconds, whatever the database does
                out["questions"] = self.store.count()
                out["pairs"] = self.store.pair_counts()
                out["indexed"] = len(self._serving.index)
                out["jobs"] = self.jobs.list(jobs)
                return out
        except DatabaseUnavailableError:
            pass
        out.update(database=False, questions=None, pairs=None, indexed=None, jobs=None)
        return out

    def ready(self) -> dict[str, Any]:
        """Readiness: this process can answer searches now (its database answers a round trip within a second);
        :class:`DatabaseUnavailableError` (503) otherwise. Cheap: one pooled round trip, no count."""
        if not self.backend.available(timeout=1.0):
            raise DatabaseUnavailableError("not ready: the database is unavailable; try again shortly")
        return {"status": "ready", "model": self.version}

    # -- the audit log ---------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, obj: Any) -> None:
        """Record a moderation or admin action in the append-only audit log (:mod:`dupq.storage.audit`).

        Call it after the action succeeded, from the entry point that knows who acted: ``actor`` is the acting
        key's name (``admin-token`` for ``DUPQ_ADMIN_TOKEN``, ``cli:<user>`` for the command line).

        Example:
            >>> svc.audit("alice", "question.close", "q123 -> q45")   # doctest: +SKIP
        """
        self.access.audit(actor, action, obj)

    # -- single labelled pairs with an id: in-place feedback with undo, the review queue (web/review.py) --------
    def add_pair(
        self, question1: Any, question2: Any, label: Any, *, source: str, model_version: str | None = None
    ) -> dict[str, Any]:
        """Validate and store one labelled pair; returns it with its ``id`` (what :meth:`delete_pair` takes)."""
        self._check_writable()
        q1, q2, label = _pair_row(question1, question2, label)
        pair_id = self.store.add_pair(q1, q2, label, source=source, model_version=model_version)
        return self.store.get_pair(pair_id)

    def feedback(
        self, question: Any, result_id: str, label: Any, *, source: str = "feedback", model_version: str | None = None
    ) -> dict[str, Any]:
        """A person marked search result ``result_id`` as the same question (1) or a different one (0).

        Returns the stored pair with its id, so that the page can undo exactly this click. ``model_version``: the
        version that showed the result, if it is a known one (a swap may have happened since the search); else
        the serving version."""
        stored = self.get(result_id)
        version = self.known_version(model_version)
        return self.add_pair(question, stored.text, label, source=source, model_version=version)

    def known_version(self, version: str | None) -> str:
        """``version`` if it is a known model version, else the serving one (what a page says showed a result)."""
        return version if version and self.registry.exists(version) else self.version

    def delete_pair(self, pair_id: int, *, source: str | None = None) -> None:
        """Delete one stored pair by id (restricted to ``source`` if given); other labels are never touched."""
        self._check_writable()
        if not self.store.delete_pair(pair_id, source=source):
            raise NotFoundError(f"no labelled pair {pair_id}" + (f" from {source}" if source else ""))


def _url(q: Any) -> dict[str, str]:
    """A search result's ``url``: the stored question's own address on its community's site (``meta.url``, as
    an import of a site's export records it), which the widget links to; nothing when it has none."""
    url = q.meta.get("url") if isinstance(q.meta, dict) else None
    return {"url": url} if isinstance(url, str) and url else {}


def _link_error(e: LinkError) -> DupQError:
    """The API's error for a canonical link the store refused."""
    if e.kind == "missing":
        return NotFoundError(str(e))
    codes = {"cycle": "duplicate_cycle", "closed": "already_duplicate", "open": "not_duplicate"}
    return ConflictError(str(e), code=codes.get(e.kind, "conflict"))


def _pair_row(question1: Any, question2: Any, label: Any, *, where: str = "") -> tuple[str, str, int]:
    """A labelled pair validated and normalised as the store keeps it (``where`` prefixes error messages)."""
    prefix = f"{where}." if where else ""
    q1 = normalize_question(question1, field=f"{prefix}question1")
    q2 = normalize_question(question2, field=f"{prefix}question2")
    if isinstance(label, bool) or label not in (0, 1):
        raise ValidationError(f"{prefix}label must be 0 or 1", code="invalid_label")
    if q1 == q2:
        raise ValidationError(f"{where or 'the pair'} pairs a question with itself", code="self_pair")
    return q1, q2, int(label)


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for it in items:
        batch.append(it)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(total: int | None, desc: str, enabled: bool, unit: str = "q") -> Any:
    from tqdm.auto import tqdm

    scaled = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, **scaled)
