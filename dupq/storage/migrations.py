"""Versioned schema migrations, as both backends package them: ``<package>/migrations/NNNN_name.sql``.

Migration ``n`` upgrades a database from schema ``n - 1`` to ``n``; each backend records the number of the
last one applied (SQLite: ``PRAGMA user_version``; PostgreSQL: the ``schema_version`` table) and applies the
rest in order, each in one transaction.

Example:
    >>> [n for n, _, _ in packaged("dupq.storage.sqlite")]
    [1, 2, 3, 4, 5, 6]
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_TRIGGER = re.compile(r"^CREATE\s+(TEMP\w*\s+)?TRIGGER\b", re.IGNORECASE)
_END = re.compile(r"\bEND\s*$", re.IGNORECASE)


class MigrationError(Exception):
    """The packaged migrations are not numbered 1..n, or a database is newer than this dupq."""


def packaged(package: str) -> list[tuple[int, str, str]]:
    """The migrations of ``package`` as ``(number, file name, sql)``, in order."""
    out = []
    for f in resources.files(package).joinpath("migrations").iterdir():
        m = _NAME.match(f.name)
        if m:
            out.append((int(m.group(1)), f.name, f.read_text(encoding="utf-8")))
    out.sort()
    if [n for n, _, _ in out] != list(range(1, len(out) + 1)):
        raise MigrationError(f"migrations are not numbered 1..n: {[name for _, name, _ in out]}")
    return out


def statements(sql: str) -> list[str]:
    """The statements of a migration script, without its ``--`` comments (for drivers that run one at a time).

    Example:
        >>> statements("-- a table; two\\nCREATE TABLE t (x);\\nINSERT INTO t VALUES (1);\\n")
        ['CREATE TABLE t (x)', 'INSERT INTO t VALUES (1)']
        >>> statements("CREATE TRIGGER a BEFORE DELETE ON t BEGIN SELECT RAISE(ABORT, 'no'); END; SELECT 1;")
        ["CREATE TRIGGER a BEFORE DELETE ON t BEGIN SELECT RAISE(ABORT, 'no'); END", 'SELECT 1']
    """
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    out: list[str] = []
    pending = ""
    for part in code.split(";"):
        pending = f"{pending};{part}" if pending else part
        stmt = pending.strip()
        if not stmt:
            pending = ""
            continue
        # A trigger's body (BEGIN ... END) holds ';' of its own: the statement goes on to its END.
        if _TRIGGER.match(stmt) and not _END.search(stmt):
            continue
        out.append(stmt)
        pending = ""
    return out
