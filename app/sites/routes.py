"""Site routes: the admin registry under /api/sites, and the signed pull protocol under /api/site/."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from app.auth.deps import Admin, Viewer
from app.db import SessionDep, SettingsDep
from app.errors import BadRequest, Forbidden, NotFound, documented
from app.models import Site, utcnow
from app.settings import Settings
from app.sites import blobs, ledger, registry, tasks
from app.sites.protocol import Enroll, Enrolled, Heartbeat, SiteTask, TaskResult
from app.sites.schemas import LedgerEntry, SiteCreate, SiteInvitation, SiteRead
from app.sites.signed import SignedSite, authenticate_site, precheck_site
from app.tls.certs import served_fingerprint

admin = APIRouter(prefix="/api/sites", tags=["sites"])
protocol = APIRouter(prefix="/api/site", tags=["site protocol"])
POLL_S = 0.5  # how often a long poll looks for a new task
MAX_UPLOAD_BYTES = 512 * 2**20  # the study's CNN is 2.2 MB; even a large model fits


def site_read(site: Site) -> SiteRead:
    return SiteRead(
        id=site.id,
        name=site.name,
        enrolled=site.public_key is not None,
        disabled=site.disabled,
        online=registry.is_online(site),
        last_seen_at=site.last_seen_at,
        agent_version=site.agent_version,
        hardware=site.hardware,
        datasets=site.datasets,
        busy_with=site.busy_with,
    )


def served_by(settings: Settings) -> str | None:
    return served_fingerprint(tls=settings.tls, cert=settings.tls_cert, folder=settings.tls_dir)


def _invitation(invitation: registry.Invitation, fingerprint: str | None) -> SiteInvitation:
    site = invitation.site
    return SiteInvitation(id=site.id, name=site.name, enrollment_token=invitation.token, fingerprint=fingerprint)


@admin.get("", responses=documented())
def list_sites(_user: Viewer, session: SessionDep) -> list[SiteRead]:
    """Every site: online or not, last heartbeat, agent version, hardware, datasets with their class counts."""
    return [site_read(s) for s in registry.list_sites(session=session)]


@admin.get("/ledger", responses=documented())
def privacy_ledger(_admin: Admin, session: SessionDep) -> list[LedgerEntry]:
    """Each site's differential-privacy spend per dataset over all runs, for deciding whether it may join another."""
    return ledger.ledger(session=session)


@admin.post("", status_code=status.HTTP_201_CREATED, responses=documented(400, 409))
def create_site(body: SiteCreate, _admin: Admin, session: SessionDep, settings: SettingsDep) -> SiteInvitation:
    """A new site and its one-time enrollment token (24 h) with the server's certificate fingerprint: shown once."""
    return _invitation(registry.create_site(session=session, name=body.name), served_by(settings))


@admin.post("/{site_id}/rotate", status_code=status.HTTP_201_CREATED, responses=documented(404))
def rotate(site_id: uuid.UUID, _admin: Admin, session: SessionDep, settings: SettingsDep) -> SiteInvitation:
    """Revoke the site's key now and issue a token to enroll a new one (``fedlens site enroll`` again)."""
    return _invitation(registry.rotate_key(session=session, site_id=site_id), served_by(settings))


@admin.post("/{site_id}/disable", responses=documented(404))
def disable(site_id: uuid.UUID, _admin: Admin, session: SessionDep) -> SiteRead:
    return site_read(registry.set_disabled(session=session, site_id=site_id, disabled=True))


@admin.post("/{site_id}/enable", responses=documented(404))
def enable(site_id: uuid.UUID, _admin: Admin, session: SessionDep) -> SiteRead:
    return site_read(registry.set_disabled(session=session, site_id=site_id, disabled=False))


@protocol.post("/enroll", status_code=status.HTTP_201_CREATED, responses=documented(400))
def enroll(body: Enroll, session: SessionDep) -> Enrolled:
    """Register the agent's Ed25519 public key with the one-time token; the private key never leaves the site."""
    site = registry.enroll(session=session, body=body)
    return Enrolled(site_id=site.id, name=site.name)


@protocol.post("/heartbeat", responses=documented(400))
def heartbeat(body: Heartbeat, site: SignedSite, session: SessionDep) -> dict[str, str]:
    """The agent's version, hardware and dataset summaries (counts only); marks the site online."""
    registry.record_heartbeat(session=session, site=site, beat=body)
    return {"server_time": utcnow().isoformat()}


@protocol.get(
    "/tasks/next",
    response_model=SiteTask,
    responses={204: {"description": "no work within `wait` s"}, **documented()},
)
async def next_task(site: SignedSite, session: SessionDep, wait: Annotated[float, Query(ge=0, le=30)] = 25) -> Response:
    """Long poll: this site's next task as soon as there is one, or 204 after ``wait`` seconds."""
    deadline = asyncio.get_running_loop().time() + wait

    def claim() -> SiteTask | None:
        session.expire_all()  # see tasks queued since the last look
        return tasks.claim_next(session=session, site=site) if not site.disabled else None

    while True:
        task = await run_in_threadpool(claim)
        if task is not None:
            return JSONResponse(task.model_dump(mode="json"))
        if asyncio.get_running_loop().time() >= deadline:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        await asyncio.sleep(POLL_S)


@protocol.get(
    "/weights/{sha256}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **documented(404),
    },
)
def weights(sha256: str, site: SignedSite, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """A global weights file by its SHA-256, only for a site with a task that starts from it."""
    if not tasks.may_download(session=session, site=site, sha256=sha256):
        raise Forbidden("these weights belong to no task of this site")
    path = blobs.blob_path(settings.artifacts, sha256)
    if not path.exists():
        raise NotFound("these weights are no longer stored; wait for the next task")
    return FileResponse(path, media_type="application/octet-stream")


@protocol.put(
    "/blobs/{sha256}",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "this content was stored already"}, **documented(413)},
)
async def upload(sha256: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """A site's weights file, streamed and hashed as it arrives; stored under its SHA-256 once (idempotent)."""
    await run_in_threadpool(precheck_site, request, session)
    try:
        blobs.blob_path(settings.artifacts, sha256)
        digest, temporary = await blobs.receive(settings.artifacts, request.stream(), max_bytes=MAX_UPLOAD_BYTES)
    except blobs.BlobError as error:
        raise BadRequest(str(error)) from error
    try:
        await run_in_threadpool(authenticate_site, request, session, settings, digest)
        if digest != sha256:
            raise BadRequest(f"the uploaded content has SHA-256 {digest}, not {sha256}: it was changed on the way")
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    created = blobs.keep(settings.artifacts, sha256, temporary)
    return Response(status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@protocol.post("/tasks/{task_id}/result", responses=documented(400, 404))
def result(
    task_id: uuid.UUID, body: TaskResult, site: SignedSite, session: SessionDep, settings: SettingsDep
) -> dict[str, bool]:
    """A task's outcome; an answer after the task's deadline is recorded as late and never merged."""
    if body.weights_sha256 and not blobs.blob_path(settings.artifacts, body.weights_sha256).exists():
        raise BadRequest("upload the weights file (PUT /api/site/blobs/{sha256}) before posting the result")
    task = tasks.task_of(session=session, task_id=task_id)
    holds = tasks.declared_train_images(site, task.dataset) if task.kind in ("train", "local") else None
    late = tasks.post_result(session=session, site=site, task_id=task_id, result=body, holds=holds)
    return {"accepted": True, "late": late}
