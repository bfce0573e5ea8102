"""CSRF protection of every form and page fetch (Flask-WTF's ``CSRFProtect``); the JSON API is exempt.

Each page carries its token (``<meta name="csrf-token">`` and a hidden ``csrf_token`` field in each form); the
page scripts send it as ``X-CSRFToken`` with their fetches. A POST to a page route without a valid token is a
400 ``csrf_failed`` (JSON when the page asked for JSON). The JSON API (``/api/``) is exempt because a browser
cookie never authorises it: its writes need the ``Authorization: Bearer`` token (web/auth.py), which a
cross-site form cannot send, and its bodies must be ``application/json``.

The session cookie is ``SameSite=Lax`` by default (``session_cookie_samesite``) and ``Secure`` when
``session_cookie_secure`` is on (behind TLS).
"""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFError, CSRFProtect
from markupsafe import escape

csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    # Tokens live as long as the session (a search page left open for hours still posts feedback).
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    csrf.init_app(app)
    from web import api

    csrf.exempt(api.bp)

    @app.errorhandler(CSRFError)
    def _csrf_failed(e: CSRFError):
        from web.errors import error_response
        from web.pages import wants_json

        message = f"{e.description} Reload the page and try again."
        if wants_json():
            return error_response(400, "csrf_failed", message)
        return f"<h1>400</h1><p>{escape(message)}</p>", 400
