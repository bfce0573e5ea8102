"""Crash trials: kill -9 at a random moment, reopen the home, check that nothing acknowledged was lost.

Three kinds of trial, each on a fresh copy of a prepared home (the bundled bank, already embedded):

- ``import``: ``dupq import FILE`` of ``--questions`` new questions (batches of 256) is killed at a random moment;
  on reopen every stored question is indexed, the store and the index agree, and an import run again
  afterwards completes the file with each question stored once.
- ``adds``: a real ``dupq serve --production`` takes API adds from 2 writers (explicit ids) beside 4 searching
  clients and is killed at a random moment; every add answered 201 (acknowledged) must be stored and indexed
  (its own text finds it first), and the store and the index agree.
- ``promote``: a retrain (tiny ``max_steps``) runs through the API; the server is killed at a random moment from
  the job's evaluation to just after its promotion. On reopen the served version is a complete one (its model
  folder and its index whole, every stored question indexed), the job ended (promoted, or failed when the kill
  came before ``ready``; a ``ready`` job is promoted on open) and searches answer.

    python scripts/crash.py --trials 8 --kinds import,adds,promote     # the issue-12 run (docs/benchmarks.md)
Prints one line per trial and a summary; exit status 1 on any lost write or mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live import ROOT, LiveServer, call  # noqa: E402

TOKEN = "crash-admin-token"


def settings(home: Path) -> Any:
    from dupq.config import Settings

    return Settings(home=home, seed_bank="default", admin_token=TOKEN, import_batch_size=256)


def prepare(base: Path) -> Path:
    """A home with the bundled bank embedded (copied for each trial)."""
    from dupq.service import DupQ

    home = base / "prepared"
    with DupQ(settings(home)):
        pass
    return home


def fresh(prepared: Path, base: Path, name: str) -> Path:
    home = base / name
    shutil.copytree(prepared, home)
    (home / ".lock").unlink(missing_ok=True)
    return home


def check_home(home: Path, acknowledged: dict[str, str] | None = None) -> dict[str, Any]:
    """Reopen ``home`` (as the next ``dupq`` process would) and check it; ``acknowledged``: id -> text."""
    from dupq.errors import BusyError
    from dupq.service import DupQ

    problems: list[str] = []
    for _ in range(100):  # the killed process's lock is released by the kernel; allow a moment
        try:
            svc = DupQ(settings(home))
            break
        except BusyError:
            time.sleep(0.1)
    else:
        return {"version": None, "stored": 0, "indexed": 0, "jobs": [],
                "problems": [f"home still locked 10 s after the kill: {(home / '.lock').read_text()}"]}
    with svc:
        version = svc.version
        stored = {q.id: q.text for q in svc.list(0, 10**9)[0]}
        index = svc.serving.index
        indexed = index.ids()
        if set(stored) != indexed:
            problems.append(f"store/index mismatch: {len(set(stored) - indexed)} stored not indexed, "
                            f"{len(indexed - set(stored))} indexed not stored")
        if index.revision != svc.store.revision():
            problems.append(f"index revision {index.revision} != store revision {svc.store.revision()}")
        lost = [i for i in (acknowledged or {}) if i not in stored]
        if lost:
            problems.append(f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}")
        sample = [i for i in (acknowledged or {}) if i in stored][:20]
        for qid in sample:  # indexed under the right vector: its own text finds it first
            hits = svc.search(stored[qid], 3)["results"]
            if not hits or hits[0]["id"] != qid and hits[0]["text"] != stored[qid]:
                problems.append(f"{qid} is not found by its own text")
                break
        cfg = svc.registry.path(version) / "dupq.json"
        if not cfg.is_file():
            problems.append(f"served version {version} has no dupq.json")
        jobs = [j.to_dict() for j in svc.list_jobs()]
        active = [j for j in jobs if j["state"] not in ("promoted", "rejected", "failed", "cancelled")]
        if active:
            problems.append(f"jobs still active after reopen: {[(j['id'], j['state']) for j in active]}")
        if not svc.search("How do I reverse a list in Python?", 1)["results"]:
            problems.append("a search found nothing")
    return {"version": version, "stored": len(stored), "indexed": len(indexed), "jobs": [j["state"] for j in jobs],
            "problems": problems}


def questions_file(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    topics = ["python", "linux", "cooking", "travel", "money", "gardening", "cars", "music"]
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"imp-{seed}-{i}",
                                "text": f"Question {i} of trial {seed} about {rng.choice(topics)}: how does it work?"})
                    + "\n")
    return path


def trial_import(prepared: Path, base: Path, n: int, rng: random.Random, questions: int) -> dict[str, Any]:
    home = fresh(prepared, base, f"import-{n}")
    src = questions_file(base / f"import-{n}.jsonl", questions, n)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "DUPQ_IMPORT_BATCH_SIZE": "256"}
    cmd = [sys.executable, "-m", "dupq.cli", "--home", str(home), "import", str(src), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    t0 = time.monotonic()
    early = rng.random() < 0.2  # a fifth of the kills come before the first batch can commit (start-up, seeding)
    if not early:  # the rest at a random moment after the first batch committed
        db = sqlite3.connect(f"file:{home / 'dupq.sqlite3'}?mode=ro", uri=True, timeout=30)
        while proc.poll() is None and db.execute("SELECT count(*) FROM questions").fetchone()[0] <= 370:
            time.sleep(0.05)
        db.close()
    delay = rng.uniform(0.0, 3.0) if not early else rng.uniform(0.5, 4.0)
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = True
    delay = time.monotonic() - t0
    result = check_home(home)
    before = result["stored"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)  # resume: complete the file
    after = check_home(home)
    ids = {json.loads(line)["id"] for line in src.read_text().splitlines()}
    from dupq.service import DupQ

    with DupQ(settings(home)) as svc:
        stored_ids = {q.id for q in svc.list(0, 10**9)[0]}
    missing = ids - stored_ids
    problems = result["problems"] + after["problems"]
    if done.returncode != 0:
        problems.append(f"resumed import failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    if missing:
        problems.append(f"{len(missing)} questions of the file missing after the resumed import")
    shutil.rmtree(home, ignore_errors=True)
    return {"kind": "import", "killed_after_s": round(delay, 2), "killed": killed,
            "stored_at_kill": before - 370, "after_resume": after["stored"] - 370, "problems": problems}


def trial_adds(prepared: Path, base: Path, n: int, rng: random.Random) -> dict[str, Any]:
    home = fresh(prepared, base, f"adds-{n}")
    srv = LiveServer(home, admin_token=TOKEN, log=base / f"adds-{n}.log").start()
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"searches": 0, "add_requests": 0}

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            batch = [{"id": f"w{w}-{i}-{j}", "text": f"Writer {w} batch {i} item {j}: can this be lost in a crash?"}
                     for j in range(rng.choice((1, 1, 5)))]
            try:
                status, _ = call(srv.base, "POST", "/api/v1/questions", {"questions": batch}, timeout=30)
            except OSError:
                continue  # no answer: not acknowledged
            with lock:
                counts["add_requests"] += 1
                if status == 201:
                    acked.update({q["id"]: q["text"] for q in batch})

    def searcher() -> None:
        while not stop.is_set():
            try:
                call(srv.base, "POST", "/api/v1/search", {"question": "How do I reverse a list in Python?"}, timeout=30)
                counts["searches"] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    delay = rng.uniform(0.5, 6.0)
    time.sleep(delay)
    srv.kill()
    stop.set()
    for t in threads:
        t.join()
    with lock:
        snapshot = dict(acked)
    result = check_home(home, snapshot)
    shutil.rmtree(home, ignore_errors=True)
    return {"kind": "adds", "killed_after_s": round(delay, 2), "acknowledged": len(snapshot), **counts,
            "problems": result["problems"]}


def trial_promote(prepared: Path, base: Path, n: int, rng: random.Random) -> dict[str, Any]:
    home = fresh(prepared, base, f"promote-{n}")
    srv = LiveServer(home, admin_token=TOKEN, log=base / f"promote-{n}.log").start()
    from load import bank, bank_pairs

    assert srv.call("POST", "/api/v1/pairs", {"pairs": bank_pairs(bank())}, auth=True)[0] == 201
    status, body = srv.call("POST", "/api/v1/train", {"max_steps": 4, "eval_steps": 4, "batch_size": 16,
                                                      "cross_max_steps": 2}, auth=True)
    assert status == 202, body
    job = body["job"]
    # kill somewhere between the start of the evaluation and a moment after the promotion
    target = rng.choice(["evaluating", "indexing", "ready", "promoted"])
    extra = rng.uniform(0.0, 1.5)
    seen: list[str] = []
    deadline = time.monotonic() + 900
    order = ["queued", "running", "evaluating", "indexing", "ready", "promoted"]
    while time.monotonic() < deadline:
        state = srv.call("GET", f"/api/v1/jobs/{job}")[1]["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        reached = state in order and order.index(state) >= order.index(target)
        if state in ("rejected", "failed", "cancelled") or reached:
            break
        time.sleep(0.05)
    time.sleep(extra)
    srv.kill()
    time.sleep(0.5)
    result = check_home(home)
    shutil.rmtree(home, ignore_errors=True)
    return {"kind": "promote", "target": target, "extra_s": round(extra, 2), "seen": seen,
            "served_after": result["version"], "jobs_after": result["jobs"], "problems": result["problems"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8, help="trials of each kind")
    ap.add_argument("--kinds", default="import,adds,promote")
    ap.add_argument("--questions", type=int, default=6000, help="questions in each import trial's file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the trials to this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="dupq-crash-"))
    prepared = prepare(base)
    trials = []
    kinds = args.kinds.split(",")
    for n in range(args.trials):
        for kind in kinds:
            t0 = time.monotonic()
            if kind == "import":
                r = trial_import(prepared, base, n, rng, args.questions)
            elif kind == "adds":
                r = trial_adds(prepared, base, n, rng)
            else:
                r = trial_promote(prepared, base, n, rng)
            r["seconds"] = round(time.monotonic() - t0, 1)
            trials.append(r)
            print(json.dumps(r), flush=True)
    bad = [t for t in trials if t["problems"]]
    summary = {"trials": len(trials), "with_problems": len(bad),
               "acknowledged_adds": sum(t.get("acknowledged", 0) for t in trials),
               "by_kind": {k: sum(1 for t in trials if t["kind"] == k) for k in kinds}}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": trials}, indent=2))
    shutil.rmtree(base, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
