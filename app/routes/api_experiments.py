"""REST endpoints for experiments: create, list, read, launch."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from app import datacheck, runs
from app.db import SessionDep, SettingsDep
from app.deps import CeleryDep
from app.errors import documented
from app.limits.bounds import MAX_INT32
from app.results import run_read
from app.schemas import DataCheck, ExperimentCreate, ExperimentRead, Launch, Page

router = APIRouter(prefix="/api/experiments", tags=["experiments"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ExperimentRead,
    responses={
        200: {"model": DataCheck, "description": "check=true: the data check; nothing is stored"},
        **documented(400, 413, 503),
    },
)
def create_experiment(
    body: ExperimentCreate,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    check: Annotated[bool, Query(description="check the data on a worker instead of storing the experiment")] = False,
) -> ExperimentRead | JSONResponse:
    """Store a validated RunConfig; a wrong field, or a config over the memory or work budget, gets a 422 naming
    the field and what is allowed.

    With ``check=true`` a worker loads and splits the data as a run would and the answer (200) reports the images
    per split, class and client, the sizes and bit depths seen, the skipped files and a few thumbnails.
    """
    if check:
        report = datacheck.check(celery=celery, config=body.config)
        return JSONResponse(report.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    return ExperimentRead.model_validate(runs.create_experiment(session=session, data=body, settings=settings))


@router.get("", responses=documented())
def list_experiments(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> Page[ExperimentRead]:
    items, total = runs.list_experiments(session=session, limit=limit, offset=offset)
    return Page(items=[ExperimentRead.model_validate(e) for e in items], total=total, limit=limit, offset=offset)


@router.get("/{experiment_id}", responses=documented(404))
def get_experiment(experiment_id: uuid.UUID, session: SessionDep) -> ExperimentRead:
    return ExperimentRead.model_validate(runs.get_experiment(session=session, experiment_id=experiment_id))


@router.post("/{experiment_id}/runs", status_code=status.HTTP_201_CREATED, responses=documented(404, 429, 503))
def launch(experiment_id: uuid.UUID, session: SessionDep, celery: CeleryDep) -> Launch:
    """Create and enqueue the federated run and, if the config asks, its centralized baseline."""
    federated, central = runs.launch(session=session, celery=celery, experiment_id=experiment_id)
    return Launch(federated=run_read(federated), centralized=run_read(central) if central else None)
