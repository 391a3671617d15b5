"""The per-user limit on concurrent runs: a user's queued and running runs are counted at launch and resume."""

from __future__ import annotations

import uuid

import pytest
import redis
from celery import Celery
from sqlalchemy.orm import Session

from app import runs
from app.auth import accounts
from app.broker import client_for
from app.errors import TooManyRuns
from app.limits.quota import RunQuota, active_runs
from app.models import Role, RunKind, RunStatus
from tests.api.conftest import BROKER_URL
from tests.api.factories import add_experiment, add_run


@pytest.fixture
def celery(broker: redis.Redis) -> Celery:
    return client_for(BROKER_URL, None)


def user_id(session: Session) -> uuid.UUID:
    """A user to own runs (run.launched_by references an account)."""
    return accounts.create_user(session=session, name=f"user-{uuid.uuid4().hex[:8]}", role=Role.RESEARCHER).id


def test_only_the_owners_queued_and_running_runs_are_active(session: Session) -> None:
    alice, bob = user_id(session), user_id(session)
    experiment = add_experiment(session)
    for status, owner in [
        (RunStatus.QUEUED, alice),
        (RunStatus.RUNNING, alice),
        (RunStatus.SUCCEEDED, alice),
        (RunStatus.FAILED, alice),
        (RunStatus.RUNNING, bob),
        (RunStatus.RUNNING, None),
    ]:
        add_run(session, experiment, status=status).launched_by = owner
    session.commit()

    assert active_runs(session=session, owner_id=alice) == 2
    assert active_runs(session=session, owner_id=bob) == 1


def test_a_launch_past_the_limit_is_429_and_adds_nothing(session: Session, celery: Celery) -> None:
    owner = user_id(session)
    experiment = add_experiment(session)  # the default config launches a centralized baseline too: 2 runs
    quota = RunQuota(owner_id=owner, max_active=3)
    federated, central = runs.launch(session=session, celery=celery, experiment_id=experiment.id, quota=quota)
    assert central is not None and {federated.launched_by, central.launched_by} == {owner}

    with pytest.raises(TooManyRuns) as refused:
        runs.launch(session=session, celery=celery, experiment_id=experiment.id, quota=quota)

    assert refused.value.status_code == 429
    assert "you have 2 active run(s) (queued or running) and this adds 2 runs; the limit is 3 per user" in str(
        refused.value
    )
    assert active_runs(session=session, owner_id=owner) == 2
    assert len(runs.get_experiment(session=session, experiment_id=experiment.id).runs) == 2


def test_a_finished_run_frees_its_place(session: Session, celery: Celery) -> None:
    owner = user_id(session)
    experiment = add_experiment(session)
    quota = RunQuota(owner_id=owner, max_active=2)
    federated, central = runs.launch(session=session, celery=celery, experiment_id=experiment.id, quota=quota)
    assert central is not None
    federated.status = central.status = RunStatus.SUCCEEDED
    session.commit()

    again, _ = runs.launch(session=session, celery=celery, experiment_id=experiment.id, quota=quota)

    assert again.status == RunStatus.QUEUED and active_runs(session=session, owner_id=owner) == 2


def test_a_resume_counts_against_the_limit_of_whoever_resumes(session: Session, celery: Celery) -> None:
    owner = user_id(session)
    experiment = add_experiment(session)
    busy = add_run(session, experiment, status=RunStatus.RUNNING)
    busy.launched_by = owner
    failed = add_run(session, experiment, kind=RunKind.CENTRALIZED, status=RunStatus.FAILED)
    session.commit()

    with pytest.raises(TooManyRuns):
        runs.resume_run(session=session, celery=celery, run_id=failed.id, quota=RunQuota(owner, 1))
    resumed = runs.resume_run(session=session, celery=celery, run_id=failed.id, quota=RunQuota(owner, 2))

    assert (resumed.status, resumed.launched_by) == (RunStatus.QUEUED, owner)
