"""The training worker: one process per retrain job, so searches in the web process are never blocked by it.

Run by :meth:`dupq.service.DupQ.start_training` as ``python -m dupq.worker --job ID --settings JSON``. It trains a
candidate on the stored pairs, puts it through the evaluation gate against the current model, and for a
candidate that passes builds its complete index; the web process then switches to it in one step.

The worker never takes the home's writer lock (the web process holds it) and writes only: its job record,
a new ``models/<version>/`` folder (written aside and renamed by :func:`dupq.training.train`) and the new
version's ``index/<version>/`` folder, which nothing serves until the promotion.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from dupq.config import Settings
from dupq.data import Pair, dedupe_pairs, read_pairs, split_by_cluster
from dupq.jobs import JobStore
from dupq.registry import BASE_VERSION, ModelRegistry, new_version_name
from dupq.store import QuestionStore
from dupq.system import default_shared_cache

log = logging.getLogger("dupq.worker")

#: Fewest stored pairs (after de-duplication) a retrain accepts.
MIN_PAIRS = 20


def stored_pairs(store: QuestionStore) -> list[Pair]:
    """The stored pairs as training data: conflicting labels resolved by "latest wins" (dupq.data)."""
    return dedupe_pairs(Pair(p.question1, p.question2, p.label) for p in store.pairs()).pairs


def gate_reports(candidate: Any, current: Any, sets: dict[str, list[Pair]]) -> dict[str, Any]:
    """Evaluate candidate and current model on the same pair sets (pair + retrieval metrics each)."""
    from dupq.evaluation import evaluate_encoder

    reports: dict[str, Any] = {}
    for name, pairs in sets.items():
        labels = {p.label for p in pairs}
        if labels != {0, 1}:
            reports[name] = {"skipped": "needs both duplicate and non-duplicate pairs"}
            continue
        reports[name] = {
            role: evaluate_encoder(enc.encode, pairs, energy=enc.energy_name, threshold=enc.threshold)
            for role, enc in (("candidate", candidate), ("current", current))
        }
    return reports


def gate_decision(reports: dict[str, Any], tolerance: float) -> tuple[bool, str]:
    """Pass when, on every report, the candidate's AP is at most ``tolerance`` below the current model's."""
    judged = {k: v for k, v in reports.items() if "skipped" not in v}
    if not judged:
        return False, "no gate report could be computed (need duplicate and non-duplicate held-out pairs)"
    for name, r in judged.items():
        cand, cur = r["candidate"]["pairs"]["ap"], r["current"]["pairs"]["ap"]
        if cand < cur - tolerance:
            return False, f"{name}: candidate AP {cand:.4f} < current AP {cur:.4f} - tolerance {tolerance}"
    return True, "candidate AP within tolerance on " + ", ".join(judged)


def run(settings: Settings, job_id: str) -> int:
    """Run one job to a final or ``indexing`` state. Returns the process exit code."""
    from dupq.index import open_index, sync_index
    from dupq.model import SiameseEncoder
    from dupq.training import TrainConfig, TrainingCancelled, train

    store = QuestionStore(settings.db_path)
    jobs = JobStore(store)
    registry = ModelRegistry(
        store,
        settings.models_dir,
        backend=settings.backend,
        # TODO(issue 9 part 1): Settings.shared_export_cache, computed by the entry point.
        shared_export_cache=default_shared_cache(os.environ),
    )
    job = jobs.get(job_id)
    stop = {"flag": job.cancel}

    def on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    jobs.update(job_id, state="running", pid=os.getpid())
    if jobs.get(job_id).state != "running":
        store.close()
        return 0  # cancelled while queued
    out: Path | None = None
    try:
        opts = dict(job.options)
        base_choice = opts.pop("base", "current")
        current = registry.current()
        pairs = stored_pairs(store)
        if len(pairs) < MIN_PAIRS or {p.label for p in pairs} != {0, 1}:
            raise ValueError(f"need at least {MIN_PAIRS} stored pairs with both labels; have {len(pairs)}")
        split = split_by_cluster(pairs, dev_fraction=settings.gate_fraction, seed=0)
        config = TrainConfig.from_dict(opts)
        version = new_version_name()
        while registry.path(version).exists():
            time.sleep(1)
            version = new_version_name()
        out = registry.path(version)
        parent = current if base_choice == "current" else BASE_VERSION
        base = registry.path(parent) if parent != BASE_VERSION else None

        last = {"t": 0.0}

        def on_progress(p: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last["t"] > 0.5 or p.get("step") == p.get("total"):  # keep SQLite writes modest
                last["t"] = now
                jobs.update(job_id, progress=p)

        result = train(
            split.train,
            config,
            base=base,
            output_dir=out,
            parent=parent,
            progress=on_progress,
            should_stop=lambda: stop["flag"] or jobs.get(job_id).cancel,
            show_progress_bar=False,
        )
        jobs.update(job_id, state="evaluating", version=version)
        candidate = SiameseEncoder.load(out, cached=False)
        serving = registry.load(current)
        sets = {"stored_pairs_holdout": split.dev}
        if settings.gate_eval_file:
            sets["eval_file"] = read_pairs(settings.gate_eval_file).pairs
        reports = gate_reports(candidate, serving, sets)
        ok, why = gate_decision(reports, settings.gate_tolerance)
        metrics = {"gate": reports, "decision": why, "train": result.metrics, "counts": result.counts}
        if not ok:
            shutil.rmtree(out, ignore_errors=True)
            jobs.update(job_id, state="rejected", metrics=metrics, error=why)
            return 0
        registry.register(version, parent=parent)
        jobs.update(job_id, state="indexing", metrics=metrics)
        index, _ = open_index(
            settings.index_dir / version, candidate.dim, candidate.energy, ann_min_size=settings.ann_min_size
        )
        sync_index(store, candidate, index, batch_size=settings.encode_batch_size, label=version)
        return 0
    except TrainingCancelled:
        jobs.update(job_id, state="cancelled", error="cancelled on request")
        return 0
    except Exception as e:  # noqa: BLE001 - any failure ends the job as failed, with its message
        log.exception("job %s failed", job_id)
        if out is not None and not registry.exists(out.name):
            shutil.rmtree(out, ignore_errors=True)
        jobs.update(job_id, state="failed", error=f"{type(e).__name__}: {e}")
        return 1
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="dupq training worker (started by the service)")
    ap.add_argument("--job", required=True)
    ap.add_argument("--settings", required=True, help="the service's Settings as JSON (Settings.to_dict)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run(Settings.from_dict(json.loads(args.settings)), args.job)


if __name__ == "__main__":
    sys.exit(main())
