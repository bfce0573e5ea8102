"""Request ids and request log lines.

Every request gets an id: the client's ``X-Request-Id`` when it is a sane token (1-128 characters of letters,
digits and ``._:-``; a proxy's or a caller's id, so one id follows a request through several services), else a
new random one. The response carries it back as ``X-Request-Id``, and every log line written while the request
is answered carries it as ``request_id`` (``log_format = "json"``, :mod:`dupq.logs`), as does the one line
logged per request (logger ``dupq.request``: method, path, endpoint, status, duration_ms).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from flask import Flask, g, has_request_context, request

from dupq import logs
from dupq.config import Settings

#: An incoming id is kept only if it matches this (no spaces, quotes or control characters reach the logs).
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
HEADER = "X-Request-Id"

log = logging.getLogger("dupq.request")


def request_id() -> str | None:
    """The current request's id (None outside a request)."""
    return g.get("request_id") if has_request_context() else None


def _context() -> dict[str, Any]:
    rid = request_id()
    return {"request_id": rid} if rid else {}


def init_app(app: Flask, settings: Settings) -> None:
    logs.configure(settings.log_format, context=_context)

    @app.before_request
    def _start() -> None:
        given = request.headers.get(HEADER, "")
        g.request_id = given if SANE_ID.fullmatch(given) else uuid.uuid4().hex
        g.request_t0 = time.perf_counter()

    @app.after_request
    def _finish(resp):
        rid = g.get("request_id")
        if rid is None:  # a request refused before the hooks ran: give it an id all the same
            rid = g.request_id = uuid.uuid4().hex
        resp.headers[HEADER] = rid
        if log.isEnabledFor(logging.INFO):
            t0 = g.get("request_t0")
            log.info(
                "%s %s %s", request.method, request.path, resp.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "endpoint": request.url_rule.rule if request.url_rule is not None else None,
                    "status": resp.status_code,
                    "duration_ms": None if t0 is None else round((time.perf_counter() - t0) * 1000, 3),
                },
            )
        return resp
