"""Data-parallel training: ``dupq train --nproc N`` trains one version in N processes per node (torchrun).

The launching ``dupq train`` process of node 0 owns the home throughout: it holds the writer lock, validates the
pair files, picks the version name, starts torchrun (``torch.distributed.run``, in process) and, once every rank
has exited cleanly, registers the version (and promotes it with ``--promote``). The ranks never open the home:
each runs :func:`dupq.training.recipe.train` on the same pairs, options and start weights (checked: a fingerprint of
them is compared across ranks before any work), in a gloo process group on CPUs or NCCL on GPUs. The trainers
shard the batches (each optimiser step takes ``batch_size`` pairs on every rank; gradients are averaged), and
inside :func:`~dupq.training.recipe.train` rank 0 alone prepares the data that is computed once (dev, mined and silver
negatives, broadcast to the other ranks), runs the final dev evaluation and calibration, and writes the version
folder, aside and renamed as in one process. A rank that fails fails the command: torchrun stops the others,
the version folder (if rank 0 got that far) is removed and nothing is registered.

Example:
    $ dupq train pairs.tsv --dev dev.tsv --nproc 2            # 2 processes on this host
    $ dupq train pairs.tsv --nproc 4 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1   # node 0 of 2
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from dupq.errors import DupQError

__all__ = ["DEFAULT_MASTER_PORT", "DataParallelError", "Launch", "check_launch", "train_version"]

#: The rendezvous port of node 0 when ``--master-port`` is not given (torchrun's default).
DEFAULT_MASTER_PORT = 29500
#: How long a collective waits for the other ranks: rank 0 prepares the data (mining included) while they wait.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


class DataParallelError(DupQError):
    """A rank of a data-parallel run failed (or was interrupted); nothing was registered."""

    code = "training_failed"


@dataclass(frozen=True)
class Launch:
    """Where the processes of one data-parallel run are: ``nproc`` per node on ``nnodes`` nodes.

    Example:
        >>> Launch(nproc=2).world_size, Launch().distributed, Launch(nproc=1, nnodes=2).distributed
        (2, False, True)
    """

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def local_capacity() -> tuple[int, str]:
    """How many training processes this node can run sensibly: one per GPU, else one per usable CPU core."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "GPU(s)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, "CPU core(s)"


def check_launch(launch: Launch) -> None:
    """Raise ``ValueError`` with a one-line reason when ``launch`` cannot run here.

    Example:
        >>> check_launch(Launch(nproc=0))
        Traceback (most recent call last):
        ...
        ValueError: --nproc must be at least 1, got 0
        >>> check_launch(Launch(nnodes=2, node_rank=1))
        Traceback (most recent call last):
        ...
        ValueError: --nnodes 2 needs --master-addr (the address of node 0)
    """
    if launch.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {launch.nproc}")
    if launch.nnodes < 1:
        raise ValueError(f"--nnodes must be at least 1, got {launch.nnodes}")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise ValueError(f"--node-rank must be between 0 and {launch.nnodes - 1} (--nnodes {launch.nnodes}), "
                         f"got {launch.node_rank}")
    if launch.nnodes > 1 and not launch.master_addr:
        raise ValueError(f"--nnodes {launch.nnodes} needs --master-addr (the address of node 0)")
    if launch.nnodes == 1 and (launch.master_addr or launch.master_port is not None):
        raise ValueError("--master-addr and --master-port are for several nodes (--nnodes > 1)")
    if launch.master_port is not None and not 1 <= launch.master_port <= 65535:
        raise ValueError(f"--master-port must be between 1 and 65535, got {launch.master_port}")
    if launch.nproc > 1:
        capacity, what = local_capacity()
        if launch.nproc > capacity:
            raise ValueError(f"--nproc {launch.nproc} is more than this node has: {capacity} {what} "
                             f"(one process each)")


@dataclass
class RankJob:
    """What every rank trains, written by the launcher for ``python -m dupq.training.distributed SPEC``."""

    pairs: list[Any]
    config: Any  # dupq.training.config.TrainConfig
    start: str  # the folder training starts from (a version folder or a SentenceTransformer folder)
    output_dir: str  # the version folder rank 0 writes
    parent: str | None
    dev_pairs: list[Any] | None
    positive_only: list[Any]
    sources: dict[str, list[Any]] | None  # the pairs by source (file), for the selection's per-source checks
    progress: bool  # rank 0 prints the phase lines
    show_progress_bar: bool  # rank 0 draws the trainers' bars
    result: str  # where rank 0 leaves its TrainResult (a pickle)
    fingerprint: str  # the same on every rank, or the run stops before any work


def fingerprint(pairs: Sequence[Any], dev_pairs: Sequence[Any] | None, positive_only: Sequence[Any],
                config: Any, start: str | Path) -> str:
    """A digest of one run's inputs: pairs in order, options and the start weights' identity (not their path).

    Every node reads its own PAIRS files and start version: a node given other data would train on other
    batches, so the ranks compare this before any work.
    """
    folder = Path(start)
    meta = next((folder / f for f in ("dupq.json", "config.json") if (folder / f).is_file()), None)
    files = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    h = hashlib.sha256()
    for part in (
        [[p.question1, p.question2, p.label] for p in pairs],
        None if dev_pairs is None else [[p.question1, p.question2, p.label] for p in dev_pairs],
        [[p.question1, p.question2, p.label] for p in positive_only],
        config.to_dict(),
        meta.read_text() if meta is not None else None,
        files,
    ):
        h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()


def train_version(
    registry: Any,
    pairs: Sequence[Any],
    config: Any,
    launch: Launch,
    *,
    start: str = "current",
    base: str | Path | None = None,
    dev_pairs: Sequence[Any] | None = None,
    positive_only: Sequence[Any] | None = None,
    sources: Mapping[str, Sequence[Any]] | None = None,
    show_progress_bar: bool = True,
    progress: bool = False,
    logs_dir: str | Path | None = None,
) -> Any:
    """Train a new version data-parallel (``launch``) into ``registry``'s models folder; not registered.

    The same contract as :func:`dupq.training.versions.train_new_version` (the caller registers the returned
    :class:`~dupq.training.versions.NewVersion`), run by torchrun. On a node other than node 0 it returns None once this
    node's ranks are done: node 0 saves the version. Raises :class:`DataParallelError` when a rank fails.
    Each node's first process writes to the console; the others' output goes to
    ``logs_dir/train-<version>/`` (default: a temporary folder).
    """
    from dupq.storage.registry import new_version_name
    from dupq.training.versions import NewVersion, resolve_start

    if base is not None:
        base = Path(base).resolve()
        if not (base / "modules.json").is_file() and not (base / "config.json").is_file():
            raise DataParallelError(f"{base} is not a SentenceTransformer folder (no modules.json / config.json)")
        parent, start_dir = None, base
    else:
        parent = resolve_start(registry, start)
        start_dir = registry.path(parent)
    version = new_version_name()
    while registry.path(version).exists():  # names have one-second resolution
        time.sleep(1)
        version = new_version_name()
    output_dir = registry.path(version)
    rank_logs = Path(logs_dir or tempfile.mkdtemp(prefix="dupq-ddp-logs-")) / f"train-{version}"
    pairs, positive_only = list(pairs), list(positive_only or [])
    dev_pairs = None if dev_pairs is None else list(dev_pairs)
    with tempfile.TemporaryDirectory(prefix="dupq-ddp-") as work:
        job = RankJob(
            pairs=pairs, config=config, start=str(start_dir), output_dir=str(output_dir), parent=parent,
            dev_pairs=dev_pairs, positive_only=positive_only,
            sources=None if sources is None else {k: list(v) for k, v in sources.items()}, progress=progress,
            show_progress_bar=show_progress_bar, result=str(Path(work) / "result.pkl"),
            fingerprint=fingerprint(pairs, dev_pairs, positive_only, config, start_dir),
        )
        spec = Path(work) / "job.pkl"
        spec.write_bytes(pickle.dumps(job))
        try:
            _torchrun(launch, spec, rank_logs)
        except KeyboardInterrupt:
            shutil.rmtree(output_dir, ignore_errors=True)
            raise
        except Exception as e:
            shutil.rmtree(output_dir, ignore_errors=True)  # rank 0 may have renamed it in before another failed
            if getattr(e, "sigval", None) == signal.SIGINT:  # torchrun's SignalException: Ctrl-C reached it first
                raise KeyboardInterrupt from None
            raise DataParallelError(f"data-parallel training failed ({launch.world_size} processes): "
                                    f"{_failure_message(e)}; no version was registered (the other processes' "
                                    f"output: {rank_logs})") from None
        if launch.node_rank != 0:
            return None
        result_file = Path(job.result)
        if not result_file.is_file() or not (output_dir / "dupq.json").is_file():
            shutil.rmtree(output_dir, ignore_errors=True)
            raise DataParallelError("data-parallel training ended without rank 0's version; nothing was registered")
        result = pickle.loads(result_file.read_bytes())
    return NewVersion(version, parent, output_dir, result)


def _torchrun(launch: Launch, spec: Path, log_dir: Path) -> None:
    """``torchrun ... -m dupq.training.distributed SPEC``, in this process (it raises instead of exiting); local rank 0
    writes to the console as it is (progress bars), the others to files under ``log_dir``."""
    from torch.distributed.run import get_args_parser, run

    args = ["--nproc-per-node", str(launch.nproc), "--nnodes", str(launch.nnodes), "--max-restarts", "0",
            "--log-dir", str(log_dir)]
    if launch.nproc > 1:
        args += ["--redirects", ",".join(f"{r}:3" for r in range(1, launch.nproc))]
    if launch.nnodes == 1:
        args.append("--standalone")  # a free local port, no address to give
    else:
        args += ["--node-rank", str(launch.node_rank), "--master-addr", str(launch.master_addr),
                 "--master-port", str(launch.master_port or DEFAULT_MASTER_PORT)]
    args += ["-m", "dupq.training.distributed", str(spec)]
    with _rank_environment(launch):
        run(get_args_parser().parse_args(args))


@contextlib.contextmanager
def _rank_environment(launch: Launch) -> Iterator[None]:
    """The ranks' environment: on CPUs, this node's cores shared out (torchrun alone would give each rank one
    thread); the weights offline, as every dupq entry point has them."""
    saved = dict(os.environ)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "OMP_NUM_THREADS" not in os.environ:
        capacity, what = local_capacity()
        threads = max(1, capacity // launch.nproc) if what.startswith("CPU") else 1
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _failure_message(e: BaseException) -> str:
    """The first failing rank and its error, from torchrun's ChildFailedError (its error files)."""
    failures = getattr(e, "failures", None)
    if not failures:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    def text(rank: int) -> str:
        message = failures[rank].message
        return str(message.get("message", "") if isinstance(message, dict) else message).strip()

    # A rank that lost its peers (a closed connection, a collective that failed) fails because another one did:
    # the root cause is the earliest other failure (timestamps have one-second resolution, hence the rank order).
    rank = min(failures, key=lambda r: (bool(_PEER_LOST.search(text(r))), failures[r].timestamp, r))
    return f"rank {rank}: {text(rank)}" if text(rank) else f"rank {rank} exited with code {failures[rank].exitcode}"


_PEER_LOST = re.compile(r"gloo|nccl|connection (closed|reset)|DistBackendError|socket timeout", re.IGNORECASE)


# -- the per-rank entry point: python -m dupq.training.distributed SPEC (started by torchrun) ------------------


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_rank_main)(list(sys.argv[1:] if argv is None else argv))


def _rank_main(argv: list[str]) -> int:
    import torch
    import torch.distributed as dist

    from dupq.training.recipe import train

    job: RankJob = pickle.loads(Path(argv[0]).read_bytes())
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        rank = dist.get_rank()
        seen: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(seen, job.fingerprint)
        others = [r for r, f in enumerate(seen) if f != seen[0]]
        if others:
            raise RuntimeError(f"rank(s) {others} were given other pairs, options or start weights than rank 0: "
                               "every node needs the same PAIRS files, options and --from/--base")
        progress = None
        if job.progress and rank == 0:
            from dupq.training.progress import phase_printer

            progress = phase_printer(job.config)
        result = train(job.pairs, job.config, start=job.start, output_dir=Path(job.output_dir),
                       dev_pairs=job.dev_pairs, positive_only=job.positive_only, sources=job.sources,
                       parent=job.parent, progress=progress, show_progress_bar=job.show_progress_bar and rank == 0)
        if rank == 0:
            tmp = Path(job.result + ".tmp")
            tmp.write_bytes(pickle.dumps(result))
            os.replace(tmp, job.result)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
