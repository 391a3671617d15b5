"""Domain errors raised by the services and the one place that maps them to HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

BUSY_MESSAGE = "the database is busy (another process is writing to it); try again in a few seconds"


class DomainError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status_code = 404


class InvalidTransition(DomainError):
    """The run's status does not allow the request (cancel a finished run, resume a running one)."""

    status_code = 409


class ArtifactModified(DomainError):
    """A stored file's bytes differ from the SHA-256 recorded when it was written; it is not served."""

    status_code = 409


class BadRequest(DomainError):
    status_code = 422


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, error: DomainError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    @app.exception_handler(OperationalError)
    async def database_busy(_request: Request, error: OperationalError) -> JSONResponse:
        """A locked SQLite is a 503 to retry, with a short message; any other database error stays a 500."""
        if not is_busy(error):
            raise error
        return JSONResponse({"detail": BUSY_MESSAGE}, status_code=503, headers={"Retry-After": "2"})


def is_busy(error: OperationalError) -> bool:
    """SQLite's "database is locked" / "database is busy": another connection holds the write lock."""
    return any(words in str(error.orig) for words in ("database is locked", "database is busy"))


class Unavailable(DomainError):
    """A dependency (broker, database) cannot be reached; the request may be retried."""

    status_code = 503


class DatabaseBusy(Unavailable):
    """SQLite stayed locked by another writer through every retry."""
