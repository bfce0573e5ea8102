"""What counting every request for ``GET /metrics`` costs a search: p50 with and without it, same run.

Real ``dupq serve --production`` processes on homes seeded with the same bank, ``--pairs`` of them with
``metrics = "open"`` and as many with ``metrics = "off"`` (no hooks at all); one client sends sequential searches
to them in rounds (each round in turn, forwards then backwards: slow drifts of a shared machine fall on all
alike) and the p50 and p90 of each mode are compared. Two processes of one mode differ too (where their memory
and threads landed): that spread is reported as the noise floor. Also timed in process: one request's counting
(a counter and a histogram observation), and one scrape of ``/metrics`` (it counts the store: a scraper pays it
every 15 s or so, not each search).

Example:
    $ flock /work/heavy.lock .venv/bin/python scripts/bench_metrics.py --rounds 20 --per-round 100 --pairs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from live import LiveServer, call  # noqa: E402

QUESTIONS = [
    "How do I reverse a list in Python?", "How can I undo the last git commit?", "What is an index fund?",
    "How do I boil an egg?", "Why does my Linux laptop not suspend?", "How do I read a file line by line?",
    "Do I need a visa to visit Japan?", "How do I sharpen a kitchen knife?", "How to check disk space on Ubuntu?",
    "What is the best way to save for retirement?", "How do I merge two dictionaries?",
    "How do I cook rice without a rice cooker?", "Can I carry medicine on a plane?",
]


def _round(base: str, n: int, offset: int) -> list[float]:
    out = []
    for i in range(n):
        q = QUESTIONS[(offset + i) % len(QUESTIONS)]
        t0 = time.perf_counter()
        status, _ = call(base, "POST", "/api/v1/search", {"question": q, "k": 10})
        out.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise RuntimeError(f"search answered {status}")
    return out


def hook_cost_us(n: int = 100_000) -> float:
    """Microseconds one request's counting takes in process (a counter and a histogram observation, labelled)."""
    sys.path.insert(0, str(ROOT))
    from web.metrics import Metrics

    m = Metrics(service=None)  # its collector reads the service only when scraped
    t0 = time.perf_counter()
    for i in range(n):
        m.observe("/api/v1/search", "POST", 200, 0.004 + (i % 7) * 1e-3)
    return (time.perf_counter() - t0) / n * 1e6


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--pairs", type=int, default=2, help="processes of each mode (more than one: the spread between "
                    "processes of one mode is the noise floor a difference between the modes must clear)")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="dupq-bench-metrics-"))
    names = [f"{mode}-{i}" for i in range(args.pairs) for mode in ("open", "off")]
    servers = {
        name: LiveServer(work / name / "home", env={"DUPQ_METRICS": name.split("-")[0], "DUPQ_SEED_BANK": "default"},
                         threads=4, log=work / f"{name}.log")
        for name in names
    }
    lat: dict[str, list[float]] = {n: [] for n in servers}
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            _round(s.base, args.warmup, 0)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                lat[n] += _round(servers[n].base, args.per_round, r * args.per_round)
        scrape = []
        for _ in range(20):
            t0 = time.perf_counter()
            status, _ = call(servers["open-0"].base, "GET", "/metrics")
            scrape.append((time.perf_counter() - t0) * 1000)
            assert status == 200
        assert call(servers["off-0"].base, "GET", "/metrics")[0] == 404
    finally:
        for s in servers.values():
            s.stop()
    by_mode = {m: [x for n in names if n.startswith(m + "-") for x in lat[n]] for m in ("open", "off")}
    p50 = {m: statistics.median(v) for m, v in by_mode.items()}
    per_process = {n: round(statistics.median(v), 3) for n, v in lat.items()}
    offs = [per_process[n] for n in names if n.startswith("off-")]
    result = {
        "searches_each_mode": len(by_mode["open"]),
        "p50_ms": {m: round(v, 3) for m, v in p50.items()},
        "p90_ms": {m: round(_pct(v, 90), 3) for m, v in by_mode.items()},
        "overhead_p50_pct": round((p50["open"] / p50["off"] - 1) * 100, 2),
        "p50_ms_per_process": per_process,
        "noise_floor_pct": round((max(offs) / min(offs) - 1) * 100, 2) if len(offs) > 1 else None,
        "scrape_ms_p50": round(statistics.median(scrape), 3),
        "hook_us_per_request": round(hook_cost_us(), 2),
    }
    result["hook_pct_of_off_p50"] = round(result["hook_us_per_request"] / 1000 / p50["off"] * 100, 3)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
