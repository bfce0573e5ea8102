"""Who is asking and what they may do: API keys with scopes, declared on every route (docs/api.md, "Keys").

Every view states the scope it needs with :func:`requires` (``None``: open to anyone), as flaskr's
``login_required`` does; ``tests/integration/test_keys.py`` walks the app's route table and fails on a view that
states none, then tries a key of each scope on every route. Scopes are ordered, ``search`` < ``write`` <
``moderate`` < ``admin``: a key allows what its scope and every lower one allow (:mod:`dupq.storage.keys`).

- A request that presents a key (``Authorization: Bearer KEY``) must present an active one, on every route, open
  ones included: an unknown or revoked key is a 401 (:func:`init_app`'s hook). A key with an origin allow-list
  is refused (403 ``origin_not_allowed``) when the request's ``Origin`` header names another origin.
- Too low a scope is a 403 ``insufficient_scope``; no key where one is needed a 401 ``unauthorized`` (a 403
  ``admin_disabled`` when no key can exist: no ``DUPQ_ADMIN_TOKEN`` and no active stored key).
- The pages (not ``/api/``) also take a signed-in session: a person signs in once on the admin page with a key of
  scope ``moderate`` or higher, and the session then holds the key's id, name and scope, never the key (the
  cookie is signed, not encrypted). The key is looked up again on every request, so revoking it ends the session
  at once. The JSON API takes only the bearer key: it is exempt from CSRF tokens (web/csrf.py), so a cookie must
  never authorise it.
- ``DUPQ_ADMIN_TOKEN`` is an admin key named ``admin-token``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import g, render_template, request, session

from dupq.access import ApiKey, allows
from dupq.errors import DupQError
from web.service import get_service

#: Session fields of a signed-in key (its id, name and scope; never the key).
SESSION_FIELDS = ("key_id", "key", "scope")
#: The lowest scope that may sign in to the pages (the review queue).
SIGN_IN_SCOPE = "moderate"

Scope = str | None | Callable[[], str | None]


class AuthError(DupQError):
    code = "unauthorized"
    status = 401


class ForbiddenError(DupQError):
    code = "insufficient_scope"
    status = 403


class AdminDisabledError(DupQError):
    code = "admin_disabled"
    status = 403


def init_app(app: Any) -> None:
    """Check a presented key before anything else runs (register before the rate limiter, which counts per key)."""
    app.before_request(_authenticate)


def _bearer() -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    # Only Bearer credentials are dupq's: another scheme (a proxy's Basic auth) is not a key and is left alone.
    return token.strip() if scheme.lower() == "bearer" else None


def _authenticate() -> None:
    token = _bearer()
    g.dupq_bearer = None
    if token is None:
        return
    key = get_service().access.authenticate(token)
    if key is None:
        raise AuthError("unknown or revoked key")
    origin = request.headers.get("Origin")
    if key.origins and origin is not None and origin.rstrip("/") not in key.origins:
        raise ForbiddenError(f"key {key.name!r} may not be used from {origin}", code="origin_not_allowed")
    g.dupq_bearer = key


def bearer_key() -> ApiKey | None:
    """The key this request presented (already checked), or None."""
    return g.get("dupq_bearer")


def caller() -> ApiKey | None:
    """The key this request acts with: its bearer key; on the pages, else the signed-in session's key (still active)."""
    if "dupq_caller" in g:
        return g.dupq_caller
    key = bearer_key()
    if key is None and not request.path.startswith("/api/") and session.get("key_id"):
        key = get_service().access.active_key(session["key_id"])
        if key is None:  # revoked since the session signed in: it ends now
            for name in SESSION_FIELDS:
                session.pop(name, None)
    g.dupq_caller = key
    return key


def actor() -> str:
    """The acting key's name, for the audit log (only called where :func:`requires` let the request in)."""
    key = caller()
    if key is None:
        raise AuthError("no key")
    return key.name


def audit(action: str, obj: Any) -> None:
    """Record ``action`` on ``obj`` by this request's key in the audit log (after the action succeeded). An
    action on an open route taken without a key (an anonymous question) has nobody to record and is not."""
    if caller() is not None:
        get_service().audit(actor(), action, obj)


def needed(scope: Scope) -> str | None:
    """The scope a declaration asks for now (a callable reads a setting)."""
    return scope() if callable(scope) else scope


def check(scope: str | None) -> ApiKey | None:
    """Raise unless this request's key allows ``scope`` (None: anyone may); returns the key."""
    key = caller()
    if scope is None or allows(key.scope if key else None, scope):
        return key
    if key is None:
        if not get_service().access.enabled():
            raise AdminDisabledError("no API key exists: create one with `dupq keys create` or set DUPQ_ADMIN_TOKEN")
        raise AuthError(f"this needs a key of scope {scope} or higher (Authorization: Bearer KEY)")
    raise ForbiddenError(f"key {key.name!r} has scope {key.scope}; this needs {scope} or higher")


def requires(scope: Scope, *, page: bool = False,
             on_denied: Callable[[DupQError], Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare and enforce the scope a view needs (None: open; a callable: decided per request, e.g. by a setting).

    ``page``: a page answers a refusal with the sign-in form (401) or a "not allowed" page (403); ``on_denied``: the
    view's own answer to a refusal (a flash message); else the error propagates (JSON under /api/). The declaration
    is kept on the view (``dupq_scope``) for the route-table test and the API document.

    Example:
        >>> @requires("moderate")              # doctest: +SKIP
        ... def label(): ...
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def view(**kwargs: Any) -> Any:
            try:
                check(needed(scope))
            except DupQError as e:
                if on_denied is not None:
                    return on_denied(e)
                if not page:
                    raise
                return sign_in_page(e), e.status
            return fn(**kwargs)

        view.dupq_scope = scope  # type: ignore[attr-defined]
        return view

    return deco


def sign_in_page(error: DupQError | None = None) -> str:
    """The admin page's sign-in form (or why this key may not go on)."""
    if isinstance(error, AdminDisabledError):
        return render_template("admin.html", disabled=True)
    if isinstance(error, ForbiddenError):
        return render_template("admin.html", forbidden=error.message, key=caller())
    return render_template("admin.html", login=True, next=local_path(request.args.get("next")) or request.path)


def local_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site (where sign-in goes next), else None: never an open redirect."""
    ok = target and target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok else None


def sign_in(token: str) -> ApiKey | None:
    """Sign this session in with ``token`` if it is an active key of scope ``moderate`` or higher.

    Returns the key, or None (unknown, revoked, or too low a scope: the caller says which it was not)."""
    key = get_service().access.authenticate(token or "")
    if key is None or not allows(key.scope, SIGN_IN_SCOPE):
        return None
    session.clear()  # a fresh session on privilege change
    session.update({"key_id": key.id, "key": key.name, "scope": key.scope})
    g.pop("dupq_caller", None)
    return key


def sign_out() -> None:
    for name in SESSION_FIELDS:
        session.pop(name, None)
    g.pop("dupq_caller", None)


def signed_in(scope: str = SIGN_IN_SCOPE) -> bool:
    """Whether this request's key (bearer or session) allows ``scope``."""
    key = caller()
    return key is not None and allows(key.scope, scope)


# -- older spellings, kept so that code written against the admin-token-only auth still imports and stays closed -----
def check_token() -> None:
    """Older spelling of ``check("admin")`` (a route using it must still declare its scope with :func:`requires`)."""
    check("admin")


def check_admin() -> None:
    """Older spelling of ``check("admin")`` for the pages (bearer key or signed-in session)."""
    check("admin")
