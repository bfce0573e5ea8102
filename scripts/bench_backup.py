"""Backup during load, restore, compare: issue 27's target for ``dupq backup`` / ``dupq restore``.

For each backend (a SQLite home; an embedded PostgreSQL database): a home or database with the bundled bank
plus ``--questions`` questions and ``--pairs`` labelled pairs from a pair file, served by a real
``dupq serve --production`` (``scripts/live.py``); 8 clients search and 2 add one question at a time over
HTTP; after ``--warm`` seconds ``dupq backup FILE`` runs as its own process while the load goes on, which
then stops ``--after`` seconds later. ``dupq restore FILE`` puts it into a fresh home (SQLite) or a fresh,
empty database (PostgreSQL), and a second ``dupq serve --production`` serves the restored state. Checked:
every question acknowledged (201) before the backup began is in the restored state; then the questions the
original got after the snapshot are deleted from it (through its API), so that both hold the same questions,
and ``--searches`` searches (texts from the pair file that are not stored) must give the same model, the same
ids and the same scores on both. Prints timings, sizes, the write stall and the load's errors.

    flock /work/heavy.lock python scripts/bench_backup.py ../shared/data/dev/qqp_pairs_dev.tsv
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live import ROOT, LiveServer  # noqa: E402

TOKEN = "bench-backup-token"


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, base: str) -> None:
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
            raw = r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            return 0, None
        return r.status, json.loads(raw) if raw else None


def read_pairs(path: Path) -> tuple[list[str], list[tuple[str, str, int]]]:
    """Unique question texts and labelled pairs of a pair TSV (question1, question2, is_duplicate)."""
    texts: dict[str, None] = {}
    pairs = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            a, b = row["question1"].strip(), row["question2"].strip()
            if a and b and a != b and len(a) < 900 and len(b) < 900:
                texts.setdefault(a)
                texts.setdefault(b)
                pairs.append((a, b, int(row["is_duplicate"])))
    return list(texts), pairs


def dupq(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dupq.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"dupq {' '.join(args)} failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout


def all_ids(base: str) -> set[str]:
    c, ids, offset = Client(base), set(), 0
    while True:
        status, page = c.call("GET", f"/api/v1/questions?offset={offset}&limit=500")
        assert status == 200, status
        ids |= {q["id"] for q in page["questions"]}
        offset += 500
        if offset >= page["total"]:
            return ids


def run_backend(backend: str, work: Path, texts: list[str], pairs: list[tuple[str, str, int]],
                queries: list[str], args: argparse.Namespace, pg_url: str | None) -> dict[str, Any]:
    from dupq.storage.postgres.embedded import create_database

    out: dict[str, Any] = {"backend": backend}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "DUPQ_ADMIN_TOKEN": TOKEN}
    home, rhome = work / f"{backend}-home", work / f"{backend}-restored"
    orig_env, rest_env = dict(env), dict(env)
    if pg_url:
        orig_env["DUPQ_DATABASE_URL"] = create_database(pg_url, "orig")
        rest_env["DUPQ_DATABASE_URL"] = create_database(pg_url, "restored")  # empty: no template
    qfile, pfile = work / "questions.txt", work / "pairs.tsv"
    qfile.write_text("".join(t + "\n" for t in texts[: args.questions]))
    with open(pfile, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["question1", "question2", "is_duplicate"])
        w.writerows(pairs[: args.pairs])
    secs, _ = dupq(["--home", str(home), "import", str(qfile), "--no-progress"], orig_env)
    dupq(["--home", str(home), "import-pairs", str(pfile)], orig_env)
    out["import_s"] = round(secs, 1)

    server = LiveServer(home, admin_token=TOKEN, env={k: v for k, v in orig_env.items() if k.startswith("DUPQ_")},
                        threads=args.threads, log=work / f"{backend}-server.log").start()
    try:
        base = server.base
        stop = threading.Event()
        acked: list[tuple[float, str]] = []  # (monotonic time of the acknowledgement, id)
        lat: list[tuple[float, float]] = []  # (start, seconds) of each search
        errors: list[str] = []
        lock = threading.Lock()

        def searcher(n: int) -> None:
            c, rnd = Client(base), random.Random(n)
            while not stop.is_set():
                t0 = time.monotonic()
                status, _ = c.call("POST", "/api/v1/search", {"question": rnd.choice(queries), "k": 10})
                with lock:
                    lat.append((t0, time.monotonic() - t0))
                    if status != 200:
                        errors.append(f"search {status}")

        def adder(n: int) -> None:
            c, i = Client(base), 0
            while not stop.is_set():
                status, body = c.call("POST", "/api/v1/questions",
                                      {"questions": [{"text": f"Load writer {n} adds question {i}: "
                                                      f"{texts[(args.questions + 97 * i + n) % len(texts)]}"}]})
                with lock:
                    if status == 201:
                        acked.append((time.monotonic(), body["ids"][0]))
                    else:
                        errors.append(f"add {status}")
                i += 1

        threads = [threading.Thread(target=searcher, args=(n,)) for n in range(args.clients)]
        threads += [threading.Thread(target=adder, args=(n,)) for n in range(args.adders)]
        for t in threads:
            t.start()
        archive = work / f"{backend}.tar"
        try:
            time.sleep(args.warm)
            began = time.monotonic()
            before = {i for t, i in acked if t < began}
            secs, text = dupq(["--home", str(home), "backup", str(archive), "--json"], orig_env)
            ended = time.monotonic()
            manifest = json.loads(text)
            time.sleep(args.after)
        finally:
            stop.set()
            for t in threads:
                t.join()
        during = [s for t0, s in lat if began <= t0 <= ended]
        outside = [s for t0, s in lat if t0 < began]
        out.update({
            "backup_wall_s": round(secs, 2), "backup_s": manifest["seconds"], "archive_mib": round(
                archive.stat().st_size / 2**20, 1), "write_stall_ms": manifest.get("write_stall_ms"),
            "counts": manifest["counts"], "acked_before": len(before), "acked_total": len(acked),
            "acked_during_backup": sum(1 for t, _ in acked if began <= t <= ended),
            "searches_during_load": len(lat), "load_errors": len(errors),
            "search_p50_ms_before": round(1000 * statistics.median(outside), 1) if outside else None,
            "search_p50_ms_during_backup": round(1000 * statistics.median(during), 1) if during else None,
            "notes": manifest["notes"],
        })

        target = ["--home", str(rhome)] if not pg_url else ["--database", rest_env["DUPQ_DATABASE_URL"]]
        secs, _ = dupq(["restore", str(archive), *target], rest_env)
        out["restore_wall_s"] = round(secs, 2)
        t0 = time.perf_counter()
        rserver = LiveServer(rhome, admin_token=TOKEN, threads=args.threads, log=work / f"{backend}-restored.log",
                             env={k: v for k, v in rest_env.items() if k.startswith("DUPQ_")}).start()
        out["restored_start_s"] = round(time.perf_counter() - t0, 1)
        try:
            restored, original = all_ids(rserver.base), all_ids(base)
            out["restored_questions"] = len(restored)
            out["acknowledged_missing"] = len(before - restored)
            out["restored_not_in_original"] = len(restored - original)
            later = original - restored  # added after the snapshot: the original forgets them for the comparison
            c = Client(base)
            for qid in sorted(later):
                assert c.call("DELETE", f"/api/v1/questions/{urllib.parse.quote(qid, safe='')}")[0] == 200
            out["deleted_from_original"] = len(later)
            co, cr = Client(base), Client(rserver.base)
            same = differ = 0
            first_diff = None
            for q in queries[: args.searches]:
                a = co.call("POST", "/api/v1/search", {"question": q, "k": 10})[1]
                b = cr.call("POST", "/api/v1/search", {"question": q, "k": 10})[1]
                ka = (a["model"], [(r["id"], r["score"]) for r in a["results"]])
                kb = (b["model"], [(r["id"], r["score"]) for r in b["results"]])
                if ka == kb:
                    same += 1
                else:
                    differ += 1
                    first_diff = first_diff or {"question": q, "original": ka, "restored": kb}
            out.update({"searches_identical": same, "searches_differing": differ, "first_difference": first_diff,
                        "model": a["model"]})
        finally:
            rserver.stop()
    finally:
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs_file", type=Path, help="pair TSV (question1, question2, is_duplicate)")
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    p.add_argument("--questions", type=int, default=5000, help="questions imported before the load")
    p.add_argument("--pairs", type=int, default=500, help="labelled pairs imported before the load")
    p.add_argument("--clients", type=int, default=8, help="search clients")
    p.add_argument("--adders", type=int, default=2, help="clients adding one question at a time")
    p.add_argument("--threads", type=int, default=8, help="request threads of each server")
    p.add_argument("--warm", type=float, default=5.0, help="seconds of load before the backup")
    p.add_argument("--after", type=float, default=2.0, help="seconds of load after the backup")
    p.add_argument("--searches", type=int, default=300, help="searches compared on original and restored")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    args = p.parse_args(argv)

    texts, pairs = read_pairs(args.pairs_file)
    queries = texts[args.questions :][: max(args.searches, 1000)]  # never stored: real searches
    tmp = tempfile.TemporaryDirectory(prefix="dupq-bench-backup-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    work.mkdir(parents=True, exist_ok=True)
    results, ok = [], True
    try:
        for backend in args.backends:
            pg, pg_url = None, None
            bwork = work / backend
            bwork.mkdir(exist_ok=True)
            if backend == "postgres":
                from dupq.storage.postgres.embedded import start

                pg, pg_url = start(bwork / "pg")
            try:
                r = run_backend(backend, bwork, texts, pairs, queries, args, pg_url)
            finally:
                if pg is not None:
                    pg.cleanup()
            print(json.dumps(r, indent=2), flush=True)
            results.append(r)
            ok &= (r["acknowledged_missing"] == 0 and r["searches_differing"] == 0 and r["load_errors"] == 0
                   and r["restored_not_in_original"] == 0 and r["searches_identical"] == args.searches)
    finally:
        if tmp:
            tmp.cleanup()
    cpu = subprocess.run("lscpu | grep -o 'avx512_bf16\\|avx2' | sort -u | tr '\\n' ' '", shell=True,
                         capture_output=True, text=True).stdout.strip()
    print(f"cpu flags: {cpu}; nproc {os.cpu_count()}; load average {os.getloadavg()}")
    for r in results:
        print(f"{r['backend']}: backup {r['backup_s']} s ({r['archive_mib']} MiB, writers held "
              f"{r['write_stall_ms']} ms) of {r['counts']['questions']} questions during load; restore "
              f"{r['restore_wall_s']} s; acknowledged "
              f"before the backup missing: {r['acknowledged_missing']} of {r['acked_before']}; searches identical "
              f"{r['searches_identical']}/{r['searches_identical'] + r['searches_differing']}; load errors "
              f"{r['load_errors']}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
