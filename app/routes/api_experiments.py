"""REST endpoints for experiments: create, list, read, launch (access: app.auth)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from app import datacheck, runs
from app.auth.access import CanReadExperiment, CanWriteExperiment
from app.auth.deps import Researcher, Viewer
from app.db import SessionDep, SettingsDep
from app.deps import CeleryDep
from app.errors import documented
from app.limits.bounds import MAX_INT32
from app.limits.quota import RunQuota
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
    user: Researcher,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    check: Annotated[bool, Query(description="check the data on a worker instead of storing the experiment")] = False,
) -> ExperimentRead | JSONResponse:
    """Store a validated RunConfig; a wrong field gets a 422 naming it and what is allowed, and so does a data path
    outside the data roots (FEDLENS_DATA_ROOTS), checked or not, or a config over the memory or work budget.

    With ``check=true`` a worker loads and splits the data as a run would and the answer (200) reports the images
    per split, class and client, the sizes and bit depths seen, the skipped files and a few thumbnails.
    """
    if check:
        report = datacheck.check(celery=celery, config=body.config, roots=settings.roots)
        return JSONResponse(report.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    created = runs.create_experiment(session=session, data=body, owner=user, settings=settings)
    return ExperimentRead.model_validate(created)


@router.get("", responses=documented())
def list_experiments(
    user: Viewer,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
) -> Page[ExperimentRead]:
    """The experiments you own, the shared ones, and all of them for admins."""
    items, total = runs.list_experiments(session=session, viewer=user, limit=limit, offset=offset)
    return Page(items=[ExperimentRead.model_validate(e) for e in items], total=total, limit=limit, offset=offset)


@router.get("/{experiment_id}", responses=documented(404), dependencies=[CanReadExperiment])
def get_experiment(experiment_id: uuid.UUID, session: SessionDep) -> ExperimentRead:
    return ExperimentRead.model_validate(runs.get_experiment(session=session, experiment_id=experiment_id))


@router.post(
    "/{experiment_id}/runs",
    status_code=status.HTTP_201_CREATED,
    responses=documented(404, 429, 503),
    dependencies=[CanWriteExperiment],
)
def launch(
    experiment_id: uuid.UUID, user: Researcher, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> Launch:
    """Create and enqueue the federated run and, if the config asks, its centralized baseline (429 past your limit
    of active runs: FEDLENS_MAX_ACTIVE_RUNS_PER_USER)."""
    quota = RunQuota(user.id, settings.max_active_runs_per_user)
    federated, central = runs.launch(session=session, celery=celery, experiment_id=experiment_id, quota=quota)
    return Launch(federated=run_read(federated), centralized=run_read(central) if central else None)
