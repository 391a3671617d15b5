"""FastAPI dependencies that authenticate every request and authorize it by role.

A request proves who it is with ``Authorization: Bearer <token>`` (scripts) or the session cookie (browsers).
Cookie-authenticated requests that change state must also come from our own origin and carry the session's CSRF
token (OWASP CSRF prevention: synchronizer token plus Origin verification); bearer tokens are never sent by a
browser on its own, so they need neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.auth import accounts, audit
from app.db import SessionDep, SettingsDep
from app.errors import DomainError, Forbidden, Unauthenticated
from app.models import Role, User

SESSION_COOKIE = "fedlens_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    user: User
    via: Literal["token", "session"]
    csrf_token: str  # the session's; "" for bearer tokens


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def same_origin(request: Request) -> bool:
    """Whether Origin (or, failing that, Referer) names the host this request was sent to."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    return bool(source) and urlsplit(source).netloc == request.headers.get("host", "")


async def _csrf_token_sent(request: Request) -> str:
    if token := request.headers.get(CSRF_HEADER):
        return token
    if request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/")):
        return str((await request.form()).get(CSRF_FIELD, ""))
    return ""


def _principal(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    """Who sent the request. A plain ``def``: FastAPI runs it in its thread pool, so its database work never
    blocks the event loop (hundreds of event streams opening at once would otherwise stall the whole API)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        user, why = (
            accounts.token_user(session=session, secret=secret.strip())
            if scheme.lower() == "bearer"
            else (None, "not a bearer token")
        )
        if user is None:
            action = f"{request.method} {request.url.path}"
            audit.record(session=session, user=None, action=action, outcome=why, client_ip=client_ip(request))
            raise Unauthenticated(f"{why}: send 'Authorization: Bearer <token>' with a valid token from Settings")
        return _released(session, Principal(user=user, via="token", csrf_token=""))
    secret = request.cookies.get(SESSION_COOKIE, "")
    lifetime = timedelta(hours=settings.session_hours)
    web = accounts.session_of(session=session, secret=secret, lifetime=lifetime) if secret else None
    if web is None:
        raise Unauthenticated("sign in first")
    return _released(session, Principal(user=web.user, via="session", csrf_token=web.csrf_token))


def _released(session: Session, principal: Principal) -> Principal:
    """Give the connection back to the pool before the next step: a request must never hold one while it waits
    for a worker thread, or a burst of requests (event streams opening) deadlocks the pool against the threads.
    The user stays loaded (detached); services that change it load it again."""
    session.close()
    return principal


async def _csrf_checked(
    principal: Annotated[Principal, Depends(_principal)], request: Request, session: SessionDep
) -> Principal:
    """A browser's state-changing request must come from our origin with the session's CSRF token (the form is
    read asynchronously; only a refusal touches the database)."""
    if principal.via != "session" or request.method in SAFE_METHODS:
        return principal
    refusal = None
    if not same_origin(request):
        refusal = ("cross-origin request refused", "send it from the fedlens dashboard itself")
    elif await _csrf_token_sent(request) != principal.csrf_token:
        refusal = ("missing or wrong CSRF token", "the form has expired or did not come from fedlens")
    if refusal is None:
        return principal
    outcome, advice = refusal
    action = f"{request.method} {request.url.path}"
    await run_in_threadpool(
        audit.record, session=session, user=principal.user, action=action, outcome=outcome, client_ip=client_ip(request)
    )
    raise Forbidden(f"{outcome}: {advice}; reload the page and try again")


def authenticate(
    principal: Annotated[Principal, Depends(_csrf_checked)], request: Request, session: SessionDep
) -> Iterator[Principal]:
    """The caller; every state-changing request is written to the audit log with its outcome."""
    request.state.principal = principal
    if request.method in SAFE_METHODS:
        yield principal
        return
    outcome = "ok"
    try:
        yield principal
    except DomainError as error:
        outcome = f"{error.status_code}: {error.detail}"
        raise
    except Exception as error:
        outcome = f"error: {type(error).__name__}"
        raise
    finally:
        audit.record(
            session=session,
            user=principal.user,
            action=f"{request.method} {request.url.path}",
            outcome=outcome,
            client_ip=client_ip(request),
        )


Authenticated = Annotated[Principal, Depends(authenticate)]


def require(role: Role) -> Callable[[Principal], Awaitable[User]]:
    """A dependency that lets in users whose role is ``role`` or above, and answers 403 to the others."""

    async def dependency(principal: Authenticated) -> User:
        if principal.user.role.rank < role.rank:
            raise Forbidden(
                f"this needs the {role} role; your account {principal.user.name!r} is a {principal.user.role}"
            )
        return principal.user

    return dependency


as_viewer = require(Role.VIEWER)
as_researcher = require(Role.RESEARCHER)
as_admin = require(Role.ADMIN)

Viewer = Annotated[User, Depends(as_viewer)]
Researcher = Annotated[User, Depends(as_researcher)]
Admin = Annotated[User, Depends(as_admin)]
