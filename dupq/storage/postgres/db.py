"""The PostgreSQL database of a dupq deployment: one connection pool per process, versioned SQL migrations.

Every connection-level failure (the server restarting, killed, failing over, unreachable for longer than the
pool's timeout) comes out of :meth:`Database.connection` and :meth:`Database.transaction` as one
:class:`~dupq.errors.DatabaseUnavailableError` (HTTP 503 with ``Retry-After``): this module is the one place
that maps psycopg's ``OperationalError`` and psycopg_pool's ``PoolTimeout``. The pool checks each connection
as it hands it out and reconnects by itself, so the first request after the server is back succeeds.

Migrations are the files ``dupq/storage/postgres/migrations/NNNN_*.sql``, applied in order inside one transaction each;
``schema_version`` holds the number of the last one applied. Concurrent nodes starting at once serialise on
an advisory lock, so each migration runs once.

Example:
    >>> db = Database("postgresql://postgres:@/postgres?host=/tmp/pg")   # doctest: +SKIP
    >>> db.schema_version()                                              # doctest: +SKIP
    1
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from dupq.errors import DatabaseUnavailableError, DupQError
from dupq.storage.migrations import packaged
from dupq.storage.sql import SqlAccess

log = logging.getLogger(__name__)

#: Channel on which a promotion (or rollback) announces the new current version; payload: the version.
CURRENT_CHANNEL = "dupq_current"
#: Channel on which a new or re-queued job is announced (nodes' job runners look for work).
JOBS_CHANNEL = "dupq_jobs"
_LOCK_KEY = 0x64757071  # "dupq": the advisory lock migrations take
#: While the database is known to be away (the last checkout failed), a request waits at most this long for a
#: connection: it answers 503 in about a second instead of holding a server thread for the whole timeout, so
#: that health probes and other requests are not queued behind it. The first checkout that works ends it.
AWAY_WAIT_S = 1.0
#: How long the pool retries one lost connection in the background before it gives it up (see Database).
RECONNECT_S = 2.0


class DatabaseError(DupQError):
    """The database URL is unusable or the schema is newer than this dupq (the CLI says so in one line)."""

    code = "database"
    status = 503


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``: error messages and logs must not carry it.

    Example:
        >>> redacted("postgresql://dupq:p%40ss@db:5432/dupq"), redacted("postgresql://db/dupq")
        ('postgresql://dupq:***@db:5432/dupq', 'postgresql://db/dupq')
    """
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        userinfo, host = parts.netloc.rsplit("@", 1)  # the password as written (percent-encoded or not)
        return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}"))
    except ValueError:  # not parseable as a URL: say nothing of it
        return "the database URL"


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
        timeout: Longest wait, in seconds, for a working connection (the ``db_timeout_s`` setting); then
            :class:`~dupq.errors.DatabaseUnavailableError`.
    """

    def __init__(self, url: str, *, max_size: int = 8, ef_search: int = 100, timeout: float = 5.0) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        if not is_database_url(url):
            raise DatabaseError(f"not a PostgreSQL URL: {redacted(url)!r} (expected postgresql://...)")
        self.url = url
        self.ef_search = ef_search
        self.timeout = float(timeout)
        self.away = False  # the last checkout found no working connection (see AWAY_WAIT_S)
        self._limit = threading.local()  # this thread's shorter wait (waiting_at_most)
        # libpq's connect_timeout (whole seconds, at least 2): a connect to a host that went silent gives up too
        self.connect_kwargs = {"connect_timeout": max(2, math.ceil(self.timeout))}
        try:
            with psycopg.connect(url, autocommit=True, **self.connect_kwargs) as conn:
                self.version = migrate(conn)
        except psycopg.OperationalError as e:
            raise DatabaseError(f"cannot connect to {redacted(url)}: {e}") from None
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, **self.connect_kwargs},
            configure=self._configure,
            open=True,
            name="dupq",
            timeout=self.timeout,
            # How long the pool retries a lost connection in the background (waiting 1 s, then 2 s, ...) before it
            # gives the slot up; the next request that finds no connection then starts a new attempt at once.
            # psycopg_pool's default, 5 minutes, backs off to waits of 16 s and more, which kept a node unready
            # for seconds after the server was back; 2 s: at most about a second between two attempts.
            reconnect_timeout=RECONNECT_S,
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

    def _checkout(self, timeout: float) -> Any:
        """A pooled connection that answered a round trip just now; :class:`DatabaseUnavailableError` after
        ``timeout`` seconds without one.

        The check is ours rather than the pool's ``check=`` callback: that one sleeps 1 s, 2 s, ... after each
        broken connection it meets, and after a restart every idle connection is broken (the server closed
        them), so a request would sleep through them one by one. Here the first broken one makes the pool test
        all its idle connections at once (:meth:`ConnectionPool.check`: the broken ones are replaced), and the
        request takes the next connection, waiting only while the pool has none (the server still away).
        """
        import psycopg
        from psycopg_pool import PoolTimeout

        if self.away:
            timeout = min(timeout, AWAY_WAIT_S)
        limit = getattr(self._limit, "seconds", None)
        if limit is not None:
            timeout = min(timeout, limit)
        deadline = time.monotonic() + timeout
        broken = 0
        while True:
            try:
                conn = self.pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
            except PoolTimeout:
                self.away = True
                raise DatabaseUnavailableError(
                    f"the database is unavailable (no working connection in {timeout:g} s); try again shortly"
                ) from None
            try:
                conn.execute("")  # psycopg_pool's check_connection: an empty query, one round trip
                self.away = False
                return conn
            except psycopg.Error as e:
                self.pool.putconn(conn)  # broken: the pool closes it and connects a replacement
                broken += 1
                log.info("discarding a broken database connection: %s", e)
                if broken == 1:
                    self.pool.check()
                else:  # connections break as fast as they come: the server is going down again
                    time.sleep(min(0.05 * broken, 0.5, max(deadline - time.monotonic(), 0)))

    @contextmanager
    def connection(self, *, timeout: float | None = None) -> Iterator[Any]:
        """A pooled connection in autocommit mode (one statement = one transaction).

        Raises :class:`DatabaseUnavailableError` when no working connection comes within ``timeout`` seconds
        (default: the pool's) or the connection breaks while the block uses it.
        """
        import psycopg

        conn = self._checkout(self.timeout if timeout is None else timeout)
        try:
            yield conn
        except psycopg.OperationalError as e:  # the server went away mid-statement (or a commit's answer was lost)
            self.away = conn.closed or conn.broken
            raise DatabaseUnavailableError(f"the database connection was lost: {str(e).strip()}; "
                                           "try again shortly") from None
        finally:
            self.pool.putconn(conn)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A pooled connection inside one transaction: committed on success, rolled back on any exception.

        A transaction whose connection breaks before its commit is answered is not acknowledged
        (:class:`DatabaseUnavailableError`); PostgreSQL has then either committed all of it or none of it.
        """
        with self.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def waiting_at_most(self, seconds: float) -> Iterator[None]:
        """Within the block, this thread waits at most ``seconds`` for a connection (a probe's counts must not
        hold it for the whole ``timeout`` when the server goes away between two statements)."""
        before = getattr(self._limit, "seconds", None)
        self._limit.seconds = seconds if before is None else min(before, seconds)
        try:
            yield
        finally:
            self._limit.seconds = before

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether a working connection comes within ``timeout`` seconds (a readiness probe: one round trip)."""
        try:
            with self.connection(timeout=timeout):
                return True
        except DatabaseUnavailableError:
            return False

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's counters and gauges (``pool_size``, ``pool_available``, ``requests_waiting``, ...)."""
        return dict(self.pool.get_stats())

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
