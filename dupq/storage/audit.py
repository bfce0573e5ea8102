"""The audit log: one append-only row per moderation or admin action (who, when, what, on which object).

Written once for SQLite and PostgreSQL over the store's :class:`~dupq.storage.sql.SqlAccess`. The table refuses
updates and deletes itself (a trigger on both backends, migration 0005), so a bug or a hand-typed statement
cannot rewrite history; it is kept through restarts like everything else in the store.

Actions in use (docs/operations.md): ``question.delete``, ``questions.add``, ``pairs.add``, ``review.label``,
``review.undo``, ``train.start``, ``job.cancel``, ``model.promote``, ``model.rollback``, ``key.create``,
``key.revoke`` (and ``question.close`` / ``question.reopen`` where that feature records them).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from dupq.errors import ValidationError
from dupq.storage.sql import SqlAccess

#: An action's name: lower-case words joined by dots (``model.promote``).
ACTION_PATTERN = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
#: Longest object text kept (a question id, a version, a key name, a short summary).
MAX_OBJECT_CHARS = 500
#: Largest page of :meth:`AuditRecords.entries`.
MAX_AUDIT_PAGE = 500


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    key: str
    action: str
    object: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditRecords:
    """The ``audit`` table of a store."""

    def __init__(self, sql: SqlAccess) -> None:
        self.sql = sql
        self.mark = sql.mark

    def append(self, key: str, action: str, obj: Any) -> AuditEntry:
        """Record one action by the key named ``key`` on ``obj`` (kept as text)."""
        if not key or not isinstance(key, str):
            raise ValidationError("an audit entry needs the acting key's name", code="invalid_actor")
        if not ACTION_PATTERN.match(action):
            raise ValidationError(f"not an action name: {action!r}", code="invalid_action")
        text = str(obj if obj is not None else "")[:MAX_OBJECT_CHARS]
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self.sql._transaction() as c:
            seq = c.execute(f"INSERT INTO audit(at, key, action, object) VALUES ({self.sql._marks(4)}) RETURNING seq",
                            (at, key, action, text)).fetchone()[0]
        return AuditEntry(int(seq), at, key, action, text)

    def entries(self, limit: int = 50, before: int | None = None) -> list[AuditEntry]:
        """Newest first: up to ``limit`` entries older than entry ``before`` (None: from the newest)."""
        m = self.mark
        where, params = ("WHERE seq < " + m, [before]) if before is not None else ("", [])
        rows = self.sql._rows(f"SELECT seq, at, key, action, object FROM audit {where} ORDER BY seq DESC LIMIT {m}",
                              [*params, limit])
        return [AuditEntry(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
