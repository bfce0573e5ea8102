"""Cross-origin access to the search endpoint, for the widget on a community's own site (docs/widget.md).

Only ``POST /api/v1/search`` (and its ``OPTIONS`` preflight) answers a cross-origin page, and only one whose
``Origin`` is exactly one of the ``cors_origins`` setting (none by default). Such an answer carries
``Access-Control-Allow-Origin: <that origin>`` (never ``*``) and never ``Access-Control-Allow-Credentials``: a
browser then refuses to send cookies with it, so a visitor's dupq session can never ride on a widget's
request (the search endpoint reads none anyway; a key travels as ``Authorization: Bearer``, which the page
script sets itself). Any other origin gets no CORS header at all, so its browser refuses the answer (and, for
the JSON ``Content-Type`` the widget sends, refuses to send the request after the preflight). Every answer of
the endpoint says ``Vary: Origin``, so a cache in between never serves one origin's answer to another.

The API needs no CSRF token (web/csrf.py exempts it) and that stays safe here: a cross-site form cannot send
``application/json`` (the contract refuses any other body with 400 ``invalid_json``), and a script from a
non-listed origin is stopped by the preflight.

A small ``after_request`` hook rather than Flask-CORS: one endpoint, exact origins, four headers.
"""

from __future__ import annotations

from flask import Flask, Response, request

from web.service import get_settings

#: Endpoints a listed origin may call (the search alone: the widget's one request).
CORS_ENDPOINTS = frozenset({"api.search"})
#: Request headers a listed origin's script may send (the key, and the JSON body's type).
ALLOW_HEADERS = "Authorization, Content-Type"
#: How long a browser may reuse a preflight answer (Chromium caps it at 7,200 s): one preflight per
#: ten minutes instead of one per keystroke's search.
MAX_AGE_S = 600
#: Answer headers a listed origin's script may read besides the CORS-safelisted ones (the rate limit's).
EXPOSE_HEADERS = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"


def allowed_origin() -> str | None:
    """This request's ``Origin`` if the ``cors_origins`` setting lists it exactly, else None."""
    origin = request.headers.get("Origin")
    return origin if origin and origin in get_settings().cors_origins else None


def add_cors_headers(response: Response) -> Response:
    """The ``after_request`` hook: CORS headers on the search endpoint's answers to a listed origin."""
    if request.endpoint not in CORS_ENDPOINTS:
        return response
    response.vary.add("Origin")
    origin = allowed_origin()
    if origin is None:
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:  # a preflight
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE_S)
    else:
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_cors_headers)
