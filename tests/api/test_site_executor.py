"""SiteExecutor.round_trip on the database: a site whose heartbeats stop is given up before the round's timeout, a
slow site that still sends them keeps the whole timeout, and nobody is given up while no site is heard from; the
Redis notifications that wake the agents and the executor."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import Run, RunStatus, Site, SiteTask, utcnow
from app.notify import Subscription, publish
from app.run_config import RunConfig
from app.settings import Settings
from tests.api.factories import add_experiment, add_run
from worker.engine.types import ClientFailure
from worker.site_executor import Signals, SiteExecutor, SiteSlot

TIMEOUT_S = 5
OFFLINE_AFTER_S = 1.0


def _executor(session: Session, settings: Settings, sites: list[Site], tick: Callable[[], None]) -> SiteExecutor:
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
        sessions,
        run.id,
        cfg,
        slots,
        settings.artifacts,
        should_stop=should_stop,
        offline_after_s=OFFLINE_AFTER_S,
        signals=Signals(settings, run.id),
    )


def _site(session: Session, name: str, silent_s: float) -> Site:
    site = Site(name=name, datasets=[], last_seen_at=utcnow() - timedelta(seconds=silent_s))
    session.add(site)
    session.commit()
    return site


def _status(session: Session, site: Site) -> str | None:
    return session.scalar(select(SiteTask.status).where(SiteTask.site_id == site.id))


def test_a_site_whose_heartbeats_stop_is_given_up_at_once_and_a_slow_one_that_sends_them_is_late(
    session: Session, settings: Settings
) -> None:
    slow, dying = _site(session, "slow", 0), _site(session, "dying", OFFLINE_AFTER_S / 2)
    started = time.monotonic()
    looks: list[tuple[float, str | None, str | None]] = []

    def tick() -> None:  # the slow site's agent is alive: it keeps sending heartbeats
        slow.last_seen_at = utcnow()
        session.commit()
        looks.append((time.monotonic() - started, _status(session, slow), _status(session, dying)))

    answers = _executor(session, settings, [slow, dying], tick).round_trip("train", 1, [np.zeros(2)], ["1", "2"])

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
    session: Session, settings: Settings
) -> None:
    """Every site silent at once says more about the server (the API is down, say) than about the sites."""
    first, second = _site(session, "first", OFFLINE_AFTER_S / 2), _site(session, "second", OFFLINE_AFTER_S / 2)

    answers = _executor(session, settings, [first, second], lambda: None).round_trip(
        "evaluate", 3, [np.zeros(2)], ["1", "2"]
    )

    assert answers == {
        cid: ClientFailure(cid, f"site {name} did not answer the evaluate task within {TIMEOUT_S} s")
        for cid, name in (("1", "first"), ("2", "second"))
    }


def test_a_subscription_wakes_at_the_first_notification_and_sleeps_its_timeout_without_redis(
    settings: Settings,
) -> None:
    name = f"fedlens:test:{uuid.uuid4()}"
    subscription = Subscription(settings, name)
    subscription.wait(0.1)  # subscribed from here on
    timer = threading.Timer(0.3, lambda: publish(settings, name))
    started = time.monotonic()
    timer.start()
    subscription.wait(5)
    woke = time.monotonic() - started
    subscription.close()
    unreachable = Subscription(settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"}), name)
    started = time.monotonic()
    unreachable.wait(0.5)
    slept = time.monotonic() - started

    assert 0.25 < woke < 1.5
    assert 0.45 <= slept < 3


def test_taking_a_rounds_newcomers_marks_it_begun_for_sites_that_join_later(
    session: Session, settings: Settings
) -> None:
    executor = _executor(session, settings, [_site(session, "a", 0)], lambda: None)

    assert executor.newcomers(3) == {}
    executor.newcomers(2)  # a resumed run starts the round again: never back
    run = session.get(Run, executor.run_id)
    assert run is not None
    session.refresh(run)

    assert run.started_round == 3
