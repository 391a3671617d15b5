"""Account service: users, API tokens, sign-in links and browser sessions (no FastAPI here)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.auth.credentials import hash_password, new_secret, secret_digest, verify_password
from app.auth.recent import changes
from app.errors import BadRequest, Conflict, NotFound
from app.models import ApiToken, Role, TokenKind, User, WebSession, utcnow

#: last_used_at / last_seen_at are written at most this often, so reads do not turn into writes on every request
TOUCH_EVERY = timedelta(minutes=1)
SIGNIN_LINK_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Issued:
    """A new token: ``secret`` is shown to its owner once and never stored."""

    token: ApiToken
    secret: str


class TokenCheck(NamedTuple):
    user: User | None
    why: str  # "ok", or why the token is refused
    expires_at: datetime | None = None  # of a token that is accepted


def get_user(*, session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    return user


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def create_user(*, session: Session, name: str, role: Role, password: str | None = None) -> User:
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"a user named {name!r} exists already; choose another name")
    user = User(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.commit()
    return user


def ensure_user(*, session: Session, name: str, role: Role) -> User:
    """The user of that name (its role set to ``role``), created if missing: for `fedlens token create`."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        return create_user(session=session, name=name, role=role)
    user.role = role
    session.commit()
    changes.bump()
    return user


def update_user(*, session: Session, user_id: uuid.UUID, role: Role | None, disabled: bool | None) -> User:
    """Change a role or disable an account; disabling also ends its sessions (its tokens stop working)."""
    user = get_user(session=session, user_id=user_id)
    if role is not None:
        user.role = role
    if disabled is not None:
        user.disabled = disabled
        if disabled:
            session.query(WebSession).filter(WebSession.user_id == user.id).delete()
    session.commit()
    changes.bump()
    return user


def set_password(*, session: Session, user: User, password: str) -> None:
    user = get_user(session=session, user_id=user.id)  # the caller's copy may be detached (app.auth.deps)
    try:
        user.password_hash = hash_password(password)
    except ValueError as error:
        raise BadRequest(str(error)) from error
    session.commit()


def issue_token(
    *, session: Session, user: User, name: str, kind: TokenKind = TokenKind.API, lifetime: timedelta
) -> Issued:
    secret = new_secret()
    token = ApiToken(
        user_id=user.id,
        kind=kind,
        name=name,
        secret_sha256=secret_digest(secret),
        prefix=secret[:8],
        expires_at=utcnow() + lifetime,
    )
    session.add(token)
    session.commit()
    return Issued(token=token, secret=secret)


def list_tokens(*, session: Session, user: User | None) -> list[ApiToken]:
    """API tokens of one user, or of everyone (``user=None``, for admins), newest first."""
    query = select(ApiToken).where(ApiToken.kind == TokenKind.API).order_by(ApiToken.created_at.desc())
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return list(session.scalars(query))


def revoke_token(*, session: Session, token_id: uuid.UUID, owner: User | None) -> ApiToken:
    """Revoke a token of ``owner`` (or anyone's, ``owner=None``); another user's token is reported as missing."""
    token = session.get(ApiToken, token_id)
    if token is None or (owner is not None and token.user_id != owner.id):
        raise NotFound(f"no token with id {token_id}")
    token.revoked_at = token.revoked_at or utcnow()
    session.commit()
    changes.bump()
    return token


def token_user(*, session: Session, secret: str, now: datetime | None = None) -> TokenCheck:
    """The user a bearer token stands for, or None and why not ("unknown", "expired", "revoked", "disabled")."""
    now = now or utcnow()
    token = session.scalar(
        select(ApiToken).where(ApiToken.secret_sha256 == secret_digest(secret), ApiToken.kind == TokenKind.API)
    )
    if token is None:
        return TokenCheck(None, "unknown token")
    if token.revoked_at is not None:
        return TokenCheck(None, "revoked token")
    if token.expires_at <= now:
        return TokenCheck(None, "expired token")
    if token.user.disabled:
        return TokenCheck(None, "disabled user")
    if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
        session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
        session.commit()
    return TokenCheck(token.user, "ok", token.expires_at)


def password_user(*, session: Session, name: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.name == name))
    if user is None or user.disabled or not verify_password(password, user.password_hash):
        return None
    return user


def redeem_signin_link(*, session: Session, secret: str) -> User | None:
    """The user a one-time sign-in link was made for; the link stops working once used or expired."""
    token = session.scalar(
        select(ApiToken).where(ApiToken.secret_sha256 == secret_digest(secret), ApiToken.kind == TokenKind.SIGNIN)
    )
    if token is None or token.revoked_at is not None or token.expires_at <= utcnow() or token.user.disabled:
        return None
    token.revoked_at = utcnow()
    session.commit()
    return token.user


def start_session(*, session: Session, user: User, lifetime: timedelta) -> tuple[str, WebSession]:
    """A new browser session; the returned secret goes into the cookie and nowhere else."""
    secret = new_secret()
    web = WebSession(
        secret_sha256=secret_digest(secret), user_id=user.id, csrf_token=new_secret(), expires_at=utcnow() + lifetime
    )
    session.add(web)
    session.commit()
    return secret, web


def session_of(*, session: Session, secret: str, lifetime: timedelta) -> WebSession | None:
    """The live session behind a cookie; each use extends it (an idle session expires after ``lifetime``)."""
    web = session.get(WebSession, secret_digest(secret))
    now = utcnow()
    if web is None or web.expires_at <= now or web.user.disabled:
        return None
    if now - web.last_seen_at > TOUCH_EVERY:
        web.last_seen_at, web.expires_at = now, now + lifetime
        session.commit()
    return web


def end_session(*, session: Session, secret: str) -> None:
    session.query(WebSession).filter(WebSession.secret_sha256 == secret_digest(secret)).delete()
    session.commit()
    changes.bump()


def bootstrap_admin(*, session: Session) -> Issued | None:
    """On an empty database: an ``admin`` user and a one-time sign-in link for it (None if any user exists)."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    admin = create_user(session=session, name="admin", role=Role.ADMIN)
    return issue_token(
        session=session, user=admin, name="first sign-in", kind=TokenKind.SIGNIN, lifetime=SIGNIN_LINK_TTL
    )


def signin_link(*, session: Session, user: User) -> Issued:
    """A one-time link an admin hands to a new user, who then sets a password."""
    return issue_token(session=session, user=user, name="sign-in link", kind=TokenKind.SIGNIN, lifetime=SIGNIN_LINK_TTL)
