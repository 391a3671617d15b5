"""The Celery app of the workers: ``celery -A worker.celery_app worker -Q train`` joins a GPU host."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from app.broker import RUNS_QUEUE, configure
from app.health.heartbeats import Heartbeat, client_for
from app.logs import configure_logging
from app.runs import start_watchdog
from app.settings import get_settings

celery_app = Celery("fedlens", include=["worker.tasks"])


@celery_app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    """Settings are read when the app is first used, not at import."""
    configure(sender, get_settings())


@celery_app.on_after_finalize.connect
def _logging(sender: Celery, **_: Any) -> None:
    configure_logging()


_heartbeats: list[Heartbeat] = []


@worker_ready.connect
def _watchdog(sender: Any, **_: Any) -> None:
    """Orchestrators (workers of the ``runs`` queue) also watch for stale runs."""
    if RUNS_QUEUE in (sender.app.amqp.queues.consume_from or {}):
        start_watchdog(get_settings())


@worker_ready.connect
def _heartbeat(sender: Any, **_: Any) -> None:
    """Beat for each queue this worker consumes, from the main process, which lives as long as the worker."""
    settings = get_settings()
    queues = sender.app.amqp.queues.consume_from or {}
    _heartbeats.append(
        Heartbeat(
            client_for(settings.broker, settings.redis_ca_file), sender.hostname, queues, settings.heartbeat_s
        ).start()
    )


@worker_shutdown.connect
def _goodbye(**_: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()
