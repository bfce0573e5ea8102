"""The embeddable widget: ``static/widget.js`` served for other sites' pages (docs/widget.md).

Two paths serve the same file:

- ``GET /widget.js``: always the current widget, cached for an hour and revalidated by ETag (an upgrade of
  dupq reaches every host page within the hour);
- ``GET /widget/<digest>.js``: that exact content (``digest``: the first 16 hex digits of its SHA-256),
  cacheable for a year as ``immutable``; any other digest is a 404. ``/widget.js`` names it in its
  ``X-Dupq-Widget`` header, with the ``sha384`` for a ``<script integrity>`` in ``X-Dupq-Widget-Integrity``.

Both answer any origin (``Access-Control-Allow-Origin: *``, no credentials) so that a host page may load the
script with ``crossorigin="anonymous"`` and an ``integrity`` check, and ``Cross-Origin-Resource-Policy:
cross-origin`` so that pages with ``Cross-Origin-Embedder-Policy`` may load it at all. Neither sets a cookie.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, abort, request

from web.auth import requires

bp = Blueprint("widget", __name__)

WIDGET_JS = Path(__file__).parent / "static" / "widget.js"
#: ``/widget.js``: an hour in caches, then revalidated (ETag) so that a new version arrives soon.
LATEST_CACHE = "public, max-age=3600"
#: ``/widget/<digest>.js``: its content never changes.
PINNED_CACHE = "public, max-age=31536000, immutable"


@cache
def _widget() -> tuple[bytes, str, str]:
    """The file's bytes, its digest (path name) and its SRI hash; read once per process (it ships with dupq)."""
    data = WIDGET_JS.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    integrity = "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()
    return data, digest, integrity


def pinned_path() -> str:
    """The immutable path of the current widget, e.g. ``/widget/3f2a...9c.js``."""
    return f"/widget/{_widget()[1]}.js"


def _serve(cache_control: str) -> Response:
    data, digest, integrity = _widget()
    response = Response(data, mimetype="text/javascript")
    response.headers["Cache-Control"] = cache_control
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Dupq-Widget"] = pinned_path()
    response.headers["X-Dupq-Widget-Integrity"] = integrity
    response.set_etag(digest)
    return response.make_conditional(request)


@bp.get("/widget.js")
@requires(None)
def latest():
    return _serve(LATEST_CACHE)


@bp.get("/widget/<digest>.js")
@requires(None)
def pinned(digest: str):
    if digest != _widget()[1]:
        abort(404)
    return _serve(PINNED_CACHE)
