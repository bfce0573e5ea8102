"""Bring an index in step with the store: the one routine that embeds what an index is missing.

Example:
    >>> import numpy as np
    >>> from dupq.index import ExactIndex, VectorLog
    >>> class Store:
    ...     def revision(self): return 3
    ...     def ids(self): return {"a", "b"}
    ...     def iter_texts(self): yield [("a", "x"), ("b", "yy")]
    >>> class Enc:
    ...     def encode(self, texts, *, batch_size=64): return np.eye(2, dtype=np.float32)[: len(texts)]
    >>> idx = ExactIndex(VectorLog(2))
    >>> sync_index(Store(), Enc(), idx)
    >>> sorted(idx.ids()), idx.revision
    (['a', 'b'], 3)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from dupq.index.base import VectorIndex

log = logging.getLogger(__name__)


class QuestionSource(Protocol):
    """What syncing reads from a store (:class:`dupq.storage.sqlite.store.QuestionStore` is one)."""

    def revision(self) -> int: ...

    def ids(self) -> set[str]: ...

    def iter_texts(self) -> Iterator[list[tuple[str, str]]]: ...


class TextEncoder(Protocol):
    """What syncing needs of an encoder (:class:`dupq.models.encoder.SiameseEncoder` is one)."""

    def encode(self, texts: Sequence[str], *, batch_size: int = ...) -> np.ndarray: ...


def sync_index(
    store: QuestionSource,
    encoder: TextEncoder,
    index: VectorIndex,
    *,
    batch_size: int = 64,
    progress: bool = False,
    save: bool = True,
    label: str = "",
) -> None:
    """Make ``index`` hold exactly the stored questions, embedding only the missing ones.

    Used on open (a missing or stale index), by ``reindex`` and by the training worker, which builds a new
    version's index in its own process before the web process switches to it.

    Args:
        store: The questions (source of truth).
        encoder: Embeds the missing questions (``encoder.encode(texts, batch_size=...)``).
        index: The index to fix, through its public methods only.
        batch_size: Encoder batch size.
        progress: Show a progress bar.
        save: Save the index at the store revision read first (False: a read-only reader, memory only).
        label: The model version, for the log and the progress bar.
    """
    revision = store.revision()  # before reading: a write meanwhile leaves the index marked stale
    fill = getattr(index, "fill", None)
    if fill is not None:  # a database index joins the store itself (dupq.index.pgvector): no id sets in memory
        bar = _progress(0, f"indexing {label}".strip(), progress)
        n = fill(encoder.encode, batch_size=batch_size, progress=bar.update)
        bar.close()
        if n:
            log.info("indexed %d questions for model %s", n, label)
        if save:
            index.save(revision)
        return
    stored = store.ids()
    have = index.ids()
    stale = list(have - stored)
    if stale:
        index.remove(stale)
    missing = stored - have
    if missing:
        log.info("indexing %d questions for model %s", len(missing), label)
        bar = _progress(len(missing), f"indexing {label}".strip(), progress)
        for batch in store.iter_texts():
            todo = [(i, t) for i, t in batch if i in missing]
            if todo:
                index.add([i for i, _ in todo], encoder.encode([t for _, t in todo], batch_size=batch_size))
                bar.update(len(todo))
        bar.close()
    if save:
        index.save(revision)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", disable=not enabled, dynamic_ncols=True)
