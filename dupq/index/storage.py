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
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"


def _write_atomic(path: Path, text: str) -> None:
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
        energy: Energy of the model the vectors come from (saved for checks).
    """

    def __init__(self, dim: int, path: str | Path | None = None, *, energy: str = "cosine") -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.dim = dim
        self.energy = energy
        self.path = Path(path) if path is not None else None
        self.revision = -1
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._n = 0  # rows in use (alive or dead) of self._vecs
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
    def vectors(self) -> np.ndarray:
        """All rows in use, dead ones included (mask with :attr:`alive`)."""
        return self._vecs[: self._n]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self._n]

    def row_ids(self) -> list[str]:
        """Id of each row (dead rows keep their old id)."""
        return self._ids

    def ids(self) -> set[str]:
        return set(self._row)

    def dead_fraction(self) -> float:
        return 0.0 if self._n == 0 else 1.0 - len(self._row) / self._n

    def add(self, ids: list[str], vectors: np.ndarray) -> list[int]:
        """Append vectors; an id already present is replaced (its old row dies). Returns the new rows."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        self.remove([i for i in ids if i in self._row])
        need = self._n + len(ids)
        if need > len(self._vecs):
            cap = max(need, 2 * len(self._vecs), 1024)
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[: self._n] = self._vecs[: self._n]
            alive = np.zeros(cap, dtype=bool)
            alive[: self._n] = self._alive[: self._n]
            self._vecs, self._alive = grown, alive
        rows = list(range(self._n, need))
        self._vecs[self._n : need] = vectors
        self._alive[self._n : need] = True
        for r, qid in zip(rows, ids, strict=False):
            self._ids.append(qid)
            self._row[qid] = r
        self._n = need
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
        sizes["vectors.f32"] = self._append("vectors.f32", self._vecs[self._persisted_rows : self._n].tobytes())
        sizes["ids.txt"] = self._append("ids.txt", new_ids)
        sizes["deleted.txt"] = self._append("deleted.txt", new_dead)
        manifest = {
            "dim": self.dim,
            "rows": self._n,
            "deleted": len(self._deleted_log),
            "bytes": sizes,
            "revision": revision,
            "energy": self.energy,
        }
        _write_atomic(self.path / MANIFEST, json.dumps(manifest))
        self._bytes = sizes
        self._persisted_rows, self._persisted_deleted = self._n, len(self._deleted_log)
        self.revision = revision

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

    def compact(self, revision: int) -> None:
        """Drop dead rows and rewrite the files (write to a sibling folder, then rename)."""
        keep = np.flatnonzero(self.alive)
        ids = [self._ids[r] for r in keep]
        vecs = self._vecs[keep].copy()
        self.__init__(self.dim, self.path, energy=self.energy)  # reset in-memory state
        if self.path is None:
            self.add(ids, vecs)
            self.revision = revision
            return
        final = self.path
        tmp = final.with_name(final.name + ".compact")
        shutil.rmtree(tmp, ignore_errors=True)
        self.path = tmp
        self.add(ids, vecs)
        self.save(revision)
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        self.path = final

    @classmethod
    def load(cls, path: str | Path) -> VectorLog:
        """Read a persisted log (only what its manifest commits). Raises FileNotFoundError when absent."""
        path = Path(path)
        m = json.loads((path / MANIFEST).read_text())
        log = cls(int(m["dim"]), path, energy=m.get("energy", "cosine"))
        rows, sizes = int(m["rows"]), m["bytes"]
        vecs = np.fromfile(path / "vectors.f32", dtype=np.float32, count=rows * log.dim)
        ids = _read_prefix(path / "ids.txt", sizes["ids.txt"]).splitlines()
        dead = [int(r) for r in _read_prefix(path / "deleted.txt", sizes["deleted.txt"]).splitlines()]
        if vecs.size != rows * log.dim or len(ids) != rows or len(dead) != int(m["deleted"]):
            raise ValueError(f"{path}: index files are shorter than the manifest says")
        log._vecs = vecs.reshape(rows, log.dim)
        log._alive = np.ones(rows, dtype=bool)
        log._alive[dead] = False
        log._ids, log._n, log._deleted_log = ids, rows, dead
        log._row = {ids[r]: int(r) for r in np.flatnonzero(log._alive)}
        log._bytes = dict(sizes)
        log._persisted_rows, log._persisted_deleted = rows, len(dead)
        log.revision = int(m["revision"])
        return log


def _read_prefix(path: Path, size: int) -> str:
    if size == 0:
        return ""
    with open(path, "rb") as f:
        data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{path} is shorter than its manifest says")
    return data.decode()
