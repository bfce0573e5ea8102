"""Who may do what: API keys with scopes, and the audit log of what they did (docs/operations.md, "Keys").

:class:`Access` is the application's view of both, over a backend's :class:`~dupq.storage.Keys` and
:class:`~dupq.storage.Audit`. :class:`dupq.service.DupQ` holds one (``svc.access``, ``svc.audit``); ``dupq keys``
opens one alone (:meth:`Access.open`): no model is loaded, and on SQLite it writes beside a running server (the
key and audit tables are not the index the home's one writer keeps in step).

Scopes are ordered, ``search`` < ``write`` < ``moderate`` < ``admin``: a key allows what its scope and every
lower scope allow (:func:`dupq.storage.keys.allows`). ``DUPQ_ADMIN_TOKEN`` keeps working as an admin key named
``admin-token``.

Example:
    >>> from dupq.config import Settings
    >>> with Access.open(Settings(home="/tmp/dq-access-doc", seed_bank=None)) as access:
    ...     key, token = access.create_key("doc-bot", "search", actor="doc")
    ...     access.authenticate(token).name, access.authenticate(token + "x")
    ...     _ = access.revoke_key("doc-bot", actor="doc")
    ...     access.authenticate(token), [e.action for e in access.audit_log()][:2]
    ('doc-bot', None)
    (None, ['key.revoke', 'key.create'])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from dupq.config import Settings
from dupq.errors import ValidationError
from dupq.storage import Backend, open_backend
from dupq.storage.audit import MAX_AUDIT_PAGE, AuditEntry
from dupq.storage.keys import SCOPES, ApiKey, KeyRing, allows

__all__ = ["SCOPES", "Access", "ApiKey", "AuditEntry", "allows"]


def check_rate_limit(value: str | None) -> str | None:
    """``value`` if Flask-Limiter can read it (``"100/minute"``, ``"10 per second"``); None stays None."""
    if value is None or value == "":
        return None
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValidationError(f"not a rate limit: {value!r} (e.g. '100/minute')", code="invalid_rate_limit") from None
    return value


class Access:
    """API keys and the audit log of one deployment.

    Args:
        backend: The backend whose database holds them.
        admin_token: The ``admin_token`` setting (an admin key named ``admin-token``; None: none).
    """

    def __init__(self, backend: Backend, admin_token: str | None) -> None:
        self.backend = backend
        self.ring = KeyRing(backend.keys, admin_token)

    @classmethod
    @contextmanager
    def open(cls, settings: Settings) -> Iterator[Access]:
        """Open only the keys and the audit log of ``settings``' deployment (``dupq keys``)."""
        backend = open_backend(settings, writer=False, pool_size=1)
        try:
            yield cls(backend, settings.admin_token)
        finally:
            backend.close()

    # -- keys -----------------------------------------------------------------------------------------
    def create_key(self, name: str, scope: str, *, actor: str, origins: Iterable[str] = (),
                   rate_limit: str | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns its record and the key itself, which is shown once and never stored."""
        key, token = self.backend.keys.create(name, scope, origins=tuple(origins),
                                              rate_limit=check_rate_limit(rate_limit))
        self.audit(actor, "key.create", f"{key.name} ({key.scope})")
        return key, token

    def list_keys(self) -> list[ApiKey]:
        """Every stored key, revoked ones too (never a secret), oldest first."""
        return self.backend.keys.list()

    def revoke_key(self, name: str, *, actor: str) -> ApiKey:
        """Revoke the active key named ``name``: every node refuses it from its next request on."""
        key = self.backend.keys.revoke(name)
        self.audit(actor, "key.revoke", f"{key.name} ({key.scope})")
        return key

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key ``token`` is (a stored key or ``DUPQ_ADMIN_TOKEN``), else None."""
        return self.ring.authenticate(token)

    def active_key(self, key_id: str) -> ApiKey | None:
        """Key ``key_id`` if it is still active (a signed-in session's check on each request)."""
        return self.ring.current(key_id)

    def enabled(self) -> bool:
        """Whether any key can exist to sign in with: ``DUPQ_ADMIN_TOKEN`` is set or a stored key is active."""
        return self.ring.admin_token is not None or self.backend.keys.count_active() > 0

    # -- the audit log --------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, obj: Any) -> AuditEntry:
        """Record that the key named ``actor`` did ``action`` (``model.promote``) on ``obj`` (kept as text)."""
        return self.backend.audit.append(actor, action, obj)

    def audit_log(self, limit: int = 50, before: int | None = None) -> list[AuditEntry]:
        """Entries newest first: at most ``limit`` (1..500), older than entry ``before`` if given."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_AUDIT_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_AUDIT_PAGE}", code="out_of_range")
        return self.backend.audit.entries(limit, before)
