"""Every error as JSON ``{"error": {"code", "message"}}`` under /api, /healthz, /readyz and /metrics; HTML pages
elsewhere. An error that is worth retrying (the database restarting: 503) carries ``Retry-After`` either way."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from dupq.errors import DupQError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str):
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    return resp


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/readyz", "/metrics")


def init_app(app: Flask) -> None:
    @app.errorhandler(DupQError)
    def _dupq_error(e: DupQError):
        if _wants_json():
            resp = error_response(e.status, e.code, e.message)
        else:
            resp = app.make_response((f"<h1>{e.status}</h1><p>{escape(e.message)}</p>", e.status))
        if e.retry_after is not None:  # RFC 9110 10.2.3: when to try again (the database restarting, ...)
            resp.headers["Retry-After"] = str(e.retry_after)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if _wants_json():
            code = (e.name or "error").lower().replace(" ", "_")
            resp = error_response(e.code or 500, code, e.description or e.name)
            allow = dict(e.get_headers()).get("Allow")
            if allow:  # RFC 9110: a 405 names the methods the resource has
                resp.headers["Allow"] = allow
            return resp
        return e

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error on %s", request.path)
        if _wants_json():
            return error_response(500, "internal_error", "internal server error")
        return "<h1>500</h1><p>internal server error</p>", 500
