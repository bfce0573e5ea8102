"""One home, one writer: the advisory lock on ``$DUPQ_HOME`` and the :class:`dupq.storage.Nodes` of a process
that is the only one writing its state.

Example:
    >>> import tempfile, pathlib
    >>> home = pathlib.Path(tempfile.mkdtemp())
    >>> lock = HomeLock(home)
    >>> HomeLock(home)
    Traceback (most recent call last):
    ...
    dupq.errors.BusyError: ... is in use by another dupq process (pid ...); stop it first, or use its HTTP API
    >>> lock.release()
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from dupq.errors import BusyError


class HomeLock:
    """An exclusive advisory lock on ``$DUPQ_HOME`` so that only one process writes its store and indexes."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / ".lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise BusyError(
                f"{home} is in use by another dupq process (pid {holder}); stop it first, or use its HTTP API"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class OneWriter:
    """The :class:`dupq.storage.Nodes` of a home's one writer: nobody to follow or tell, and a promotion holds
    writes back while it loads the new version, so that its index is complete at the switch."""

    def start(self, *, on_current: Callable[[str], None], on_ready: Callable[[str], None],
              on_tick: Callable[[], None], status: Callable[[], tuple[str, str | None]],
              reindex_tools: Callable[[str], tuple[Any, Any]] | None = None,
              on_flip: Callable[[str, Callable[[], bool]], None] | None = None) -> None:
        pass

    def share_reindex(self, version: str, open_index: Callable[[], Any], *, rollback: bool = False) -> None:
        """None: the one writer embeds the whole bank itself (no other node to share it with)."""
        return None

    def loading(self, write_lock: threading.RLock) -> AbstractContextManager[Any]:
        return write_lock

    def announce(self, version: str) -> None:
        pass

    def close(self) -> None:
        pass
