"""Site routes: the admin registry under /api/sites, and the signed pull protocol under /api/site/."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import ClientDisconnect

from app.auth.deps import Admin, Viewer
from app.db import SessionDep, SettingsDep
from app.errors import BadRequest, Forbidden, NotFound, documented
from app.models import Site, utcnow
from app.notify import answers_channel, publish, site_channel
from app.settings import Settings
from app.sites import blobs, ledger, registry, tasks, uploads
from app.sites.protocol import Enroll, Enrolled, Heartbeat, SiteTask, TaskResult, UploadState
from app.sites.schemas import LedgerEntry, SiteCreate, SiteInvitation, SiteRead
from app.sites.signed import SignedSite, authenticate_site, precheck_site
from app.streams.hub import hub_for
from app.tls.certs import served_fingerprint

admin = APIRouter(prefix="/api/sites", tags=["sites"])
protocol = APIRouter(prefix="/api/site", tags=["site protocol"])

logger = logging.getLogger(__name__)


def site_read(site: Site, settings: Settings) -> SiteRead:
    return SiteRead(
        id=site.id,
        name=site.name,
        enrolled=site.public_key is not None,
        disabled=site.disabled,
        online=registry.is_online(site, settings.site_offline_after_s),
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
def list_sites(_user: Viewer, session: SessionDep, settings: SettingsDep) -> list[SiteRead]:
    """Every site: online or not, last heartbeat, agent version, hardware, datasets with their class counts."""
    return [site_read(s, settings) for s in registry.list_sites(session=session)]


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
def disable(site_id: uuid.UUID, _admin: Admin, session: SessionDep, settings: SettingsDep) -> SiteRead:
    return site_read(registry.set_disabled(session=session, site_id=site_id, disabled=True), settings)


@admin.post("/{site_id}/enable", responses=documented(404))
def enable(site_id: uuid.UUID, _admin: Admin, session: SessionDep, settings: SettingsDep) -> SiteRead:
    return site_read(registry.set_disabled(session=session, site_id=site_id, disabled=False), settings)


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
async def next_task(
    site: SignedSite,
    session: SessionDep,
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, le=30)] = 25,
) -> Response:
    """Long poll: this site's next task as soon as there is one, or 204 after ``wait`` seconds.

    The request sleeps on the site's notification channel, which the orchestrator publishes to when it queues a task,
    and looks at the database again at least every ``FEDLENS_STREAM_RECHECK_S`` (a lost notification costs that)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait

    def claim() -> SiteTask | None:
        session.expire_all()  # see tasks queued since the last look
        task = tasks.claim_next(session=session, site=site) if not site.disabled else None
        if task is None:
            session.rollback()  # the pooled connection goes back while the request waits
        return task

    async with hub_for(settings).watch(site_channel(site.id)) as feed:
        while True:
            seen = feed.version  # before the look: a task queued during it wakes the wait below
            task = await run_in_threadpool(claim)
            if task is not None:
                return JSONResponse(task.model_dump(mode="json"))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Response(status_code=status.HTTP_204_NO_CONTENT)
            await feed.wait(seen, remaining)


@protocol.get(
    "/weights/{sha256}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        206: {"description": "the bytes a `Range: bytes=N-` header asked for: a broken download resumed"},
        416: {"description": "the range starts past the end of the file"},
        **documented(404),
    },
)
def weights(sha256: str, site: SignedSite, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """A global weights file by its SHA-256, only for a site with a task that starts from it; a ``Range`` header
    resumes a broken download (the signature covers the request, not the range)."""
    if not tasks.may_download(session=session, site=site, sha256=sha256):
        raise Forbidden("these weights belong to no task of this site")
    path = blobs.blob_path(settings.artifacts, sha256)
    if not path.exists():
        raise NotFound("these weights are no longer stored; wait for the next task")
    return FileResponse(path, media_type="application/octet-stream")


def _blob_name(sha256: str) -> None:
    try:
        blobs.check_name(sha256)
    except blobs.BlobError as error:
        raise BadRequest(str(error), "sha256") from error


@protocol.get("/blobs/{sha256}/upload", responses=documented())
def upload_state(sha256: str, site: SignedSite, settings: SettingsDep) -> UploadState:
    """How many bytes of this file the server holds from this site (an upload resumes there), or that the file is
    stored already (nothing to send); with the server's limits on a file and on a chunk."""
    _blob_name(sha256)
    return uploads.Upload.of(settings, site.id, sha256).state()


_STATE = {"model": UploadState}


@protocol.put(
    "/blobs/{sha256}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadState,
    responses={
        200: _STATE | {"description": "this content was stored already: the chunk was not needed"},
        201: _STATE | {"description": "this chunk completed the file, whose SHA-256 matched; it is stored"},
        202: {"description": "the chunk was appended; send the next one at `offset`"},
        **documented(400, 409, 413),
    },
)
async def upload(
    sha256: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, description="where this chunk starts in the file")] = 0,
    size: Annotated[int | None, Query(ge=1, description="the whole file's bytes; omitted: this chunk ends it")] = None,
) -> Response:
    """One chunk of a site's weights file, streamed to disk and hashed as it arrives, signed over its own SHA-256,
    appended at exactly ``offset`` (else 409 with the offset to use, in ``Upload-Offset``). The chunk that ends the
    file has the whole file checked against its name: stored once under it (idempotent), or discarded with a 400.
    A file that fits in one chunk goes up in one request."""
    await run_in_threadpool(precheck_site, request, session)
    _blob_name(sha256)
    if max(offset, size or 0) > settings.max_upload_bytes:  # refused before a byte is read
        raise uploads.too_large(max(offset, size or 0), settings.max_upload_bytes)
    try:
        digest, chunk = await blobs.receive(settings.artifacts, request.stream(), max_bytes=settings.max_chunk_bytes)
    except ClientDisconnect:  # a broken connection: the part that came is gone, the agent resumes before this chunk
        logger.info("an upload's chunk at offset %d broke off; the agent will send it again", offset)
        return Response(status_code=status.HTTP_400_BAD_REQUEST)  # read by no one
    try:
        site = await run_in_threadpool(authenticate_site, request, session, settings, digest)
        target = uploads.Upload.of(settings, site.id, sha256)
        state, created = await run_in_threadpool(target.add, offset, size, chunk, digest)
    finally:
        chunk.unlink(missing_ok=True)
    answer = (status.HTTP_201_CREATED if created else status.HTTP_200_OK) if state.stored else status.HTTP_202_ACCEPTED
    return JSONResponse(state.model_dump(mode="json"), status_code=answer)


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
    if not late:
        publish(settings, answers_channel(task.run_id))  # the orchestrator waiting for it looks at once
    return {"accepted": True, "late": late}
