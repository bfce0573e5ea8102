"""Log lines as one JSON object each (the ``log_format = "json"`` setting), for a log pipeline to parse.

Each line is ``{"time", "level", "logger", "message", ...}`` plus the record's extra fields (``request_id``,
``method``, ``path``, ``status``, ``duration_ms`` on a request line) and ``exc_info`` with the traceback when
there is one. A context function (the web app's: the current request's id) adds fields to every line logged
while it answers something, from whichever library logs it.

Example:
    >>> import io, json, logging
    >>> stream = io.StringIO()
    >>> h = logging.StreamHandler(stream)
    >>> h.setFormatter(JsonFormatter(context=lambda: {"request_id": "r1"}))
    >>> log = logging.getLogger("dupq.doctest"); log.addHandler(h); log.propagate = False
    >>> log.warning("hello %s", "there", extra={"status": 200})
    >>> line = json.loads(stream.getvalue())
    >>> line["message"], line["request_id"], line["status"], line["level"]
    ('hello there', 'r1', 200, 'WARNING')
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

#: Attributes every LogRecord has: the rest of a record's ``__dict__`` are ``extra=`` fields, written as they are.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
#: Libraries whose INFO lines are one per call (psycopg_pool: every connection handed out), not events.
_CHATTY = ("psycopg.pool", "urllib3", "httpx", "filelock")


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON.

    Args:
        context: Called for each record; its fields are added unless the record has them (None: none).
    """

    def __init__(self, context: Callable[[], Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self.context = context

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.context is not None:
            out.update(self.context())
        out.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record comes (a test's capture, a redirected stream)."""

    @property
    def stream(self):  # noqa: D401 - a property standing in for StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(log_format: str, *, context: Callable[[], Mapping[str, Any]] | None = None) -> None:
    """Set up the process's logging for ``log_format`` (an entry point's job, once per process).

    ``"json"``: the root logger writes INFO and up to stderr as JSON lines (replacing the handler an earlier
    call installed); ``"text"``: nothing changes (Python's default: warnings and errors, plain text).
    """
    if log_format != "json":
        return
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "dupq_json", False):
            root.removeHandler(h)
    handler = _Stderr()
    handler.dupq_json = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter(context))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
