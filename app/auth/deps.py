"""FastAPI dependencies that authenticate every request and authorize it by role.

A request proves who it is with ``Authorization: Bearer <token>`` (scripts) or the session cookie (browsers).
Cookie-authenticated requests that change state must also come from our own origin and carry the session's CSRF
token (OWASP CSRF prevention: synchronizer token plus Origin verification); bearer tokens are never sent by a
browser on its own, so they need neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.auth import accounts, audit
from app.auth.credentials import secret_digest
from app.auth.recent import RecentCallers, changes
from app.db import SessionDep, SettingsDep
from app.errors import DomainError, Forbidden, Unauthenticated
from app.models import Role, User
from app.settings import Settings

SESSION_COOKIE = "fedlens_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_recent = RecentCallers()


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


def _credentials(request: Request) -> tuple[Literal["token", "session"], str]:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        return "token", secret.strip() if scheme.lower() == "bearer" else ""
    return "session", request.cookies.get(SESSION_COOKIE, "")


async def _principal(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    """Who sent the request: from app.auth.recent when the secret was checked in the last few seconds (no database
    and no thread), else looked up in the thread pool, so that database work never blocks the event loop."""
    via, secret = _credentials(request)
    key = f"{via}:{secret_digest(secret)}"
    if secret and (known := _recent.get(key)) is not None:
        return Principal(user=known.user, via=via, csrf_token=known.csrf_token)
    return await run_in_threadpool(_looked_up, request, session, settings, via, secret, key)


def _looked_up(
    request: Request, session: Session, settings: Settings, via: Literal["token", "session"], secret: str, key: str
) -> Principal:
    generation = changes.value
    if via == "token":
        user, why, expires_at = (
            accounts.token_user(session=session, secret=secret) if secret else (None, "not a bearer token", None)
        )
        if user is None or expires_at is None:
            action = f"{request.method} {request.url.path}"
            audit.record(session=session, user=None, action=action, outcome=why, client_ip=client_ip(request))
            raise Unauthenticated(f"{why}: send 'Authorization: Bearer <token>' with a valid token from Settings")
        _recent.put(key, user, expires_at, generation)
        return _released(session, Principal(user=user, via="token", csrf_token=""))
    lifetime = timedelta(hours=settings.session_hours)
    web = accounts.session_of(session=session, secret=secret, lifetime=lifetime) if secret else None
    if web is None:
        raise Unauthenticated("sign in first")
    _recent.put(key, web.user, web.expires_at, generation, web.csrf_token)
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


async def authenticate(
    principal: Annotated[Principal, Depends(_csrf_checked)], request: Request, session: SessionDep
) -> AsyncIterator[Principal]:
    """The caller; every state-changing request is written to the audit log with its outcome. Async, so that a
    read goes through without a trip to the thread pool; the audit write goes there."""
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
        await run_in_threadpool(
            audit.record,
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
