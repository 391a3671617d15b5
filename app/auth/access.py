"""Route dependencies that load an experiment or run only for a user who may see it (app.auth.policy).

Another user's private experiment answers 404 exactly as a missing one does, so ids reveal nothing.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.auth.deps import as_researcher, as_viewer
from app.auth.policy import can_see
from app.db import SessionDep
from app.errors import NotFound
from app.models import Experiment, Run, User


def _experiment_for(session: Session, experiment_id: uuid.UUID, user: User) -> Experiment:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None or not can_see(experiment, user):
        raise NotFound(f"no experiment with id {experiment_id}")
    return experiment


def _run_for(session: Session, run_id: uuid.UUID, user: User) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    try:
        _experiment_for(session, run.experiment_id, user)
    except NotFound:
        raise NotFound(f"no run with id {run_id}") from None
    return run


def readable_experiment(
    experiment_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_viewer)]
) -> None:
    _released(session, _experiment_for(session, experiment_id, user))


def writable_experiment(
    experiment_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_researcher)]
) -> None:
    _released(session, _experiment_for(session, experiment_id, user))


def readable_run(run_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_viewer)]) -> None:
    _released(session, _run_for(session, run_id, user))


def writable_run(run_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_researcher)]) -> None:
    _released(session, _run_for(session, run_id, user))


def _released(session: Session, _checked: object) -> None:
    """The check is done: give the connection back before the next step (see app.auth.deps._released)."""
    session.close()


CanReadExperiment = Depends(readable_experiment)
CanWriteExperiment = Depends(writable_experiment)
CanReadRun = Depends(readable_run)
CanWriteRun = Depends(writable_run)
