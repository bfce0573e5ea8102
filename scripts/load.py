"""Load test: N concurrent clients searching while questions are added and a retrain runs (and is promoted).

Starts ``dupq serve --production`` on a fresh home with the bundled bank (or uses ``--url``), stores labelled
pairs from the bank's paraphrase groups, starts a retrain through the API, then runs ``--clients`` search
clients (one keep-alive connection each) and one writer adding a question every ``--add-every`` seconds for
``--duration`` seconds. Every request that does not answer 2xx, or fails on the wire, is an error. Prints the
requests, errors, search latency p50/p99/max, the adds, the job's states and the model versions that answered,
and the machine's load average before and after.

    python scripts/load.py --clients 16 --duration 60            # the issue-12 run (docs/benchmarks.md)
    python scripts/load.py --url http://127.0.0.1:8000 --token T --no-retrain
Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live import LiveServer, call  # noqa: E402

TOKEN = "load-admin-token"


def bank() -> list[dict[str, Any]]:
    from dupq.bank import load_default_bank

    return load_default_bank()


def bank_pairs(rows: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Group-mates are duplicates; one same-topic question of another group per grouped question is not."""
    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["meta"].get("group"):
            groups.setdefault(r["meta"]["group"], []).append(r)
    pairs = [{"question1": a["text"], "question2": b["text"], "label": 1}
             for g in groups.values() for a, b in itertools.combinations(g, 2)]
    grouped = [r for g in groups.values() for r in g]
    for a in grouped:
        others = [b for b in grouped
                  if b["meta"]["topic"] == a["meta"]["topic"] and b["meta"]["group"] != a["meta"]["group"]]
        pairs.append({"question1": a["text"], "question2": rng.choice(others)["text"], "label": 0})
    return pairs


class Client:
    """One keep-alive HTTP connection (reopened after a wire failure)."""

    def __init__(self, base: str) -> None:
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
            r = self.conn.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        except Exception:
            self.conn.close()
            self.conn = None
            raise


def run(base: str, token: str | None, *, clients: int, duration: float, add_every: float, retrain: bool,
        train_options: dict[str, Any]) -> dict[str, Any]:
    rows = bank()
    texts = [r["text"] for r in rows]
    words = ["please", "quickly", "today", "again", "exactly", "really", "simply", "now"]
    job = None
    if retrain:
        status, body = call(base, "POST", "/api/v1/pairs", {"pairs": bank_pairs(rows)}, token=token)
        assert status == 201, (status, body)
        status, body = call(base, "POST", "/api/v1/train", train_options, token=token)
        assert status == 202, (status, body)
        job = body["job"]

    stop = time.monotonic() + duration
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    models: dict[str, int] = {}
    added = [0]
    states: list[str] = []

    def searcher(n: int) -> None:
        rng = random.Random(n)
        c = Client(base)
        while time.monotonic() < stop:
            q = f"{rng.choice(texts)} {rng.choice(words)}"
            t0 = time.perf_counter()
            try:
                status, body = c.post("/api/v1/search", {"question": q, "k": 10})
            except Exception as e:  # noqa: BLE001 - a wire failure is an error of the run
                with lock:
                    errors.append(f"search: {type(e).__name__}: {e}")
                continue
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if status == 200:
                    latencies.append(ms)
                    models[body["model"]] = models.get(body["model"], 0) + 1
                else:
                    errors.append(f"search: {status} {body}")

    def writer() -> None:
        c = Client(base)
        n = 0
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        while time.monotonic() < stop:
            n += 1
            try:
                status, body = c.post("/api/v1/questions",
                                      {"questions": [{"text": f"Load test question number {n}: is it stored?"}]},
                                      headers)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"add: {type(e).__name__}: {e}")
                continue
            with lock:
                if status == 201:
                    added[0] += 1
                else:
                    errors.append(f"add: {status} {body}")
            time.sleep(add_every)

    def watcher() -> None:
        while job and time.monotonic() < stop:
            try:
                _, j = call(base, "GET", f"/api/v1/jobs/{job}", timeout=30)
                if not states or states[-1] != j["state"]:
                    states.append(j["state"])
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"job: {type(e).__name__}: {e}")
            time.sleep(1)

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(clients)]
    threads += [threading.Thread(target=writer), threading.Thread(target=watcher)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    if job:
        states_after = call(base, "GET", f"/api/v1/jobs/{job}")[1]["state"]
        if not states or states[-1] != states_after:
            states.append(states_after)
    health = call(base, "GET", "/healthz")[1]
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 1) if lat else float("nan")

    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies) + sum(1 for e in errors if e.startswith("search")) + added[0]
        + sum(1 for e in errors if e.startswith("add")),
        "searches": len(latencies),
        "searches_per_s": round(len(latencies) / wall, 1),
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p99_ms": pct(99),
        "max_ms": round(lat[-1], 1) if lat else None,
        "added": added[0],
        "job_states": states,
        "models_answering": models,
        "health": health,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an already running server (default: start one on a fresh home)")
    ap.add_argument("--token", help="its admin token (for pairs, train and, if required, adds)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--add-every", type=float, default=0.5, help="seconds between the writer's adds")
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--train-options", default='{"max_steps": 30, "batch_size": 16, "cross_max_steps": 10}',
                    help="JSON body of POST /api/v1/train")
    ap.add_argument("--threads", type=int, default=4, help="waitress threads of the started server")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    server = None
    if args.url:
        base, token = args.url.rstrip("/"), args.token
    else:
        home = Path(tempfile.mkdtemp(prefix="dupq-load-")) / "home"
        server = LiveServer(home, admin_token=TOKEN, threads=args.threads).start()
        base, token = server.base, TOKEN
        print(f"server {base} on {home}", file=sys.stderr)
    try:
        result = run(base, token, clients=args.clients, duration=args.duration, add_every=args.add_every,
                     retrain=not args.no_retrain, train_options=json.loads(args.train_options))
    finally:
        if server:
            server.stop()
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
