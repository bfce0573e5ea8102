"""Retraining: one owner for a job, from the request to the promotion of the version it built.

Two classes, one for each side of a job:

* :class:`Retrainer`, in the serving process (the home's one writer, or each node on PostgreSQL):
  :meth:`Retrainer.request` validates the options into a :class:`RetrainRequest`, records a queued job and
  starts a worker process; when the worker exits, :meth:`Retrainer.finish` promotes a ``ready`` candidate or
  records how the job ended. On PostgreSQL its :meth:`~Retrainer.tick` also takes over dead nodes' jobs.
* :class:`JobWorker`, in the worker process (``python -m dupq.worker``): :meth:`JobWorker.run` claims the job,
  trains a candidate on the stored pairs through :func:`train_new_version` (the same path ``dupq train``
  takes), puts it through the evaluation gate, registers it and builds its complete index, then marks the
  job ``ready``.

Both work on a :class:`dupq.storage.Backend` and never ask which one it is. Every move goes through
:meth:`dupq.storage.jobs.JobRecords.transition`, which refuses moves the state table does not allow.
Every metric stored under a name is scored the same way: with the SentenceTransformer in fp32
(``backend="torch"``), the reference the dev metrics of :func:`dupq.training.recipe.train` use too.

Example:
    >>> req = RetrainRequest.from_options({"max_steps": 20, "from": "base"})
    >>> req.start, req.config.max_steps, RetrainRequest.from_dict(req.to_dict()) == req
    ('base', 20, True)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dupq.config import Settings
from dupq.data import Pair, dedupe_pairs, read_pairs, split_by_cluster
from dupq.errors import DatabaseUnavailableError, ValidationError
from dupq.evaluation.gate import gate_decision, gate_reports
from dupq.storage import Backend, Store
from dupq.storage.jobs import ACTIVE, IllegalTransition, Job
from dupq.text import pair_key
from dupq.training.versions import CURRENT, NewVersion, resolve_start, train_new_version

log = logging.getLogger(__name__)

#: Fewest stored pairs (after de-duplication) a retrain accepts.
MIN_PAIRS = 20
#: Backend every stored metric is scored with (the fp32 reference; see the module docstring).
METRICS_BACKEND = "torch"


@dataclass(frozen=True)
class RetrainRequest:
    """What a retrain job was asked to do: the training config and the version to start from.

    Args:
        config: The validated :class:`dupq.training.config.TrainConfig`.
        start: A version name (``"base"`` = the packaged, untuned model) or ``"current"``.
    """

    config: Any
    start: str = CURRENT

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> RetrainRequest:
        """Validate request options: the ``TrainConfig`` fields plus ``from`` (raises ``ValidationError``)."""
        from dupq.training import TrainConfig

        opts = dict(options or {})
        start = opts.pop("from", CURRENT)
        if not isinstance(start, str) or not start:
            raise ValidationError("from must be 'current', 'base' or a version name", code="invalid_option")
        try:
            config = TrainConfig.from_dict(opts)
        except (TypeError, ValueError) as e:
            raise ValidationError(f"invalid training option: {e}", code="invalid_option") from None
        return cls(config, start)

    def to_dict(self) -> dict[str, Any]:
        """The job's stored options: the fully resolved config, so the worker runs exactly what was checked."""
        return {"from": self.start, **self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainRequest:
        return cls.from_options(data)


def stored_pairs(store: Store) -> list[Pair]:
    """The stored pairs as training data: conflicting labels resolved by "latest wins" (dupq.data)."""
    return dedupe_pairs(Pair(p.question1, p.question2, p.label) for p in store.pairs()).pairs


def stored_sources(store: Store, pairs: Sequence[Pair]) -> dict[str, list[Pair]]:
    """``pairs`` (stored pairs, e.g. a retrain's training split) by the source of the label training keeps.

    The sources (``review``, ``feedback``, ``api``, an import's ...) are what ``dupq train`` calls its files:
    the recipe's selection holds dev retrieval at the starting model's for each of them (docs/training.md), so
    a retrain on feedback and imported links never buys one source's AP with another's retrieval.

    Example:
        A pair labelled twice keeps the source of the label :func:`stored_pairs` keeps (the later, conflicting
        one), so ``{"review": [Pair("a", "b", 1)]}`` for a pair stored as ``feedback`` 0 and then ``review`` 1.
    """
    source: dict[str, tuple[str, int]] = {}
    for r in store.pairs():  # the same rule as dedupe_pairs: a conflicting later label replaces the earlier
        key = pair_key(r.question1, r.question2)
        if key not in source or source[key][1] != r.label:
            source[key] = (r.source, r.label)
    out: dict[str, list[Pair]] = {}
    for p in pairs:
        out.setdefault(source.get(pair_key(p.question1, p.question2), ("other", 0))[0], []).append(p)
    return out


# -- the lifecycle ------------------------------------------------------------------------------------------


class Retrainer:
    """Owns the retrain jobs of a serving process, from request to promotion.

    Args:
        backend: The process's store, job store, registry and settings (gate, batch sizes, paths).
        promote: Makes a version current (:meth:`dupq.service.DupQ.promote`).
    """

    def __init__(self, backend: Backend, *, promote: Callable[[str], None]) -> None:
        self.settings = backend.settings
        self.store = backend.store
        self.registry = backend.registry
        self.jobs = backend.jobs
        self._promote = promote
        self._closed = False
        self._workers: dict[str, subprocess.Popen] = {}  # job -> this process's live worker

    def request(self, options: Mapping[str, Any] | None = None) -> Job:
        """Validate, record a queued job (one active job at a time: ``ConflictError``) and start its worker."""
        req = RetrainRequest.from_options(options)
        resolve_start(self.registry, req.start)  # an unknown version fails now, not in the worker
        job = self.jobs.create(req.to_dict())
        self.launch(job.id)
        return self.jobs.get(job.id)

    def launch(self, job_id: str) -> subprocess.Popen:
        """Start a worker process for queued job ``job_id`` and watch it (:meth:`finish` when it exits)."""
        proc = spawn_worker(self.settings, job_id, die_with_parent=self.jobs.worker_dies_with_parent)
        self._workers[job_id] = proc
        self.jobs.record_worker(job_id, proc.pid)
        threading.Thread(target=self._watch, args=(job_id, proc), name=f"job-{job_id}", daemon=True).start()
        return proc

    def tick(self) -> None:
        """The job runner of a node on a shared store (called about once a second by :class:`dupq.storage.Nodes`).

        Jobs whose worker's lease ran out go back to the queue; a ``ready`` job whose promoter died is
        promoted here; a queued job is started here when this node has no worker running.
        """
        if self._closed:
            return
        self.jobs.requeue_expired()
        jid = self.jobs.expired_ready()
        if jid is not None:
            self._promote_ready(self.jobs.get(jid))
        if not any(p.poll() is None for p in self._workers.values()):
            jid = self.jobs.next_queued()
            if jid is not None:
                self.launch(jid)

    def cancel(self, job_id: str) -> Job:
        return self.jobs.request_cancel(job_id)

    def _watch(self, job_id: str, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        if not self._closed:  # closed meanwhile: the next open recovers the job (recover())
            try:
                self.finish(job_id, rc, pid=proc.pid)
            except Exception:  # noqa: BLE001 - a watcher thread must not die silently
                log.exception("finishing job %s failed", job_id)
        if self._workers.get(job_id) is proc:
            del self._workers[job_id]

    def finish(self, job_id: str, returncode: int, *, pid: int | None = None) -> Job:
        """After the worker exited: promote a ``ready`` candidate, or record how the job ended.

        Only for a job that worker ``pid`` holds (on a shared store another node's worker may have won the
        claim). The promotion flips the shared pointer; the other nodes, which started loading the version
        when it became ``ready``, follow it.
        """
        job = self.jobs.get(job_id)
        if not self.jobs.is_owner(job_id, pid):
            return job
        if job.state == "ready":
            return self._promote_ready(job)
        if job.state in ACTIVE:
            how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            to = "cancelled" if job.cancel else "failed"
            job = self.jobs.transition(job_id, to, error=f"worker ended with {how}")
            self.remove_partial_versions()  # a killed worker may leave a half-written folder behind
        return job

    def _promote_ready(self, job: Job) -> Job:
        assert job.version
        try:
            self._promote(job.version)  # its index is complete: only questions added since are embedded
        except Exception as e:  # noqa: BLE001 - the job records why; the old version keeps serving
            log.exception("promotion of %s failed", job.version)
            return self.jobs.transition(job.id, "failed", error=f"promotion failed: {e}")
        try:
            return self.jobs.transition(job.id, "promoted")
        except IllegalTransition:  # shared: another node promoted it meanwhile (same version, same pointer)
            return self.jobs.get(job.id)

    def recover(self) -> None:
        """On start-up: finish what a dead web process left. ``ready`` jobs are promoted, the rest failed.

        On a shared store the job store reports none: other nodes' jobs are alive, and those whose lease
        ran out are taken over by :meth:`tick`.
        """
        for job in self.jobs.interrupted():
            if job.state == "ready" and self.registry.exists(job.version or ""):
                self._promote_ready(job)
                continue
            self.jobs.stop_worker(job)
            try:
                self.jobs.transition(job.id, "failed", error="interrupted: the service restarted while the job ran")
            except IllegalTransition:
                pass  # its worker ended it meanwhile
        self.remove_partial_versions()

    def remove_partial_versions(self) -> None:
        """Delete model folders no version record points at: leftovers of a killed worker or training."""
        models = self.settings.models_dir
        if not models.is_dir():
            return
        for d in models.iterdir():
            if d.is_dir() and not self.registry.exists(d.name):
                log.warning("removing unfinished model folder %s", d)
                shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        self._closed = True


class JobWorker:
    """Runs one retrain job in a worker process (``python -m dupq.worker``), up to ``ready`` or a final state.

    Args:
        backend: The worker's own connection to the store, job store and registry.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.settings = backend.settings
        self.store = backend.store
        self.registry = backend.registry
        self.jobs = backend.jobs

    def run(self, job_id: str) -> int:
        """Claim job ``job_id`` and run it. Returns the exit code."""
        job = self.jobs.claim(job_id, pid=os.getpid())
        if job is None:
            return 0  # cancelled (or taken) while queued
        stop = {"flag": False}
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(flag=True))

        def lost(finished: threading.Event) -> None:  # another worker took the job over: stop
            stop["flag"] = True
            if not finished.wait(10):  # fenced out already; do not hold the CPU another worker needs
                os._exit(75)

        with self.jobs.holding(job_id, lost):
            return self._run(job_id, job, stop)

    def _run(self, job_id: str, job: Job, stop: dict[str, bool]) -> int:
        from dupq.index import sync_index
        from dupq.models.cross import CROSS_DIR, CrossScorer, has_cross
        from dupq.models.encoder import SiameseEncoder
        from dupq.training import TrainingCancelled

        new: NewVersion | None = None
        try:
            req = RetrainRequest.from_dict(job.options)
            pairs = stored_pairs(self.store)
            if len(pairs) < MIN_PAIRS or {p.label for p in pairs} != {0, 1}:
                raise ValueError(f"need at least {MIN_PAIRS} stored pairs with both labels; have {len(pairs)}")
            split = split_by_cluster(pairs, dev_fraction=self.settings.gate_fraction, seed=0)
            current = self.registry.current()
            new = train_new_version(
                self.registry,
                split.train,
                req.config,
                start=req.start,
                sources=stored_sources(self.store, split.train),
                # A database outage while training skips progress reports and cancel checks rather than failing
                # hours of training; the lease decides whether this worker may go on (JobStore.holding).
                progress=_throttled(_outage_tolerant(lambda p: self.jobs.update(job_id, progress=p), None)),
                should_stop=lambda: stop["flag"] or _outage_tolerant(lambda: self.jobs.get(job_id).cancel, False)(),
                show_progress_bar=False,
            )
            self.jobs.transition(job_id, "evaluating", version=new.version)
            candidate = SiameseEncoder.load(new.path, cached=False, backend=METRICS_BACKEND)
            serving = SiameseEncoder.load(self.registry.path(current), backend=METRICS_BACKEND)
            sets: dict[str, Sequence[Pair]] = {"stored_pairs_holdout": split.dev}
            if self.settings.gate_eval_file:
                sets["eval_file"] = read_pairs(self.settings.gate_eval_file).pairs
            cross = None
            if has_cross(new.path):
                cross = CrossScorer.load(new.path / CROSS_DIR, backend=METRICS_BACKEND)
            reports = gate_reports(candidate, serving, sets, candidate_cross=cross)
            ok, why = gate_decision(reports, self.settings.gate_tolerance)
            metrics = {
                "gate": reports,
                "decision": why,
                "scored_with": METRICS_BACKEND,
                "train": new.result.metrics,
                "counts": new.result.counts,
            }
            if not ok:
                shutil.rmtree(new.path, ignore_errors=True)
                self.jobs.transition(job_id, "rejected", metrics=metrics, error=why)
                return 0
            self.registry.register(new.version, parent=new.parent)
            self.jobs.transition(job_id, "indexing", metrics=metrics)
            index, _ = self.backend.open_index(new.version, candidate.dim, candidate.energy)
            served = SiameseEncoder.load(new.path, backend=self.settings.backend,  # embedded as it will serve
                                         precision=self.settings.inference_precision)
            should_stop = lambda: stop["flag"] or self.jobs.get(job_id).cancel  # noqa: E731
            # Nodes (PostgreSQL): every node embeds chunks of the bank with it; then only a catch-up is left.
            if not self.backend.fill_shared(new.version, served, index, should_stop=should_stop) and should_stop():
                raise TrainingCancelled("cancelled while indexing")
            sync_index(self.store, served, index, batch_size=self.settings.encode_batch_size, label=new.version)
            index.close()
            if has_cross(new.path):  # export the re-ranker as it will serve: no serving process has to
                CrossScorer.load(new.path / CROSS_DIR, backend=self.settings.backend,
                                 precision=self.settings.inference_precision).score([("warm", "up")])
            self.registry.publish(new.version)  # the exports made here: nodes fetch them, never redo them
            self.jobs.transition(job_id, "ready")  # shared: every node starts loading the version now
            return 0
        except TrainingCancelled:
            self._end(job_id, "cancelled", "cancelled on request", new)
            return 0
        except IllegalTransition as e:  # cancelled from outside between two steps
            log.warning("job %s: %s", job_id, e)
            self._drop(new)
            return 0
        except Exception as e:  # noqa: BLE001 - any failure ends the job as failed, with its message
            log.exception("job %s failed", job_id)
            self._end(job_id, "failed", f"{type(e).__name__}: {e}", new)
            return 1

    def _end(self, job_id: str, state: str, error: str, new: NewVersion | None) -> None:
        self._drop(new)
        try:
            self.jobs.transition(job_id, state, error=error)
        except IllegalTransition:
            pass  # already ended from outside

    def _drop(self, new: NewVersion | None) -> None:
        """Remove a candidate that will not be served: its folder, its record if registered, its index."""
        if new is None or self.registry.current() == new.version:
            return
        if self.registry.exists(new.version):
            self.registry.delete(new.version)
        shutil.rmtree(new.path, ignore_errors=True)
        shutil.rmtree(self.settings.index_dir / new.version, ignore_errors=True)


def spawn_worker(settings: Settings, job_id: str, *, die_with_parent: bool = False) -> subprocess.Popen:
    """Start ``python -m dupq.worker`` for one job, its output appended to ``logs/job-<id>.log``.

    ``die_with_parent``: the worker is killed when this process dies (Linux ``PR_SET_PDEATHSIG``), so a dead
    node's job is not finished by an orphan but taken over, after its lease, by another node. The worker sets
    that itself (``--parent-pid``): a ``preexec_fn`` runs Python between fork and exec, which in this
    many-threaded server can deadlock on a lock another thread held at the fork, and then ``Popen`` never
    returns (a ``POST /api/v1/train`` timed out that way in CI).
    """
    import json

    cmd = [sys.executable, "-m", "dupq.worker", "--job", job_id, "--settings", json.dumps(settings.for_worker())]
    if die_with_parent:
        cmd += ["--parent-pid", str(os.getpid())]
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.logs_dir / f"job-{job_id}.log", "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _outage_tolerant(fn: Callable[..., Any], default: Any) -> Callable[..., Any]:
    """``fn``, answering ``default`` instead of raising while the database is unavailable."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except DatabaseUnavailableError as e:
            log.warning("database unavailable while training (%s): going on", e.message)
            return default

    return call


def _throttled(fn: Callable[[dict[str, Any]], None], every: float = 0.5) -> Callable[[dict[str, Any]], None]:
    """Call ``fn`` at most every ``every`` seconds (and on the last step), to keep job-record writes modest."""
    last = {"t": 0.0}

    def call(p: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last["t"] > every or p.get("step") == p.get("total"):
            last["t"] = now
            fn(p)

    return call


__all__ = [
    "CURRENT",
    "JobWorker",
    "MIN_PAIRS",
    "NewVersion",
    "RetrainRequest",
    "Retrainer",
    "gate_decision",
    "gate_reports",
    "resolve_start",
    "spawn_worker",
    "stored_pairs",
    "stored_sources",
    "train_new_version",
]
