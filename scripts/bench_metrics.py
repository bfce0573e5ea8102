"""What counting every request for ``GET /metrics`` costs a search: p50 with and without it, same run.

Two real ``dupq serve --production`` processes on two homes seeded with the same bank, one with
``metrics = "open"`` and one with ``metrics = "off"`` (no hooks at all); one client sends sequential searches to
them in alternating rounds (A B A B ...: slow drifts of a shared machine fall on both alike) and the p50 and p90
of each are compared. Also timed: one scrape of ``/metrics`` (it counts the store: a scraper pays it every 15 s
or so, not each search).

Example:
    $ flock /work/heavy.lock .venv/bin/python scripts/bench_metrics.py --rounds 20 --per-round 100
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
    ap.add_argument("--work", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="dupq-bench-metrics-"))
    servers = {
        mode: LiveServer(work / mode / "home", env={"DUPQ_METRICS": mode, "DUPQ_SEED_BANK": "default"}, threads=4,
                         log=work / f"{mode}.log")
        for mode in ("open", "off")
    }
    lat: dict[str, list[float]] = {m: [] for m in servers}
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            _round(s.base, args.warmup, 0)
        for r in range(args.rounds):
            order = ("open", "off") if r % 2 == 0 else ("off", "open")
            for m in order:
                lat[m] += _round(servers[m].base, args.per_round, r * args.per_round)
        scrape = []
        for _ in range(20):
            t0 = time.perf_counter()
            status, _ = call(servers["open"].base, "GET", "/metrics")
            scrape.append((time.perf_counter() - t0) * 1000)
            assert status == 200
        assert call(servers["off"].base, "GET", "/metrics")[0] == 404
    finally:
        for s in servers.values():
            s.stop()
    p50 = {m: statistics.median(v) for m, v in lat.items()}
    result = {
        "searches_each": len(lat["open"]),
        "p50_ms": {m: round(v, 3) for m, v in p50.items()},
        "p90_ms": {m: round(_pct(v, 90), 3) for m, v in lat.items()},
        "overhead_p50_pct": round((p50["open"] / p50["off"] - 1) * 100, 2),
        "round_p50_ratio_median": round(statistics.median(
            statistics.median(lat["open"][i:i + args.per_round]) / statistics.median(lat["off"][i:i + args.per_round])
            for i in range(0, len(lat["open"]), args.per_round)), 4),
        "scrape_ms_p50": round(statistics.median(scrape), 3),
        "hook_us_per_request": round(hook_cost_us(), 2),
    }
    result["hook_pct_of_off_p50"] = round(result["hook_us_per_request"] / 1000 / p50["off"] * 100, 3)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
