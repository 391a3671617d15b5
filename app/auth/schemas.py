"""Request and response bodies of the account API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.limits.bounds import Text
from app.models import Role

#: user names: letters, digits and . _ - (they appear in the audit log and in URLs of sign-in links)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: Role
    disabled: bool
    created_at: datetime


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_' and '-'; at most 64")
    role: Role


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = None


class SigninLink(BaseModel):
    """A one-time link (valid 24 h) that signs its holder in as ``user``, who then sets a password."""

    user: UserRead
    link: str
    expires_at: datetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=100, description="what the token is for, e.g. 'nightly benchmark'")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="default: the server's FEDLENS_TOKEN_DAYS")


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str = Field(description="the token's first characters, to recognise it")
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenIssued(TokenRead):
    token: str = Field(description="send as 'Authorization: Bearer <token>'; shown this once, never stored")


class AuditRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: str
    outcome: str
    client_ip: str | None


class Me(BaseModel):
    user: UserRead
    via: str = Field(description="'token' or 'session'")
