"""REST endpoints for runs: status, rounds, ROC, events, cancel/resume, CSV, model, compare."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse

from app import results, runs
from app.auth.access import CanReadRun, CanWriteRun
from app.auth.deps import Researcher, Viewer
from app.db import SessionDep, SettingsDep
from app.deps import CeleryDep
from app.errors import BadRequest, documented
from app.limits.bounds import MAX_INT32
from app.limits.quota import RunQuota
from app.rounds_http import rounds_response
from app.run_config import SiteRef
from app.schemas import CompareRow, RocRead, RunRead, RunRounds
from app.sites.join import Joined, join_run
from app.streams.events import run_events
from app.streams.limits import StreamSlots

router = APIRouter(prefix="/api", tags=["runs"])
CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}


@router.get("/runs/{run_id}", responses=documented(404), dependencies=[CanReadRun])
def get_run(run_id: uuid.UUID, session: SessionDep) -> RunRead:
    return results.run_read(runs.get_run(session=session, run_id=run_id))


@router.get(
    "/runs/{run_id}/rounds",
    response_model=RunRounds,
    responses={304: {"description": "unchanged since the ETag sent in If-None-Match"}, **documented(404)},
    dependencies=[CanReadRun],
)
def get_rounds(
    run_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    since: Annotated[int, Query(ge=0, le=MAX_INT32, description="only rounds after this one")] = 0,
) -> Response:
    """Global test metrics, per-client metrics and statuses, and timings of every completed round; with an ETag
    (send it back in If-None-Match for a 304) and gzip when the client accepts it."""
    return rounds_response(request=request, session=session, run_id=run_id, since=since)


@router.get("/runs/{run_id}/roc", responses=documented(404), dependencies=[CanReadRun])
def get_roc(
    run_id: uuid.UUID,
    session: SessionDep,
    round: Annotated[int | None, Query(ge=1, le=MAX_INT32, description="default: the last completed round")] = None,
) -> RocRead:
    return results.roc(session=session, run_id=run_id, round_number=round)


@router.post("/runs/{run_id}/cancel", responses=documented(404, 409), dependencies=[CanWriteRun])
def cancel(run_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> RunRead:
    """409 if the run has finished; a running run stops before its next client task."""
    return results.run_read(runs.cancel_run(session=session, run_id=run_id, stale_after_s=settings.stale_after_s))


@router.post("/runs/{run_id}/sites", responses=documented(404, 409), dependencies=[CanWriteRun])
def add_site(run_id: uuid.UUID, body: SiteRef, session: SessionDep, settings: SettingsDep) -> Joined:
    """A hospital site joins the run at the first round that has not started (the study's new clients); it must be
    online and declare the dataset."""
    return join_run(session=session, run_id=run_id, ref=body, offline_after_s=settings.site_offline_after_s)


@router.post("/runs/{run_id}/resume", responses=documented(404, 409, 429, 503), dependencies=[CanWriteRun])
def resume(
    run_id: uuid.UUID, user: Researcher, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> RunRead:
    """Queue a failed or cancelled run again; it continues after its last completed round (429 past your limit of
    active runs)."""
    quota = RunQuota(user.id, settings.max_active_runs_per_user)
    return results.run_read(runs.resume_run(session=session, celery=celery, run_id=run_id, quota=quota))


def stream_caller(user: Viewer) -> str:
    """Who an event stream counts against: the signed-in user (FEDLENS_STREAMS_PER_CALLER open streams each)."""
    return str(user.id)


def stream_slots(request: Request) -> StreamSlots:
    slots: StreamSlots = request.app.state.stream_slots
    return slots


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "the event stream"},
        **documented(404, 429),
    },
    dependencies=[CanReadRun],
)
async def events(
    run_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: Annotated[str, Depends(stream_caller)],
    slots: Annotated[StreamSlots, Depends(stream_slots)],
    since: Annotated[int, Query(ge=0, le=MAX_INT32, description="only rounds after this one")] = 0,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=MAX_INT32, description="sent by a reconnecting browser; wins over since")
    ] = None,
) -> StreamingResponse:
    """Server-sent events: ``status`` on every status change, ``round`` for every finished round, a comment line
    on an idle stream; 429 above ``FEDLENS_STREAMS_PER_CALLER`` open streams of yours."""
    # Authorization is done: give the request's connection back now, or each open stream would hold one of the
    # pool's for its whole life (500 streams starved every other request). The stream reads through the hub.
    session.close()
    start = since if last_event_id is None else last_event_id
    slot = await run_in_threadpool(slots.acquire, caller)
    try:
        stream = await run_events(run_id, settings, request, since=start, slot=slot)
    except BaseException:
        slot.release()
        raise
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.get(
    "/runs/{run_id}/metrics.csv", response_class=Response, responses=CSV | documented(404), dependencies=[CanReadRun]
)
def metrics_csv(run_id: uuid.UUID, session: SessionDep) -> PlainTextResponse:
    body = results.metrics_csv(session=session, run_id=run_id)
    return PlainTextResponse(
        body, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="run-{run_id}-metrics.csv"'}
    )


@router.get(
    "/runs/{run_id}/model",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **documented(404),
    },
    dependencies=[CanReadRun],
)
def model(run_id: uuid.UUID, session: SessionDep) -> FileResponse:
    """The final model as a .keras file (``keras.models.load_model`` opens it); 409 if it changed since written."""
    run, path = runs.model_file(session=session, run_id=run_id)
    return FileResponse(path, media_type="application/octet-stream", filename=f"fedlens-{run.kind}-{run_id}.keras")


RunIds = Annotated[str, Query(alias="runs", max_length=37 * 100, description="comma-separated run ids, 100 at most")]


def _run_ids(text: str) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise BadRequest(f"runs must be comma-separated run ids (UUIDs): {error}", "query.runs") from error


@router.get("/compare", responses=documented(404))
def compare(user: Viewer, session: SessionDep, runs_: RunIds) -> list[CompareRow]:
    """The study's Table 3 for these runs: loss, accuracy, sensitivity and specificity at the operating threshold,
    AUC with its 95% interval, n per class, rounds, execution time, time reduction."""
    return results.compare(session=session, run_ids=_run_ids(runs_), viewer=user)


@router.get("/compare.csv", response_class=Response, responses=CSV | documented(404))
def compare_csv(user: Viewer, session: SessionDep, runs_: RunIds) -> PlainTextResponse:
    """The same Table 3 as a CSV download."""
    body = results.compare_csv(results.compare(session=session, run_ids=_run_ids(runs_), viewer=user))
    return PlainTextResponse(
        body, media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="fedlens-table3.csv"'}
    )
