"""Bearer-token protection of the write endpoints (pairs, train, promote, delete, cancel).

The token comes from the app config ``DUPQ_ADMIN_TOKEN`` (or the environment variable of that name).
Without a configured token those endpoints are disabled (403), never open.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from flask import current_app, request, session

from dupq.errors import DupQError


class AuthError(DupQError):
    code = "unauthorized"
    status = 401


class AdminDisabledError(DupQError):
    code = "admin_disabled"
    status = 403


def admin_token() -> str | None:
    return current_app.config.get("DUPQ_ADMIN_TOKEN") or None


def token_ok(given: str | None) -> bool:
    expected = admin_token()
    return bool(expected and given and hmac.compare_digest(given.encode(), expected.encode()))


def check_admin() -> None:
    """Raise unless the request carries the admin token (``Authorization: Bearer``, or the admin session)."""
    if admin_token() is None:
        raise AdminDisabledError("admin endpoints are disabled: set DUPQ_ADMIN_TOKEN to enable them")
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else None
    if not (token_ok(given) or token_ok(session.get("admin_token"))):
        raise AuthError("missing or wrong bearer token")


def require_admin(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_admin()
        return fn(*args, **kwargs)

    return wrapper
