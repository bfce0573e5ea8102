"""Scoped (filtered) search: recall@10 against exact filtered search and p50 latency, usearch and pgvector.

The bank is N questions' vectors and metadata. ``--bank clusters``: random unit vectors around 200 Gaussian
centres (``--dim``), isotropic within each cluster, a hard case for any graph index; queries are other draws
from the same clusters. ``--bank real``: the base model's embeddings of real training questions topped up with
perturbed copies (the Scale section's 1M bank), real dev questions as queries. The metadata's filters have the
selectivities asked for: ``site`` is ``"big"`` for 50% of the questions, and ``tags`` holds ``t10`` / ``t1`` /
``t01`` independently with probability 10% / 1% / 0.1%. Each run also searches without a filter: the graph's
own recall on that bank.

For each backend the questions go through the real store (SQLite: ``question_fields``; PostgreSQL: the GIN
index on ``meta -> 'FIELD'``) and each filtered search through the real index with the store's scope
(:meth:`dupq.index.AnnIndex.search` / :meth:`dupq.index.pgvector.PgVectorIndex.search`), timed end to end (the
store's lookups included, the encoder excluded). The ground truth is an exact scan of the matching vectors in
numpy; every result is checked against the metadata (0 outside the filter, k whenever k match).

usearch is also run with its exact-scan threshold forced to 0 (always the graph) and to N (always an exact
scan of the scope), which is how ``SCOPE_EXACT_PER_ROOT`` was chosen.

Usage:
    flock /work/heavy.lock python scripts/bench_filter.py --n 100000 --out docs/bench_filter_100k.json
    python scripts/bench_filter.py --n 1000000 --usearch-modes default --scope-ef 400 --out docs/bench_filter_1m.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dupq.filters import QuestionFilter  # noqa: E402
from dupq.storage.records import NewQuestion  # noqa: E402

FILTERS = {  # selectivity -> filter
    0.5: {"site": "big"},
    0.1: {"tags": "t10"},
    0.01: {"tags": "t1"},
    0.001: {"tags": "t01"},
}
FIELDS = ("tags", "site")


def generate(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for s in range(0, m, 100_000):
            e = min(m, s + 100_000)
            v = centres[rng.integers(0, len(centres), e - s)] + 0.6 * rng.normal(size=(e - s, dim)).astype(np.float32)
            out[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    vecs, qs = draw(n), draw(queries)
    return vecs, qs, _metas(n, rng)


def generate_real(n: int, queries: int, data: Path, cache: Path, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Real geometry: the base model's embeddings of up to 110,000 real training questions, topped up to ``n``
    with perturbed copies (``bench_scale.perturbed_bank``: the 1M bank of the Scale section), real dev questions
    as queries; metadata as :func:`generate` draws it. Embeddings are cached in ``cache``."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_scale import cached_embeddings, perturbed_bank, real_questions

    dev, train = real_questions(data)
    real = cached_embeddings("train", train[:110_000], cache)[:n]
    qs = cached_embeddings("dev", dev[:1000], cache)[:queries]
    vecs = np.empty((n, real.shape[1]), dtype=np.float32)
    vecs[: len(real)] = real
    at = len(real)
    for _, v in perturbed_bank(real, n, seed=seed):
        vecs[at : at + len(v)] = v
        at += len(v)
    return vecs, qs, _metas(n, np.random.default_rng(seed))


def _metas(n: int, rng: np.random.Generator) -> list[dict]:
    big = rng.random(n) < 0.5
    t10, t1, t01 = rng.random(n) < 0.1, rng.random(n) < 0.01, rng.random(n) < 0.001
    metas = []
    for i in range(n):
        tags = [t for t, on in (("t10", t10[i]), ("t1", t1[i]), ("t01", t01[i])) if on]
        metas.append({"site": "big" if big[i] else f"s{i % 7}", "tags": tags})
    return metas


def truth(scores: np.ndarray, match: np.ndarray, k: int) -> list[set[int]]:
    """The exact filtered top k of each query: ``scores`` is (N, queries), every bank vector against each query."""
    rows = np.flatnonzero(match)
    out = []
    for j in range(scores.shape[1]):
        s = scores[rows, j]
        top = np.argpartition(-s, k - 1)[:k] if len(s) > k else np.arange(len(s))
        out.append({int(rows[t]) for t in top})
    return out


def run(index, store, vecs, qs, metas, k: int) -> dict:
    out = {}
    scores = np.concatenate([vecs[s : s + 100_000] @ qs.T for s in range(0, len(vecs), 100_000)])
    # No filter: the graph's own recall on this bank, which a filtered search through the graph cannot beat.
    want = truth(scores, np.ones(len(vecs), dtype=bool), k)
    times, recalls = [], []
    for q, w in zip(qs, want, strict=True):
        t0 = time.perf_counter()
        hits = index.search(q[None, :], k, None)[0]
        times.append((time.perf_counter() - t0) * 1000)
        recalls.append(len({int(h.id[1:]) for h in hits} & w) / len(w))
    out["1.0"] = {"filter": None, "matching": len(vecs), "recall@10": round(float(np.mean(recalls)), 4),
                  "p50_ms": round(statistics.median(times), 2), "p90_ms": round(float(np.percentile(times, 90)), 2)}
    print(f"  {1.0:>6}: {out['1.0']}", flush=True)
    for sel, flt in FILTERS.items():
        match = np.array([QuestionFilter.parse(flt, FIELDS).matches(m) for m in metas])
        want = truth(scores, match, k)
        times, recalls, outside, short = [], [], 0, 0
        for q, w in zip(qs, want, strict=True):
            t0 = time.perf_counter()
            scope = store.scope(QuestionFilter.parse(flt, FIELDS))
            hits = index.search(q[None, :], k, scope)[0]
            times.append((time.perf_counter() - t0) * 1000)
            rows = [int(h.id[1:]) for h in hits]
            outside += sum(not match[r] for r in rows)
            short += len(rows) < min(k, int(match.sum()))
            recalls.append(len(set(rows) & w) / len(w))
        out[str(sel)] = {"filter": flt, "matching": int(match.sum()), "recall@10": round(float(np.mean(recalls)), 4),
                         "p50_ms": round(statistics.median(times), 2),
                         "p90_ms": round(float(np.percentile(times, 90)), 2), "outside": outside, "short": short}
        print(f"  {sel:>6}: {out[str(sel)]}", flush=True)
    return out


def store_questions(store, metas, batch: int = 10_000) -> float:
    t0 = time.perf_counter()
    for s in range(0, len(metas), batch):
        store.add([NewQuestion(f"question {i}", f"q{i}", metas[i]) for i in range(s, min(len(metas), s + batch))])
    return time.perf_counter() - t0


def bench_usearch(vecs, qs, metas, k, workdir: Path, modes: list[str], scope_efs: list[int]) -> dict:
    from dupq.index import AnnIndex, AnnParams, VectorLog
    from dupq.storage.sqlite.store import QuestionStore

    store = QuestionStore(workdir / "dupq.sqlite3")
    store.index_fields(FIELDS)
    res: dict = {"store_s": round(store_questions(store, metas), 1)}
    print(f"usearch: stored {len(metas)} in {res['store_s']} s", flush=True)
    log = VectorLog(vecs.shape[1], workdir / "index")
    ids = [f"q{i}" for i in range(len(vecs))]
    for s in range(0, len(vecs), 100_000):
        log.add(ids[s : s + 100_000], vecs[s : s + 100_000])
        log.save(0)
    t0 = time.perf_counter()
    index = AnnIndex(log, min_size=1, background=False)
    res["build_s"] = round(time.perf_counter() - t0, 1)
    print(f"usearch: graph built in {res['build_s']} s", flush=True)
    if "default" in modes:
        res["default"] = run(index, store, vecs, qs, metas, k)
    for name, limit in (("graph_only", 0), ("exact_only", len(vecs))):
        if name not in modes:
            continue
        print(f"usearch, {name}:", flush=True)
        index.params = AnnParams(scope_exact_max=limit)
        res[name] = run(index, store, vecs, qs, metas, k)
    store.close()
    return res


def bench_pgvector(vecs, qs, metas, k, workdir: Path, modes: list[str], scope_efs: list[int]) -> dict:
    from dupq.config import Settings
    from dupq.index import pgvector
    from dupq.index.pgvector import PgVectorIndex
    from dupq.storage import open_backend
    from dupq.storage.postgres.embedded import create_database, start

    server, url = start(workdir / "pg")
    try:
        backend = open_backend(Settings(home=workdir / "home", seed_bank=None, filter_fields=FIELDS,
                                        database_url=create_database(url, "bench")), writer=True)
        res: dict = {"store_s": round(store_questions(backend.store, metas), 1)}
        print(f"pgvector: stored {len(metas)} in {res['store_s']} s", flush=True)
        index, _ = PgVectorIndex.open(backend.db, "bench", vecs.shape[1], "cosine")
        with backend.db.connection() as c:
            c.execute(f"DROP INDEX IF EXISTS {index.table}_hnsw")
        ids = [f"q{i}" for i in range(len(vecs))]
        for s in range(0, len(vecs), 20_000):
            index.add(ids[s : s + 20_000], vecs[s : s + 20_000])
        t0 = time.perf_counter()
        with backend.db.transaction() as c:
            index._create_hnsw(c)
        res["build_s"] = round(time.perf_counter() - t0, 1)
        with backend.db.connection() as c:
            c.execute(f"ANALYZE {index.table}")
            c.execute("ANALYZE questions")
        print(f"pgvector: HNSW built in {res['build_s']} s", flush=True)
        res["default"] = run(index, backend.store, vecs, qs, metas, k)
        default_ef = pgvector.SCOPE_EF_SEARCH
        for ef in scope_efs:  # the same graph searched with another floor on a filtered query's ef_search
            if ef == default_ef:
                continue
            print(f"pgvector, filtered ef_search >= {ef}:", flush=True)
            pgvector.SCOPE_EF_SEARCH = ef
            res[f"scope_ef_{ef}"] = run(index, backend.store, vecs, qs, metas, k)
        pgvector.SCOPE_EF_SEARCH = default_ef
        backend.close()
    finally:
        server.cleanup()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--backends", default="usearch,pgvector")
    ap.add_argument("--bank", choices=["clusters", "real"], default="clusters",
                    help="clusters: generated Gaussian clusters (isotropic within each: a hard case for a graph); "
                         "real: real question embeddings topped up with perturbed copies (needs --data)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="with --bank real")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dupq-bench",
                    help="with --bank real: where the real embeddings are cached")
    ap.add_argument("--usearch-modes", default="default,graph_only,exact_only",
                    help="usearch passes: the default threshold, the graph forced, the exact scan forced")
    ap.add_argument("--scope-ef", default="",
                    help="more pgvector passes over the same graph, each with this floor on a filtered query's "
                         "hnsw.ef_search (comma-separated; the default is dupq.index.pgvector.SCOPE_EF_SEARCH)")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.bank == "real":
        args.cache.mkdir(parents=True, exist_ok=True)
        vecs, qs, metas = generate_real(args.n, args.queries, args.data, args.cache)
    else:
        vecs, qs, metas = generate(args.n, args.dim, args.queries)
    result = {"n": args.n, "dim": vecs.shape[1], "queries": len(qs), "k": args.k, "bank": args.bank}
    with tempfile.TemporaryDirectory(prefix="dupq-bench-filter-", dir=args.workdir) as tmp:
        for b in args.backends.split(","):
            work = Path(tmp) / b
            work.mkdir()
            result[b] = (bench_usearch if b == "usearch" else bench_pgvector)(
                vecs, qs, metas, args.k, work, args.usearch_modes.split(","),
                [int(e) for e in args.scope_ef.split(",") if e])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
