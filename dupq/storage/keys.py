"""API keys: scopes, the key format, the stored hash, and their records (written once for SQLite and PostgreSQL).

A key is ``dupq_<id>_<secret>``: ``id`` (12 hex digits) finds its row without storing anything secret, ``secret``
(32 random bytes, URL-safe base64) is checked against the row's scrypt hash (``hashlib.scrypt``, a per-key salt).
The key itself is shown once, when it is created, and never stored.

Scopes are ordered: each allows what the ones before it allow (:func:`allows`).

- ``search``: search (open without a key too; a key adds its origin allow-list and its rate limit);
- ``write``: add questions (when ``questions_need_token`` is on) and labelled pairs;
- ``moderate``: the review queue, close / reopen as duplicate, delete questions;
- ``admin``: train, cancel jobs, promote, roll back, the admin page, the audit log (keys: the CLI).

Example:
    >>> allows("admin", "moderate"), allows("write", "moderate"), allows(None, "search")
    (True, False, False)
    >>> token = new_token("0123456789ab")
    >>> parse_token(token)[0], token.startswith("dupq_0123456789ab_")
    ('0123456789ab', True)
    >>> parse_token("not a key") is None
    True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from dupq.errors import ConflictError, NotFoundError, ValidationError
from dupq.storage.records import created_now
from dupq.storage.sql import SqlAccess

#: The scopes, lowest first: a scope allows everything the scopes before it allow.
SCOPES = ("search", "write", "moderate", "admin")
#: Name of the admin key that the ``admin_token`` setting (``DUPQ_ADMIN_TOKEN``) stands for; no stored key takes it.
ADMIN_TOKEN_NAME = "admin-token"
#: A key's name: what the audit log and ``dupq keys revoke`` call it.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: An origin as browsers send it (``Origin`` header): scheme, host, optional port; no path.
ORIGIN_PATTERN = re.compile(r"^https?://[^/\s?#]+$")
#: scrypt cost: 2**14 x 8 (16 MiB, 40-110 ms on the shared 2-core test machine) per check; a check of a key
#: already seen by this process is remembered (:class:`KeyRing`), so a busy key pays it once per process.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_PREFIX = "dupq_"
_TOKEN = re.compile(r"^dupq_([0-9a-f]{12})_([A-Za-z0-9_-]{20,200})$")


def allows(scope: str | None, needed: str) -> bool:
    """Whether a key of ``scope`` (None: no key) may do what needs ``needed``."""
    return scope in SCOPES and SCOPES.index(scope) >= SCOPES.index(needed)


def check_scope(scope: Any) -> str:
    if scope not in SCOPES:
        raise ValidationError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}", code="invalid_scope")
    return scope


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValidationError("a key's name is 1-64 letters, digits or . _ @ - (starting with a letter or digit), "
                              f"got {name!r}", code="invalid_name")
    if name == ADMIN_TOKEN_NAME:
        raise ValidationError(f"{ADMIN_TOKEN_NAME!r} is the name of DUPQ_ADMIN_TOKEN's key", code="invalid_name")
    return name


def check_origins(origins: Any) -> tuple[str, ...]:
    out = []
    for o in origins or ():
        if not isinstance(o, str) or not ORIGIN_PATTERN.match(o.rstrip("/")):
            raise ValidationError(f"an origin is scheme://host[:port], got {o!r}", code="invalid_origin")
        out.append(o.rstrip("/"))
    return tuple(dict.fromkeys(out))


def new_token(key_id: str | None = None) -> str:
    """A new key: ``dupq_<id>_<secret>``."""
    return f"{_PREFIX}{key_id or secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def parse_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    m = _TOKEN.match(token or "")
    return (m.group(1), m.group(2)) if m else None


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``secret``: what is stored instead of the key."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


@dataclass(frozen=True)
class ApiKey:
    """A key's record (never its secret). ``origins``: the ``Origin`` values it may be used from (empty: any);
    ``rate_limit``: its own limit of API requests (Flask-Limiter notation; None: the ``rate_limit_key`` setting)."""

    id: str
    name: str
    scope: str
    created_at: str
    revoked_at: str | None = None
    origins: tuple[str, ...] = field(default_factory=tuple)
    rate_limit: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scope": self.scope, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "origins": list(self.origins), "rate_limit": self.rate_limit}


_COLUMNS = "id, name, scope, created_at, revoked_at, origins, rate_limit"


class KeyRecords:
    """The ``api_keys`` table of a store (its :class:`~dupq.storage.sql.SqlAccess`: SQLite's or PostgreSQL's).

    A name is unique among active keys (a revoked name may be given to a new key: rotation). Revocation is one
    row update that every node reads on its next request (nothing about a key's state is cached).
    """

    def __init__(self, sql: SqlAccess) -> None:
        self.sql = sql
        self.mark = sql.mark

    def create(self, name: str, scope: str, *, origins: tuple[str, ...] = (), rate_limit: str | None = None
               ) -> tuple[ApiKey, str]:
        """Store a new key; returns its record and the key itself (shown once)."""
        name, scope, origins = check_name(name), check_scope(scope), check_origins(origins)
        token = new_token()
        key_id, secret = parse_token(token)  # type: ignore[misc]
        key = ApiKey(key_id, name, scope, created_now(), None, origins, rate_limit or None)
        m = self.mark
        taken = ConflictError(f"an active key is named {name!r}; revoke it first", code="key_exists")
        try:
            with self.sql._transaction() as c:
                if c.execute(f"SELECT 1 FROM api_keys WHERE name={m} AND revoked_at IS NULL", (name,)).fetchone():
                    raise taken
                c.execute(f"INSERT INTO api_keys({_COLUMNS}, hash) VALUES ({self.sql._marks(8)})",
                          (key.id, name, scope, key.created_at, None, json.dumps(list(origins)), key.rate_limit,
                           hash_secret(secret)))
        except Exception as e:
            # Two creations of one name at once: the unique index refuses the second (sqlite3.IntegrityError,
            # psycopg's UniqueViolation).
            if type(e).__name__ in ("IntegrityError", "UniqueViolation") and "name" in str(e):
                raise taken from None
            raise
        return key, token

    def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        """A key's record and stored hash by id (revoked ones too)."""
        rows = self.sql._rows(f"SELECT {_COLUMNS}, hash FROM api_keys WHERE id={self.mark}", (key_id,))
        return (_key(rows[0]), rows[0][7]) if rows else None

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        return [_key(r) for r in self.sql._rows(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name")]

    def count_active(self) -> int:
        return int(self.sql._rows("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")[0][0])

    def revoke(self, name: str) -> ApiKey:
        """Revoke the active key named ``name``; NotFoundError when there is none."""
        m = self.mark
        with self.sql._transaction() as c:
            row = c.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE name={m} AND revoked_at IS NULL", (name,)
                            ).fetchone()
            if row is None:
                raise NotFoundError(f"no active key named {name!r}", code="no_such_key")
            now = created_now()
            c.execute(f"UPDATE api_keys SET revoked_at={m} WHERE id={m}", (now, row[0]))
        return _key((*row[:4], now, *row[5:]))


def _key(r: Any) -> ApiKey:
    origins = r[5] if isinstance(r[5], list) else json.loads(r[5] or "[]")
    return ApiKey(r[0], r[1], r[2], r[3], r[4], tuple(origins), r[6])


class KeyRing:
    """Who a presented key is: its record if it is a known, active key, else None.

    The scrypt check of a key is remembered in this process (a bounded LRU keyed by the key's SHA-256, holding
    the hash it matched), because it costs tens of milliseconds; the record (revoked or not, its scope) is read from the
    database on every call, so a revocation holds on every node at once.

    Args:
        records: The key table.
        admin_token: The ``admin_token`` setting: the key named :data:`ADMIN_TOKEN_NAME` (scope ``admin``).
    """

    #: How many verified keys this process remembers.
    REMEMBER = 1024

    def __init__(self, records: KeyRecords, admin_token: str | None) -> None:
        self.records = records
        self.admin_token = admin_token
        self._seen: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def admin_key(self) -> ApiKey | None:
        """The key ``DUPQ_ADMIN_TOKEN`` stands for (None when it is not set)."""
        if not self.admin_token:
            return None
        return ApiKey(ADMIN_TOKEN_NAME, ADMIN_TOKEN_NAME, "admin", "", None, (), None)

    def authenticate(self, token: str) -> ApiKey | None:
        if self.admin_token and hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return self.admin_key()
        parsed = parse_token(token)
        if parsed is None:
            return None
        found = self.records.get(parsed[0])
        if found is None:
            return None
        key, stored = found
        if not key.active:
            return None
        fingerprint = hashlib.sha256(token.encode()).digest()
        with self._lock:
            known = self._seen.get(fingerprint)
            if known is not None:
                self._seen.move_to_end(fingerprint)
        if known is None or not hmac.compare_digest(known, stored):
            if not verify_secret(parsed[1], stored):
                return None
            with self._lock:
                self._seen[fingerprint] = stored
                while len(self._seen) > self.REMEMBER:
                    self._seen.popitem(last=False)
        return key

    def current(self, key_id: str) -> ApiKey | None:
        """The key ``key_id`` if it is still active (a signed-in session re-checks its key on each request)."""
        if key_id == ADMIN_TOKEN_NAME:
            return self.admin_key()
        found = self.records.get(key_id)
        return found[0] if found and found[0].active else None
