"""VectorLog persistence and ExactIndex search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dupq.index import ExactIndex, VectorLog, open_index


def unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_search_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    vecs, q = unit(rng, 200), unit(rng, 5)
    idx = ExactIndex(VectorLog(8))
    idx.add([f"q{i}" for i in range(200)], vecs)
    for row, hits in zip(q, idx.search(q, 10), strict=False):
        expected = np.argsort(-(vecs @ row))[:10]
        assert [h.id for h in hits] == [f"q{i}" for i in expected]
        np.testing.assert_allclose([h.score for h in hits], (vecs @ row)[expected], atol=1e-5)


def test_euclidean_reports_distances_best_first() -> None:
    idx = ExactIndex(VectorLog(2, energy="euclidean"))
    idx.add(["far", "near", "mid"], np.array([[10, 0], [1, 0], [3, 0]], dtype=np.float32))
    hits = idx.search(np.array([[0, 0]], dtype=np.float32), 3)[0]
    assert [h.id for h in hits] == ["near", "mid", "far"]
    np.testing.assert_allclose([h.score for h in hits], [1, 3, 10], atol=1e-4)


def test_remove_and_replace() -> None:
    idx = ExactIndex(VectorLog(2))
    idx.add(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32))
    idx.remove(["a", "unknown"])
    assert len(idx) == 1 and [h.id for h in idx.search(np.array([[1, 0]], dtype=np.float32), 5)[0]] == ["b"]
    idx.add(["b"], np.array([[1, 0]], dtype=np.float32))  # re-adding an id replaces its vector
    assert len(idx) == 1 and idx.search(np.array([[1, 0]], dtype=np.float32), 1)[0][0].score == pytest.approx(1)
    assert idx.search(np.zeros((1, 2), dtype=np.float32), 3)[0][0].id == "b"


def test_persist_reload_appends_and_deletes(tmp_path) -> None:
    rng = np.random.default_rng(1)
    log = VectorLog(8, tmp_path / "v")
    log.add(["a", "b", "c"], unit(rng, 3))
    log.save(revision=1)
    log.remove(["b"])
    log.add(["d"], unit(rng, 1))
    log.save(revision=2)
    back = VectorLog.load(tmp_path / "v")
    assert back.ids() == {"a", "c", "d"} and back.revision == 2
    np.testing.assert_array_equal(back.vectors[back.alive], log.vectors[log.alive])
    # delete then re-add the same id survives a reload
    back.remove(["a"])
    back.add(["a"], unit(rng, 1))
    back.save(revision=3)
    again = VectorLog.load(tmp_path / "v")
    assert again.ids() == {"a", "c", "d"}
    np.testing.assert_array_equal(again.vectors[again._row["a"]], back.vectors[back._row["a"]])


def test_torn_tail_after_a_crash_is_ignored_and_overwritten(tmp_path) -> None:
    rng = np.random.default_rng(2)
    log = VectorLog(8, tmp_path / "v")
    log.add(["a"], unit(rng, 1))
    log.save(revision=1)
    # A crash mid-append: bytes written past what the manifest committed.
    with open(tmp_path / "v" / "vectors.f32", "ab") as f:
        f.write(b"\x00" * 13)
    with open(tmp_path / "v" / "ids.txt", "a") as f:
        f.write("half-writ")
    back = VectorLog.load(tmp_path / "v")
    assert back.ids() == {"a"}
    back.add(["b"], unit(rng, 1))
    back.save(revision=2)
    assert VectorLog.load(tmp_path / "v").ids() == {"a", "b"}


def test_compaction_drops_dead_rows(tmp_path) -> None:
    rng = np.random.default_rng(3)
    log = VectorLog(8, tmp_path / "v")
    log.add([f"q{i}" for i in range(10)], unit(rng, 10))
    log.remove([f"q{i}" for i in range(6)])
    log.save(revision=5)
    assert log.dead_fraction() == pytest.approx(0.6)
    log.compact(revision=5)
    back = VectorLog.load(tmp_path / "v")
    assert back.ids() == {f"q{i}" for i in range(6, 10)} and len(back.vectors) == 4


def test_open_index_detects_missing_damaged_or_mismatched(tmp_path) -> None:
    idx, intact = open_index(tmp_path / "v", 8, "cosine", ann_min_size=None)
    assert not intact
    idx.add(["a"], unit(np.random.default_rng(4), 1))
    idx.save(1)
    assert open_index(tmp_path / "v", 8, "cosine", ann_min_size=None)[1]
    assert not open_index(tmp_path / "v", 16, "cosine", ann_min_size=None)[1]  # another model's dimension
    m = json.loads((tmp_path / "v" / "manifest.json").read_text())
    m["rows"] = 99
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(m))
    assert not open_index(tmp_path / "v", 8, "cosine", ann_min_size=None)[1]


def test_both_index_kinds_implement_the_interface(tmp_path) -> None:
    from dupq.index import AnnIndex, VectorIndex

    for ann_min_size in (None, 5):
        idx, _ = open_index(tmp_path / f"v{ann_min_size}", 8, "cosine", ann_min_size=ann_min_size)
        assert isinstance(idx, AnnIndex if ann_min_size else ExactIndex)
        assert isinstance(idx, VectorIndex)  # add, remove, search, save, close, __len__, ids, revision
        assert idx.revision == -1
        idx.add(["a", "b"], unit(np.random.default_rng(1), 2))
        idx.remove(["a"])
        idx.save(4)
        assert (len(idx), idx.ids(), idx.revision) == (1, {"b"}, 4)
        idx.close()
    assert "log" not in VectorIndex.__dict__.get("__annotations__", {})  # the storage is not the interface


class FakeStore:
    """The three store methods sync_index reads, over a dict."""

    def __init__(self, texts: dict[str, str], revision: int) -> None:
        self.texts, self.rev = texts, revision

    def revision(self) -> int:
        return self.rev

    def ids(self) -> set[str]:
        return set(self.texts)

    def iter_texts(self):
        yield list(self.texts.items())


class CountingEncoder:
    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts, *, batch_size: int = 64) -> np.ndarray:
        self.encoded += texts
        return unit(np.random.default_rng(len(self.encoded)), len(texts))


def test_sync_index_embeds_only_the_missing_and_drops_the_stale() -> None:
    from dupq.index import sync_index

    idx = ExactIndex(VectorLog(8))
    idx.add(["a", "gone"], unit(np.random.default_rng(0), 2))
    enc = CountingEncoder()
    sync_index(FakeStore({"a": "x?", "b": "y?", "c": "z?"}, revision=7), enc, idx, batch_size=2)
    assert idx.ids() == {"a", "b", "c"} and idx.revision == 7
    assert sorted(enc.encoded) == ["y?", "z?"]  # "a" was already indexed
    sync_index(FakeStore({"a": "x?"}, revision=8), enc, idx, save=False)
    assert idx.ids() == {"a"} and idx.revision == 7  # not saved: still marked at the old revision


def test_get_rows_is_consistent_while_a_writer_saves(tmp_path) -> None:
    """Issue 12: a reader between save()'s swap of the memory map and the tail got IndexError."""
    import sys
    import threading

    log = VectorLog(16, tmp_path / "v")
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            n = log.n_rows
            try:
                got = log.get_rows(np.arange(n))
                assert got.shape == (n, 16)
                vectors, alive, ids = log.snapshot()
                assert len(vectors) == len(alive) == len(ids)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)
                return

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so the reader lands inside save(): 3/3 failures before
    reader = threading.Thread(target=read)
    reader.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(400):
            log.add([f"q{i}"], rng.normal(size=(1, 16)).astype(np.float32))
            log.save(i)
            if errors:
                break
    finally:
        stop.set()
        reader.join()
        sys.setswitchinterval(switch)
    assert not errors, repr(errors[0])
