"""Scale benchmark of dupq: ANN search, memory, training speed (a benchmark that prints one table, not a test).

The latency figures of one search, one command and one import are ``scripts/bench_speed.py`` (issue 11):
its baselines run in their own processes. The ``encode``, ``import`` and ``http`` sections below measure
the baseline in the same process as the server's client, which made them read contention as speed; they
are kept for the bulk-encode AP check only and are not in the default list.

Every speed figure is a ratio to a baseline measured in the same run, because the 2-core machine is shared
and absolute numbers move with the load: baselines and candidates are interleaved where they can be.

Usage:
    python scripts/bench_scale.py [--data ../shared/data] [--cache /tmp/dupq-bench]
                                  [--sections ann,rss,train] [--quick]

Sections (each row of the table):
    encode  bulk encode q/s: the fast path (OpenVINO bf16) vs plain ``SentenceTransformer.encode`` fp32 at
            batch 32, over every unique dev question, interleaved in chunks; pair AP on the dev pairs with both.
    import  ``dupq import`` of 100k real questions into a fresh home (a subprocess: model load, SQLite,
            index and its HNSW graph included) vs the plain fp32 encode rate of the encode section.
    http    one search over HTTP (``dupq serve --production`` on the 100k home, one client, >= 500 distinct
            real questions) vs one bare fp32 ``SentenceTransformer.encode`` of the same question, alternated;
            plus concurrent single-question encodes with and without micro-batching.
    ann     top-10 over 100k real question embeddings and over 1M (the real ones plus perturbed copies, see
            ``perturbed_bank``): exact vs the ANN index (ms p50, recall@10 against exact), real dev
            questions (never in the bank) as queries.
    rss     the production server's resident memory with the 1M bank loaded, after searches.
    libs    (not in the default list, printed only) usearch vs FAISS vs hnswlib on the 100k bank.
    train   training pairs/s of ``dupq.training.recipe.train`` (bf16) vs a plain fp32 ``SentenceTransformerTrainer``,
            same contrastive loss, batch size and pairs.

Heavy artefacts (embeddings of the real questions, the 1M bank and its graph, the 100k home) are cached
under ``--cache`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_serve import free_port, post  # noqa: E402  (scripts/ is on sys.path when run as a script)

from dupq.data import read_pairs  # noqa: E402
from dupq.evaluation import pair_metrics  # noqa: E402
from dupq.models.encoder import SiameseEncoder, load_sentence_transformer, packaged_model_path  # noqa: E402

ROWS: list[dict[str, str]] = []
FACTS: dict[str, Any] = {}


def row(what: str, dupq: str, baseline: str, ratio: str, note: str = "") -> None:
    ROWS.append({"what": what, "dupq": dupq, "baseline": baseline, "ratio": ratio, "note": note})
    print(f"  -> {what}: {dupq} vs {baseline} = {ratio} {note}", flush=True)


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p))


def read_texts(path: Path) -> list[str]:
    out = []
    with open(path, newline="") as f:
        r = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(r)
        for rec in r:
            out += [rec[2], rec[3]]
    return out


def real_questions(data: Path) -> tuple[list[str], list[str]]:
    """Unique dev questions, and unique train questions that are not dev questions (the bank)."""
    dev = list(dict.fromkeys(read_texts(data / "dev/qqp_pairs_dev.tsv")))
    seen = set(dev)
    train = read_texts(data / "train/qqp_pairs_train.tsv") + read_texts(data / "train/askubuntu_pairs_train.tsv")
    return dev, [t for t in dict.fromkeys(train) if t not in seen]


def fast_encoder(cache: Path) -> SiameseEncoder:
    return SiameseEncoder.from_pretrained(backend="openvino", export_dir=cache / "openvino")


def cached_embeddings(name: str, texts: list[str], cache: Path) -> np.ndarray:
    """Fast-path embeddings of ``texts``, computed once and cached (minutes for 100k on 2 cores)."""
    f = cache / f"emb_{name}_{len(texts)}.npy"
    if f.exists():
        return np.load(f)
    print(f"embedding {len(texts)} {name} questions (cached in {f})", flush=True)
    enc = fast_encoder(cache)
    out = np.vstack([enc.encode(texts[i : i + 4096]) for i in range(0, len(texts), 4096)])
    np.save(f, out)
    return out


# -- encode ---------------------------------------------------------------------------------------
def section_encode(args: argparse.Namespace) -> None:
    print("[encode] fast path vs plain SentenceTransformer.encode fp32, batch 32", flush=True)
    pairs = read_pairs(args.data / "dev/qqp_pairs_dev.tsv").pairs
    texts = list(dict.fromkeys([p.question1 for p in pairs] + [p.question2 for p in pairs]))
    if args.quick:
        pairs = pairs[:1000]
        texts = list(dict.fromkeys([p.question1 for p in pairs] + [p.question2 for p in pairs]))
    st = load_sentence_transformer(packaged_model_path())
    fast = fast_encoder(args.cache)
    fast.encode(texts[:64])
    st.encode(texts[:64], batch_size=32)
    ref = np.empty((len(texts), 384), np.float32)
    got = np.empty_like(ref)
    t_ref = t_fast = 0.0
    for s in range(0, len(texts), 512):  # alternate chunks so both see the same machine load
        chunk = texts[s : s + 512]
        t = time.perf_counter()
        ref[s : s + len(chunk)] = st.encode(chunk, batch_size=32, normalize_embeddings=True)
        t_ref += time.perf_counter() - t
        t = time.perf_counter()
        got[s : s + len(chunk)] = fast.encode(chunk)
        t_fast += time.perf_counter() - t
    pos = {t: i for i, t in enumerate(texts)}
    a = np.array([pos[p.question1] for p in pairs])
    b = np.array([pos[p.question2] for p in pairs])
    labels = [p.label for p in pairs]
    ap_ref = pair_metrics((ref[a] * ref[b]).sum(1), labels)["ap"]
    ap_fast = pair_metrics((got[a] * got[b]).sum(1), labels)["ap"]
    cos = (ref * got).sum(1)
    FACTS["plain_rate"] = len(texts) / t_ref
    row(
        f"bulk encode, {len(texts)} dev questions",
        f"{len(texts) / t_fast:.0f} q/s",
        f"{len(texts) / t_ref:.0f} q/s",
        f"{t_ref / t_fast:.2f}x",
        f"dev pair AP {ap_fast:.4f} vs {ap_ref:.4f} ({100 * (ap_fast - ap_ref):+.2f} pt, {len(pairs)} pairs); "
        f"cosine to fp32 mean {cos.mean():.5f}, min {cos.min():.4f}",
    )


# -- import -----------------------------------------------------------------------------------------
def dupq_cmd() -> list[str]:
    return [sys.executable, "-m", "dupq.cli"]


def section_import(args: argparse.Namespace) -> None:
    n = 20_000 if args.quick else 100_000
    print(f"[import] dupq import of {n} real questions into a fresh home", flush=True)
    _, train = real_questions(args.data)
    src = args.cache / f"import_{n}.txt"
    src.write_text("\n".join(train[:n]) + "\n")
    home = args.cache / f"home_{n}"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "DUPQ_HOME": str(home), "DUPQ_SEED_BANK": ""}
    t = time.perf_counter()
    out = subprocess.run([*dupq_cmd(), "import", str(src), "--no-progress"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    FACTS["home"] = home
    rate = n / seconds
    plain = FACTS.get("plain_rate")
    row(
        f"`dupq import` {n} questions (fresh home, graph built)",
        f"{rate:.0f} q/s ({seconds:.0f} s)",
        f"{plain:.0f} q/s plain fp32 encode" if plain else "n/a",
        f"{rate / plain:.2f}x" if plain else "n/a",
        out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "",
    )


# -- http -------------------------------------------------------------------------------------------
def start_server(home: Path, env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DUPQ_HOME": str(home), **(env_extra or {})}
    proc = subprocess.Popen(
        [*dupq_cmd(), "serve", "--production", "--threads", "4", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 900
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5):
                return proc, base
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("server exited during start") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def rss(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024**2  # GiB
    return out


def section_http(args: argparse.Namespace) -> None:
    home = FACTS.get("home") or args.cache / f"home_{20_000 if args.quick else 100_000}"
    if not (home / "dupq.sqlite3").exists():
        home = Path(tempfile.mkdtemp(prefix="dupq-bench-"))  # the embedded bank
    dev, _ = real_questions(args.data)
    queries = dev[: args.requests]
    print(f"[http] {len(queries)} searches over HTTP on {home} vs bare fp32 encodes", flush=True)
    st = load_sentence_transformer(packaged_model_path())
    proc, base = start_server(home)
    try:
        for q in queries[:20]:  # warm both
            post(base + "/api/v1/search", {"question": q, "k": 10})
            st.encode([q])
        http, bare, took = [], [], []
        for q in queries:
            t = time.perf_counter()
            body = post(base + "/api/v1/search", {"question": q, "k": 10})
            http.append((time.perf_counter() - t) * 1000)
            took.append(body["took_ms"])
            t = time.perf_counter()
            st.encode([q])
            bare.append((time.perf_counter() - t) * 1000)
        with urllib.request.urlopen(base + "/healthz") as r:
            n_indexed = json.load(r)["indexed"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    row(
        f"search over HTTP, k=10, {len(queries)} requests, one client ({n_indexed} stored)",
        f"p50 {statistics.median(http):.2f} ms, p99 {pct(http, 99):.2f} ms",
        f"bare fp32 encode p50 {statistics.median(bare):.2f} ms, p99 {pct(bare, 99):.2f} ms",
        f"{statistics.median(http) / statistics.median(bare):.2f}x",
        f"server-side took_ms p50 {statistics.median(took):.2f} ms",
    )
    # Micro-batching: the same concurrent single-question encodes with and without coalescing.
    enc = fast_encoder(args.cache)
    rt = enc.runtime
    qs = dev[1000:1000 + (96 if args.quick else 384)]
    rates = {}
    for _round in range(2):
        for mb in (False, True):
            rt.microbatch = mb
            t = time.perf_counter()
            threads = [
                threading.Thread(target=lambda part: [enc.encode([q]) for q in part], args=(qs[i::4],))
                for i in range(4)
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            rates.setdefault(mb, []).append(len(qs) / (time.perf_counter() - t))
    rt.microbatch = True
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    row(
        "4 concurrent clients, single-question encodes",
        f"{on:.0f} q/s micro-batched",
        f"{off:.0f} q/s one at a time",
        f"{on / off:.2f}x",
        "opportunistic coalescing, no waiting window",
    )


# -- ann --------------------------------------------------------------------------------------------
def perturbed_bank(real: np.ndarray, total: int, seed: int = 0, chunk: int = 100_000):
    """Yield chunks of ``total - len(real)`` synthetic question vectors made from the real ones.

    Each is ``normalize(v_i + a * v_j + s * L z)``: a real question ``v_i``, blended with a little of another
    random real question ``v_j`` (a in [0, 0.3]) and Gaussian noise shaped by the real embeddings' covariance
    (``L L^T = cov``, so it stays in the directions real questions vary in), scaled so a copy sits at a
    cosine of about 0.8 to its source: near-duplicates and in-between questions, never exact copies.
    """
    rng = np.random.default_rng(seed)
    sample = real[rng.choice(len(real), min(20_000, len(real)), replace=False)]
    cov = np.cov(sample.T) + 1e-6 * np.eye(real.shape[1])
    lower = np.linalg.cholesky(cov).astype(np.float32)
    scale = 0.6 / np.sqrt(np.trace(cov))
    left = total - len(real)
    while left > 0:
        m = min(chunk, left)
        src = rng.integers(0, len(real), m)
        other = rng.integers(0, len(real), m)
        a = rng.uniform(0, 0.3, m).astype(np.float32)[:, None]
        z = rng.standard_normal((m, real.shape[1]), dtype=np.float32)
        v = real[src] + a * real[other] + scale * (z @ lower.T)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        yield src, v.astype(np.float32)
        left -= m


def build_bank(path: Path, n: int, real: np.ndarray) -> None:
    """A VectorLog of ``n`` vectors (ids r0..) at ``path`` and its graph, unless already cached there."""
    from dupq.index import AnnIndex, VectorLog

    if (path / "ann.json").exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    log = VectorLog(real.shape[1], path)
    base = real[: min(n, len(real))]
    log.add([f"r{i}" for i in range(len(base))], base)
    log.save(0)
    if n > len(base):
        cos = []
        for src, v in perturbed_bank(base, n):
            start = log._n
            log.add([f"r{i}" for i in range(start, start + len(v))], v)
            log.save(0)
            cos.append(float((v * base[src]).sum(1).mean()))
        (path / "perturbed.json").write_text(json.dumps({"mean_cos_to_source": float(np.mean(cos))}))
    t = time.perf_counter()
    print(f"building the graph of {n} vectors in {path} ...", flush=True)
    idx = AnnIndex(log, min_size=1, background=False)
    (path / "build.json").write_text(json.dumps({"seconds": time.perf_counter() - t, "threads": os.cpu_count()}))
    idx.close()


def section_ann(args: argparse.Namespace) -> None:
    from dupq.index import ExactIndex, open_index

    dev, train = real_questions(args.data)
    n_real = 110_000
    real = cached_embeddings("train", train[:n_real], args.cache)
    queries = cached_embeddings("dev", dev[:1000], args.cache)[: args.queries]
    for n in (20_000,) if args.quick else (100_000, 1_000_000):
        path = args.cache / f"ann_{n}"
        build_bank(path, n, real[:n] if n <= len(real) else real)
        t = time.perf_counter()
        idx, intact = open_index(path, 384, "cosine", ann_min_size=1)
        load_s = time.perf_counter() - t
        assert intact and idx.uses_graph and idx._job is None, "the saved graph should load without a rebuild"
        exact = ExactIndex(idx.log)
        ann_lat, exact_lat, recall = [], [], []
        n_exact = min(len(queries), args.exact_queries)
        for i, q in enumerate(queries):
            t = time.perf_counter()
            got = idx.search(q[None], 10)[0]
            ann_lat.append((time.perf_counter() - t) * 1000)
            if i < n_exact:
                t = time.perf_counter()
                want = exact.search(q[None], 10)[0]
                exact_lat.append((time.perf_counter() - t) * 1000)
                recall.append(len({h.id for h in got} & {h.id for h in want}) / 10)
        build = json.loads((path / "build.json").read_text())
        note = f"graph built once in {build['seconds']:.0f} s, reloaded in {load_s:.1f} s"
        pert = path / "perturbed.json"
        if pert.exists():
            note += (
                f"; {n - len(real)} perturbed copies, mean cosine to source "
                f"{json.loads(pert.read_text())['mean_cos_to_source']:.3f}"
            )
        a50, e50 = statistics.median(ann_lat), statistics.median(exact_lat)
        row(
            f"top-10 over {n:,} ({len(queries)} real queries; exact on {n_exact})",
            f"ANN p50 {a50:.2f} ms (p99 {pct(ann_lat, 99):.2f}), recall@10 {np.mean(recall):.4f}",
            f"exact p50 {e50:.2f} ms",
            f"{a50 / e50:.3f}x",
            note,
        )
        for ef in args.sweep_ef:  # search-time setting: same graph, other candidate lists
            idx.params = replace(idx.params, expansion_search=ef)
            idx._graph.index.expansion_search = ef
            lat, rec = [], []
            for q in queries[:n_exact]:
                t = time.perf_counter()
                got = idx.search(q[None], 10)[0]
                lat.append((time.perf_counter() - t) * 1000)
                rec.append(len({h.id for h in got} & {h.id for h in exact.search(q[None], 10)[0]}) / 10)
            print(f"    ef {ef}: p50 {statistics.median(lat):.2f} ms, recall@10 {np.mean(rec):.4f}", flush=True)
        idx.close()


def section_libs(args: argparse.Namespace) -> None:
    """Not in the table: how the HNSW libraries compare on 100k real embeddings (why usearch; printed only)."""
    import faiss
    import hnswlib
    from usearch.index import Index

    _, train = real_questions(args.data)
    bank = cached_embeddings("train", train[:110_000], args.cache)[:100_000]
    dev, _ = real_questions(args.data)
    qs = cached_embeddings("dev", dev[:1000], args.cache)[: args.exact_queries]
    gt = np.argsort(-(qs @ bank.T), axis=1)[:, :10]
    ids = np.arange(len(bank))
    print(f"[libs] HNSW libraries on {len(bank)} real embeddings, M=16, efConstruction=128, "
          f"{len(qs)} queries, 32 candidates re-ranked exactly (hnswlib: its own f32 top-10)", flush=True)

    def report(name: str, search, build_s: float) -> None:
        for ef, set_ef in search["efs"]:
            set_ef()
            lat, rec = [], []
            for i, q in enumerate(qs):
                t = time.perf_counter()
                cand = search["fn"](q)
                cand = cand[cand >= 0]
                top = cand[np.argsort(-(bank[cand] @ q))[:10]]
                lat.append((time.perf_counter() - t) * 1000)
                rec.append(len(set(top.tolist()) & set(gt[i].tolist())) / 10)
            print(f"    {name:22s} ef {ef:3d}: build {build_s:5.0f} s, p50 {statistics.median(lat):.3f} ms, "
                  f"recall@10 {np.mean(rec):.4f}", flush=True)

    for dtype in ("i8", "f16"):
        u = Index(ndim=384, metric="cos", dtype=dtype, connectivity=16, expansion_add=128)
        t = time.perf_counter()
        u.add(ids.astype(np.uint64), bank, threads=2)
        b = time.perf_counter() - t
        efs = [(ef, lambda ef=ef, u=u: setattr(u, "expansion_search", ef)) for ef in (64, 128, 192)]
        fn = lambda q, u=u: u.search(q, 32, threads=1).keys.astype(np.int64)  # noqa: E731
        report(f"usearch {dtype}", {"efs": efs, "fn": fn}, b)
    faiss.omp_set_num_threads(2)
    for name, index in (
        ("faiss HNSWFlat", faiss.IndexHNSWFlat(384, 16, faiss.METRIC_INNER_PRODUCT)),
        ("faiss HNSWSQ fp16", faiss.IndexHNSWSQ(384, faiss.ScalarQuantizer.QT_fp16, 16, faiss.METRIC_INNER_PRODUCT)),
    ):
        index.hnsw.efConstruction = 128
        t = time.perf_counter()
        if not index.is_trained:
            index.train(bank[:10_000])
        index.add(bank)
        b = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        efs = [(ef, lambda ef=ef, index=index: setattr(index.hnsw, "efSearch", ef)) for ef in (64, 128, 192)]
        report(name, {"efs": efs, "fn": lambda q, index=index: index.search(q[None], 32)[1][0]}, b)
        faiss.omp_set_num_threads(2)
    h = hnswlib.Index(space="ip", dim=384)
    h.init_index(max_elements=len(bank), ef_construction=128, M=16)
    h.set_num_threads(2)
    t = time.perf_counter()
    h.add_items(bank, ids)
    b = time.perf_counter() - t
    h.set_num_threads(1)
    efs = [(ef, lambda ef=ef: h.set_ef(ef)) for ef in (64, 128, 192)]
    report("hnswlib f32", {"efs": efs, "fn": lambda q: h.knn_query(q, 32)[0][0].astype(np.int64)}, b)


# -- rss --------------------------------------------------------------------------------------------
def section_rss(args: argparse.Namespace) -> None:
    """A home whose store and index hold the cached 1M bank; the production server's RSS after searches."""
    from dupq.config import Settings
    from dupq.service import DupQ
    from dupq.storage.sqlite.store import QuestionStore

    n = 20_000 if args.quick else 1_000_000
    bank = args.cache / f"ann_{n}"
    if not (bank / "ann.json").exists():
        print("[rss] skipped: run the ann section first", flush=True)
        return
    dev, train = real_questions(args.data)
    home = args.cache / f"home_rss_{n}"
    print(f"[rss] server with {n} vectors ({home})", flush=True)
    if not (home / "ready").exists():
        shutil.rmtree(home, ignore_errors=True)
        DupQ(Settings(home=home, seed_bank=None, backend="torch")).close()  # registry, base version
        store = QuestionStore(home / "dupq.sqlite3")
        real = train[:110_000]
        with store.transaction() as c:  # one bulk insert (the store's add checks ids batch by batch)
            c.executemany(
                "INSERT INTO questions(id, text, meta, created_at) VALUES (?, ?, '{}', '2026-01-01T00:00:00')",
                (
                    (f"r{i}", real[i] if i < len(real) else f"{real[i % len(real)]} (variant {i // len(real)})")
                    for i in range(n)
                ),
            )
            store._bump(c)
        revision = store.revision()
        store.close()
        target = home / "index" / "base"
        shutil.rmtree(target, ignore_errors=True)  # the empty index the first open made
        target.mkdir(parents=True)
        for f in bank.iterdir():
            if f.is_file():
                os.link(f, target / f.name)
        m = json.loads((target / "manifest.json").read_text())
        m["revision"] = revision
        (target / "manifest.json").unlink()  # a linked file: write a new one, not through the link
        (target / "manifest.json").write_text(json.dumps(m))
        (home / "ready").write_text("1")
    proc, base = start_server(home)
    try:
        for q in dev[:200]:
            post(base + "/api/v1/search", {"question": q, "k": 10})
        with urllib.request.urlopen(base + "/healthz") as r:
            health = json.load(r)
        mem = rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    copy = n * 384 * 4 / 1024**3
    row(
        f"server RSS with {health['indexed']:,} vectors, after 200 searches",
        f"{mem['VmRSS']:.2f} GiB (anon {mem['RssAnon']:.2f}, file {mem['RssFile']:.2f})",
        f"one float32 copy {copy:.2f} GiB",
        f"{mem['VmRSS'] / copy:.2f}x",
        f"peak {mem['VmHWM']:.2f} GiB",
    )


# -- train ------------------------------------------------------------------------------------------
def section_train(args: argparse.Namespace) -> None:
    try:
        from dupq.training import TrainConfig, build_loss, train
    except ImportError:
        row("training pairs/s", "pending", "", "", "dupq/training/recipe.py is not available")
        return
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    steps, batch = (8, 32) if args.quick else (30, 32)
    all_pairs = read_pairs(args.data / "train/qqp_pairs_train.tsv").pairs
    labelled = [p for p in all_pairs if p.label == 0][:800] + [p for p in all_pairs if p.label == 1][:800]
    import random

    random.Random(0).shuffle(labelled)
    dev = read_pairs(args.data / "dev/qqp_pairs_dev.tsv").pairs[:200]
    print(f"[train] {steps} steps x {batch} pairs: dupq.training.recipe.train(bf16) vs plain fp32 trainer", flush=True)

    cfg = TrainConfig()

    def plain() -> float:
        model = load_sentence_transformer(packaged_model_path(), cached=False)
        data = Dataset.from_dict(
            {
                "sentence1": [p.question1 for p in labelled],
                "sentence2": [p.question2 for p in labelled],
                "label": [p.label for p in labelled],
            }
        )
        with tempfile.TemporaryDirectory() as out:
            trainer = SentenceTransformerTrainer(
                model=model,
                args=SentenceTransformerTrainingArguments(
                    output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-5,
                    warmup_steps=0.1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
                    dataloader_num_workers=0, use_cpu=True,
                ),
                train_dataset=data,
                loss=build_loss(model, loss=cfg.loss, energy=cfg.energy, margin=cfg.margin,
                                ranking_weight=cfg.ranking_weight),
            )
            t = time.perf_counter()
            trainer.train()
            return steps * batch / (time.perf_counter() - t)

    def ours() -> float:
        with tempfile.TemporaryDirectory() as out:
            cfg = TrainConfig(bf16=True, max_steps=steps, batch_size=batch, eval_steps=steps)
            res = train(labelled, cfg, start=packaged_model_path(), output_dir=Path(out) / "v", dev_pairs=dev,
                        show_progress_bar=False)
            return float(res.pairs_per_second)

    base_rates, our_rates = [], []
    for _ in range(1 if args.quick else 2):  # alternate: the machine's load drifts
        base_rates.append(plain())
        our_rates.append(ours())
    b, o = statistics.median(base_rates), statistics.median(our_rates)
    row(
        f"training, {steps} steps x batch {batch}, contrastive loss",
        f"{o:.1f} pairs/s (dupq.training.recipe.train, bf16)",
        f"{b:.1f} pairs/s (plain SentenceTransformerTrainer, fp32)",
        f"{o / b:.2f}x",
        "trainer time only (dupq's dev evaluations excluded); rounds: "
        + ", ".join(f"{x:.1f}/{y:.1f}" for x, y in zip(our_rates, base_rates, strict=True)),
    )


# -- main -------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    feats = [f for f in ("avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8") if f" {f}" in flags]
    import openvino
    import torch

    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores ({', '.join(feats)}), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GiB; "
        f"Python {platform.python_version()}, torch {torch.__version__}, openvino {openvino.__version__}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dupq-bench"))
    ap.add_argument("--sections", default="ann,rss,train")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--exact-queries", type=int, default=200)
    ap.add_argument("--sweep-ef", type=lambda v: [int(x) for x in v.split(",")], default=[],
                    help="also print p50 and recall for these search-time expansion_search values")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    args = ap.parse_args()
    if not (args.data / "dev/qqp_pairs_dev.tsv").exists():
        print(f"data not found under {args.data}", file=sys.stderr)
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(info, flush=True)
    t0 = time.perf_counter()
    sections = {
        "encode": section_encode,
        "import": section_import,
        "http": section_http,
        "ann": section_ann,
        "libs": section_libs,
        "rss": section_rss,
        "train": section_train,
    }
    for name in args.sections.split(","):
        try:
            sections[name.strip()](args)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others' rows
            import traceback

            traceback.print_exc()
            row(f"section {name}", "failed", "", "", f"{type(e).__name__}: {e}"[:200])
    print()
    print(f"Machine: {info}; load average at end {os.getloadavg()[0]:.1f}; {time.perf_counter() - t0:.0f} s")
    print(f"Command: python scripts/bench_scale.py {' '.join(sys.argv[1:])}")
    print()
    print("| measurement | dupq | baseline (same run) | ratio | notes |")
    print("|---|---|---|---|---|")
    for r in ROWS:
        print(f"| {r['what']} | {r['dupq']} | {r['baseline']} | {r['ratio']} | {r['note']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
