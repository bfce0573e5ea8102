"""How the rules written once (:mod:`dupq.storage.store`, :mod:`dupq.storage.jobs`) reach a backend's database:
its parameter placeholder, a transaction and a query. Each backend implements :class:`SqlAccess` once."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any


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
