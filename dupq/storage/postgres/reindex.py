"""Shared reindex: a promotion's re-embedding split into chunks that every node embeds a share of.

On PostgreSQL a promotion of a version whose vector table lacks at least one chunk of questions plans a
*run* (:meth:`SharedReindex.plan`): the questions without a vector, as ranges ``(lo, hi]`` of
``questions.seq`` of ``reindex_chunk_size`` questions each, rows of ``reindex_chunks``. Every node's
:class:`ChunkRunner` (a thread beside the node's follower) then loops:

* **claim** the first open chunk with ``SELECT ... FOR UPDATE SKIP LOCKED`` and a lease (``job_lease_s``, as
  training jobs are claimed): a chunk ``todo``, or ``claimed`` by a node whose lease ran out. ``attempt``
  counts the claims and fences the owner: a node that lost its lease can no longer complete the chunk;
* **embed** the chunk's questions that still lack a vector, renewing the lease every quarter lease;
* **complete** it: the vectors and the chunk's ``done`` are written in one transaction, so a node that dies
  mid-chunk leaves nothing behind but its lease; another node re-claims the chunk once it lapses.

The transaction that completes the last chunk also moves the run to ``flipping`` with a lease for that node
(the run row is locked first, so of two nodes finishing the last two chunks exactly one sees none left). That
node builds the HNSW index if the run dropped it, loads the version, catches up the questions added since the
run was planned and moves the pointer in the transaction that marks the run ``done``, fenced by the run's
``attempt`` (:meth:`SharedReindex.point`): the pointer moves exactly once. If it dies meanwhile, any node's
runner takes the flip over after the lease. Searches are answered by the old version until then.

Questions added during the run (their ``seq`` lies past the last chunk's ``hi``) are embedded into the old
version's table by the node that stores them, and into the new one by the flip's catch-up, as before: each
node's switch (:meth:`dupq.service.DupQ._follow`) catches up once more under its write lock.

Example:
    >>> r = SharedReindex(db, owner="n1", lease_s=30, chunk_size=1000)   # doctest: +SKIP
    >>> run = r.plan("v2", "vec_2", rollback=False)                      # doctest: +SKIP
    >>> chunk = r.claim()                                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from dupq.errors import ConflictError
from dupq.index.pgvector import BULK_MIN, copy_vectors
from dupq.storage.postgres.db import Database
from dupq.storage.postgres.registry import point

log = logging.getLogger(__name__)

#: States of a run that is not over.
ACTIVE = ("embedding", "flipping")
#: Claims of one chunk (or of one run's flip) after which the run fails: the same error each time (a version
#: whose files cannot be loaded) must not go round the nodes for ever.
MAX_ATTEMPTS = 5
_PLAN_LOCK = "dupq-reindex-plan"


class ReindexFailed(ConflictError):
    """The shared reindex of a promotion failed or was superseded; the old version is still served."""

    code = "reindex_failed"


@dataclass(frozen=True)
class Chunk:
    """A claimed chunk: questions with ``lo < seq <= hi`` of run ``run``, claim number ``attempt``."""

    run: int
    n: int
    lo: int
    hi: int
    attempt: int
    version: str
    table: str


@dataclass(frozen=True)
class Flip:
    """This node's claim on switching every node to a run's version (after its last chunk)."""

    run: int
    version: str
    attempt: int
    rollback: bool
    rebuild: bool
    promote: bool = True


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands: state, chunks done of all, questions planned, per-node chunk counts."""

    id: int
    version: str
    state: str
    chunks: int
    done: int
    total: int
    error: str | None
    by_node: dict[str, int]


class SharedReindex:
    """The ``reindex_runs`` / ``reindex_chunks`` tables as one node uses them (see the module docstring).

    Args:
        db: The shared database.
        owner: This node's name (the lease owner, ``done_by`` of its chunks).
        lease_s: Seconds a claim lasts without renewal (``Settings.job_lease_s``).
        chunk_size: Questions per chunk (``Settings.reindex_chunk_size``).
    """

    def __init__(self, db: Database, *, owner: str, lease_s: float, chunk_size: int) -> None:
        self.db = db
        self.owner = owner
        self.lease_s = float(lease_s)
        self.chunk_size = int(chunk_size)

    # -- planning ----------------------------------------------------------------------------------------
    def plan(self, version: str, table: str, *, rollback: bool = False, promote: bool = True) -> int | None:
        """Start the run that embeds what ``version``'s ``table`` lacks, or join the active run of ``version``.

        Returns the run's id, or None when fewer than one chunk of questions is missing (the promoting node
        catches them up itself, as without sharing). An active run of another version that is still embedding
        is superseded (it fails; its waiters raise); one that is flipping already raises ``ConflictError``.
        ``promote=False``: the run only fills the table (a retrain job's candidate, promoted by its job), and
        supersedes nothing: another active run raises ``ConflictError`` (the job then embeds alone).
        """
        with self.db.transaction() as c:
            c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_PLAN_LOCK,))
            active = c.execute("SELECT id, version, state FROM reindex_runs WHERE state = ANY(%s) FOR UPDATE",
                               (list(ACTIVE),)).fetchone()
            if active is not None:
                if active[1] == version:
                    return int(active[0])
                if active[2] == "flipping" or not promote:
                    raise ConflictError(f"every node is re-embedding the bank for {active[1]!r} ({active[2]}); "
                                        "try again once it is over", code="reindex_active")
                c.execute("UPDATE reindex_runs SET state='failed', finished_at=now(), error=%s WHERE id=%s",
                          (f"superseded by the promotion of {version!r}", active[0]))
            missing = int(c.execute(f"SELECT COUNT(*) FROM questions q WHERE NOT EXISTS "
                                    f"(SELECT 1 FROM {table} v WHERE v.seq = q.seq)").fetchone()[0])
            if missing < self.chunk_size:
                return None
            rebuild = missing >= BULK_MIN  # as PgVectorIndex.fill: one HNSW build at the end beats many inserts
            run = int(c.execute("INSERT INTO reindex_runs(version, state, rollback, promote, total, rebuild) "
                                "VALUES (%s, 'embedding', %s, %s, %s, %s) RETURNING id",
                                (version, rollback, promote, missing, rebuild)).fetchone()[0])
            # Chunk bounds: every chunk_size-th missing seq (and the last one); chunk n covers (previous hi, hi].
            chunks = c.execute(
                f"WITH m AS (SELECT q.seq, row_number() OVER (ORDER BY q.seq) AS rn FROM questions q "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} v WHERE v.seq = q.seq)), "
                "b AS (SELECT seq AS hi FROM m WHERE rn %% %s = 0 OR rn = %s) "
                "INSERT INTO reindex_chunks(run, n, lo, hi) SELECT %s, row_number() OVER (ORDER BY hi), "
                "COALESCE(lag(hi) OVER (ORDER BY hi), 0), hi FROM b",
                (self.chunk_size, missing, run),
            ).rowcount
            c.execute("UPDATE reindex_runs SET chunks=%s WHERE id=%s", (chunks, run))
            if rebuild:
                c.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
        log.info("reindex run %d: %d questions of %s in %d chunks", run, missing, version, chunks)
        return run

    # -- chunks --------------------------------------------------------------------------------------------
    def claim(self, run: int | None = None) -> Chunk | None:
        """Take the first open chunk of the active run (``todo``, or whose lease ran out); None if none.
        ``run``: of that run only."""
        with self.db.transaction() as c:
            row = c.execute(
                "SELECT c.run, c.n, c.lo, c.hi, c.attempt, r.version, t.tbl FROM reindex_chunks c "
                "JOIN reindex_runs r ON r.id = c.run JOIN vector_tables t ON t.version = r.version "
                "WHERE r.state = 'embedding' AND c.state <> 'done' AND (%s::bigint IS NULL OR c.run = %s) AND "
                "(c.state = 'todo' OR c.lease_until < now()) ORDER BY c.run, c.n LIMIT 1 "
                "FOR UPDATE OF c SKIP LOCKED", (run, run)).fetchone()
            if row is None:
                return None
            attempt = int(row[4]) + 1
            if attempt > MAX_ATTEMPTS:
                c.execute("UPDATE reindex_runs SET state='failed', finished_at=now(), error=%s WHERE id=%s",
                          (f"chunk {row[1]} failed {MAX_ATTEMPTS} times", row[0]))
                return None
            c.execute("UPDATE reindex_chunks SET state='claimed', owner=%s, attempt=%s, "
                      "lease_until = now() + make_interval(secs => %s) WHERE run=%s AND n=%s",
                      (self.owner, attempt, self.lease_s, row[0], row[1]))
        return Chunk(int(row[0]), int(row[1]), int(row[2]), int(row[3]), attempt, row[5], row[6])

    def texts(self, chunk: Chunk) -> list[tuple[int, str]]:
        """``(seq, text)`` of the chunk's questions that still lack a vector (deleted ones are gone)."""
        with self.db.connection() as c:
            return c.execute(
                f"SELECT q.seq, q.text FROM questions q WHERE q.seq > %s AND q.seq <= %s AND NOT EXISTS "
                f"(SELECT 1 FROM {chunk.table} v WHERE v.seq = q.seq) ORDER BY q.seq", (chunk.lo, chunk.hi)
            ).fetchall()

    def renew(self, chunk: Chunk) -> bool:
        """Extend this node's lease on ``chunk``; False when it lost it."""
        with self.db.connection() as c:
            return bool(c.execute("UPDATE reindex_chunks SET lease_until = now() + make_interval(secs => %s) "
                                  "WHERE run=%s AND n=%s AND attempt=%s AND state='claimed'",
                                  (self.lease_s, chunk.run, chunk.n, chunk.attempt)).rowcount)

    def release(self, chunk: Chunk, error: str) -> None:
        """Give ``chunk`` back at once (embedding it failed here): the next claim counts another attempt."""
        with self.db.connection() as c:
            c.execute("UPDATE reindex_chunks SET state='todo', owner=NULL, lease_until=NULL, error=%s "
                      "WHERE run=%s AND n=%s AND attempt=%s AND state='claimed'",
                      (error[:500], chunk.run, chunk.n, chunk.attempt))

    def complete(self, chunk: Chunk, rows: list[tuple[int, np.ndarray]], seconds: float) -> Flip | None:
        """Write the chunk's vectors and mark it done, in one transaction; the last chunk's completer gets the
        run's :class:`Flip`. Nothing is written when this node lost its claim or the run is over (False-y)."""
        with self.db.transaction() as c:
            if rows:
                copy_vectors(c, chunk.table, rows)
            # The run row first: completions of one run are serialised here, so "none left" is seen once.
            run = c.execute("SELECT state, rollback, rebuild, promote FROM reindex_runs WHERE id=%s FOR UPDATE",
                            (chunk.run,)).fetchone()
            ok = run is not None and run[0] == "embedding" and c.execute(
                "UPDATE reindex_chunks SET state='done', done_by=%s, rows=%s, seconds=%s, lease_until=NULL, "
                "done_at=now() WHERE run=%s AND n=%s AND attempt=%s AND state='claimed'",
                (self.owner, len(rows), seconds, chunk.run, chunk.n, chunk.attempt)).rowcount == 1
            if not ok:
                raise _Lost
            left = c.execute("SELECT COUNT(*) FROM reindex_chunks WHERE run=%s AND state <> 'done'",
                             (chunk.run,)).fetchone()[0]
            if left:
                return None
            attempt = c.execute(
                "UPDATE reindex_runs SET state='flipping', owner=%s, attempt=attempt + 1, "
                "lease_until = now() + make_interval(secs => %s) WHERE id=%s RETURNING attempt",
                (self.owner, self.lease_s, chunk.run)).fetchone()[0]
        return Flip(chunk.run, chunk.version, int(attempt), bool(run[1]), bool(run[2]), bool(run[3]))

    # -- the flip ------------------------------------------------------------------------------------------
    def claim_flip(self, run: int | None = None) -> Flip | None:
        """Take over the flip of a run whose flipping node's lease ran out (it died); None if there is none.
        ``run``: of that run only."""
        with self.db.transaction() as c:
            row = c.execute("SELECT id, version, attempt, rollback, rebuild, promote FROM reindex_runs "
                            "WHERE state='flipping' AND lease_until < now() AND (%s::bigint IS NULL OR id = %s) "
                            "FOR UPDATE SKIP LOCKED LIMIT 1", (run, run)).fetchone()
            if row is None:
                return None
            if int(row[2]) >= MAX_ATTEMPTS:
                c.execute("UPDATE reindex_runs SET state='failed', finished_at=now(), "
                          "error=COALESCE(error, '') || ' (the switch failed on every try)' WHERE id=%s", (row[0],))
                return None
            c.execute("UPDATE reindex_runs SET owner=%s, attempt=%s, lease_until = now() + make_interval(secs => %s) "
                      "WHERE id=%s", (self.owner, int(row[2]) + 1, self.lease_s, row[0]))
        return Flip(int(row[0]), row[1], int(row[2]) + 1, bool(row[3]), bool(row[4]), bool(row[5]))

    def renew_flip(self, flip: Flip) -> bool:
        with self.db.connection() as c:
            return bool(c.execute("UPDATE reindex_runs SET lease_until = now() + make_interval(secs => %s) "
                                  "WHERE id=%s AND attempt=%s AND state='flipping'",
                                  (self.lease_s, flip.run, flip.attempt)).rowcount)

    def flip_failed(self, flip: Flip, error: str) -> None:
        """The switch failed here: let another node try at once (its lease ends now)."""
        with self.db.connection() as c:
            c.execute("UPDATE reindex_runs SET lease_until = now(), error=%s WHERE id=%s AND attempt=%s "
                      "AND state='flipping'", (error[:500], flip.run, flip.attempt))

    def point(self, flip: Flip) -> bool:
        """Move the pointer to the run's version and end the run, in one transaction, if this node still holds
        the flip; False when another node took it over (and moves, or moved, the pointer itself). A run that
        only fills (``promote=False``) ends without moving the pointer."""
        with self.db.transaction() as c:
            row = c.execute("SELECT state, attempt FROM reindex_runs WHERE id=%s FOR UPDATE", (flip.run,)).fetchone()
            if row is None or row[0] != "flipping" or int(row[1]) != flip.attempt:
                return False
            if flip.promote:
                point(c, flip.version, rollback=flip.rollback)
            c.execute("UPDATE reindex_runs SET state='done', finished_at=now(), owner=NULL, lease_until=NULL "
                      "WHERE id=%s", (flip.run,))
        return True

    # -- status ----------------------------------------------------------------------------------------------
    def status(self, run: int) -> RunStatus:
        with self.db.connection() as c:
            r = c.execute("SELECT id, version, state, chunks, total, error FROM reindex_runs WHERE id=%s",
                          (run,)).fetchone()
            by_node = dict(c.execute("SELECT done_by, COUNT(*) FROM reindex_chunks WHERE run=%s AND state='done' "
                                     "GROUP BY done_by", (run,)).fetchall())
        if r is None:
            raise ReindexFailed(f"reindex run {run} is gone")
        return RunStatus(int(r[0]), r[1], r[2], int(r[3]), sum(by_node.values()), int(r[4]), r[5],
                         {k: int(v) for k, v in by_node.items()})

    def wait(self, run: int, *, progress: Callable[[RunStatus], None] | None = None, poll_s: float = 0.25,
             work: Callable[[], bool] | None = None) -> None:
        """Block until run ``run`` is ``done`` (the pointer moved); :class:`ReindexFailed` if it failed.

        ``work()``: called between looks (a worker process doing chunks itself, :meth:`ChunkRunner.step`);
        the wait sleeps only when it returned False (nothing to do)."""
        while True:
            st = self.status(run)
            if progress is not None:
                progress(st)
            if st.state == "done":
                return
            if st.state == "failed":
                raise ReindexFailed(f"reindex of {st.version!r} failed: {st.error}")
            if work is None or not work():
                time.sleep(poll_s)

    def fail(self, run: int, error: str) -> None:
        """End an active run as failed (its waiters raise)."""
        with self.db.connection() as c:
            c.execute("UPDATE reindex_runs SET state='failed', finished_at=now(), error=%s WHERE id=%s "
                      "AND state = ANY(%s)", (error[:500], run, list(ACTIVE)))


class _Lost(Exception):
    """This node's claim on a chunk lapsed and another node took it, or the run ended: drop the chunk."""


class ChunkRunner:
    """One node's share of the runs: a thread that claims, embeds and completes chunks, and flips a run whose
    last chunk it completed (or whose flipping node died).

    Args:
        reindex: The node's :class:`SharedReindex`.
        tools: ``tools(version) -> (encoder, index)``: the version's encoder (``encode``, ``energy_name``)
            and vector index (:class:`~dupq.index.pgvector.PgVectorIndex`), loaded once per version.
        on_flip: ``on_flip(version, point)``: load the version, catch up, call ``point()`` (the fenced pointer
            move, :meth:`SharedReindex.point`) and serve the version if it returned True.
        batch_size: Encoder batch size.
        poll_s: Seconds between two looks for work when there is none.
        run: Work on this run only (a retrain worker filling its own candidate's table).
    """

    def __init__(self, reindex: SharedReindex, tools: Callable[[str], tuple[Any, Any]],
                 on_flip: Callable[[str, Callable[[], bool]], None], *, batch_size: int = 64,
                 poll_s: float = 0.5, run: int | None = None) -> None:
        self.run = run
        self.reindex = reindex
        self.tools = tools
        self.on_flip = on_flip
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.chunks_done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dupq-reindex", daemon=True)

    def start(self) -> ChunkRunner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:  # noqa: BLE001 - the database is briefly away, a chunk failed: the lease tells
                if self._stop.is_set():
                    return
                log.exception("reindex chunk failed")
                worked = False
            if not worked:
                self._stop.wait(self.poll_s)

    def step(self) -> bool:
        """Do one piece of work (a flip to take over, else a chunk); False when there was none."""
        flip = self.reindex.claim_flip(self.run)
        if flip is not None:
            self._flip(flip)
            return True
        chunk = self.reindex.claim(self.run)
        if chunk is None:
            return False
        try:
            with _renewing(lambda: self.reindex.renew(chunk), self.reindex.lease_s):
                t0 = time.perf_counter()
                encoder, _ = self.tools(chunk.version)
                todo = self.reindex.texts(chunk)
                rows: list[tuple[int, np.ndarray]] = []
                if todo:
                    from dupq.models.energy import Energy

                    vecs = encoder.encode([t for _, t in todo], batch_size=self.batch_size)
                    vecs = Energy.from_name(encoder.energy_name).prepare(np.asarray(vecs, dtype=np.float32))
                    rows = [(seq, v) for (seq, _), v in zip(todo, vecs, strict=True)]
                flip = self.reindex.complete(chunk, rows, time.perf_counter() - t0)
        except _Lost:
            log.info("reindex chunk %d of run %d: claim lost to another node", chunk.n, chunk.run)
            return True
        except Exception as e:
            self.reindex.release(chunk, f"{type(e).__name__}: {e}")
            raise
        self.chunks_done += 1
        if flip is not None:
            self._flip(flip)
        return True

    def _flip(self, flip: Flip) -> None:
        log.info("reindex run %d: every chunk is in; switching to %s", flip.run, flip.version)
        try:
            with _renewing(lambda: self.reindex.renew_flip(flip), self.reindex.lease_s):
                if flip.rebuild:  # the run dropped the HNSW index to fill the table: build it once, now
                    _, index = self.tools(flip.version)
                    index.ensure_hnsw()
                if flip.promote:
                    self.on_flip(flip.version, lambda: self.reindex.point(flip))
                else:
                    self.reindex.point(flip)  # a job's candidate: filled; its job promotes it
        except Exception as e:
            self.reindex.flip_failed(flip, f"{type(e).__name__}: {e}")
            raise


@contextmanager
def _renewing(renew: Callable[[], bool], lease_s: float) -> Iterator[None]:
    """Call ``renew`` every quarter lease while the block runs (a heartbeat thread)."""
    finished = threading.Event()

    def beat() -> None:
        while not finished.wait(lease_s / 4):
            try:
                if not renew():
                    return  # lost: the fenced completion refuses this node's result
            except Exception:  # noqa: BLE001 - the database is briefly away: retry at the next beat
                log.warning("reindex lease renewal failed", exc_info=True)

    t = threading.Thread(target=beat, name="dupq-reindex-lease", daemon=True)
    t.start()
    try:
        yield
    finally:
        finished.set()


def fill_shared(db: Database, version: str, encoder: Any, index: Any, *, owner: str, lease_s: float,
                chunk_size: int, batch_size: int, should_stop: Callable[[], bool]) -> bool:
    """A retrain worker's indexing step, shared: plan a fill-only run of ``version`` (``promote=False``) and
    embed chunks here while every node's runner embeds others; True once the table is full (its job then
    promotes it as before). False when nothing was shared (less than a chunk to embed, another run under way,
    the run failed or was superseded, or ``should_stop()``): the caller embeds what is left itself."""
    reindex = SharedReindex(db, owner=owner, lease_s=lease_s, chunk_size=chunk_size)
    try:
        run = reindex.plan(version, index.table, promote=False)
    except ConflictError as e:
        log.info("indexing %s alone: %s", version, e)
        return False
    if run is None:
        return False

    def no_flip(v: str, point: Callable[[], bool]) -> None:
        raise RuntimeError("a fill-only run never moves the pointer")

    runner = ChunkRunner(reindex, lambda v: (encoder, index), no_flip, batch_size=batch_size, run=run)

    def work() -> bool:
        if should_stop():
            reindex.fail(run, "the retrain job was cancelled")
            return False
        return runner.step()

    try:
        reindex.wait(run, work=work)
    except ReindexFailed as e:
        log.warning("%s; indexing the rest alone", e)
        return False
    except BaseException:
        reindex.fail(run, "the retrain worker failed")
        raise
    return True
