"""Authenticating a site's request: its Ed25519 signature, its enrollment and state, and a nonce used once."""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.auth import audit
from app.auth.deps import client_ip
from app.db import SessionDep, SettingsDep
from app.errors import Unauthenticated
from app.models import Site
from app.settings import Settings
from app.sites.protocol import REPLAY_WINDOW_S, SITE_HEADER, SignatureError, body_sha256, verify
from app.tls.redis import redis_client


def target(request: Request) -> str:
    """The path and query exactly as the agent sent (and signed) them."""
    path = request.scope.get("raw_path", request.url.path.encode()).decode()
    query = request.scope.get("query_string", b"").decode()
    return f"{path}?{query}" if query else path


def _claimed_site(request: Request, session: Session) -> tuple[Site | None, str]:
    """The site a request says it comes from, and why it cannot be that site ("" if it can)."""
    site = None
    with contextlib.suppress(ValueError):  # not a UUID: an unknown site
        site = session.get(Site, uuid.UUID(request.headers.get(SITE_HEADER, "")))
    if site is None:
        return None, "unknown site"
    if site.disabled:
        return site, "disabled site"
    if site.public_key is None:
        return site, "site not enrolled, or its key was rotated"
    return site, ""


def _refuse(request: Request, session: Session, site: Site | None, why: str) -> Unauthenticated:
    actor = f"site:{site.name}" if site else "unknown site"
    action = f"{request.method} {request.url.path}"
    audit.record(session=session, user=None, action=action, outcome=why, client_ip=client_ip(request), actor=actor)
    return Unauthenticated(f"site request refused: {why}")


def precheck_site(request: Request, session: Session) -> None:
    """Before a large upload is read: refuse at once a request that names no enrolled, enabled site."""
    site, why = _claimed_site(request, session)
    if why:
        raise _refuse(request, session, site, why)


def authenticate_site(request: Request, session: Session, settings: Settings, digest: str) -> Site:
    """The site whose key signed this request over a body with SHA-256 ``digest``; 401 (audited) otherwise."""
    site, why = _claimed_site(request, session)
    if site is not None and not why:
        assert site.public_key is not None
        try:
            nonce = verify(site.public_key, request.headers, request.method, target(request), digest)
            key = f"fedlens:site-nonce:{site.id}:{nonce}"
            if not redis_client(settings.broker, settings.redis_ca_file, timeout_s=5).set(
                key, b"1", nx=True, ex=2 * REPLAY_WINDOW_S
            ):
                why = "replayed request"
        except SignatureError as error:
            why = str(error)
    if why or site is None:
        raise _refuse(request, session, site, why)
    return site


async def signed_site(request: Request, session: SessionDep, settings: SettingsDep) -> Site:
    """Dependency for requests with a small body (read whole); blob uploads verify while they stream. The
    database work runs in the thread pool, never on the event loop."""
    digest = body_sha256(await request.body())
    return await run_in_threadpool(authenticate_site, request, session, settings, digest)


SignedSite = Annotated[Site, Depends(signed_site)]
