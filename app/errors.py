"""Domain errors raised by the services and the one place that maps them to HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


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


class Conflict(DomainError):
    status_code = 409


class Unauthenticated(DomainError):
    """No valid credentials: pages redirect to the login page, the API answers 401."""

    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class TooMany(DomainError):
    status_code = 429


class BadRequest(DomainError):
    status_code = 422


class FieldErrors(BadRequest):
    """Fields of a valid request body that the service refuses (data outside the data roots), answered in the
    shape of a validation 422 so that clients and forms place each message at its field. Never echoes the input."""

    def __init__(self, errors: dict[tuple[str, ...], str], kind: str) -> None:
        super().__init__("; ".join(f"{'.'.join(loc)}: {message}" for loc, message in errors.items()))
        self.errors, self.kind = errors, kind

    def details(self) -> list[dict[str, object]]:
        return [
            {"field": ".".join(loc), "message": message, "type": self.kind, "loc": ["body", *loc], "msg": message}
            for loc, message in self.errors.items()
        ]


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, error: DomainError) -> JSONResponse:
        detail = error.details() if isinstance(error, FieldErrors) else error.detail
        return JSONResponse({"detail": detail}, status_code=error.status_code)


class Unavailable(DomainError):
    """A dependency (broker, database) cannot be reached; the request may be retried."""

    status_code = 503
