"""REST endpoints of the Grad-CAM galleries: the index of a round, its PNGs, and a request for another round."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from app import gradcam
from app.auth.access import CanReadRun, CanWriteRun
from app.db import SessionDep, SettingsDep
from app.deps import CeleryDep
from app.errors import documented
from app.gradcam import GradcamRead, GradcamRequested
from app.limits.bounds import MAX_INT32

router = APIRouter(prefix="/api", tags=["runs"])
RoundQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_INT32, description="default: the latest round explained (GET), the last round (POST)"),
]


@router.get("/runs/{run_id}/gradcam", responses=documented(404), dependencies=[CanReadRun])
def get_gallery(run_id: uuid.UUID, session: SessionDep, settings: SettingsDep, round: RoundQuery = None) -> GradcamRead:
    """Grad-CAM of the most confident true/false positives and negatives of the common test set, per image:
    its file, category, label, prediction and probability. ``status`` is ``missing`` until one is computed
    (the final model's when the run succeeds, any other round on request), ``pending`` while it is."""
    return gradcam.read_gallery(session=session, artifacts=settings.artifacts, run_id=run_id, round_number=round)


@router.post("/runs/{run_id}/gradcam", status_code=202, responses=documented(404, 409, 503), dependencies=[CanWriteRun])
def request_gallery(
    run_id: uuid.UUID, session: SessionDep, celery: CeleryDep, round: RoundQuery = None
) -> GradcamRequested:
    """Queue the gallery of any stored round's global model (from the weights file every round keeps)."""
    return gradcam.request_gallery(session=session, celery=celery, run_id=run_id, round_number=round)


@router.get(
    "/runs/{run_id}/gradcam/{file}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}, **documented(404)},
    dependencies=[CanReadRun],
)
def gallery_png(run_id: uuid.UUID, file: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """One heat-map PNG named by the run's gallery index."""
    path = gradcam.gallery_file(session=session, artifacts=settings.artifacts, run_id=run_id, name=file)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})
