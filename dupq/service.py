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

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dupq.config import MAX_ID_CHARS, MAX_K, MAX_QUESTION_CHARS, Settings
from dupq.errors import BusyError, ConflictError, NotFoundError, ValidationError
from dupq.index import VectorIndex, open_index
from dupq.jobs import ACTIVE, Job, JobStore
from dupq.model import SiameseEncoder
from dupq.registry import ModelRegistry
from dupq.store import DuplicateIdError, NewQuestion, Question, QuestionStore

log = logging.getLogger(__name__)


def clean_question(text: Any, *, field: str = "question") -> str:
    """Validate and normalise one question text (strip, non-empty, within the length limit)."""
    if not isinstance(text, str):
        raise ValidationError(f"{field} must be a string", code="invalid_type")
    text = " ".join(text.split())  # tabs/newlines would break the line-based file formats
    if not text:
        raise ValidationError(f"{field} must not be empty", code="empty_question")
    if len(text) > MAX_QUESTION_CHARS:
        raise ValidationError(
            f"{field} is {len(text)} characters; the limit is {MAX_QUESTION_CHARS}", code="question_too_long"
        )
    return text


def clean_id(qid: Any) -> str | None:
    """Validate an explicit question id (None: one is generated)."""
    if qid is None:
        return None
    if not isinstance(qid, str):
        raise ValidationError("id must be a string", code="invalid_type")
    if not qid or len(qid) > MAX_ID_CHARS or any(c.isspace() or not c.isprintable() for c in qid):
        raise ValidationError(f"id must be 1-{MAX_ID_CHARS} printable characters without whitespace", code="invalid_id")
    return qid


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
class Serving:
    """What answers searches: a model version, its encoder and its index. Swapped as one object."""

    version: str
    encoder: SiameseEncoder
    index: VectorIndex


class HomeLock:
    """An exclusive advisory lock on ``$DUPQ_HOME`` so that only one process writes its store and indexes."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / ".lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise BusyError(
                f"{home} is in use by another dupq process (pid {holder}); stop it first, or use its HTTP API"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


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
        self._lock = None if read_only else HomeLock(settings.home)
        self._write = threading.RLock()  # serialises writers; searches never take it
        try:
            self.store = QuestionStore(settings.db_path)
            self.registry = ModelRegistry(self.store, settings.models_dir)
            self.jobs = JobStore(self.store)
            if not read_only:
                # Jobs of a dead web process are over: their records must not say "running" forever.
                self.jobs.fail_interrupted()
                self._remove_partial_versions()
            self._serving = self._load_serving(self.registry.current())
            if not read_only:
                self._seed()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, home: str | Path | None = None, **kwargs: Any) -> DupQ:
        """Open the service on ``home`` (default: ``$DUPQ_HOME`` or ./dupq-data)."""
        read_only = kwargs.pop("read_only", False)
        settings = Settings.from_env(home=Path(home) if home else None, **kwargs)
        return cls(settings, read_only=read_only)

    def close(self) -> None:
        self._closed = True
        serving = getattr(self, "_serving", None)
        if serving is not None and hasattr(serving.index, "close"):
            serving.index.close()  # an ANN index saves its graph if it changed since its last save
        if getattr(self, "store", None) is not None:
            self.store.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

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

    def index_path(self, version: str) -> Path:
        return self.settings.index_dir / version

    def _load_serving(self, version: str, *, progress: bool = False) -> Serving:
        encoder = self.registry.load(version)
        encoder.set_backend(self.settings.backend)  # OpenVINO unless DUPQ_BACKEND=torch (dupq/runtime.py)
        # Export / compile the fast runtime now, not in the first search after a start or a hot swap.
        encoder.encode(["warm up"])
        index, intact = open_index(
            self.index_path(version),
            encoder.dim,
            encoder.energy_name,
            ann_min_size=self.settings.ann_min_size,
            read_only=self.read_only,
        )
        serving = Serving(version, encoder, index)
        if not intact or index.log.revision != self.store.revision():
            self._sync(serving, progress=progress)
        return serving

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
    def search(self, question: Any, k: Any = 10) -> dict[str, Any]:
        """Top-k stored questions for ``question``, best first, each marked duplicate or not."""
        t0 = time.perf_counter()
        text = clean_question(question)
        k = clean_k(k)
        serving = self._serving  # one read: a concurrent swap cannot mix two models in one answer
        enc = serving.encoder
        qv = enc.encode([text])
        hits = serving.index.search(qv, k)[0]
        found = self.store.get_many([h.id for h in hits])
        results = [
            {
                "id": h.id,
                "text": found[h.id].text,
                "score": round(h.score, 6),
                "duplicate": bool(enc.is_duplicate(h.score)),
            }
            for h in hits
            if h.id in found  # deleted between index search and lookup
        ]
        return {
            "model": serving.version,
            "energy": enc.energy_name,
            "threshold": enc.threshold,
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
            "results": results,
        }

    # -- questions --------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.read_only:
            raise BusyError("opened read-only: another dupq process owns this home")

    def _add(self, items: list[NewQuestion], *, skip_existing: bool) -> list[Question]:
        """Store then index one batch; the index catches up from the store if this is interrupted."""
        self._check_writable()
        with self._write:
            try:
                added = self.store.add(items, skip_existing=skip_existing)
            except DuplicateIdError as e:
                raise ConflictError(str(e), code="duplicate_id") from None
            if added:
                serving = self._serving
                try:
                    vecs = serving.encoder.encode([q.text for q in added], batch_size=self.settings.encode_batch_size)
                    serving.index.add([q.id for q in added], vecs)
                    serving.index.save(self.store.revision())
                except BaseException:
                    self._sync(serving)  # never leave the index behind the store
                    raise
            return added

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
                    clean_question(q.get("text"), field=f"questions[{n}].text"),
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

    def list(self, offset: int = 0, limit: int = 50) -> tuple[list[Question], int]:
        return self.store.list(offset, limit), self.store.count()

    def delete(self, qid: str) -> None:
        self._check_writable()
        with self._write:
            if not self.store.delete(qid):
                raise NotFoundError(f"no question with id {qid!r}")
            self._serving.index.remove([qid])
            self._serving.index.save(self.store.revision())

    def import_file(self, path: str | Path, *, progress: bool = True) -> ImportReport:
        """Import a question file (TSV, CSV, JSONL, plain text, or the questions of a pair file).

        Questions already stored (same text or id) and repeats are skipped; questions over the length limit
        or with an invalid id are counted as invalid and skipped (a malformed file raises ``DataError`` naming
        the line). Each batch is one transaction, so an interrupted import keeps what it committed.
        """
        from dupq.data import count_lines, is_pair_file, iter_questions

        self._check_writable()
        t0 = time.perf_counter()
        path = Path(path)
        read = added = invalid = 0
        total = count_lines(path) * (2 if is_pair_file(path) else 1)  # a pair line holds two questions
        bar = _progress(total, f"importing {path.name}", progress, unit="q")
        for batch in _batched(iter_questions(path), self.settings.import_batch_size):
            items = []
            for r in batch:
                try:
                    items.append(NewQuestion(clean_question(r.text), clean_id(r.id), {"source": "import", **r.meta}))
                except ValidationError:
                    invalid += 1
            read += len(batch)
            added += len(self._add(items, skip_existing=True))
            bar.update(len(batch))
            bar.set_postfix(added=added, skipped=read - added - invalid, refresh=False)
        bar.close()
        return ImportReport(read, added, read - added - invalid, invalid, time.perf_counter() - t0)

    def reindex(self, *, progress: bool = True) -> int:
        """Rebuild the current version's index from scratch; returns the number of vectors."""
        self._check_writable()
        with self._write:
            shutil.rmtree(self.index_path(self.version), ignore_errors=True)
            self._serving = self._load_serving(self.version, progress=progress)
            return len(self._serving.index.log)

    # -- model versions --------------------------------------------------------------------------
    def promote(self, version: str, *, progress: bool = False, rollback: bool = False) -> None:
        """Make ``version`` current: build its index completely, then switch model + index in one step.

        Searches keep being answered by the old version until the switch (they never take the write lock);
        the registry pointer changes only after the new index is complete and saved.
        """
        self._check_writable()
        with self._write:
            if version == self.version:
                return
            serving = self._load_serving(version, progress=progress)  # embeds every stored question
            self.registry.set_current(version, rollback=rollback)
            self._serving = serving  # one reference assignment: atomic for readers

    def rollback(self, *, progress: bool = False) -> str:
        """Switch back to the version served before the current one (rebuilding its index if gone)."""
        target = self.registry.previous()
        if target is None:
            raise NotFoundError(f"model {self.version!r} has no earlier version to roll back to")
        self.promote(target, progress=progress, rollback=True)
        return target

    def _remove_partial_versions(self) -> None:
        """Delete model folders no version record points at: leftovers of a killed worker or training."""
        if not self.settings.models_dir.is_dir():
            return
        for d in self.settings.models_dir.iterdir():
            if d.is_dir() and not self.registry.exists(d.name):
                log.warning("removing unfinished model folder %s", d)
                shutil.rmtree(d, ignore_errors=True)

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
            q1 = clean_question(p.get("question1"), field=f"pairs[{n}].question1")
            q2 = clean_question(p.get("question2"), field=f"pairs[{n}].question2")
            label = p.get("label", p.get("is_duplicate"))
            if isinstance(label, bool) or label not in (0, 1):
                raise ValidationError(f"pairs[{n}].label must be 0 or 1", code="invalid_label")
            if q1 == q2:
                raise ValidationError(f"pairs[{n}] pairs a question with itself", code="self_pair")
            rows.append((q1, q2, int(label)))
        return self.store.add_pairs(rows, source=source, model_version=model_version)

    def import_pairs(self, path: str | Path) -> dict[str, int]:
        """Import a labelled pair file (validated by :func:`dupq.data.read_pairs`) as source ``import``."""
        from dupq.data import read_pairs

        self._check_writable()
        ps = read_pairs(path)
        added = self.store.add_pairs([(p.question1, p.question2, p.label) for p in ps.pairs], source="import")
        return {"added": added, "repeats": ps.dropped_repeats, "self_pairs": ps.dropped_self, "conflicts": ps.conflicts}

    def feedback(self, question: Any, result_id: str, label: int) -> int:
        """A person marked a search result as the same question (1) or a different one (0)."""
        stored = self.get(result_id)
        return self.add_pairs(
            [{"question1": question, "question2": stored.text, "label": label}],
            source="feedback",
            model_version=self.version,
        )

    # -- retraining jobs ----------------------------------------------------------------------------
    def start_training(self, options: dict[str, Any] | None = None) -> Job:
        """Queue a retrain on the stored pairs and start its worker process; returns the job (one at a time).

        Options: those of :class:`dupq.training.TrainConfig` (loss, margin, epochs, max_steps, ...) plus
        ``base``: ``"current"`` (continue from the serving model) or ``"packaged"`` (start from the base model).
        """
        from dupq.training import TrainConfig

        self._check_writable()
        opts = dict(options or {})
        base = opts.get("base", "current")
        if base not in ("current", "packaged"):
            raise ValidationError("base must be 'current' or 'packaged'", code="invalid_option")
        try:
            TrainConfig.from_dict({k: v for k, v in opts.items() if k != "base"})
        except (TypeError, ValueError) as e:
            raise ValidationError(f"invalid training option: {e}", code="invalid_option") from None
        job = self.jobs.create(opts)
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"job-{job.id}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dupq.worker", "--job", job.id, "--settings", self._worker_settings()],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # The worker shares the CPU with the web process: OpenMP threads that spin-wait for a busy core
                # made training 3x slower under contention (docs/benchmarks.md); passive waiting avoids that.
                env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "HF_HUB_OFFLINE": "1"},
            )
        self.jobs.update(job.id, pid=proc.pid)
        threading.Thread(target=self._watch_job, args=(job.id, proc), name=f"job-{job.id}", daemon=True).start()
        return self.jobs.get(job.id)

    def _worker_settings(self) -> str:
        """This service's settings for the worker (gate, batch sizes, home), without the admin secret."""
        d = self.settings.to_dict()
        d.pop("admin_token", None)
        return json.dumps(d)

    def _watch_job(self, job_id: str, proc: subprocess.Popen) -> None:
        """Wait for the worker; promote what it built, or record how it ended."""
        rc = proc.wait()
        if self._closed:
            return  # the service closed meanwhile: the next open marks an unfinished job failed
        job = self.jobs.get(job_id)
        if job.state not in ACTIVE:
            return  # the worker recorded rejected / cancelled / failed itself
        if rc == 0 and job.state == "indexing" and job.version:
            try:
                self.promote(job.version)  # its index is already complete: only new questions are embedded
                self.jobs.update(job_id, state="promoted")
            except Exception as e:  # noqa: BLE001 - the job records why; the old version keeps serving
                log.exception("promotion of %s failed", job.version)
                self.jobs.update(job_id, state="failed", error=f"promotion failed: {e}")
            return
        how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        self.jobs.update(job_id, state="cancelled" if job.cancel else "failed", error=f"worker ended with {how}")
        self._remove_partial_versions()  # a killed worker may leave a half-written folder behind

    def cancel_job(self, job_id: str) -> Job:
        return self.jobs.request_cancel(job_id)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.version,
            "questions": self.store.count(),
            "indexed": len(self._serving.index.log),
        }

    # -- single labelled pairs with an id: in-place feedback with undo, the review queue (web/review.py) --------
    def add_pair(
        self, question1: Any, question2: Any, label: Any, *, source: str, model_version: str | None = None
    ) -> dict[str, Any]:
        """Validate and store one labelled pair; returns it with its ``id`` (what :meth:`delete_pair` takes)."""
        self._check_writable()
        q1 = clean_question(question1, field="question1")
        q2 = clean_question(question2, field="question2")
        if isinstance(label, bool) or label not in (0, 1):
            raise ValidationError("label must be 0 or 1", code="invalid_label")
        if q1 == q2:
            raise ValidationError("a question cannot be paired with itself", code="self_pair")
        pair_id = self.store.add_pair(q1, q2, int(label), source=source, model_version=model_version)
        return self.store.get_pair(pair_id)

    def feedback_pair(
        self, question: Any, result_id: str, label: Any, *, source: str = "feedback", model_version: str | None = None
    ) -> dict[str, Any]:
        """Like :meth:`feedback` (the result marked same / different), but returns the stored pair with its id so
        that the page can undo exactly this click. ``model_version``: the version that showed the result, if it is
        a known one (a swap may have happened since the search); else the serving version."""
        stored = self.get(result_id)
        if not (model_version and self.registry.exists(model_version)):
            model_version = self.version
        return self.add_pair(question, stored.text, label, source=source, model_version=model_version)

    def delete_pair(self, pair_id: int, *, source: str | None = None) -> None:
        """Delete one stored pair by id (restricted to ``source`` if given); other labels are never touched."""
        self._check_writable()
        if not self.store.delete_pair(pair_id, source=source):
            raise NotFoundError(f"no labelled pair {pair_id}" + (f" from {source}" if source else ""))


def sync_index(
    store: QuestionStore,
    encoder: SiameseEncoder,
    index: VectorIndex,
    *,
    batch_size: int = 64,
    progress: bool = False,
    save: bool = True,
    label: str = "",
) -> None:
    """Make ``index`` hold exactly the stored questions, embedding only the missing ones.

    Used on open (a missing or stale index), by ``reindex`` and by the training worker, which builds a new
    version's index in its own process before the web process switches to it.
    """
    revision = store.revision()
    stored = store.ids()
    have = index.log.ids()
    stale = list(have - stored)
    if stale:
        index.remove(stale)
    missing = stored - have
    if missing:
        log.info("indexing %d questions for model %s", len(missing), label)
        bar = _progress(len(missing), f"indexing {label}".strip(), progress)
        for batch in store.iter_texts():
            todo = [(i, t) for i, t in batch if i in missing]
            if todo:
                index.add([i for i, _ in todo], encoder.encode([t for _, t in todo], batch_size=batch_size))
                bar.update(len(todo))
        bar.close()
    if save:
        index.save(revision)


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

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)
