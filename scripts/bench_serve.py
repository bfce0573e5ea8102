"""Measure the service as a user meets it: cold start of ``dupq serve`` to its first answer, then the
latency of one search over HTTP (a benchmark that prints, not a test).

Usage:
    python scripts/bench_serve.py [--requests 200] [--home DIR] [--production]

Starts the server as a subprocess on a free loopback port with a fresh temporary home (the embedded bank)
unless ``--home`` is given, and queries it with one client, one request at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUERIES = [
    "How do I reverse a list in Python?",
    "What is the cheapest way to send money abroad?",
    "How can I see which process uses a port on Linux?",
    "How long should I rest a steak after cooking?",
    "Do I need travel insurance for a trip to Europe?",
    "How do I install a package with pip?",
    "Is it better to pay off debt or invest?",
    "How do I keep bread from going stale?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 60) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def server_command(port: int, production: bool = False) -> list[str]:
    cmd = [str(Path(sys.executable).with_name("dupq")), "serve", "--port", str(port)]
    return [*cmd, "--production"] if production else cmd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--home", default=None)
    ap.add_argument("--production", action="store_true", help="serve with waitress (dupq serve --production)")
    args = ap.parse_args()
    home = args.home or tempfile.mkdtemp(prefix="dupq-bench-")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/search"
    env = {**os.environ, "DUPQ_HOME": home, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(server_command(port, args.production), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                post(url, {"question": QUERIES[0], "k": 5}, timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    print("server exited during start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        cold = time.perf_counter() - t0
        rng = random.Random(0)
        lat, server_ms = [], []
        for _ in range(args.requests):
            q = rng.choice(QUERIES)
            t = time.perf_counter()
            body = post(url, {"question": q, "k": 10})
            lat.append((time.perf_counter() - t) * 1000)
            server_ms.append(body["took_ms"])
        print(f"home: {home} ({'fresh, embedded bank' if not args.home else 'given'})")
        print(f"cold start to first answer: {cold:.2f} s")
        print(f"search over HTTP, k=10, {args.requests} requests, one client: "
              f"p50 {statistics.median(lat):.1f} ms, p99 {percentile(lat, 99):.1f} ms "
              f"(server-side took_ms p50 {statistics.median(server_ms):.1f} ms)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
