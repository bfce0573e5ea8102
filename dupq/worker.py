"""The training worker's entry point: one process per retrain job, so searches are never blocked by it.

Started by :meth:`dupq.retrain.Retrainer.request` as ``python -m dupq.worker --job ID --settings JSON``;
the job's whole life is :meth:`dupq.retrain.Retrainer.run`. The worker never takes the home's writer lock
(the web process holds it) and writes only: its job record, a new ``models/<version>/`` folder (written
aside and renamed by :func:`dupq.training.train`) and the new version's ``index/<version>/`` folder, which
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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    # The entry point owns the process environment. The worker shares the CPU with the web process: OpenMP
    # threads that spin-wait for a busy core made training 3x slower under contention (docs/benchmarks.md);
    # passive waiting avoids that. Set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dupq.backends import open_backend
    from dupq.config import Settings
    from dupq.retrain import Retrainer

    settings = Settings.from_dict(json.loads(args.settings), source="--settings")
    backend = open_backend(settings, pool_size=3)
    try:
        return Retrainer(settings, backend.store, backend.registry, backend.jobs,
                         open_index=backend.open_index).run(args.job)
    finally:
        backend.close()

if __name__ == "__main__":
    sys.exit(main())
