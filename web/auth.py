"""Bearer-token protection of the write endpoints (pairs, train, promote, delete, cancel).

The token is the ``admin_token`` setting (``DUPQ_ADMIN_TOKEN``). Without one those endpoints are disabled
(403), never open. A person signs in on the admin page once: the session then holds a signed ``admin``
claim, never the token itself (the session cookie is signed, not encrypted: anyone holding it can read it).
"""

from __future__ import annotations

import hmac

from flask import request, session

from dupq.errors import DupQError
from web.service import get_settings

#: Session key of the signed-in claim.
ADMIN_CLAIM = "admin"


class AuthError(DupQError):
    code = "unauthorized"
    status = 401


class AdminDisabledError(DupQError):
    code = "admin_disabled"
    status = 403


def admin_token() -> str | None:
    return get_settings().admin_token


def token_ok(given: str | None) -> bool:
    expected = admin_token()
    return bool(expected and given and hmac.compare_digest(given.encode(), expected.encode()))


def signed_in() -> bool:
    """Whether this browser session signed in with the admin token (and admin is enabled at all)."""
    return admin_token() is not None and session.get(ADMIN_CLAIM) is True


def sign_in(token: str) -> bool:
    """Check ``token``; on success mark the session signed in. Returns whether it was right."""
    if not token_ok(token):
        return False
    session.clear()  # a fresh session on privilege change
    session[ADMIN_CLAIM] = True
    return True


def sign_out() -> None:
    session.pop(ADMIN_CLAIM, None)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def check_token() -> None:
    """The JSON API's check: raise unless the request carries the admin token (``Authorization: Bearer``).

    A signed-in browser session is not enough here: the API is exempt from CSRF tokens (web/csrf.py), so a
    cookie alone must never authorise an API write (a cross-site form could otherwise ride on it).
    """
    if admin_token() is None:
        raise AdminDisabledError("admin endpoints are disabled: set DUPQ_ADMIN_TOKEN to enable them")
    if not token_ok(_bearer()):
        raise AuthError("missing or wrong bearer token")


def check_admin() -> None:
    """The pages' check: raise unless the request carries the admin token or comes from a signed-in session
    (the pages' forms and fetches carry a CSRF token, web/csrf.py)."""
    if admin_token() is None:
        raise AdminDisabledError("admin endpoints are disabled: set DUPQ_ADMIN_TOKEN to enable them")
    if not (token_ok(_bearer()) or signed_in()):
        raise AuthError("missing or wrong bearer token")


