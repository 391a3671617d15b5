"""Sign-in, sign-out, one-time sign-in links and the Settings page (password, tokens; users and audit for admins)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth import accounts, audit
from app.auth.api import link_for
from app.auth.deps import SESSION_COOKIE, Admin, Authenticated, Viewer, client_ip, same_origin
from app.db import SessionDep, SettingsDep
from app.errors import DomainError, Forbidden
from app.models import Role, User
from app.templating import templates

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=200)]


def _safe_next(target: str) -> str:
    """Only a path on this site: an open redirect would let a phishing link borrow our login page."""
    parts = urlsplit(target)
    return target if target.startswith("/") and not target.startswith("//") and not parts.netloc else "/"


def _signed_in(request: Request, settings: SettingsDep, session: SessionDep, user: User, target: str) -> Response:
    secret, _web = accounts.start_session(session=session, user=user, lifetime=timedelta(hours=settings.session_hours))
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=settings.tls_enabled or request.url.scheme == "https",
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next_: Annotated[str, Query(alias="next", max_length=2000)] = "/") -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next_), "error": ""})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    name: Text,
    password: Text,
    next_: Annotated[str, Form(alias="next", max_length=2000)] = "/",
) -> Response:
    """Password sign-in; every attempt is audited, and a failure says nothing about which part was wrong."""
    if not same_origin(request):
        raise Forbidden("cross-origin sign-in refused: sign in from the fedlens login page")
    user = accounts.password_user(session=session, name=name, password=password)
    outcome = "ok" if user else "wrong name or password"
    audit.record(session=session, user=user, action="login", outcome=outcome, client_ip=client_ip(request))
    if user is None:
        context = {"next": _safe_next(next_), "error": "Wrong name or password."}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    return _signed_in(request, settings, session, user, next_)


@router.get("/login/link", response_class=HTMLResponse)
def login_link(
    request: Request, session: SessionDep, settings: SettingsDep, token: Annotated[str, Query(max_length=100)]
) -> Response:
    """A one-time sign-in link (first admin, invited users): it signs in once, then asks for a password."""
    user = accounts.redeem_signin_link(session=session, secret=token)
    outcome = "ok" if user else "unknown, used or expired link"
    audit.record(session=session, user=user, action="sign-in link", outcome=outcome, client_ip=client_ip(request))
    if user is None:
        context = {"next": "/", "error": "This sign-in link is unknown, used or expired: ask an admin for a new one."}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    return _signed_in(request, settings, session, user, "/settings" if user.password_hash is None else "/")


@router.post("/logout")
def logout(request: Request, _principal: Authenticated, session: SessionDep) -> Response:
    accounts.end_session(session=session, secret=request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _settings_page(
    request: Request, session: SessionDep, user: User, *, notice: str = "", error: str = "", status_code: int = 200
) -> Response:
    admin = user.role == Role.ADMIN
    context = {
        "user": user,
        "tokens": accounts.list_tokens(session=session, user=None if admin else user),
        "users": accounts.list_users(session=session) if admin else [],
        "events": audit.events(session=session, limit=100, offset=0)[0] if admin else [],
        "roles": list(Role),
        "notice": notice,
        "error": error,
    }
    return templates.TemplateResponse(request, "settings.html", context, status_code=status_code)


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, user: Viewer, session: SessionDep) -> Response:
    return _settings_page(request, session, user)


@router.post("/settings/password", response_class=HTMLResponse)
def change_password(
    request: Request, user: Viewer, session: SessionDep, password: Text, repeat: Text, current: Text = ""
) -> Response:
    """Set a password; changing an existing one needs the current one."""
    if user.password_hash and accounts.password_user(session=session, name=user.name, password=current) is None:
        return _settings_page(request, session, user, error="The current password is wrong.", status_code=422)
    if password != repeat:
        return _settings_page(request, session, user, error="The two new passwords differ.", status_code=422)
    try:
        accounts.set_password(session=session, user=user, password=password)
    except DomainError as error:
        return _settings_page(request, session, user, error=error.detail, status_code=422)
    return _settings_page(request, session, user, notice="Password saved.")


@router.post("/settings/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    user: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    name: Text,
    days: Annotated[int, Form(ge=1, le=3650)] = 90,
) -> Response:
    issued = accounts.issue_token(session=session, user=user, name=name, lifetime=timedelta(days=days))
    notice = f"New token (copy it now; it is not shown again): {issued.secret}"
    return _settings_page(request, session, user, notice=notice)


@router.post("/settings/tokens/{token_id}/revoke", response_class=HTMLResponse)
def revoke_token(request: Request, token_id: uuid.UUID, user: Viewer, session: SessionDep) -> Response:
    owner = None if user.role == Role.ADMIN else user
    accounts.revoke_token(session=session, token_id=token_id, owner=owner)
    return _settings_page(request, session, user, notice="Token revoked.")


@router.post("/settings/users", response_class=HTMLResponse)
def create_user(
    request: Request,
    admin: Admin,
    session: SessionDep,
    name: Annotated[str, Form(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")],
    role: Annotated[Role, Form()],
) -> Response:
    try:
        user = accounts.create_user(session=session, name=name, role=role)
    except DomainError as error:
        return _settings_page(request, session, admin, error=error.detail, status_code=409)
    link = link_for(request, session, user)
    notice = f"User {user.name} created. Send them this one-time sign-in link (valid 24 h): {link.link}"
    return _settings_page(request, session, admin, notice=notice)


@router.post("/settings/users/{user_id}", response_class=HTMLResponse)
def update_user(
    request: Request,
    user_id: uuid.UUID,
    admin: Admin,
    session: SessionDep,
    role: Annotated[Role, Form()],
    disabled: Annotated[bool, Form()] = False,
) -> Response:
    if user_id == admin.id and (disabled or role != Role.ADMIN):
        return _settings_page(request, session, admin, error="You cannot demote or disable yourself.", status_code=409)
    user = accounts.update_user(session=session, user_id=user_id, role=role, disabled=disabled)
    return _settings_page(
        request, session, admin, notice=f"{user.name}: {user.role}{', disabled' if disabled else ''}."
    )
