"""Duplicate clusters (issue 25, target "Cluster collapse"): searches answer each cluster once (a script that
measures and prints, not a test).

Usage:
    python scripts/bench_clusters.py                                   # bank + ../shared/data/dev/qqp_pairs_dev.tsv
    python scripts/bench_clusters.py --dev PATH --limit 2000 --json out.json
    python scripts/bench_clusters.py --store-only                      # the store's part alone, seconds

0. **The store alone**: an import's 20,000 links closed (with their pairs) among 40,000 questions, a re-import of
   them, and the one query a collapsed search adds (``canonical_of`` on 10 hits).

Everything else goes through the real service (``DupQ.search`` on a fresh SQLite home, the packaged base model), first
with no question closed, then with the clusters closed (``DupQ.close_as_duplicate``):

1. **The bundled bank** (370 questions, 78 paraphrase groups): each group closed onto its first member. Queries:
   every bank question's text. Reported: the share of searches whose top 10 holds 10 distinct clusters (a cluster:
   a paraphrase group, or a question of no group), the mean number of distinct clusters in the top 10, and the
   search latency p50 (the collapse's cost: one more store query, and more index hits when clusters fill the top).
2. **Duplicate retrieval on the dev pairs**: the duplicate clusters of the dev file (transitive closure of its
   positive pairs, :func:`dupq.data.duplicate_clusters`). From each cluster of two or more questions, its first
   question is held out as the query; every other dev question is stored. Not collapsed: the relevant results are
   the query's cluster-mates (nDCG@10, binary relevance, as ``dupq eval`` computes it:
   :func:`dupq.evaluation.metrics.retrieval_metrics`). Collapsed: the cluster's other questions are closed onto its
   first stored one, and the one relevant result is that canonical question (each answer is a cluster, so nDCG@10
   asks "how high does the right cluster come", with no credit for repeating it). Both are printed, with MRR@10,
   recall@1 and the mean number of distinct clusters in the top 10.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dupq.bank import bank_groups, load_default_bank  # noqa: E402
from dupq.config import Settings  # noqa: E402
from dupq.data import duplicate_clusters, read_pairs  # noqa: E402
from dupq.evaluation.metrics import retrieval_metrics  # noqa: E402
from dupq.service import DupQ  # noqa: E402

K = 10


def cpu_kind() -> str:
    flags = subprocess.run("lscpu | grep -o 'avx512_bf16\\|avx2' | sort -u", shell=True, capture_output=True,
                           text=True).stdout.split()
    return ",".join(flags) or platform.machine()


def run_searches(svc: DupQ, queries: dict[str, str], k: int = K) -> tuple[dict[str, list[str]], list[float]]:
    """Each query's result ids, best first, and each search's wall time (ms)."""
    ranked, took = {}, []
    for qid, text in queries.items():
        t0 = time.perf_counter()
        res = svc.search(text, k=k)["results"]
        took.append((time.perf_counter() - t0) * 1000)
        ranked[qid] = [r["id"] for r in res]
    return ranked, took


def distinct(ranked: dict[str, list[str]], cluster: dict[str, Any], k: int = K) -> tuple[float, float]:
    """Mean number of distinct clusters in the top k, and the share of rankings with k distinct clusters."""
    counts = [len({cluster[i] for i in ids[:k]}) for ids in ranked.values()]
    return statistics.mean(counts), sum(c == k for c in counts) / len(counts)


def p50(ms: list[float]) -> float:
    return round(statistics.median(ms), 2)


def close_groups(svc: DupQ, groups: list[list[str]]) -> int:
    n = 0
    for ids in groups:
        for other in ids[1:]:
            svc.close_as_duplicate(other, ids[0], actor="bench")
            n += 1
    return n


def bench_bank(home: Path) -> dict[str, Any]:
    records = load_default_bank()
    groups = bank_groups(records)
    cluster = {r["id"]: ("group", r["meta"]["group"]) if r["meta"]["group"] else ("question", r["id"]) for r in records}
    queries = {r["id"]: r["text"] for r in records}
    with DupQ(Settings(home=home, seed_bank="default")) as svc:
        svc.warm_up()
        before, took_before = run_searches(svc, queries)
        closed = close_groups(svc, list(groups.values()))
        after, took_after = run_searches(svc, queries)
    mean_b, full_b = distinct(before, cluster)
    mean_a, full_a = distinct(after, cluster)
    return {
        "questions": len(records), "groups": len(groups), "closed": closed, "clusters": len(set(cluster.values())),
        "queries": len(queries),
        "not_collapsed": {"mean_distinct_top10": round(mean_b, 3), "share_10_distinct": round(full_b, 4),
                          "search_p50_ms": p50(took_before)},
        "collapsed": {"mean_distinct_top10": round(mean_a, 3), "share_10_distinct": round(full_a, 4),
                      "search_p50_ms": p50(took_after)},
    }


def bench_dev(home: Path, dev: Path, limit: int | None) -> dict[str, Any]:
    pairs = read_pairs(dev).pairs[:limit]
    clusters = duplicate_clusters(pairs)  # text -> cluster id, texts in first appearance order
    members: dict[int, list[str]] = {}
    for text, c in clusters.items():
        members.setdefault(c, []).append(text)
    multi = [m for m in members.values() if len(m) > 1]
    held = {m[0] for m in multi}  # each multi-member cluster's first question: the query, not stored
    ids = {text: f"d{i}" for i, text in enumerate(t for t in clusters if t not in held)}
    cluster = {ids[t]: c for t, c in clusters.items() if t in ids}
    queries = {f"q{n}": m[0] for n, m in enumerate(multi)}
    qrels = {f"q{n}": {ids[t] for t in m[1:]} for n, m in enumerate(multi)}
    canon = {f"q{n}": {ids[m[1]]} for n, m in enumerate(multi)}
    with DupQ(Settings(home=home, seed_bank=None)) as svc:
        t0 = time.perf_counter()
        svc.add_questions({"id": i, "text": t, "meta": {"source": "bench"}} for t, i in ids.items())
        embed_s = time.perf_counter() - t0
        svc.warm_up()
        before, took_before = run_searches(svc, queries)
        closed = close_groups(svc, [[ids[t] for t in m[1:]] for m in multi if len(m) > 2])
        after, took_after = run_searches(svc, queries)
    plain = retrieval_metrics(before, qrels)
    collapsed = retrieval_metrics(after, canon)
    mean_b, _ = distinct(before, cluster)
    mean_a, full_a = distinct(after, cluster)
    return {
        "dev": str(dev), "stored": len(ids), "queries": len(queries), "closed": closed,
        "embed_seconds": round(embed_s, 1),
        "not_collapsed": {**{k: round(v, 4) if isinstance(v, float) else v for k, v in plain.items()},
                          "mean_distinct_top10": round(mean_b, 3), "search_p50_ms": p50(took_before)},
        "collapsed": {**{k: round(v, 4) if isinstance(v, float) else v for k, v in collapsed.items()},
                      "mean_distinct_top10": round(mean_a, 3), "share_10_distinct": round(full_a, 4),
                      "search_p50_ms": p50(took_after)},
    }


def bench_store(folder: Path, n: int = 40_000) -> dict[str, Any]:
    """The store's part alone (no model): an import's links closed in one transaction (``close_duplicates``, each
    with its labelled pair), the same links again (a re-import: all already so), and ``canonical_of`` on the 10
    hits of a search (the one query a collapsed search adds)."""
    from dupq.storage.records import NewQuestion
    from dupq.storage.sqlite.store import QuestionStore

    store = QuestionStore(folder / "store.sqlite3")
    store.add([NewQuestion(f"stored question number {i}?", f"q{i}") for i in range(n)])
    links = [(f"q{i}", f"q{i - 1}") for i in range(1, n, 2)]
    t0 = time.perf_counter()
    made = store.close_duplicates(links, actor="bench", pair_source="bench", labelled=set()).count("made")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = store.close_duplicates(links, actor="bench", pair_source="bench", labelled=store.labelled_keys())
    second = time.perf_counter() - t0
    hits = [f"q{i}" for i in range(10)]
    t0 = time.perf_counter()
    for _ in range(1000):
        store.canonical_of(hits)
    lookup_ms = (time.perf_counter() - t0)
    store.close()
    return {"questions": n, "links": len(links), "made": made, "links_per_s": round(len(links) / first),
            "reimport_existing": again.count("existing"), "reimport_s": round(second, 2),
            "canonical_of_10_hits_ms": round(lookup_ms, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", type=Path, default=ROOT.parent / "shared" / "data" / "dev" / "qqp_pairs_dev.tsv")
    ap.add_argument("--limit", type=int, default=None, help="only the first N dev pairs (a smoke run)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--store-only", action="store_true", help="only the store's part (no model, seconds)")
    args = ap.parse_args()
    out: dict[str, Any] = {"cpu": cpu_kind(), "threads": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="dupq-clusters-") as tmp:
        out["store"] = bench_store(Path(tmp))
        print(json.dumps({"store": out["store"]}, indent=1), flush=True)
        if not args.store_only:
            out["bank"] = bench_bank(Path(tmp) / "bank")
            print(json.dumps({"bank": out["bank"]}, indent=1), flush=True)
            if args.dev.is_file():
                out["dev"] = bench_dev(Path(tmp) / "dev", args.dev, args.limit)
                print(json.dumps({"dev": out["dev"]}, indent=1), flush=True)
            else:
                print(f"no dev file at {args.dev}: the dev part is skipped", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
