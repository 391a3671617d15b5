"""SiteExecutor.round_trip on the database: a site whose heartbeats stop is given up before the round's timeout, a
slow site that still sends them keeps the whole timeout, and nobody is given up while no site is heard from."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import RunStatus, Site, SiteTask, utcnow
from app.run_config import RunConfig
from tests.api.factories import add_experiment, add_run
from worker.engine.types import ClientFailure
from worker.site_executor import SiteExecutor, SiteSlot

TIMEOUT_S = 5
OFFLINE_AFTER_S = 1.0


def _executor(session: Session, tmp_path: Path, sites: list[Site], tick: Callable[[], None]) -> SiteExecutor:
    """An executor over ``sites`` (client i is the i-th) whose every look at the tasks first calls ``tick``."""
    federation = {"sites": [{"site": s.name, "dataset": "chest"} for s in sites], "round_timeout_s": TIMEOUT_S}
    cfg = RunConfig.model_validate({"federation": federation})
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    counts = {"train": {"negative": 5, "positive": 5}}
    slots = [SiteSlot(str(i), s.id, s.name, "chest", counts) for i, s in enumerate(sites, 1)]
    sessions = sessionmaker(bind=session.connection(), join_transaction_mode="create_savepoint")

    def should_stop() -> bool:
        tick()
        return False

    return SiteExecutor(
        sessions, run.id, cfg, slots, tmp_path, should_stop=should_stop, offline_after_s=OFFLINE_AFTER_S
    )


def _site(session: Session, name: str, silent_s: float) -> Site:
    site = Site(name=name, datasets=[], last_seen_at=utcnow() - timedelta(seconds=silent_s))
    session.add(site)
    session.commit()
    return site


def _status(session: Session, site: Site) -> str | None:
    return session.scalar(select(SiteTask.status).where(SiteTask.site_id == site.id))


def test_a_site_whose_heartbeats_stop_is_given_up_at_once_and_a_slow_one_that_sends_them_is_late(
    session: Session, tmp_path: Path
) -> None:
    slow, dying = _site(session, "slow", 0), _site(session, "dying", OFFLINE_AFTER_S / 2)
    started = time.monotonic()
    looks: list[tuple[float, str | None, str | None]] = []

    def tick() -> None:  # the slow site's agent is alive: it keeps sending heartbeats
        slow.last_seen_at = utcnow()
        session.commit()
        looks.append((time.monotonic() - started, _status(session, slow), _status(session, dying)))

    answers = _executor(session, tmp_path, [slow, dying], tick).round_trip("train", 1, [np.zeros(2)], ["1", "2"])

    assert answers == {
        "1": ClientFailure("1", f"site slow did not answer the train task within {TIMEOUT_S} s"),
        "2": ClientFailure(
            "2", "site dying went offline during round 1: no heartbeat for 1 s, so its train task was given up"
        ),
    }
    assert time.monotonic() - started >= TIMEOUT_S
    given_up = next(seconds for seconds, _, dying_task in looks if dying_task == "expired")
    assert given_up < 2 * OFFLINE_AFTER_S + 1, looks  # within a look or two of its silence passing the limit
    assert all(slow_task == "queued" for _, slow_task, _ in looks), "the slow site was waited for to the end"
    assert (_status(session, slow), _status(session, dying)) == ("expired", "expired")


def test_no_site_is_given_up_before_the_timeout_while_the_server_hears_from_none(
    session: Session, tmp_path: Path
) -> None:
    """Every site silent at once says more about the server (the API is down, say) than about the sites."""
    first, second = _site(session, "first", OFFLINE_AFTER_S / 2), _site(session, "second", OFFLINE_AFTER_S / 2)

    answers = _executor(session, tmp_path, [first, second], lambda: None).round_trip(
        "evaluate", 3, [np.zeros(2)], ["1", "2"]
    )

    assert answers == {
        cid: ClientFailure(cid, f"site {name} did not answer the evaluate task within {TIMEOUT_S} s")
        for cid, name in (("1", "first"), ("2", "second"))
    }
