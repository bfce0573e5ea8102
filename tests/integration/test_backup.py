"""Backup and restore (dupq/backup.py, dupq/storage/backup.py) on both backends: a backup taken while
questions are being added holds every question acknowledged before it began, and the restored service answers
searches as the original (same ids in the same order, the same scores to their sixth decimal, same version);
refusals and damaged archives write nothing; the CLI's exit codes."""

from __future__ import annotations

import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from dupq.backup import backup, describe, restore
from dupq.cli import main
from dupq.config import MAX_K, Settings
from dupq.errors import ConflictError
from dupq.service import DupQ
from dupq.storage.backup import FORMAT, MANIFEST, BackupError, Member, extract, write_archive

BOTH_BACKENDS = True

QUERIES = ["How do I reverse a list in Python?", "How long should I boil an egg?", "What is a Roth IRA?",
           "How do I find which process listens on a port?", "Do I need a visa for Japan?",
           "How can I merge two dictionaries?", "What is the best way to save for retirement?"]


@pytest.fixture
def empty_target(request, tmp_path):
    """Settings naming an empty restore target of the test's backend: a new folder or an empty database."""
    if request.getfixturevalue("db_url") is None:
        yield Settings(home=tmp_path / "restored", seed_bank=None)
        return
    from dupq.storage.postgres.embedded import create_database, drop_database

    server = request.getfixturevalue("pg_server")
    name = f"r{os.getpid()}_{abs(hash(request.node.name)) % 10**8}"
    yield Settings(home=tmp_path / "restored-node", seed_bank=None, database_url=create_database(server, name))
    drop_database(server, name)


def _compare(original: DupQ, restored: DupQ, queries: list[str], k: int = 10) -> int:
    """Search both; the original (which may hold more questions: added after the backup) restricted to the
    restored questions must give the restored answer exactly. Returns the number of results compared."""
    extra = original.count() - restored.count()
    assert extra >= 0
    ids = restored.store.ids()
    compared = 0
    # Both are asked for the same number of candidates: PostgreSQL's HNSW index orders in half precision before
    # the float32 re-score, so a near-tie at the k-th place can fall either side of a LIMIT of k, but not of k+extra.
    fetch = min(k + extra, MAX_K)
    for q in queries:
        a = original.search(q, k=fetch)
        b = restored.search(q, k=fetch)
        assert a["model"] == b["model"] and a["threshold"] == b["threshold"]
        if k + extra > MAX_K:  # more added since than one search returns: the same steps, without the bound
            serving = original.serving
            hits = serving.index.search(serving.encoder.encode([q]), k + extra)[0]
            a["results"] = [{"id": h.id, "score": round(h.score, 6)} for h in hits]
        kept = [(r["id"], r["score"]) for r in a["results"] if r["id"] in ids][:k]
        got = [(r["id"], r["score"]) for r in b["results"]][:k]
        # Same ids in the same order; scores equal to the rounding's last digit. Two indexes of different sizes may
        # sum one dot product in another order (BLAS blocking), and a float32 difference of 1e-8 can round a
        # score to the other side of its sixth decimal (seen in CI: 0.058583 vs 0.058584).
        assert [i for i, _ in kept] == [i for i, _ in got], q
        assert all(abs(x - y) <= 1.5e-6 for (_, x), (_, y) in zip(kept, got, strict=True)), (q, kept, got)
        compared += len(kept)
    return compared


def test_backup_while_adding_restores_every_acknowledged_question(svc, settings, empty_target, tmp_path) -> None:
    svc.add_pairs([{"question1": QUERIES[0], "question2": QUERIES[5], "label": 0}])
    acked: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def add(n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                q = svc.add_questions([{"text": f"Writer {n} asks question number {i} about kayaks?"}])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return
            acked.extend(x.id for x in q)
            i += 1

    def search() -> None:
        while not stop.is_set():
            svc.search("How do I paddle a kayak?", k=5)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(2)] + [threading.Thread(target=search)]
    for t in threads:
        t.start()
    try:
        while len(acked) < 6 and not errors:
            stop.wait(0.05)
        before = set(acked)  # acknowledged before the backup began
        report = backup(settings, tmp_path / "b.tar.gz")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert report["kind"] == "dupq-backup" and report["format"] == FORMAT and report["dupq_version"]
    assert report["backend"] == ("postgres" if settings.database_url else "sqlite")
    assert report["counts"]["pairs"] == 1 and report["current_model"] == "base"
    assert len(acked) > len(before)  # writes went on during the backup

    restored_report = restore(tmp_path / "b.tar.gz", empty_target)
    assert restored_report["counts"] == report["counts"]
    with DupQ(empty_target) as r:
        stored = r.store.ids()
        assert before <= stored
        assert r.count() == report["counts"]["questions"] and len(r.store.pairs()) == 1
        assert r.version == svc.version and r.models()["versions"][0]["version"] == "base"
        assert len(r.serving.index) == r.count()
        assert _compare(svc, r, QUERIES + ["Writer 0 asks about kayaks?", "Writer 1 kayak question"]) >= 80


def test_refusals_write_nothing(svc, settings, empty_target, tmp_path) -> None:
    path = tmp_path / "b.tar"
    backup(settings, path)
    with pytest.raises(ConflictError, match="exists already"):
        backup(settings, path)
    # Over a non-empty target: the original's own home / database.
    with pytest.raises(ConflictError, match="not empty"):
        restore(path, settings)
    # Into the other backend.
    other = (Settings(home=tmp_path / "x", seed_bank=None) if settings.database_url
             else Settings(home=tmp_path / "x", seed_bank=None, database_url="postgresql://nobody@/none?host=/nope"))
    with pytest.raises((BackupError, Exception), match="backup of a|cannot connect"):
        restore(path, other)
    # Damaged: truncated, altered, not an archive at all.
    data = path.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with tarfile.open(path) as tar:
        biggest = max(tar.getmembers(), key=lambda m: m.size)
    altered = bytearray(data)
    altered[biggest.offset_data + biggest.size // 2] ^= 0xFF  # inside a member's content: only its checksum says
    (tmp_path / "altered.tar").write_bytes(bytes(altered))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    for name, message in (("cut.tar", "truncated|damaged"), ("altered.tar", "do not match their checksums"),
                          ("junk.tar", "not a readable dupq backup|not a dupq backup")):
        with pytest.raises(BackupError, match=message):
            restore(tmp_path / name, empty_target)
        _assert_untouched(empty_target)
    # A newer format.
    newer = tmp_path / "newer.tar"
    _rewrite(path, newer, tmp_path / "x-stage", lambda m: {**m, "format": FORMAT + 1})
    with pytest.raises(BackupError, match=f"format {FORMAT + 1}") as e:
        restore(newer, empty_target)
    assert e.value.code == "backup_too_new"
    _assert_untouched(empty_target)


def _assert_untouched(target: Settings) -> None:
    if target.database_url is None:
        assert not target.home.exists()
        assert not [p for p in target.home.parent.iterdir() if p.name.startswith(f".{target.home.name}.restore")]
    else:
        import psycopg

        with psycopg.connect(target.database_url) as c:
            assert c.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def _rewrite(src: Path, dest: Path, stage: Path, change) -> None:
    """``src`` with its manifest changed by ``change`` (checksums made to match again)."""
    stage.mkdir()
    manifest = change(extract(src, stage))
    members = [Member(p.relative_to(stage).as_posix(), p.stat().st_size, lambda p=p: open(p, "rb"))
               for p in sorted(stage.rglob("*")) if p.is_file()]
    write_archive(dest, manifest, members)


def test_an_older_schema_is_upgraded(svc, settings, empty_target, tmp_path) -> None:
    """A backup of schema 1 (PostgreSQL: its tables are those of migration 1; SQLite: a store at migration 1)
    restores and is brought to this dupq's schema by the migrations."""
    path = tmp_path / "b.tar"
    backup(settings, path)
    old = tmp_path / "old.tar"
    if settings.database_url:
        # A schema-1 backup holds migration 1's tables only: drop the later migrations' tables and sequences.
        import re

        from dupq.storage.migrations import packaged

        first = packaged("dupq.storage.postgres")[0][2]
        later = {t for _, _, sql in packaged("dupq.storage.postgres")[1:]
                 for t in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql)} - set(
            re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", first))
        later_seqs = {q for q in re.findall(r"CREATE SEQUENCE (?:IF NOT EXISTS )?(\w+)", "".join(
            sql for _, _, sql in packaged("dupq.storage.postgres")[1:]))}
        stage = tmp_path / "stage"

        def to_schema_1(m: dict) -> dict:
            for t in later:
                (stage / "database" / f"{t}.copy").unlink(missing_ok=True)
            return {**m, "schema_version": 1, "tables": [t for t in m["tables"] if t["table"] not in later],
                    "sequences": {k: v for k, v in m["sequences"].items()
                                  if k not in later_seqs and not any(k.startswith(f"{t}_") for t in later)}}

        _rewrite(path, old, stage, to_schema_1)
    else:
        import sqlite3

        stage = tmp_path / "stage"
        stage.mkdir()
        manifest = extract(path, stage)
        db = sqlite3.connect(stage / "home" / "dupq.sqlite3", isolation_level=None)
        db.execute("DROP TABLE pairs")
        db.execute("DROP TABLE jobs")  # what migration 2 creates
        db.execute("PRAGMA user_version = 1")
        db.close()
        members = [Member(p.relative_to(stage).as_posix(), p.stat().st_size, lambda p=p: open(p, "rb"))
                   for p in sorted(stage.rglob("*")) if p.is_file()]
        write_archive(old, {**manifest, "schema_version": 1}, members)
    r = restore(old, empty_target)
    assert r["schema_version"] == 1 and r["restored_schema"] >= 2
    with DupQ(empty_target) as restored:
        assert restored.count() == svc.count()
        assert restored.add_pairs([{"question1": QUERIES[0], "question2": QUERIES[1], "label": 0}]) == 1
        assert _compare(svc, restored, QUERIES[:3]) == 3 * min(10, svc.count())


def test_cli_backup_and_restore(runner, settings, empty_target, tmp_path) -> None:
    r = runner.invoke(main, ["search", "boil an egg", "-k", "1"])  # creates and seeds the home / database
    assert r.exit_code == 0, r.output
    path = tmp_path / "cli.tar"
    r = runner.invoke(main, ["backup", str(path)])
    assert r.exit_code == 0, r.output
    assert "backed up" in r.output and "questions" in r.output and path.is_file()
    assert runner.invoke(main, ["backup", str(path)]).exit_code == 1  # never overwrites
    r = runner.invoke(main, ["restore", str(path), "--check"])
    assert r.exit_code == 0 and json.loads(r.output)["format"] == FORMAT
    assert describe(path)["counts"]["questions"] > 0
    target = (["--database", empty_target.database_url] if empty_target.database_url
              else ["--home", str(empty_target.home)])
    r = runner.invoke(main, ["restore", str(path), *target])
    assert r.exit_code == 0, r.output
    assert "restored" in r.output
    again = runner.invoke(main, ["restore", str(path), *target])  # now non-empty
    assert again.exit_code == 1 and "not empty" in again.output and "Traceback" not in again.output
    (tmp_path / "junk.tar").write_bytes(b"\0" * 10)
    r = runner.invoke(main, ["restore", str(tmp_path / "junk.tar"), "--home", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "Traceback" not in r.output and not (tmp_path / "nowhere").exists()
    missing = runner.invoke(main, ["restore", str(tmp_path / "missing.tar"), "--home", str(tmp_path / "n2")])
    assert missing.exit_code == 1 and "no backup file" in missing.output


def test_archive_layout(svc, settings, tmp_path) -> None:
    """The first member is the manifest, the last the checksums; SQLite holds the store, index and versions."""
    path = tmp_path / "b.tar"
    backup(settings, path)
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names[0] == MANIFEST and names[-1] == "SHA256SUMS"
    if settings.database_url:
        assert {"database/questions.copy", "database/model_files.copy", "database/vector_tables.copy"} <= set(names)
    else:
        assert {"home/dupq.sqlite3", "home/index/base/vectors.f32", "home/models/base/dupq.json"} <= set(names)


def test_an_ann_index_restores_with_its_graph(tmp_path) -> None:
    """A SQLite bank served through the HNSW graph (``ann_min_size`` small): the graph files travel with the
    index and the restored home answers the same (PostgreSQL rebuilds its HNSW indexes: the tests above)."""
    from support import SMALL_BANK

    settings = Settings(home=tmp_path / "home", seed_bank=str(SMALL_BANK), ann_min_size=5)
    with DupQ(settings) as svc:
        assert svc.serving.index.wait(60)
        svc.add_questions([{"text": f"An extra question {i} about canoes?"} for i in range(3)])
        svc.serving.index.close()  # the graph saved as it now is (what a long-running server has on disk)
        assert (settings.index_dir / "base" / "ann.usearch").is_file()
        backup(settings, tmp_path / "b.tar")
        with tarfile.open(tmp_path / "b.tar") as tar:
            assert {"home/index/base/ann.usearch", "home/index/base/ann.json"} <= set(tar.getnames())
        target = Settings(home=tmp_path / "restored", seed_bank=None, ann_min_size=5)
        restore(tmp_path / "b.tar", target)
        with DupQ(target) as r:
            assert r.serving.index.uses_graph
            assert _compare(svc, r, QUERIES) == len(QUERIES) * min(10, r.count())
