"""Server-rendered dashboard pages; the charts fetch their data from the REST API."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import yaml
from celery import Celery
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app import datacheck, forms, results, runs
from app.auth.access import CanReadExperiment, CanReadRun, CanWriteExperiment
from app.auth.deps import Researcher, Viewer, as_researcher, as_viewer
from app.auth.policy import can_see
from app.db import SessionDep, SettingsDep
from app.deps import CeleryDep
from app.errors import NotFound, TooManyRuns, Unavailable
from app.limits.cost import over_budget
from app.limits.quota import RunQuota
from app.models import RunKind, User
from app.run_config import RunConfig
from app.schemas import ExperimentCreate
from app.settings import Settings
from app.sites import panel, registry
from app.sites.choices import site_choices
from app.sites.routes import site_read
from app.templating import templates

router = APIRouter(include_in_schema=False)
SORTS = {"newest": "Newest first", "name": "Name", "auc": "Best AUC"}


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@router.get("/static/vendor/plotly.min.js")
def plotly_bundle() -> FileResponse:
    """plotly.js as shipped inside the plotly package: no CDN, works offline."""
    return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


@router.get("/", response_class=HTMLResponse)
def experiments_page(
    request: Request, user: Viewer, session: SessionDep, q: str = "", status: str = "", sort: str = "newest"
) -> Response:
    rows = results.experiment_rows(session=session, viewer=user)
    if q:
        rows = [r for r in rows if q.lower() in r["name"].lower() or q.lower() in r["description"].lower()]
    if status:
        rows = [r for r in rows if any(run["status"] == status for run in r["runs"])]
    if sort == "name":
        rows.sort(key=lambda r: r["name"].lower())
    elif sort == "auc":
        rows.sort(key=lambda r: -(r["best_auc"] if r["best_auc"] is not None else -1))
    return templates.TemplateResponse(
        request,
        "experiments.html",
        {
            "rows": rows,
            "q": q,
            "status": status,
            "sort": sort,
            "sorts": SORTS,
            "statuses": ["queued", "running", "succeeded", "failed", "cancelled"],
        },
    )


def _new_page(
    request: Request,
    session: Session,
    settings: Settings,
    values: dict[str, str],
    errors: dict[str, str],
    preset: str,
    status_code: int = 200,
) -> Response:
    """The form, with every registered site to pick from in "Hospital sites" mode."""
    registered = [site_read(s, settings) for s in registry.list_sites(session=session)]
    context = {
        "v": values,
        "errors": errors,
        "presets": forms.PRESETS,
        "preset": preset,
        "sites": site_choices(registered, values),
    }
    return templates.TemplateResponse(request, "new_experiment.html", context, status_code=status_code)


def _validate(form: dict[str, str], settings: Settings) -> tuple[RunConfig | None, dict[str, Any], dict[str, str]]:
    """The form's config as ``forms.validate_form`` gives it (data roots checked), or its budget refusal on the
    field to reduce."""
    cfg, raw, errors = forms.validate_form(form, settings.roots)
    refused = over_budget(cfg, settings) if cfg else None
    return (None, raw, dict([refused])) if refused else (cfg, raw, errors)


@router.get("/experiments/new", response_class=HTMLResponse)
def new_experiment_page(
    request: Request,
    user: Researcher,
    session: SessionDep,
    settings: SettingsDep,
    preset: str = "quickstart",
    from_: Annotated[uuid.UUID | None, Query(alias="from", description="start from this experiment's config")] = None,
) -> Response:
    """The form, filled from a preset or, for "Edit and relaunch", from an existing experiment."""
    if from_ is None:
        return _new_page(request, session, settings, forms.form_values(forms.preset_config(preset)), {}, preset)
    experiment = runs.get_experiment(session=session, experiment_id=from_)
    if not can_see(experiment, user):
        raise NotFound(f"no experiment with id {from_}")
    values = forms.form_values(RunConfig.model_validate(experiment.config))
    return _new_page(request, session, settings, values | {"description": experiment.description}, {}, "")


@router.post("/experiments/new", response_class=HTMLResponse)
async def create_from_form(
    request: Request, user: Researcher, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    # the database and the broker are blocking clients: off the event loop, which serves every event stream
    return await run_in_threadpool(_create_and_launch, request, user, session, settings, celery, form)


def _create_and_launch(
    request: Request, user: User, session: Session, settings: Settings, celery: Celery, form: dict[str, str]
) -> Response:
    cfg, _raw, errors = _validate(form, settings)
    if cfg is None:  # the page itself rendered fine: 200, so browsers log no failed request
        return _new_page(request, session, settings, form, errors, "")
    experiment = runs.create_experiment(
        session=session,
        data=ExperimentCreate(
            name=cfg.name, description=form.get("description", ""), shared=form.get("shared") == "on", config=cfg
        ),
        owner=user,
        settings=settings,
    )
    try:
        quota = RunQuota(user.id, settings.max_active_runs_per_user)
        federated, _central = runs.launch(session=session, celery=celery, experiment_id=experiment.id, quota=quota)
    except (Unavailable, TooManyRuns) as error:
        return _new_page(request, session, settings, form, {"config": error.detail}, "", status_code=error.status_code)
    return RedirectResponse(f"/runs/{federated.id}", status_code=303)


@router.post("/experiments/preview", dependencies=[Depends(as_researcher)])
async def preview(request: Request, settings: SettingsDep) -> JSONResponse:
    """The config a form describes, as YAML and JSON, with its errors per field (the live preview), data outside
    the roots and a config over the memory or work budget included."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    cfg, raw, errors = _validate(form, settings)
    shown: dict[str, Any] = cfg.model_dump(mode="json", exclude_none=True) if cfg else raw
    return JSONResponse(
        {"yaml": yaml.safe_dump(shown, sort_keys=False), "json": json.dumps(shown, indent=2), "errors": errors}
    )


# Where a data problem is shown on the form: next to the input the user changes to fix it.
_DATA_FIELDS = {
    "data.train": "data.train.path",
    "data.test": "data.test.path",
    "data.test_fraction": "data.test_fraction",
    "federation.partition": "federation.partition.kind",
    "federation.client_test_fraction": "federation.client_test_fraction",
}


@router.post("/experiments/check", dependencies=[Depends(as_researcher)])
async def check_form(request: Request, settings: SettingsDep, celery: CeleryDep) -> JSONResponse:
    """The form's "Check data" button: config errors per field (data outside the roots included), or the worker's
    data check."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    cfg, _raw, errors = _validate(form, settings)
    if cfg is None:
        return JSONResponse({"errors": errors, "check": None})
    try:
        # waits seconds for a worker's answer: off the event loop, which serves every event stream
        report = await run_in_threadpool(datacheck.check, celery=celery, config=cfg, roots=settings.roots)
    except Unavailable as error:
        return JSONResponse({"errors": {"config": error.detail}, "check": None}, status_code=503)
    placed = {_DATA_FIELDS.get(p.field, "data.train.path"): p.message for p in report.errors}
    return JSONResponse({"errors": placed, "check": report.model_dump(mode="json")})


@router.post("/experiments/{experiment_id}/launch", dependencies=[CanWriteExperiment])
def relaunch(
    experiment_id: uuid.UUID, user: Researcher, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> Response:
    quota = RunQuota(user.id, settings.max_active_runs_per_user)
    federated, _central = runs.launch(session=session, celery=celery, experiment_id=experiment_id, quota=quota)
    return RedirectResponse(f"/runs/{federated.id}", status_code=303)


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse, dependencies=[CanReadExperiment])
def experiment_page(request: Request, experiment_id: uuid.UUID, session: SessionDep) -> Response:
    experiment = runs.get_experiment(session=session, experiment_id=experiment_id)
    return templates.TemplateResponse(
        request,
        "experiment.html",
        {
            "experiment": experiment,
            "yaml": yaml.safe_dump(experiment.config, sort_keys=False),
            "best": results.best_auc(session=session, run_ids=[r.id for r in experiment.runs]),
        },
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse, dependencies=[CanReadRun])
def run_page(request: Request, run_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> Response:
    run = runs.get_run(session=session, run_id=run_id)
    siblings = [r for r in run.experiment.runs if r.id != run.id]
    central = next((r for r in siblings if r.kind == RunKind.CENTRALIZED), None)
    config = run.experiment.config
    over_sites = run.kind == RunKind.FEDERATED and bool(config["federation"].get("sites"))
    read = results.run_read(run)
    skipped_files = sum(sum(source.skipped.values()) for source in (read.data_report or {}).values())
    return templates.TemplateResponse(
        request,
        "run.html",
        {
            "run": read,
            "experiment": run.experiment,
            "config": config,
            "central": central,
            "siblings": siblings,
            "approach": config["federation"]["intermittent"]["approach"],
            "client_names": panel.client_names(config),
            "skipped_files": skipped_files,
            "sites": panel.site_panel(session, run, config, settings.site_offline_after_s) if over_sites else None,
            "privacy": config.get("privacy") or {},  # experiments stored before privacy existed have none
            "tls": settings.tls_enabled or request.url.scheme == "https",  # behind a TLS proxy, the request says so
        },
    )


@router.get("/runs/{run_id}/site-panel", response_class=HTMLResponse, dependencies=[CanReadRun])
def site_panel(request: Request, run_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> Response:
    """The run page's per-site panel alone, which the page fetches again while the run is open."""
    run = runs.get_run(session=session, run_id=run_id)
    config = run.experiment.config
    if not (run.kind == RunKind.FEDERATED and config["federation"].get("sites")):
        raise NotFound("this run is not over hospital sites: it has no site panel")
    sites = panel.site_panel(session, run, config, settings.site_offline_after_s)
    return templates.TemplateResponse(request, "site_panel.html", {"sites": sites})


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, user: Viewer, session: SessionDep, runs_: Annotated[str, Query(alias="runs")] = ""
) -> Response:
    picked = [uuid.UUID(p) for p in runs_.split(",") if _is_uuid(p)]
    table = results.compare(session=session, run_ids=picked, viewer=user) if picked else []
    return templates.TemplateResponse(
        request,
        "compare.html",
        {
            "table": table,
            "picked": [str(p) for p in picked],
            "best": results.best_of(table),
            "choices": results.experiment_rows(session=session, viewer=user),
        },
    )


@router.post("/compare", dependencies=[Depends(as_viewer)])
def compare_form(runs_: Annotated[list[str] | None, Form(alias="runs")] = None) -> Response:
    return RedirectResponse(f"/compare?runs={','.join(runs_ or [])}", status_code=303)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text.strip())
    except ValueError:
        return False
    return True
