"""The PostgreSQL database of a dupq deployment: one connection pool per process, versioned SQL migrations.

Migrations are the files ``dupq/storage/postgres/migrations/NNNN_*.sql``, applied in order inside one transaction each;
``schema_version`` holds the number of the last one applied. Concurrent nodes starting at once serialise on
an advisory lock, so each migration runs once.

Example:
    >>> db = Database("postgresql://postgres:@/postgres?host=/tmp/pg")   # doctest: +SKIP
    >>> db.schema_version()                                              # doctest: +SKIP
    1
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from dupq.storage.migrations import packaged
from dupq.storage.sql import SqlAccess

#: Channel on which a promotion (or rollback) announces the new current version; payload: the version.
CURRENT_CHANNEL = "dupq_current"
#: Channel on which a new or re-queued job is announced (nodes' job runners look for work).
JOBS_CHANNEL = "dupq_jobs"
_LOCK_KEY = 0x64757071  # "dupq": the advisory lock migrations take


class DatabaseError(Exception):
    """The database URL is unusable or the schema is newer than this dupq."""


def is_database_url(url: str | None) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return bool(url) and url.split("://", 1)[0] in ("postgresql", "postgres")


def migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as ``(number, name, sql)``, in order."""
    return packaged("dupq.storage.postgres")


def migrate(conn: Any) -> int:
    """Apply the migrations ``conn``'s database lacks; returns the schema version now."""
    wanted = migrations()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        have = row[0] if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version(version) VALUES (0)")
        if have > len(wanted):
            raise DatabaseError(f"database schema {have} is newer than this dupq ({len(wanted)}); upgrade dupq")
        for number, _name, sql in wanted[have:]:
            conn.execute(sql)
            conn.execute("UPDATE schema_version SET version = %s", (number,))
        return max(have, len(wanted))


class Database:
    """A connection pool on one PostgreSQL database, migrated on open.

    Args:
        url: ``postgresql://...`` (psycopg's conninfo URL).
        max_size: Largest number of pooled connections (searches run concurrently, one each).
        ef_search: ``hnsw.ef_search`` of every pooled connection (a server-side parameter: the HNSW candidate
            list; recall grows with it).
    """

    def __init__(self, url: str, *, max_size: int = 8, ef_search: int = 100) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        if not is_database_url(url):
            raise DatabaseError(f"not a PostgreSQL URL: {url!r} (expected postgresql://...)")
        self.url = url
        self.ef_search = ef_search
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                self.version = migrate(conn)
        except psycopg.OperationalError as e:
            raise DatabaseError(f"cannot connect to {url}: {e}") from None
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=True,
            name="dupq",
        )

    def _configure(self, conn: Any) -> None:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute(f"SET hnsw.ef_search = {int(self.ef_search)}")
        # Filtered / post-joined queries keep scanning the graph until k rows qualify (pgvector >= 0.8).
        conn.execute("SET hnsw.iterative_scan = relaxed_order")

    def schema_version(self) -> int:
        with self.connection() as c:
            return int(c.execute("SELECT version FROM schema_version").fetchone()[0])

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection in autocommit mode (one statement = one transaction)."""
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A pooled connection inside one transaction: committed on success, rolled back on any exception."""
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    def notify(self, channel: str, payload: str = "") -> None:
        with self.connection() as c:
            c.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def close(self) -> None:
        self.pool.close()


class PgAccess(SqlAccess):
    """The :class:`~dupq.storage.sql.SqlAccess` of everything on a :class:`Database` (``self.db``): reads on a
    pooled autocommit connection, writes in a pooled transaction."""

    mark = "%s"
    db: Database

    def _transaction(self) -> AbstractContextManager[Any]:
        return self.db.transaction()

    def _rows(self, sql: str, params: tuple | list = ()) -> list[Any]:
        with self.db.connection() as c:
            return c.execute(sql, params).fetchall()
