"""The stale-run watchdog inside orchestrator workers, so a run whose worker died recovers with no API running."""

from __future__ import annotations

import logging
import threading

from app.runs import watchdog_pass, watchdog_period_s
from app.settings import Settings

logger = logging.getLogger(__name__)


def start_watchdog(settings: Settings) -> threading.Thread:
    """A daemon thread that requeues stale runs every ``watchdog_period_s``; several at once are harmless,
    since a run is requeued by a conditional UPDATE that only one of them wins."""

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(watchdog_period_s(settings)):
            try:
                watchdog_pass(settings)
            except Exception:  # the database or broker is down: the next pass retries
                logger.exception("stale-run watchdog failed; retrying")

    thread = threading.Thread(target=loop, name="stale-run-watchdog", daemon=True)
    thread.start()
    return thread
