"""Re-ranking latency: p50/p90 of ``DupQ.search`` (k=10) unranked vs re-ranked top N, in one quiet process.

The issue-10 target is a re-ranked search of the top 20 costing <= 3x an unranked one (p50). Both are measured
on the same home (a copy, so nothing is written to the original), the same distinct questions, interleaved one
by one, after a warm-up; the machine load at start and end is printed, since a busy machine makes both slower
and the ratio meaningless.

    .venv/bin/python scripts/bench_rerank.py --home /tmp/rec-home ../shared/data/dev/qqp_pairs_dev.tsv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", type=Path, help="a pair file whose questions are searched")
    ap.add_argument("--home", type=Path, required=True, help="a dupq home whose current version has a cross-encoder")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dupq.config import Settings
    from dupq.data import read_pairs
    from dupq.service import DupQ

    questions = list(dict.fromkeys(q for p in read_pairs(args.pairs).pairs for q in (p.question1, p.question2)))
    questions = questions[: args.queries]
    start = load()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("*.log", "logs"))
        with DupQ(Settings.load(environ={}, home=home, rerank_top_n=args.top_n)) as svc:
            for q in questions[:20]:  # warm-up: compilations, caches
                svc.search(q, k=10)
                svc.search(q, k=10, rerank=True)
            plain, ranked = [], []
            for q in questions:
                t0 = time.perf_counter()
                svc.search(q, k=10)
                plain.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                svc.search(q, k=10, rerank=True)
                ranked.append((time.perf_counter() - t0) * 1000)
            version = svc.health().get("model")
    end = load()

    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[int(p) - 1]

    out = {
        "version": version, "queries": len(questions), "top_n": args.top_n,
        "unranked_ms": {"p50": statistics.median(plain), "p90": q(plain, 90)},
        "reranked_ms": {"p50": statistics.median(ranked), "p90": q(ranked, 90)},
        "load_start": start, "load_end": end,
    }
    out["ratio_p50"] = out["reranked_ms"]["p50"] / out["unranked_ms"]["p50"]
    print(f"load at start: {start}\nload at end:   {end}")
    print(f"{len(questions)} questions, k=10, model {version}")
    print(f"unranked      p50 {out['unranked_ms']['p50']:.2f} ms  p90 {out['unranked_ms']['p90']:.2f} ms")
    print(f"re-ranked {args.top_n:>3} p50 {out['reranked_ms']['p50']:.2f} ms  p90 {out['reranked_ms']['p90']:.2f} ms")
    print(f"ratio p50 {out['ratio_p50']:.2f}x (target <= 3x)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
