"""The stale-run watchdog on the real PostgreSQL: several watchdogs racing requeue each dead run exactly once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from app.db import get_engine
from app.models import Experiment, Run, RunKind, RunStatus, utcnow
from app.runs import watchdog_pass
from app.settings import Settings
from tests.api.conftest import STALE_AFTER_S
from tests.api.factories import add_experiment, add_run
from tests.api.pages import queued_run_ids

WATCHDOGS = 4  # the API and three orchestrators


@pytest.fixture
def committed(engine: Engine) -> Iterator[Session]:
    """A session whose commits are real, since each watchdog reads through its own connection; what the test
    added is deleted afterwards."""
    with Session(engine) as session:
        yield session
        session.rollback()
        for experiment in session.scalars(select(Experiment).where(Experiment.name == "watched")):
            session.delete(experiment)
        session.commit()


@contextmanager
def racing_at_the_update(engine: Engine, parties: int) -> Iterator[threading.Barrier]:
    """Hold every watchdog thread before each of its requeueing UPDATEs until all of them are there, so that
    all have read the same stale runs and then race to requeue them."""
    barrier = threading.Barrier(parties, timeout=30)

    def wait(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name.startswith("watchdog-") and statement.startswith("UPDATE run "):
            barrier.wait()

    event.listen(engine, "before_cursor_execute", wait)
    try:
        yield barrier
    finally:
        event.remove(engine, "before_cursor_execute", wait)


def test_racing_watchdogs_requeue_each_stale_run_exactly_once(
    committed: Session, settings: Settings, broker: redis.Redis
) -> None:
    experiment = add_experiment(committed, name="watched")
    silent = utcnow() - timedelta(seconds=2 * STALE_AFTER_S)
    dead = add_run(committed, experiment, status=RunStatus.RUNNING, heartbeat_at=silent)  # its worker died
    lost = add_run(committed, experiment, kind=RunKind.CENTRALIZED, status=RunStatus.QUEUED, heartbeat_at=silent)
    alive = add_run(committed, experiment, status=RunStatus.RUNNING, heartbeat_at=utcnow())
    requeued: list[uuid.UUID] = []
    threads = [
        threading.Thread(target=lambda: requeued.extend(watchdog_pass(settings)), name=f"watchdog-{i}")
        for i in range(WATCHDOGS)
    ]
    with racing_at_the_update(get_engine(settings.database), WATCHDOGS) as barrier:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    assert not barrier.broken, "every watchdog read the stale runs before any requeued them"
    ours = {dead.id, lost.id, alive.id}  # a run another test left stale may be requeued too
    assert sorted(r for r in requeued if r in ours) == sorted([dead.id, lost.id])
    assert queued_run_ids(broker, "runs") == [str(dead.id)]
    assert queued_run_ids(broker, "train") == [str(lost.id)]
    committed.expire_all()
    rows = committed.execute(select(Run.id, Run.status).where(Run.experiment_id == experiment.id))
    statuses = {run_id: status for run_id, status in rows}
    assert statuses == {dead.id: RunStatus.QUEUED, lost.id: RunStatus.QUEUED, alive.id: RunStatus.RUNNING}
