"""PostgreSQL + pgvector against dupq's own usearch index, on the same real question embeddings.

For N vectors (default 100k real QQP/AskUbuntu train questions, embedded by the served encoder; cached
under ``--cache`` with scripts/bench_scale.py's file names, so both scripts share them):

* import: questions into ``questions`` (binary COPY through :class:`dupq.storage.postgres.store.PgQuestionStore`), and
  their vectors into a version's table (binary COPY, index built afterwards), per second;
* build: HNSW build time and on-disk size, ``halfvec`` expression index vs ``vector`` (m=16,
  ef_construction=64), and dupq's usearch graph (:class:`dupq.index.AnnIndex`);
* search: p50 / p99 of one query (index only, one connection) and recall@10 against exact search on real
  dev-question embeddings, at several ``hnsw.ef_search`` values;
* node: a ``dupq serve --production`` node on that database: its RSS (it holds no vectors) and the whole
  HTTP search p50 / p99 (encode + pgvector + lookup).

Usage:
    python scripts/bench_pg.py --n 100000 [--cache /tmp/dupq-bench] [--queries 300]
    python scripts/bench_pg.py --n 1000000 --real 100000 --kinds halfvec --no-usearch   # 1M, the default kind
    python scripts/bench_pg.py --n 1000000 --real 100000 --kinds "" --no-node            # usearch alone, same vectors
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def recall(got: list[list[str]], want: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def exact_top(bank: np.ndarray, queries: np.ndarray, k: int = 10) -> list[list[int]]:
    out = []
    for s in range(0, len(queries), 64):
        sc = queries[s : s + 64] @ bank.T
        top = np.argpartition(-sc, k, axis=1)[:, :k]
        for row, t in zip(sc, top, strict=True):
            out.append(list(t[np.argsort(-row[t])]))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_usearch(bank: np.ndarray, queries: np.ndarray, want: list[list[str]]) -> dict:
    """dupq's in-process usearch graph (:class:`dupq.index.AnnIndex`) on the same vectors."""
    from dupq.index import AnnIndex, VectorLog

    with tempfile.TemporaryDirectory() as tmp:
        log = VectorLog(bank.shape[1], Path(tmp))
        log.add([f"r{i}" for i in range(len(bank))], bank)
        log.save(0)
        t = time.perf_counter()
        ann = AnnIndex(log, min_size=1, background=False)
        build_s = time.perf_counter() - t
        lat, got = [], []
        for q in queries:
            t = time.perf_counter()
            hits = ann.search(q[None, :], 10)[0]
            lat.append((time.perf_counter() - t) * 1000)
            got.append([h.id for h in hits])
        ann.close()
        size = sum(f.stat().st_size for f in Path(tmp).iterdir() if f.name.startswith("ann"))
    return {"build_s": build_s, "graph_bytes": size, "vectors_bytes": bank.nbytes,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "recall@10": recall(got, want)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--real", type=int, default=100_000,
                    help="real embeddings; the rest of --n are perturbed copies (bench_scale.perturbed_bank)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dupq-bench"))
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--ef", default="40,100,200")
    ap.add_argument("--requests", type=int, default=300, help="HTTP searches through the node")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--kinds", default="halfvec,vector", help="pgvector HNSW kinds to build and measure")
    ap.add_argument("--no-node", action="store_true", help="skip the web node (RSS, HTTP search)")
    ap.add_argument("--no-usearch", action="store_true",
                    help="skip dupq's own index (its 1M figures are in docs/benchmarks.md, Speed)")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from bench_scale import cached_embeddings, perturbed_bank, real_questions

    from dupq.index.pgvector import PgVectorIndex
    from dupq.storage.postgres.db import Database
    from dupq.storage.postgres.embedded import create_database, drop_database, start
    from dupq.storage.postgres.store import PgQuestionStore
    from dupq.storage.records import NewQuestion

    res: dict = {"n": args.n, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    dev, train = real_questions(args.data)
    n_real = min(args.n, args.real, len(train))
    bank = cached_embeddings("train", train[:n_real], args.cache)
    if args.n > len(bank):
        extra = [v for _, v in perturbed_bank(bank, args.n)]
        bank = np.vstack([bank, *extra])
    queries = cached_embeddings("dev", dev[:1000], args.cache)[: args.queries]
    texts = train[:n_real] + [f"synthetic question {i}" for i in range(n_real, len(bank))]
    res["real"] = n_real
    print(f"{len(bank)} bank vectors, {len(queries)} queries", flush=True)
    truth = exact_top(bank, queries)
    want = [[f"r{i}" for i in t] for t in truth]

    if not args.no_usearch:  # dupq's own index on the same vectors
        res["usearch"] = bench_usearch(bank, queries, want)
        print("usearch", json.dumps(res["usearch"]), flush=True)
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds and args.no_node:  # dupq's own index only: no database needed
        res["load_after"] = os.getloadavg()[0]
        if args.out:
            args.out.write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return 0

    server, url = start(args.cache / "pg")
    name = f"bench{len(bank)}"
    drop_database(url, name)
    db_url = create_database(url, name)
    db = Database(db_url, max_size=4)
    store = PgQuestionStore(db)

    t = time.perf_counter()
    for s in range(0, len(bank), 5000):
        store.add([NewQuestion(texts[i], f"r{i}", {"source": "import"}) for i in range(s, min(s + 5000, len(bank)))])
    res["import_questions_per_s"] = len(bank) / (time.perf_counter() - t)
    with db.connection() as c:
        c.execute("ANALYZE questions")
    print("questions/s", round(res["import_questions_per_s"]), flush=True)

    for kind, version in [(k, v) for k, v in (("halfvec", "base"), ("vector", "bench-vector")) if k in kinds]:
        idx, _ = PgVectorIndex.open(db, version, bank.shape[1], "cosine", kind=kind)
        with db.connection() as c:
            c.execute(f"DROP INDEX IF EXISTS {idx.table}_hnsw")
        t = time.perf_counter()
        for s in range(0, len(bank), 5000):
            idx.add([f"r{i}" for i in range(s, min(s + 5000, len(bank)))], bank[s : s + 5000])
        copy_s = time.perf_counter() - t
        t = time.perf_counter()
        with db.transaction() as c:
            idx._create_hnsw(c)
        build_s = time.perf_counter() - t
        with db.connection() as c:
            c.execute(f"ANALYZE {idx.table}")
        r = {"vectors_per_s": len(bank) / copy_s, "build_s": build_s, **idx.size_bytes()}
        for ef in [int(x) for x in args.ef.split(",")]:
            db.ef_search = ef
            with db.connection() as c:
                c.execute(f"SET hnsw.ef_search = {ef}")
            lat, got = [], []
            for q in queries:
                t = time.perf_counter()
                hits = idx.search(q[None, :], 10)[0]
                lat.append((time.perf_counter() - t) * 1000)
                got.append([h.id for h in hits])
            r[f"ef{ef}"] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "recall@10": recall(got, want)}
        db.ef_search = 100
        res[f"pgvector_{kind}"] = r
        print(kind, json.dumps(r), flush=True)

    if not args.no_node:
        res["node"] = bench_node(db_url, dev[: args.requests])
        print("node", json.dumps(res["node"]), flush=True)
    res["load_after"] = os.getloadavg()[0]
    db.close()
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    server.cleanup()
    return 0


def bench_node(db_url: str, qtexts: list[str]) -> dict:
    """A web node on this database: RSS (no vectors in the process) and the whole HTTP search."""
    home = Path(tempfile.mkdtemp(prefix="dupq-bench-pg-"))
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "DUPQ_HOME": str(home), "DUPQ_DATABASE_URL": db_url, "DUPQ_SEED_BANK": "",
           "DUPQ_RATE_LIMIT_SEARCH": ""}
    proc = subprocess.Popen([sys.executable, "-m", "dupq.cli", "serve", "--production", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() - t0 < 600, "node did not start"
                time.sleep(0.5)
        lat = []
        for qt in qtexts:
            body = json.dumps({"question": qt, "k": 10}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/search", data=body,
                                         headers={"content-type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as r:
                out = json.load(r)
            lat.append((time.perf_counter() - t) * 1000)
            assert out["results"], out
        return {"rss_mb": rss_mb(proc.pid), "http_p50_ms": pct(lat, 50), "http_p99_ms": pct(lat, 99),
                "http_mean_ms": statistics.mean(lat), "requests": len(lat)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
