"""How the rules written once (:mod:`dupq.storage.store`, :mod:`dupq.storage.jobs`) reach a backend's database:
its parameter placeholder, a transaction and a query. Each backend implements :class:`SqlAccess` once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

#: Values bound in one ``IN (...)`` list: SQLite refuses more than its bound-parameter limit in one statement.
IN_CHUNK = 500


def in_chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    """``values`` in lists of at most :data:`IN_CHUNK`, one per ``IN (...)`` query.

    Example:
        >>> [len(c) for c in in_chunks(range(1201))]
        [500, 500, 201]
    """
    for i in range(0, len(values), IN_CHUNK):
        yield list(values[i : i + IN_CHUNK])


class SqlAccess:
    """A database the shared rules run their SQL on."""

    #: The parameter placeholder of the backend's driver (``?`` for sqlite3, ``%s`` for psycopg).
    mark: str

    def _transaction(self) -> AbstractContextManager[Any]:
        """A connection inside one transaction: committed on success, rolled back on any exception."""
        raise NotImplementedError

    def _rows(self, sql: str, params: tuple | list = ()) -> list[Any]:
        """The rows of one query."""
        raise NotImplementedError

    def _marks(self, n: int) -> str:
        """``n`` placeholders, comma-separated."""
        return ", ".join([self.mark] * n)
