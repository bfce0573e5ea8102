"""The training worker's entry point: one process per retrain job, so searches are never blocked by it.

Started by :meth:`dupq.retrain.Retrainer.request` as ``python -m dupq.worker --job ID --settings JSON``;
the job's whole life is :meth:`dupq.retrain.JobWorker.run`. The worker never takes the home's writer lock
(the web process holds it) and writes only: its job record, a new ``models/<version>/`` folder (written
aside and renamed by :func:`dupq.training.recipe.train`) and the new version's ``index/<version>/`` folder, which
nothing serves until the web process promotes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="dupq training worker (started by the service)")
    ap.add_argument("--job", required=True)
    ap.add_argument("--settings", required=True, help="the service's settings as JSON (Settings.for_worker)")
    ap.add_argument("--parent-pid", type=int, help="die with this process (a node on a shared store)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    if args.parent_pid is not None and not _die_with_parent(args.parent_pid):
        logging.warning("the node that started job %s is gone: leaving the job to another node", args.job)
        return 0
    # The entry point owns the process environment. The worker shares the CPU with the web process: OpenMP
    # threads that spin-wait for a busy core made training 3x slower under contention (docs/benchmarks.md);
    # passive waiting avoids that. Set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dupq.config import Settings
    from dupq.retrain import JobWorker
    from dupq.storage import open_backend

    settings = Settings.from_dict(json.loads(args.settings), source="--settings")
    if settings.log_format == "json":  # the node's format: one JSON object per line, each naming the job
        from dupq import logs

        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
        logs.configure("json", context=lambda: {"job": args.job})
    backend = open_backend(settings, pool_size=3)
    try:
        return JobWorker(backend).run(args.job)
    finally:
        backend.close()


def _die_with_parent(parent_pid: int) -> bool:
    """Be killed when the starting node dies (Linux ``PR_SET_PDEATHSIG``); False if it died already.

    A dead node's job must not be finished by an orphan: after its lease another node takes it over.
    """
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the lease still hands the job to another node once the orphan's work is refused
    return os.getppid() == parent_pid  # checked after the prctl: a parent that died before it is seen here


if __name__ == "__main__":
    sys.exit(main())
