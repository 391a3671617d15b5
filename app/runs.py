"""Run service: create experiments, launch, cancel, resume and requeue runs (no FastAPI here)."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from pathlib import Path

from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from app.auth.policy import visible_to
from app.broker import client_for, enqueue_run
from app.data_roots import require_within
from app.db import session_factory
from app.digest import file_sha256
from app.errors import ArtifactModified, InvalidTransition, NotFound, Unavailable
from app.limits.cost import require_within_budget
from app.limits.quota import RunQuota, require_room
from app.models import Experiment, Run, RunKind, RunStatus, User, utcnow
from app.run_config import RunConfig
from app.schemas import ExperimentCreate
from app.settings import Settings

logger = logging.getLogger(__name__)


def create_experiment(*, session: Session, data: ExperimentCreate, owner: User, settings: Settings) -> Experiment:
    """Store the experiment, owned by ``owner``. Its data must lie under the data roots (FieldErrors otherwise) and
    it must fit the memory and work budgets (BadRequest naming what to lower)."""
    require_within(data.config, settings.roots)
    require_within_budget(data.config, settings)
    experiment = Experiment(
        name=data.name or data.config.name,
        description=data.description,
        config=data.config.model_dump(mode="json"),
        owner_id=owner.id,
        shared=data.shared,
    )
    session.add(experiment)
    session.commit()
    return experiment


def list_experiments(*, session: Session, viewer: User, limit: int, offset: int) -> tuple[list[Experiment], int]:
    """The experiments ``viewer`` may see, newest first."""
    total = session.scalar(select(func.count()).select_from(Experiment).where(visible_to(viewer))) or 0
    query = (
        select(Experiment)
        .where(visible_to(viewer))
        .options(selectinload(Experiment.runs))
        .order_by(Experiment.created_at.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query)), total


def get_experiment(*, session: Session, experiment_id: uuid.UUID) -> Experiment:
    experiment = session.get(Experiment, experiment_id, options=[selectinload(Experiment.runs)])
    if experiment is None:
        raise NotFound(f"no experiment with id {experiment_id}")
    return experiment


def get_run(*, session: Session, run_id: uuid.UUID) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    return run


def model_file(*, session: Session, run_id: uuid.UUID) -> tuple[Run, Path]:
    """The run's final model file, refused when its bytes are not those its worker recorded."""
    run = get_run(session=session, run_id=run_id)
    path = Path(run.model_path) if run.model_path else None
    if path is None or not path.exists():
        raise NotFound(f"run {run_id} has no final model yet (status {run.status})")
    if run.model_sha256 is not None and file_sha256(path) != run.model_sha256:
        logger.error("the final model of run %s does not match its recorded SHA-256", run_id)
        raise ArtifactModified(f"the final model of run {run_id} was modified after it was written; it is not served")
    return run, path


def _enqueue(celery: Celery, runs: list[Run]) -> None:
    try:
        for run in runs:
            enqueue_run(celery, run.id, centralized=run.kind == RunKind.CENTRALIZED)
    except OperationalError as error:
        raise Unavailable(
            f"the broker is unreachable ({error}); the run stays queued and starts once a "
            "worker and the broker are back (the API requeues it)"
        ) from error


def launch(
    *, session: Session, celery: Celery, experiment_id: uuid.UUID, quota: RunQuota | None = None
) -> tuple[Run, Run | None]:
    """Commit the federated run (and the centralized baseline if the config asks), then enqueue their ids.

    With a ``quota``, the runs are its owner's and a launch past the owner's limit is refused (TooManyRuns).
    """
    experiment = get_experiment(session=session, experiment_id=experiment_id)
    cfg = RunConfig.model_validate(experiment.config)
    if quota is not None:  # before any Run exists: the experiment's relationship would add it to the session
        require_room(session=session, quota=quota, adding=2 if cfg.centralized.enabled else 1)
    owner = quota.owner_id if quota is not None else None
    now = utcnow()
    federated = Run(
        experiment=experiment,
        kind=RunKind.FEDERATED,
        seed=cfg.seed,
        total_rounds=cfg.federation.rounds,
        heartbeat_at=now,
        launched_by=owner,
    )
    central = None
    if cfg.centralized.enabled:
        central = Run(
            experiment=experiment,
            kind=RunKind.CENTRALIZED,
            seed=cfg.seed,
            total_rounds=cfg.centralized_epochs,
            heartbeat_at=now,
            launched_by=owner,
        )
    added = [r for r in (federated, central) if r]
    session.add_all(added)
    session.commit()
    _enqueue(celery, added)
    return federated, central


def cancel_run(*, session: Session, run_id: uuid.UUID, stale_after_s: float) -> Run:
    """A queued (or silently dead) run is cancelled at once; a running one stops before its next client task."""
    run = get_run(session=session, run_id=run_id)
    if RunStatus(run.status).finished:
        raise InvalidTransition(f"run {run_id} is already {run.status}; only queued or running runs can be cancelled")
    dead = run.heartbeat_at is not None and run.heartbeat_at < utcnow() - timedelta(seconds=stale_after_s)
    if run.status == RunStatus.QUEUED or dead:
        run.status, run.finished_at = RunStatus.CANCELLED, utcnow()
    run.cancel_requested = True
    session.commit()
    return run


def resume_run(*, session: Session, celery: Celery, run_id: uuid.UUID, quota: RunQuota | None = None) -> Run:
    """Queue a failed or cancelled run again; it continues after its last completed round.

    With a ``quota``, the run becomes its owner's active run and counts against the owner's limit.
    """
    run = get_run(session=session, run_id=run_id)
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise InvalidTransition(f"run {run_id} is {run.status}; only failed or cancelled runs can be resumed")
    if quota is not None:
        require_room(session=session, quota=quota, adding=1)
        run.launched_by = quota.owner_id
    run.status, run.error, run.finished_at = RunStatus.QUEUED, None, None
    run.cancel_requested, run.heartbeat_at = False, utcnow()
    session.commit()
    _enqueue(celery, [run])
    return run


def requeue_stale_runs(*, session: Session, celery: Celery, stale_after_s: float) -> list[uuid.UUID]:
    """Re-enqueue runs whose worker went silent, and queued runs whose message may be lost.

    Duplicates are harmless: a worker claims a run only if it is queued or its heartbeat is stale.
    """
    stale = utcnow() - timedelta(seconds=stale_after_s)
    candidates = session.scalars(
        select(Run).where(Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]), Run.heartbeat_at < stale)
    ).all()
    requeued = []
    for run in candidates:
        was, last_beat = run.status, run.heartbeat_at
        claimed = session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == run.status, Run.heartbeat_at < stale)
            .values(status=RunStatus.QUEUED, heartbeat_at=utcnow())
        ).rowcount  # type: ignore[attr-defined]
        session.commit()
        if claimed:
            logger.warning("requeueing run %s (was %s, last heartbeat %s)", run.id, was, last_beat)
            _enqueue(celery, [run])
            requeued.append(run.id)
    return requeued


def watchdog_pass(settings: Settings) -> list[uuid.UUID]:
    """One round of the stale-run watchdog with its own session."""
    with session_factory(settings)() as session:
        return requeue_stale_runs(
            session=session,
            celery=client_for(settings.broker, settings.redis_ca_file),
            stale_after_s=settings.stale_after_s,
        )


def start_watchdog(settings: Settings) -> threading.Event:
    """Requeue stale runs now and every third of ``stale_after_s``, in a daemon thread, until the returned
    event is set. The API and every orchestrator run one; several at once are harmless, since a run is
    requeued by a conditional UPDATE that only one of them wins."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                watchdog_pass(settings)
            except Exception:  # the database or broker is down: the next pass retries
                logger.exception("stale-run watchdog failed; retrying")
            if stop.wait(max(0.5, settings.stale_after_s / 3)):
                return

    threading.Thread(target=loop, name="stale-run-watchdog", daemon=True).start()
    return stop
