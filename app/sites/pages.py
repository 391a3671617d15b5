"""The Sites page: every hospital site's state and datasets; admins add, disable, enable and rotate sites."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.auth.deps import Admin, Viewer
from app.auth.schemas import NAME_PATTERN
from app.db import SessionDep, SettingsDep
from app.errors import DomainError
from app.models import Role, User
from app.settings import Settings
from app.sites import ledger, registry
from app.sites.routes import served_by, site_read
from app.templating import templates

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    session: SessionDep,
    user: User,
    settings: Settings,
    *,
    invitation: registry.Invitation | None = None,
    fingerprint: str | None = None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    context = {
        "sites": [site_read(s, settings) for s in registry.list_sites(session=session)],
        "user": user,
        "invitation": invitation,
        "fingerprint": fingerprint,
        "error": error,
        "ledger": ledger.ledger(session=session) if user.role == Role.ADMIN else [],
    }
    return templates.TemplateResponse(request, "sites.html", context, status_code=status_code)


@router.get("/sites", response_class=HTMLResponse)
def sites_page(request: Request, user: Viewer, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, user, settings)


@router.post("/sites", response_class=HTMLResponse)
def add_site(
    request: Request,
    admin: Admin,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form(pattern=NAME_PATTERN)],
) -> Response:
    """A new site; its one-time enrollment token and the server's fingerprint are shown on this answer only."""
    try:
        invitation = registry.create_site(session=session, name=name)
    except DomainError as error:
        return _page(request, session, admin, settings, error=error.detail, status_code=error.status_code)
    return _page(request, session, admin, settings, invitation=invitation, fingerprint=served_by(settings))


@router.post("/sites/{site_id}/{action}", response_class=HTMLResponse)
def change_site(
    request: Request, site_id: uuid.UUID, action: str, admin: Admin, session: SessionDep, settings: SettingsDep
) -> Response:
    """disable, enable, or rotate (forget the key now; a new token enrolls the new one)."""
    if action == "rotate":
        invitation = registry.rotate_key(session=session, site_id=site_id)
        return _page(request, session, admin, settings, invitation=invitation, fingerprint=served_by(settings))
    if action not in ("disable", "enable"):
        return _page(request, session, admin, settings, error=f"unknown action {action!r}", status_code=404)
    registry.set_disabled(session=session, site_id=site_id, disabled=action == "disable")
    return _page(request, session, admin, settings)
