"""Per-client rate limits of the JSON API (Flask-Limiter, in-process memory storage).

The limits are settings (``rate_limit_search``, ``rate_limit_write``; ``DUPQ_RATE_LIMIT_SEARCH`` ...), in
Flask-Limiter's notation (``"50/second"``, ``"1000 per hour"``); an empty value turns one off. A client is
its remote address: behind a proxy, configure the proxy (or werkzeug's ``ProxyFix``) so that it is the
client's. Counters live in the process, which is right for dupq's one-process server.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from web.service import get_settings

limiter = Limiter(get_remote_address, storage_uri="memory://", headers_enabled=True)


def init_app(app: Flask) -> None:
    limiter.init_app(app)


def _limit(setting: str) -> Callable[[Callable], Callable]:
    """A route decorator applying the limit named by ``setting`` (skipped while that setting is off)."""
    return limiter.limit(
        lambda: getattr(get_settings(), setting) or "1/second",  # never used when off: exempt below
        exempt_when=lambda: not getattr(get_settings(), setting),
        key_func=get_remote_address,
        scope=setting,
    )


search_limit = _limit("rate_limit_search")
write_limit = _limit("rate_limit_write")
