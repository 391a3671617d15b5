"""REST endpoints of accounts: who am I, API tokens (own; admins all), users and the audit log (admins)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlalchemy.orm import Session

from app.auth import accounts, audit
from app.auth.deps import Admin, Authenticated, Viewer
from app.auth.schemas import (
    AuditRead,
    Me,
    SigninLink,
    TokenCreate,
    TokenIssued,
    TokenRead,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.db import SessionDep, SettingsDep
from app.errors import documented
from app.models import Role, User
from app.schemas import Page

router = APIRouter(prefix="/api", tags=["accounts"])


def link_for(request: Request, session: Session, user: User) -> SigninLink:
    issued = accounts.signin_link(session=session, user=user)
    return SigninLink(
        user=UserRead.model_validate(user),
        link=f"{str(request.base_url).rstrip('/')}/login/link?token={issued.secret}",
        expires_at=issued.token.expires_at,
    )


@router.get("/me", responses=documented())
def me(principal: Authenticated) -> Me:
    return Me(user=UserRead.model_validate(principal.user), via=principal.via)


@router.get("/tokens", responses=documented())
def list_tokens(user: Viewer, session: SessionDep) -> list[TokenRead]:
    """Your API tokens (admins: everyone's), newest first; the secrets themselves are never shown again."""
    owner = None if user.role == Role.ADMIN else user
    return [TokenRead.model_validate(t) for t in accounts.list_tokens(session=session, user=owner)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, responses=documented(400))
def create_token(body: TokenCreate, user: Viewer, session: SessionDep, settings: SettingsDep) -> TokenIssued:
    """A bearer token with your role, for scripts; the answer is the only time its secret is shown."""
    days = body.expires_in_days or settings.token_days
    issued = accounts.issue_token(session=session, user=user, name=body.name, lifetime=timedelta(days=days))
    return TokenIssued(**TokenRead.model_validate(issued.token).model_dump(), token=issued.secret)


@router.delete("/tokens/{token_id}", responses=documented(404))
def revoke_token(token_id: uuid.UUID, user: Viewer, session: SessionDep) -> TokenRead:
    """Revoke one of your tokens (admins: anyone's); it stops working at once."""
    owner = None if user.role == Role.ADMIN else user
    return TokenRead.model_validate(accounts.revoke_token(session=session, token_id=token_id, owner=owner))


@router.get("/users", responses=documented())
def list_users(_admin: Admin, session: SessionDep) -> list[UserRead]:
    return [UserRead.model_validate(u) for u in accounts.list_users(session=session)]


@router.post("/users", status_code=status.HTTP_201_CREATED, responses=documented(400, 409))
def create_user(body: UserCreate, _admin: Admin, request: Request, session: SessionDep) -> SigninLink:
    """A new account and a one-time sign-in link (24 h) to hand to its owner, who then sets a password."""
    user = accounts.create_user(session=session, name=body.name, role=body.role)
    return link_for(request, session, user)


@router.patch("/users/{user_id}", responses=documented(400, 404))
def update_user(user_id: uuid.UUID, body: UserUpdate, _admin: Admin, session: SessionDep) -> UserRead:
    """Change a role, or disable an account (its sessions end and its tokens stop working)."""
    user = accounts.update_user(session=session, user_id=user_id, role=body.role, disabled=body.disabled)
    return UserRead.model_validate(user)


@router.post("/users/{user_id}/signin-link", status_code=status.HTTP_201_CREATED, responses=documented(404))
def new_signin_link(user_id: uuid.UUID, _admin: Admin, request: Request, session: SessionDep) -> SigninLink:
    """A fresh one-time sign-in link, e.g. for a user who forgot the password."""
    return link_for(request, session, accounts.get_user(session=session, user_id=user_id))


@router.get("/audit", responses=documented())
def audit_log(
    _admin: Admin,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Page[AuditRead]:
    """Every mutation and refused credential: who, what, when, from where, newest first."""
    items, total = audit.events(session=session, limit=limit, offset=offset)
    return Page(items=[AuditRead.model_validate(e) for e in items], total=total, limit=limit, offset=offset)
