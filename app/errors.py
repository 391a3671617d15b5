"""Domain errors raised by the services and the one place that maps them to HTTP responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from app.run_config import allowed_fields

BUSY_MESSAGE = "the database is busy (another process is writing to it); try again in a few seconds"

#: A location part longer than this (an unknown key a client made up) is cut: a 422 never echoes the input back.
MAX_LOC_CHARS = 64


class DomainError(Exception):
    status_code = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


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


class ArtifactModified(DomainError):
    """A stored file's bytes differ from the SHA-256 recorded when it was written; it is not served."""

    status_code = 409


class ContentMismatch(DomainError):
    """An upload's bytes do not have the SHA-256 that names them: changed on the way, or a wrong name."""

    status_code = 400


class PayloadTooLarge(DomainError):
    """An upload larger than the limit, refused before (or as soon as) its bytes pass it."""

    status_code = 413


class BadRequest(DomainError):
    """A request that passed its types but not its meaning; ``field`` names the parameter or config field (as a
    validation error would) when there is one. Answered like a validation 422: ``detail`` is a list."""

    status_code = 422

    def __init__(self, detail: str, field: str = "") -> None:
        super().__init__(detail)
        self.field = field


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


class TooManyRuns(DomainError):
    """A user already has as many active runs as allowed; one must finish (or be cancelled) first."""

    status_code = 429


class Unavailable(DomainError):
    """A dependency (broker, database) cannot be reached; the request may be retried."""

    status_code = 503


class ErrorMessage(BaseModel):
    detail: str = Field(description="what went wrong and what to do about it")


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the parameter or config field, e.g. config.federation.rounds")
    message: str
    loc: list[int | str] = Field(description="the same path as FastAPI gives it, e.g. [body, config, seed]")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. int_type, less_than_equal, extra_forbidden")


class FieldErrorList(BaseModel):
    detail: list[FieldError] = Field(description="every wrong field at once; the input is never echoed back")


_ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    400: (ErrorMessage, "The body is not UTF-8 text, or an upload's content does not match its SHA-256"),
    404: (ErrorMessage, "No experiment, run, round, site, task or file with that id (or not yours to see)"),
    409: (ErrorMessage, "The run's status does not allow this, the name is taken, or an upload's offset is wrong"),
    413: (ErrorMessage, "The body is over the size limit; it was not read"),
    401: (ErrorMessage, "Not signed in: send 'Authorization: Bearer <token>' (or, for sites, a signed request)"),
    403: (ErrorMessage, "Signed in, but this needs another role (or a browser request failed its CSRF check)"),
    422: (FieldErrorList, "A parameter or config field is wrong; each is named"),
    429: (ErrorMessage, "Too many active runs for this user; wait for one to finish or cancel one"),
    503: (ErrorMessage, "The broker or the data-check worker cannot be reached; retry later"),
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses plus 401, 403 (every operation is authenticated and
    authorized) and 422 (every operation validates something), so that a client, and schemathesis, knows every
    answer an operation can give."""
    codes = sorted({*statuses, 401, 403, 422})
    return {code: {"model": _ERRORS[code][0], "description": _ERRORS[code][1]} for code in codes}


def _loc_part(part: int | str) -> int | str:
    return part if isinstance(part, int) or len(part) <= MAX_LOC_CHARS else part[:MAX_LOC_CHARS] + "…"


def field_error(loc: list[int | str], message: str, kind: str) -> dict[str, Any]:
    """One entry of a 422's ``detail`` list: FastAPI's ``loc``/``msg``/``type`` plus a dotted ``field`` that forms
    show next to the input, and never the ``input`` or ``ctx`` a client sent."""
    return {"field": ".".join(str(p) for p in loc), "message": message, "loc": loc, "msg": message, "type": kind}


def validation_details(error: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for item in error.errors():
        loc = [_loc_part(p) for p in item["loc"]]
        message = item["msg"]
        if item["type"] == "extra_forbidden" and loc[1:2] == ["config"]:
            message += f"; allowed fields: {', '.join(allowed_fields(tuple(item['loc'][2:])))}"
        details.append(field_error([p for p in loc if p != "body"], message, item["type"]) | {"loc": loc})
    return details


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, error: DomainError) -> JSONResponse:
        if isinstance(error, FieldErrors):
            detail: Any = error.details()
        elif isinstance(error, BadRequest):
            loc: list[int | str] = list(error.field.split(".")) if error.field else []
            detail = [field_error(loc, error.detail, "value_error")]
        else:
            detail = error.detail
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(error)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        """A body that is not UTF-8 is a 422 like any other malformed body (FastAPI says 400 for it alone)."""
        if error.status_code == 400 and error.detail == "There was an error parsing the body":
            detail = [field_error(["body"], "the body is not valid UTF-8 JSON", "json_invalid")]
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, error)

    @app.exception_handler(OperationalError)
    async def database_busy(_request: Request, error: OperationalError) -> JSONResponse:
        """A locked SQLite is a 503 to retry, with a short message; any other database error stays a 500."""
        if not is_busy(error):
            raise error
        return JSONResponse({"detail": BUSY_MESSAGE}, status_code=503, headers={"Retry-After": "2"})


def is_busy(error: OperationalError) -> bool:
    """SQLite's "database is locked" / "database is busy": another connection holds the write lock."""
    return any(words in str(error.orig) for words in ("database is locked", "database is busy"))


class DatabaseBusy(Unavailable):
    """SQLite stayed locked by another writer through every retry."""
