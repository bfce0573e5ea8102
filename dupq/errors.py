"""Errors the library raises for bad input or missing things; each carries a stable code and an HTTP status.

The web layer turns them into ``{"error": {"code", "message"}}`` responses and the CLI into a message and a
non-zero exit, so neither has to know the individual cases.
"""

from __future__ import annotations


class DupQError(Exception):
    """Base class: ``code`` is machine-readable, ``status`` the HTTP status it maps to."""

    code = "error"
    status = 500
    #: Seconds a client should wait before trying again (the ``Retry-After`` header); None: not a retry case.
    retry_after: int | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ValidationError(DupQError):
    code = "invalid_request"
    status = 400


class TrainingDataError(ValidationError, ValueError):
    """The pairs given to training leave nothing to train or to calibrate on (a ``ValueError`` too, as
    :func:`dupq.training.recipe.train` documents), so the CLI and the retrain worker report it in one line."""

    code = "invalid_training_data"


class NotFoundError(DupQError):
    code = "not_found"
    status = 404


class ConflictError(DupQError):
    code = "conflict"
    status = 409


class BusyError(DupQError):
    """The dupq home is held by another process (one writer per home)."""

    code = "busy"
    status = 503
    retry_after = 5


class DatabaseUnavailableError(DupQError):
    """The database cannot be reached now (restarting, failing over, down): try again once it is back.

    Raised by the storage layer for every connection-level failure (:mod:`dupq.storage.postgres.db`), so that
    callers see one error kind. A write is acknowledged only by its success answer: one that got this error may
    have been committed before the connection broke (an add retried with its explicit id then answers 409)."""

    code = "database_unavailable"
    status = 503
    retry_after = 2
