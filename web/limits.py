"""Per-client rate limits of the JSON API (Flask-Limiter, in-process memory storage).

The limits are settings (``rate_limit_search``, ``rate_limit_write``; ``DUPQ_RATE_LIMIT_SEARCH`` ...), in
Flask-Limiter's notation (``"50/second"``, ``"1000 per hour"``); an empty value turns one off. A client is
its remote address: behind a proxy, configure the proxy (or werkzeug's ``ProxyFix``) so that it is the
client's. Counters live in the process, which is right for dupq's one-process server.

A request made with an API key (web/auth.py) is also counted against that key, all its clients and every limited
route together (a widget's search key is shared by a whole site's visitors): the key's own limit
(``dupq keys create --rate-limit``), else the ``rate_limit_key`` setting; neither: no per-key limit.

Storage: ``limits``' memory storage, except that expired counters are dropped inline (at most once a
second, on a hit) instead of by a ``threading.Timer`` it starts again 10 ms after each hit: that timer made
every other search start a thread (measured: 2 ms of a search's time on the loaded 2-core machine).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Flask, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage

from web.service import get_settings


class InlineMemoryStorage(MemoryStorage):
    """:class:`limits.storage.MemoryStorage` without its expiry thread (registered as ``dupq-memory://``)."""

    STORAGE_SCHEME = ["dupq-memory"]
    #: Seconds between two sweeps of expired counters (each counter also expires on its own next read).
    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.timer.cancel()  # the base class starts one at once; nothing restarts it (see below)
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the base class's private timer restart
        now = time.monotonic()
        if now >= self._next_sweep and self._sweep_lock.acquire(blocking=False):
            try:
                self._next_sweep = now + self.SWEEP_SECONDS
                self._MemoryStorage__expire_events()
            finally:
                self._sweep_lock.release()


limiter = Limiter(get_remote_address, storage_uri="dupq-memory://", headers_enabled=True)


def init_app(app: Flask) -> None:
    limiter.init_app(app)


def _key_limit() -> str | None:
    """The limit of this request's API key (None: no key, or no limit for it)."""
    key = g.get("dupq_bearer")  # set by web.auth's hook, which runs first
    return None if key is None else (key.rate_limit or get_settings().rate_limit_key)


#: Every limited route's requests made with one key, counted together under the key's name.
per_key = limiter.shared_limit(
    lambda: _key_limit() or "1/second",  # never used without one: exempt below
    scope="api-key",
    key_func=lambda: f"key:{g.dupq_bearer.name}",
    exempt_when=lambda: _key_limit() is None,
)


def _limit(setting: str) -> Callable[[Callable], Callable]:
    """A route decorator applying the per-client limit named by ``setting`` (skipped while that setting is off)
    and the per-key limit."""
    per_client = limiter.limit(
        lambda: getattr(get_settings(), setting) or "1/second",  # never used when off: exempt below
        exempt_when=lambda: not getattr(get_settings(), setting),
        key_func=get_remote_address,
        scope=setting,
    )
    return lambda fn: per_client(per_key(fn))


search_limit = _limit("rate_limit_search")
write_limit = _limit("rate_limit_write")
