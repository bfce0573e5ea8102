"""The dupq web app: a search page for people and a JSON API for programs, over one :class:`dupq.service.DupQ`.

Example:
    >>> app = create_app({"DUPQ_HOME": "/tmp/dupq-demo"})   # doctest: +SKIP
    >>> app.test_client().get("/healthz").json               # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from dupq.config import DEFAULT_HOME


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory (flaskr style): defaults, then the instance ``config.py`` or ``config``.

    Config keys: ``DUPQ_HOME`` (state folder), ``DUPQ_SEED_BANK`` (``"default"``, a question file, or
    None), ``DUPQ_ADMIN_TOKEN`` (bearer token of the write endpoints; None disables them),
    ``DUPQ_GATE_EVAL_FILE`` / ``DUPQ_GATE_TOLERANCE`` (the retrain evaluation gate), ``SECRET_KEY`` (signs
    the page's session and flash messages).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("DUPQ_SECRET_KEY") or os.urandom(16).hex(),
        DUPQ_HOME=os.environ.get("DUPQ_HOME", DEFAULT_HOME),
        DUPQ_SEED_BANK=os.environ.get("DUPQ_SEED_BANK", "default") or None,
        DUPQ_ADMIN_TOKEN=os.environ.get("DUPQ_ADMIN_TOKEN") or None,
        DUPQ_GATE_EVAL_FILE=os.environ.get("DUPQ_GATE_EVAL_FILE") or None,
        DUPQ_GATE_TOLERANCE=float(os.environ.get("DUPQ_GATE_TOLERANCE") or 0.005),
        JSON_SORT_KEYS=False,
    )
    if config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(config)

    from web import admin, api, errors, pages, service

    service.init_app(app)
    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(admin.bp)
    return app
