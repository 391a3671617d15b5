"""Bodies of the admin side of the site API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.auth.schemas import NAME_PATTERN


class SiteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="e.g. hospital-a; letters, digits, '.', '_' and '-'")


class SiteInvitation(BaseModel):
    """Shown once: what the hospital's agent needs to enroll (``fedlens site enroll``)."""

    id: uuid.UUID
    name: str
    enrollment_token: str = Field(description="one-time, valid 24 h")
    fingerprint: str | None = Field(description="SHA-256 of the server's TLS certificate, for the agent to pin")


class SiteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    enrolled: bool
    disabled: bool
    online: bool
    last_seen_at: datetime | None
    agent_version: str | None
    hardware: dict[str, Any] | None
    datasets: list[dict[str, Any]] = Field(description="counts per split and class, sizes, fingerprint; no images")
    busy_with: uuid.UUID | None


class LedgerRun(BaseModel):
    run_id: uuid.UUID
    experiment: str = Field(description="the experiment's name when the run spent it")
    level: str = Field(description="sample or client")
    epsilon: float = Field(description="this run's epsilon on the dataset so far")
    delta: float
    rounds: int
    updated_at: datetime


class LedgerEntry(BaseModel):
    site: str
    dataset: str
    epsilon_spent: float = Field(description="the sum over runs (basic composition)")
    delta_spent: float = Field(description="the sum of the runs' deltas")
    updated_at: datetime = Field(description="the latest run's last round")
    runs: list[LedgerRun] = Field(description="newest first")
