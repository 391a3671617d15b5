"""Site registry: create, enroll, rotate, disable, heartbeats (no FastAPI here)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.credentials import new_secret, secret_digest
from app.errors import Conflict, NotFound, Unauthenticated
from app.models import Site, utcnow
from app.sites.protocol import Enroll, Heartbeat

ENROLLMENT_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Invitation:
    """A site and the one-time token its agent enrolls with (shown once, stored as SHA-256 only)."""

    site: Site
    token: str


def _invite(session: Session, site: Site) -> Invitation:
    token = new_secret()
    site.enrollment_sha256 = secret_digest(token)
    site.enrollment_expires_at = utcnow() + ENROLLMENT_TTL
    session.commit()
    return Invitation(site=site, token=token)


def create_site(*, session: Session, name: str) -> Invitation:
    if session.scalar(select(Site).where(Site.name == name)) is not None:
        raise Conflict(f"a site named {name!r} exists already; choose another name")
    site = Site(name=name, datasets=[])
    session.add(site)
    return _invite(session, site)


def get_site(*, session: Session, site_id: uuid.UUID) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"no site with id {site_id}")
    return site


def list_sites(*, session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.name)))


def rotate_key(*, session: Session, site_id: uuid.UUID) -> Invitation:
    """Forget the site's key at once (its requests get 401) and issue a new enrollment token for the new key."""
    site = get_site(session=session, site_id=site_id)
    site.public_key = None
    return _invite(session, site)


def set_disabled(*, session: Session, site_id: uuid.UUID, disabled: bool) -> Site:
    site = get_site(session=session, site_id=site_id)
    site.disabled = disabled
    session.commit()
    return site


def enroll(*, session: Session, body: Enroll) -> Site:
    """Register the agent's public key against a one-time, unexpired token; the token dies with its first use."""
    site = session.scalar(select(Site).where(Site.enrollment_sha256 == secret_digest(body.token)))
    if site is None or site.enrollment_expires_at is None or site.enrollment_expires_at <= utcnow():
        raise Unauthenticated("unknown, used or expired enrollment token: ask an admin for a new one")
    if site.disabled:
        raise Unauthenticated("this site is disabled: ask an admin to enable it")
    site.public_key, site.enrollment_sha256, site.enrollment_expires_at = body.public_key, None, None
    site.enrolled_at, site.agent_version = utcnow(), body.agent_version
    session.commit()
    return site


def record_heartbeat(*, session: Session, site: Site, beat: Heartbeat) -> None:
    site.last_seen_at = utcnow()
    site.agent_version = beat.agent_version
    site.hardware = beat.hardware.model_dump()
    site.datasets = [d.model_dump(mode="json") for d in beat.datasets]
    site.busy_with = beat.busy_with
    session.commit()


def silent_s(site: Site) -> float:
    """Seconds since the site's last heartbeat; infinite for a site never heard from."""
    return (utcnow() - site.last_seen_at).total_seconds() if site.last_seen_at else float("inf")


class Undeclared(LookupError):
    """A run names a site that does not exist, or a dataset its agent has not declared; ``field`` is which."""

    def __init__(self, message: str, field: Literal["site", "dataset"]) -> None:
        super().__init__(message)
        self.field = field


def declared_dataset(session: Session, site_name: str, dataset: str) -> tuple[Site, dict[str, Any]]:
    """The site and what its agent declared of ``dataset`` (its images per split and class).

    Raises Undeclared, with the words to show a user, for an unknown site or an undeclared dataset."""
    site = session.scalar(select(Site).where(Site.name == site_name))
    if site is None:
        raise Undeclared(f"no site named {site_name!r}; add it on the Sites page", "site")
    summary = next((d for d in site.datasets if d.get("name") == dataset), None)
    if summary is None:
        raise Undeclared(f"site {site_name!r} declares no dataset {dataset!r} (has its agent run yet?)", "dataset")
    return site, summary


def is_online(site: Site, offline_after_s: float) -> bool:
    """Heard from within ``offline_after_s`` (settings.site_offline_after_s) and not disabled."""
    return silent_s(site) <= offline_after_s and not site.disabled
