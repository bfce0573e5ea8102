"""Measure a retrain from the running service: end-to-end time of a job on N stored pairs, and the search
latency (p50 / p99) while it runs vs idle, with one client (a benchmark that prints, not a test).

Usage:
    python scripts/bench_retrain.py [--pairs ../shared/data/train/qqp_pairs_train.tsv] [--n 2000]
                                    [--requests 300] [--max-steps N]

Starts ``dupq serve`` as a subprocess on a free loopback port with a fresh home (the embedded bank), posts
the first N labelled pairs of the file (the Quora labelled source, which has both labels), measures idle
search latency, starts ``POST /api/v1/train`` with default options (unless --max-steps), keeps searching
until the job ends and reports both latency sets and the job's wall time from request to promotion.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_serve import QUERIES, free_port, percentile  # noqa: E402

from dupq.data import read_pairs  # noqa: E402

TOKEN = "bench-token"


def call(url: str, method: str, body: dict | None = None) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def stats(xs: list[float]) -> str:
    return f"p50 {statistics.median(xs):.1f} ms, p99 {percentile(xs, 99):.1f} ms (n={len(xs)})"


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=str(root.parent / "shared/data/train/qqp_pairs_train.tsv"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=300, help="idle searches")
    ap.add_argument("--max-steps", type=int, default=None)
    args = ap.parse_args()
    if not Path(args.pairs).exists():
        print(f"pair file not found: {args.pairs}", file=sys.stderr)
        return 2
    pairs = [p for p in read_pairs(args.pairs).pairs][: args.n]
    home = tempfile.mkdtemp(prefix="dupq-retrain-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DUPQ_HOME": home, "HF_HUB_OFFLINE": "1", "DUPQ_ADMIN_TOKEN": TOKEN}
    exe = str(Path(sys.executable).with_name("dupq"))
    proc = subprocess.Popen(
        [exe, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                call(base + "/healthz", "GET")
                break
            except OSError:
                if proc.poll() is not None:
                    print("server exited during start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        for i in range(0, len(pairs), 1000):
            chunk = [
                {"question1": p.question1, "question2": p.question2, "label": p.label} for p in pairs[i : i + 1000]
            ]
            assert call(base + "/api/v1/pairs", "POST", {"pairs": chunk})[0] == 201
        print(f"stored {len(pairs)} pairs ({sum(p.label for p in pairs)} duplicates) from {args.pairs}")

        def one(i: int) -> float:
            t = time.perf_counter()
            status, body = call(base + "/api/v1/search", "POST", {"question": QUERIES[i % len(QUERIES)], "k": 10})
            if status != 200:
                raise RuntimeError(body)
            return (time.perf_counter() - t) * 1000

        idle = [one(i) for i in range(args.requests)]
        opts = {} if args.max_steps is None else {"max_steps": args.max_steps}
        t0 = time.perf_counter()
        status, body = call(base + "/api/v1/train", "POST", opts)
        assert status == 202, body
        busy, i, job = [], 0, {}
        while True:
            busy.append(one(i))
            i += 1
            if i % 20 == 0:
                job = call(base + f"/api/v1/jobs/{body['job']}", "GET")[1]
                if job["state"] in ("promoted", "rejected", "failed", "cancelled"):
                    break
        took = time.perf_counter() - t0
        print(
            f"job {job['id']}: {job['state']} in {took:.1f} s end to end (request to {job['state']}); "
            f"version {job['version']}; error {job['error']}"
        )
        gate = job.get("metrics", {}).get("gate", {}).get("stored_pairs_holdout", {})
        if "candidate" in gate:
            print(
                f"gate AP candidate {gate['candidate']['pairs']['ap']:.4f} vs current "
                f"{gate['current']['pairs']['ap']:.4f}"
            )
        print(f"search latency idle:          {stats(idle)}")
        print(f"search latency while training: {stats(busy)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
