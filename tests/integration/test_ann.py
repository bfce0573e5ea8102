"""AnnIndex: the same answers as exact search on small banks, and a graph that survives writes and restarts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dupq.index import AnnIndex, ExactIndex, VectorLog, open_index
from dupq.index.ann import GRAPH_FILE, GRAPH_META

#: Topic centres shared by banks and queries, so queries have neighbours as real questions do.
CENTRES = np.random.default_rng(42).normal(size=(40, 32))


def clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors in clusters, like question embeddings (near-duplicates close, topics apart)."""
    v = CENTRES[rng.integers(0, len(CENTRES), n)] + 0.35 * rng.normal(size=(n, CENTRES.shape[1]))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"q{i}" for i in range(start, start + n)]


def same_as_exact(idx: AnnIndex, queries: np.ndarray, k: int = 10) -> None:
    exact = ExactIndex(idx.log).search(queries, k)
    approx = idx.search(queries, k)
    for e, a in zip(exact, approx, strict=True):
        assert [h.id for h in a] == [h.id for h in e]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in e], atol=1e-5)  # exact re-ranking


def test_graph_answers_equal_exact_on_a_small_bank() -> None:
    rng = np.random.default_rng(0)
    idx = AnnIndex(VectorLog(32), min_size=100, background=False)
    idx.add(ids(50), clustered(rng, 50))
    assert not idx.uses_graph  # below min_size: exact
    idx.add(ids(1950, 50), clustered(rng, 1950))
    assert idx.uses_graph and len(idx) == 2000
    same_as_exact(idx, clustered(rng, 50))


def test_euclidean_energy_reports_distances() -> None:
    rng = np.random.default_rng(1)
    log = VectorLog(32, energy="euclidean")
    idx = AnnIndex(log, min_size=1, background=False)
    idx.add(ids(500), 3 * clustered(rng, 500))  # not unit length
    same_as_exact(idx, 3 * clustered(rng, 20), k=5)


def test_add_delete_save_reload_without_rebuild(tmp_path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "v"
    idx, intact = open_index(path, 32, "cosine", ann_min_size=100)
    assert not intact and isinstance(idx, AnnIndex)
    idx.add(ids(1000), clustered(rng, 1000))
    idx.wait()
    assert idx.uses_graph and (path / GRAPH_FILE).is_file()
    idx.remove(ids(100))  # deletes
    replaced = clustered(rng, 1)
    idx.add(["q500"], replaced)  # re-adding an id replaces its vector
    idx.add(ids(50, 1000), clustered(rng, 50))  # additions after the graph was saved
    idx.save(revision=7)
    idx.close()
    meta = json.loads((path / GRAPH_META).read_text())
    assert meta["rows"] == idx.log.n_rows  # close saved the graph it had caught up

    back, intact = open_index(path, 32, "cosine", ann_min_size=100)
    assert intact and back.uses_graph and back._job is None  # restored, not rebuilt
    assert back.log.revision == 7 and len(back) == 950
    assert isinstance(back.log.vectors, np.memmap)  # float32 vectors are mapped, not copied
    assert "i8" in str(back._graph.index.dtype).lower()  # a quarter of a float32 copy
    queries = clustered(rng, 30)
    same_as_exact(back, queries)
    found = {h.id for hits in back.search(queries, 50) for h in hits}
    assert not found & set(ids(100))  # deleted questions never come back
    top = back.search(replaced, 1)[0][0]
    assert top.id == "q500" and top.score == pytest.approx(1.0, abs=1e-5)


def test_reload_catches_up_with_writes_the_graph_file_missed(tmp_path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "v"
    idx, _ = open_index(path, 32, "cosine", ann_min_size=100)
    idx.add(ids(800), clustered(rng, 800))
    idx.wait()
    idx.save(revision=1)
    saved = json.loads((path / GRAPH_META).read_text())
    idx.add(ids(20, 800), clustered(rng, 20))  # small changes: the log is saved, the graph file is not
    idx.remove(["q3"])
    idx.save(revision=2)
    assert json.loads((path / GRAPH_META).read_text()) == saved  # (a crash now loses nothing)
    back, _ = open_index(path, 32, "cosine", ann_min_size=100)
    assert back.uses_graph and len(back._graph) == 819  # the saved graph plus the log's later changes
    same_as_exact(back, clustered(rng, 20))


def test_deletions_trigger_a_background_rebuild(tmp_path) -> None:
    rng = np.random.default_rng(4)
    idx, _ = open_index(tmp_path / "v", 32, "cosine", ann_min_size=100)
    idx.add(ids(1000), clustered(rng, 1000))
    idx.wait()
    old = idx._graph
    idx.remove(ids(300))  # 30% dead: past ANN_REBUILD_DEAD_FRACTION
    assert idx.wait(timeout=60)
    assert idx._graph is not old and idx._graph.removed == 0 and len(idx._graph) == 700
    same_as_exact(idx, clustered(rng, 20))


def test_read_only_reader_never_writes(tmp_path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "v"
    log = VectorLog(32, path)
    log.add(ids(300), clustered(rng, 300))
    log.save(revision=1)
    reader, intact = open_index(path, 32, "cosine", ann_min_size=100, read_only=True)
    assert intact and not reader.uses_graph  # no saved graph: exact, and no build from a reader
    same_as_exact(reader, clustered(rng, 5))
    reader.close()
    assert not (path / GRAPH_FILE).exists() and not (path / GRAPH_META).exists()


def test_service_switches_to_the_graph_past_the_threshold(tmp_path) -> None:
    from dupq.config import Settings
    from dupq.service import DupQ

    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(f"How do I cook dish number {i} for {i % 7} people?" for i in range(60)) + "\n")
    settings = Settings(home=tmp_path / "home", seed_bank=str(bank), ann_min_size=40, backend="torch")
    with DupQ(settings) as svc:
        index = svc.serving.index
        assert isinstance(index, AnnIndex)
        index.wait()
        assert index.uses_graph
        q = "How do I cook dish number 12 for 5 people?"
        got = svc.search(q, k=5)["results"]
        exact = ExactIndex(index.log).search(svc.encoder.encode([q]), 5)[0]
        assert [r["id"] for r in got] == [h.id for h in exact]


def test_background_build_while_adds_and_saves_cross_min_size(tmp_path, caplog) -> None:
    """Issue 12: an import crossing min_size (background build + add/save rounds) must build the graph."""
    import logging

    rng = np.random.default_rng(7)
    idx, _ = open_index(tmp_path / "v", 32, "cosine", ann_min_size=200)
    with caplog.at_level(logging.ERROR, logger="dupq.index.ann"):
        for r in range(120):  # small batches: many saves while the build reads rows
            idx.add(ids(10, 10 * r), clustered(rng, 10))
            idx.save(r)
        idx.wait()
        idx.add(ids(1, 5000), clustered(rng, 1))  # a write after a build that failed would retry it
        idx.save(999)
        idx.wait()
    assert "building the ANN graph failed" not in caplog.text
    assert idx.uses_graph and len(idx) == 1201
    same_as_exact(idx, clustered(rng, 20))
    idx.close()
    back, intact = open_index(tmp_path / "v", 32, "cosine", ann_min_size=200)  # restart (kill -9 and resume)
    assert intact and back.uses_graph
    same_as_exact(back, clustered(rng, 5))
    back.close()


def test_import_file_past_ann_min_size_ends_with_a_graph(tmp_path) -> None:
    from dupq.config import Settings
    from dupq.service import DupQ

    questions = tmp_path / "questions.txt"
    topics = ["bake bread", "fix a bike", "learn Rust", "grow tomatoes", "file taxes", "tune a guitar"]
    questions.write_text(
        "".join(f"How do I {topics[i % len(topics)]} in step {i}?\n" for i in range(120)), encoding="utf-8"
    )
    settings = Settings(home=tmp_path / "home", seed_bank=None, ann_min_size=50, backend="torch", import_batch_size=16)
    with DupQ(settings) as svc:
        report = svc.import_file(questions, progress=False)
        assert report.added == 120
        index = svc.serving.index
        assert isinstance(index, AnnIndex)
        index.wait()
        assert index.uses_graph
        for q in ("How do I bake bread quickly?", "Learning Rust in step 3?"):
            got = [r["id"] for r in svc.search(q, k=10)["results"]]
            exact = ExactIndex(index.log).search(svc.encoder.encode([q]), 10)[0]
            assert got == [h.id for h in exact]
