"""Route dependencies that let a request reach an experiment or run only for a user who may see it (app.auth.policy).

Another user's private experiment answers 404 exactly as a missing one does, so ids reveal nothing.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.auth.deps import as_researcher, as_viewer
from app.auth.policy import visible_to
from app.db import SessionDep
from app.errors import NotFound
from app.models import Experiment, Run, User


def _check(session: Session, query: Select[Any], missing: str) -> None:
    """One indexed query for an id alone: loading the experiment (its config is JSON) on every request was a third
    of a dashboard poll's time. The connection goes back before the next step (see app.auth.deps._released)."""
    seen = session.scalar(query)
    session.close()
    if seen is None:
        raise NotFound(missing)


def _check_experiment(session: Session, experiment_id: uuid.UUID, user: User) -> None:
    query = select(Experiment.id).where(Experiment.id == experiment_id, visible_to(user))
    _check(session, query, f"no experiment with id {experiment_id}")


def _check_run(session: Session, run_id: uuid.UUID, user: User) -> None:
    query = select(Run.id).join(Experiment, Run.experiment_id == Experiment.id)
    _check(session, query.where(Run.id == run_id, visible_to(user)), f"no run with id {run_id}")


def readable_experiment(
    experiment_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_viewer)]
) -> None:
    _check_experiment(session, experiment_id, user)


def writable_experiment(
    experiment_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_researcher)]
) -> None:
    _check_experiment(session, experiment_id, user)


def readable_run(run_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_viewer)]) -> None:
    _check_run(session, run_id, user)


def writable_run(run_id: uuid.UUID, session: SessionDep, user: Annotated[User, Depends(as_researcher)]) -> None:
    _check_run(session, run_id, user)


CanReadExperiment = Depends(readable_experiment)
CanWriteExperiment = Depends(writable_experiment)
CanReadRun = Depends(readable_run)
CanWriteRun = Depends(writable_run)
