"""The dupq web app: a search page for people and a JSON API for programs, over one :class:`dupq.service.DupQ`.

Example:
    >>> app = create_app({"home": "/tmp/dupq-demo"})   # doctest: +SKIP
    >>> app.test_client().get("/healthz").json          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from dupq.config import MAX_BODY_BYTES, Settings


def create_app(test_config: Mapping[str, Any] | None = None, *, settings: Settings | None = None) -> Flask:
    """Application factory (flaskr style).

    Args:
        test_config: Explicit settings: :class:`dupq.config.Settings` field names (``home``, ``seed_bank``,
            ``admin_token``, ...), plus Flask's own upper-case keys (``TESTING``). They override the
            environment (``DUPQ_*``), which overrides the instance file (``$DUPQ_CONFIG``), which overrides the
            defaults.
        settings: Already-built settings (the CLI builds them once per process); ``test_config`` then holds
            Flask keys only.
    """
    flask_keys = {k: v for k, v in (test_config or {}).items() if k.isupper()}
    explicit = {k: v for k, v in (test_config or {}).items() if not k.isupper()}
    if settings is None:
        settings = Settings.load(environ=os.environ, **explicit)
    elif explicit:
        raise TypeError("pass either settings or explicit setting values, not both")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the entry point's job: weights come from disk only

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key or os.urandom(16).hex(),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,  # werkzeug answers 413 from Content-Length, before reading the body
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_SAMESITE=settings.session_cookie_samesite,
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        **flask_keys,
    )

    from web import admin, api, auth, cors, csrf, errors, limits, metrics, pages, service, tracing, widget

    tracing.init_app(app, settings)  # first: logs from opening the service are JSON lines too
    service.init_app(app, settings)
    metrics.init_app(app, settings)  # before the limiter: its refusals (429) are counted too
    errors.init_app(app)
    auth.init_app(app)  # a presented key is checked first (the rate limiter counts per key)
    limits.init_app(app)
    csrf.init_app(app)
    cors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(widget.bp)
    return app
