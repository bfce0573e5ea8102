"""Facts about the machine this process runs on; no dupq imports, so any layer may use it.

Example:
    >>> cpu_threads() >= 1
    True
    >>> default_shared_cache({"DUPQ_EXPORT_CACHE": ""}) is None
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def cpu_threads() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def default_shared_cache(environ: Mapping[str, str]) -> Path | None:
    """The per-user folder of OpenVINO exports shared by every home, as ``environ`` configures it.

    ``DUPQ_EXPORT_CACHE`` names it (empty: no shared cache); otherwise ``$XDG_CACHE_HOME/dupq/openvino``,
    or ``~/.cache/dupq/openvino``. The caller passes the mapping (an entry point's ``os.environ``), so
    nothing below the entry points reads the environment.

    Example:
        >>> str(default_shared_cache({"DUPQ_EXPORT_CACHE": "/tmp/ov"}))
        '/tmp/ov'
        >>> str(default_shared_cache({"XDG_CACHE_HOME": "/c"}))
        '/c/dupq/openvino'
    """
    value = environ.get("DUPQ_EXPORT_CACHE")
    if value is not None:
        return Path(value) if value else None
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dupq" / "openvino"
