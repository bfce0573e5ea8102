"""Shared reindex on PostgreSQL: one node vs three nodes re-embedding the same bank for a promotion (same run).

On an embedded PostgreSQL + pgvector, with N real questions (unique questions of the pair files given) stored
without vectors, ``dupq serve`` nodes on this machine, and search clients hitting every live node throughout:

0. start node n0: it embeds the bank for ``base`` at start-up (the single-process fill, for reference);
1. today's path: ``dupq models promote vA`` with a chunk size larger than the bank (nothing shared: one
   process embeds everything, then the pointer flips);
2. shared, one node: n0 promotes vB through its API (chunks of ``--chunk``; n0 is the only node);
3. shared, three nodes: n1 and n2 join; n0 promotes vC through its API; every node claims chunks.

vA, vB and vC are copies of ``base`` (the packaged weights: each its own, empty vector table). For each phase:
wall time, chunks per node (share), vectors == questions, failed searches, the embedding rate per node (rows /
seconds of its chunks) and the time of the flip (HNSW build, catch-up, pointer) after the last chunk.
3 nodes on one 2-core machine do not embed faster than one (they share the cores); the rate per node is what
the multi-machine arithmetic in docs/benchmarks.md uses.

Usage (a heavy job: wrap it in ``flock /work/heavy.lock``):
    python scripts/bench_reindex.py --pairs ../shared/data/train/qqp_pairs_train.tsv --n 20000 --chunk 500
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from live import LiveServer  # noqa: E402  (scripts/ is on sys.path when run as a script)

TOKEN = "bench-token"


def questions(paths: list[str], n: int) -> list[str]:
    seen: dict[str, None] = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                for k in ("question1", "question2"):
                    t = " ".join((row.get(k) or "").split())
                    if 3 <= len(t) <= 1000:
                        seen.setdefault(t)
                if len(seen) >= n:
                    return list(seen)[:n]
    return list(seen)


class Node(LiveServer):
    """One ``dupq serve`` node on the shared database, launched at once (:meth:`wait_up` waits for it)."""

    def __init__(self, name: str, work: Path, url: str, chunk: int) -> None:
        super().__init__(work / name, admin_token=TOKEN, threads=8, log=work / f"{name}.log", start_timeout=1800,
                         env={"DUPQ_DATABASE_URL": url, "DUPQ_SEED_BANK": "", "DUPQ_REINDEX_CHUNK_SIZE": str(chunk)})
        self.name = name
        self.launch()

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        return super().call(method, path, body, auth=True, timeout=timeout)


class Searches:
    """Search clients over the live nodes, counting failures."""

    def __init__(self, texts: list[str], clients: int = 2) -> None:
        self.live: list[Node] = []
        self.texts = texts
        self.stop = threading.Event()
        self.failures: list = []
        self.lat: list[float] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        n = i
        while not self.stop.is_set():
            if not self.live:
                time.sleep(0.1)
                continue
            node = self.live[n % len(self.live)]
            q = self.texts[n % len(self.texts)]
            n += 1
            t = time.perf_counter()
            try:
                status, body = node.call("POST", "/api/v1/search", {"question": q, "k": 5})
                if status != 200 or not body.get("results"):
                    self.failures.append((node.name, status, str(body)[:200]))
                else:
                    self.lat.append(time.perf_counter() - t)
            except OSError as e:
                self.failures.append((node.name, repr(e)))
            time.sleep(0.05)  # a steady trickle, not a load test: the embedding is what is measured

    def take(self) -> dict:
        lat, fails = self.lat, self.failures
        self.lat, self.failures = [], []
        return {"searches": len(lat) + len(fails), "failed": len(fails), "failures": fails[:3],
                "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None}

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def run_stats(url: str, version: str, names: dict[int, str]) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("SELECT id, state, chunks, total, created_at, finished_at FROM reindex_runs "
                        "WHERE version=%s ORDER BY id DESC LIMIT 1", (version,)).fetchone()
        tbl = c.execute("SELECT tbl FROM vector_tables WHERE version=%s", (version,)).fetchone()[0]
        vectors = c.execute(f"SELECT COUNT(*) FROM {tbl}").fetchone()[0]
        stored = c.execute("SELECT COUNT(*) FROM questions").fetchone()[0]
        out: dict = {"vectors": vectors, "questions": stored, "complete": vectors == stored}
        if row is None:
            return out
        run, state, chunks, total, created, finished = row
        per = c.execute("SELECT done_by, COUNT(*), SUM(rows), SUM(seconds) FROM reindex_chunks WHERE run=%s "
                        "AND state='done' GROUP BY done_by", (run,)).fetchall()
        last = c.execute("SELECT max(done_at), max(attempt) FROM reindex_chunks WHERE run=%s", (run,)).fetchone()
    nodes = {}
    for owner, n, rows, secs in per:
        pid = int(owner.split(":")[1])
        nodes[names.get(pid, owner)] = {"chunks": n, "share": round(n / chunks, 3), "rows": int(rows),
                                        "rate_qps": round(rows / secs, 1) if secs else None}
    out.update({"state": state, "chunks": chunks, "planned": total, "nodes": nodes,
                "embedding_s": round((last[0] - created).total_seconds(), 1),
                "flip_s": round((finished - last[0]).total_seconds(), 1) if finished else None,
                "max_attempt": last[1]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", required=True, help="pair TSV files (question1/question2 columns)")
    ap.add_argument("--n", type=int, default=20000, help="questions in the bank")
    ap.add_argument("--chunk", type=int, default=500, help="reindex_chunk_size of the nodes")
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder, removed)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dupq.config import Settings
    from dupq.storage import open_backend
    from dupq.storage.postgres.embedded import create_database, start
    from dupq.storage.records import NewQuestion

    work = Path(args.work or tempfile.mkdtemp(prefix="dupq-bench-reindex-"))
    server, base_url = start(work / "pg")
    url = create_database(base_url, "bench")
    texts = questions(args.pairs, args.n)
    res: dict = {"n": len(texts), "chunk": args.chunk, "cpu": os.cpu_count(), "phases": {}}
    print(f"{len(texts)} questions, chunk {args.chunk}, work {work}", flush=True)

    admin = open_backend(Settings(home=work / "admin", database_url=url, seed_bank=None))
    for s in range(0, len(texts), 5000):  # stored only: every version has all of them to embed
        admin.store.add([NewQuestion(t, f"q{s + i}") for i, t in enumerate(texts[s:s + 5000])])
    for v in ("vA", "vB", "vC"):
        shutil.copytree(admin.registry.path("base"), admin.registry.path(v))
        admin.registry.register(v, parent="base")
    admin.close()

    nodes: list[Node] = []
    load = Searches(texts[:200])
    try:
        n0 = Node("n0", work, url, args.chunk)
        nodes.append(n0)
        up = n0.wait_up()
        res["phases"]["0_base_fill_at_startup"] = {"seconds": round(up, 1), "note": "n0 start-up incl. model load"}
        print("phase 0 (n0 up, base embedded):", round(up, 1), "s", flush=True)
        names = {n0.proc.pid: "n0"}
        load.live = [n0]

        env = {**os.environ, "DUPQ_HOME": str(work / "cli"), "DUPQ_DATABASE_URL": url, "DUPQ_SEED_BANK": "",
               "DUPQ_REINDEX_CHUNK_SIZE": str(10 * len(texts) + 1)}
        load.take()
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dupq.cli", "models", "promote", "vA", "--no-progress"], env=env,
                       check=True)
        res["phases"]["1_today_one_process"] = {"seconds": round(time.perf_counter() - t, 1),
                                                **run_stats(url, "vA", names), **load.take()}
        print("phase 1:", res["phases"]["1_today_one_process"], flush=True)

        for phase, version in (("2_shared_one_node", "vB"), ("3_shared_three_nodes", "vC")):
            if version == "vC":
                for name in ("n1", "n2"):
                    node = Node(name, work, url, args.chunk)
                    nodes.append(node)
                    names[node.proc.pid] = name
                for node in nodes[1:]:
                    node.wait_up()
                load.live = list(nodes)
                time.sleep(3)  # every node reports itself (a promotion waits for the live ones to load it)
            load.take()
            t = time.perf_counter()
            status, body = n0.call("POST", f"/api/v1/models/{version}/promote", timeout=3600)
            secs = time.perf_counter() - t
            assert status == 200 and body["current"] == version, (status, body)
            res["phases"][phase] = {"seconds": round(secs, 1), **run_stats(url, version, names), **load.take()}
            print(f"phase {phase}:", res["phases"][phase], flush=True)
    finally:
        load.close()
        for node in nodes:
            node.stop()
        server.cleanup()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
