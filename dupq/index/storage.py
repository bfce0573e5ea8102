"""VectorLog: the vectors of one model version, in memory and in an append-only log on disk.

Layout of ``index/<version>/``::

    vectors.f32     rows of float32[dim], appended
    ids.txt         one question id per line, appended (row i of vectors.f32 is line i)
    deleted.txt     row numbers deleted since, appended
    manifest.json   {"dim", "rows", "deleted", "bytes", "revision", "energy"}: rewritten atomically
                    after each append; it alone says how much of each file is committed

Only what the manifest counts is read back, so a crash in the middle of an append leaves the previous
state readable (the partial tail is ignored and overwritten). Deletions leave dead rows until
:meth:`VectorLog.compact` rewrites the files (write-then-rename).

Memory: the committed rows are *memory-mapped* from vectors.f32 (read-only), not copied into the heap;
only rows added since the last save live in a small in-memory tail. The page cache keeps a small bank
hot, so exact search costs the same as from RAM, while a large bank served by the ANN index (which keeps
its own compact f16 copy, dupq/index/ann.py) touches only the few rows it re-ranks: the float32 vectors
are held once, on disk and in the page cache, never as a second heap copy (1.5 GB at 1M x 384).

Example:
    >>> import numpy as np
    >>> log = VectorLog(2)
    >>> log.add(["a", "b"], np.eye(2, dtype=np.float32))
    [0, 1]
    >>> log.remove(["a"]), len(log), log.get_rows(np.array([1])).tolist()
    ([0], 1, [[0.0, 1.0]])
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dupq.models.energy import Energy

MANIFEST = "manifest.json"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class VectorLog:
    """Vectors keyed by question id: the one copy an index searches over.

    Args:
        dim: Vector dimension.
        path: Folder to persist into, or None for memory only.
        energy: Energy of the model the vectors come from (an :class:`Energy` or its name; the name is
            saved for checks).

    Thread safety: one writer, any number of readers without a lock. The row storage is one
    ``(disk, tail)`` pair replaced by a single assignment (a save maps the appended rows and drops the
    tail; an add may grow the tail), and committed rows are never written again, so a reader that takes
    the pair once (:meth:`get_rows`, :meth:`snapshot`) sees every row below the :attr:`n_rows` it read
    first, whatever the writer does meanwhile.
    """

    def __init__(self, dim: int, path: str | Path | None = None, *, energy: str | Energy = Energy.COSINE) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.dim = dim
        self.energy = Energy.from_name(energy)
        self.path = Path(path) if path is not None else None
        self.revision = -1
        # (committed rows: a read-only memmap, rows [len(disk), _n) grown by doubling); swapped as one value.
        self._segments: tuple[np.ndarray, np.ndarray] = (
            np.zeros((0, dim), dtype=np.float32),
            np.zeros((0, dim), dtype=np.float32),
        )
        self._n = 0  # rows in use (alive or dead); raised only after the rows are in _segments
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._alive = np.zeros(0, dtype=bool)
        self._deleted_log: list[int] = []  # rows deleted since the last compaction (deleted.txt)
        self._bytes: dict[str, int] = {}  # committed size of each file, as in the manifest
        self._persisted_rows = 0
        self._persisted_deleted = 0

    # -- content ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, qid: object) -> bool:
        return qid in self._row

    @property
    def n_rows(self) -> int:
        """Rows in use, alive or dead: row numbers are ``0 .. n_rows - 1`` until the next compaction."""
        return self._n

    @property
    def vectors(self) -> np.ndarray:
        """All rows in use, dead ones included (mask with :attr:`alive`).

        A view of the memory map when everything is saved (the usual state: the service saves after each
        write); a concatenated copy only while unsaved rows exist beside saved ones.
        """
        return self._vectors(self._n, self._segments)

    @staticmethod
    def _vectors(n: int, segments: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        disk, tail = segments
        if n <= len(disk):
            return disk[:n] if n < len(disk) else disk
        tail = tail[: n - len(disk)]
        return tail if len(disk) == 0 else np.concatenate([disk, tail])

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(vectors, alive, row_ids)`` of one moment, consistent with each other (for exact search)."""
        n = self._n  # first: the storage read next holds at least these rows
        vectors = self._vectors(n, self._segments)
        return vectors, self._alive[:n], self._ids[:n]

    def get_rows(self, rows: np.ndarray) -> np.ndarray:
        """Copies of the given rows (dead or alive), reading only those rows (for re-ranking)."""
        rows = np.asarray(rows, dtype=np.int64)
        disk, tail = self._segments  # once: a concurrent save swaps both
        n_disk = len(disk)
        if len(rows) == 0 or rows.max() < n_disk:
            return np.asarray(disk[rows])
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        on_disk = rows < n_disk
        out[on_disk] = disk[rows[on_disk]]
        out[~on_disk] = tail[rows[~on_disk] - n_disk]
        return out

    def iter_alive(self, chunk: int = 65536):
        """Yield ``(rows, vectors)`` of the alive rows in row order, ``chunk`` rows at a time."""
        n = self._n
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            rows = start + np.flatnonzero(self._alive[start:stop])
            if len(rows):
                yield rows, self.get_rows(rows)

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self._n]

    def row_ids(self) -> list[str]:
        """Id of each row (dead rows keep their old id)."""
        return self._ids

    def ids(self) -> set[str]:
        return set(self._row)

    def rows_of(self, ids: Iterable[str]) -> np.ndarray:
        """The alive rows of ``ids`` (ids not in the log are left out), in the order given."""
        row = self._row
        return np.fromiter((r for r in map(row.get, ids) if r is not None), dtype=np.int64)

    def dead_fraction(self) -> float:
        return 0.0 if self._n == 0 else 1.0 - len(self._row) / self._n

    @property
    def deleted_count(self) -> int:
        """Deletions recorded since the last compaction (the length of the deletion list)."""
        return len(self._deleted_log)

    def deleted_rows(self, start: int = 0) -> list[int]:
        """Rows deleted since the last compaction, in deletion order, from the ``start``-th deletion on."""
        return self._deleted_log[start:]

    def add(self, ids: list[str], vectors: np.ndarray) -> list[int]:
        """Append vectors; an id already present is replaced (its old row dies). Returns the new rows."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        self.remove([i for i in ids if i in self._row])
        need = self._n + len(ids)
        disk, tail = self._segments
        n_disk = len(disk)
        if need - n_disk > len(tail):
            cap = max(need - n_disk, 2 * len(tail), 1024)
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[: self._n - n_disk] = tail[: self._n - n_disk]
            tail = grown
        if need > len(self._alive):
            alive = np.zeros(max(need, 2 * len(self._alive), 1024), dtype=bool)
            alive[: self._n] = self._alive[: self._n]
            self._alive = alive
        rows = list(range(self._n, need))
        tail[self._n - n_disk : need - n_disk] = vectors  # rows past _n: no reader looks at them yet
        self._segments = (disk, tail)
        self._alive[self._n : need] = True
        for r, qid in zip(rows, ids, strict=False):
            self._ids.append(qid)
            self._row[qid] = r
        self._n = need  # last: readers that see it find the rows above
        return rows

    def remove(self, ids: Iterable[str]) -> list[int]:
        """Mark ids deleted; unknown ids are ignored. Returns the rows that died."""
        rows = []
        for qid in ids:
            r = self._row.pop(qid, None)
            if r is not None:
                self._alive[r] = False
                self._deleted_log.append(r)
                rows.append(r)
        return rows

    # -- persistence ------------------------------------------------------------------------------
    def save(self, revision: int) -> None:
        """Append what is new since the last save, then commit it by rewriting the manifest."""
        if self.path is None:
            self.revision = revision
            return
        self.path.mkdir(parents=True, exist_ok=True)
        new_ids = "".join(i + "\n" for i in self._ids[self._persisted_rows : self._n]).encode()
        new_dead = "".join(f"{r}\n" for r in self._deleted_log[self._persisted_deleted :]).encode()
        sizes = dict(self._bytes)
        disk, tail = self._segments
        n = self._n
        sizes["vectors.f32"] = self._append("vectors.f32", tail[: n - len(disk)].tobytes())
        sizes["ids.txt"] = self._append("ids.txt", new_ids)
        sizes["deleted.txt"] = self._append("deleted.txt", new_dead)
        manifest = {
            "dim": self.dim,
            "rows": self._n,
            "deleted": len(self._deleted_log),
            "bytes": sizes,
            "revision": revision,
            "energy": self.energy.name,
        }
        write_atomic(self.path / MANIFEST, json.dumps(manifest))
        self._bytes = sizes
        self._persisted_rows, self._persisted_deleted = self._n, len(self._deleted_log)
        self.revision = revision
        # The appended rows are now in the file: map them and drop the heap copy, in one assignment (a
        # reader between two assignments saw the old map's length with the new, empty tail: issue 12).
        self._segments = (_map(self.path / "vectors.f32", n, self.dim), np.zeros((0, self.dim), dtype=np.float32))

    def _append(self, name: str, data: bytes) -> int:
        """Append after the committed prefix (cutting any torn tail a crash left); returns the new size."""
        assert self.path is not None
        f_path = self.path / name
        committed = self._bytes.get(name, 0)
        with open(f_path, "r+b" if f_path.exists() else "wb") as f:
            f.truncate(committed)
            f.seek(committed)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return committed + len(data)

    def compacted_copy(self, path: str | Path | None, revision: int, chunk: int = 65536) -> VectorLog:
        """A new log at ``path`` holding only the alive rows (renumbered in order), saved at ``revision``.

        Streams ``chunk`` rows at a time, so compacting a memory-mapped million rows never holds them all.
        """
        new = VectorLog(self.dim, path, energy=self.energy)
        if new.path is not None:
            shutil.rmtree(new.path, ignore_errors=True)
        for rows, vecs in self.iter_alive(chunk):
            new.add([self._ids[r] for r in rows], vecs)
            if new.path is not None:
                new.save(revision)  # flush each chunk to the file: the heap holds one chunk at most
        new.save(revision)
        return new

    def compact(self, revision: int) -> None:
        """Drop dead rows and rewrite the files (write to a sibling folder, then rename)."""
        if self.path is None:
            new = self.compacted_copy(None, revision)
            self.__dict__.update(new.__dict__)
            return
        final = self.path
        tmp = final.with_name(final.name + ".compact")
        new = self.compacted_copy(tmp, revision)
        replace_folder(tmp, final)
        new.path = final  # the same inodes under their final name
        self.__dict__.update(new.__dict__)

    @classmethod
    def load(cls, path: str | Path) -> VectorLog:
        """Read a persisted log (only what its manifest commits). Raises FileNotFoundError when absent."""
        path = Path(path)
        m = json.loads((path / MANIFEST).read_text())
        log = cls(int(m["dim"]), path, energy=m.get("energy", Energy.COSINE.name))  # older manifests: cosine
        rows, sizes = int(m["rows"]), m["bytes"]
        need = rows * log.dim * 4
        if sizes.get("vectors.f32", 0) != need or (path / "vectors.f32").stat().st_size < need:
            raise ValueError(f"{path}: vectors.f32 is shorter than the manifest says")
        ids = _read_prefix(path / "ids.txt", sizes["ids.txt"]).splitlines()
        dead = [int(r) for r in _read_prefix(path / "deleted.txt", sizes["deleted.txt"]).splitlines()]
        if len(ids) != rows or len(dead) != int(m["deleted"]):
            raise ValueError(f"{path}: index files are shorter than the manifest says")
        log._segments = (_map(path / "vectors.f32", rows, log.dim), np.zeros((0, log.dim), dtype=np.float32))
        log._alive = np.ones(rows, dtype=bool)
        log._alive[dead] = False
        log._ids, log._n, log._deleted_log = ids, rows, dead
        log._row = {ids[r]: int(r) for r in np.flatnonzero(log._alive)}
        log._bytes = dict(sizes)
        log._persisted_rows, log._persisted_deleted = rows, len(dead)
        log.revision = int(m["revision"])
        return log


def _map(path: Path, rows: int, dim: int) -> np.ndarray:
    """Read-only memory map of the first ``rows`` rows of a float32 file (an empty array for none)."""
    if rows == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(rows, dim))


def replace_folder(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final`` (the old one goes aside, then away); a crash leaves one complete."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _read_prefix(path: Path, size: int) -> str:
    if size == 0:
        return ""
    with open(path, "rb") as f:
        data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{path} is shorter than its manifest says")
    return data.decode()
