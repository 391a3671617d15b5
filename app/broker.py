"""The Celery client of the API: tasks are sent by name, so this process never imports the worker or Keras."""

from __future__ import annotations

import uuid
from functools import lru_cache

from celery import Celery

from app.settings import Settings

TRAIN_RUN = "fedlens.train_run"  # these names are the whole contract with the worker
TRAIN_CLIENT = "fedlens.train_client"
CLIENT_STATISTICS = "fedlens.client_statistics"
RUNS_QUEUE = "runs"  # orchestration of federated runs: waits on clients, aggregates, evaluates
TRAIN_QUEUE = "train"  # model training: client rounds and centralized baselines (GPU hosts join here)


def configure(celery: Celery, settings: Settings) -> Celery:
    configure_broker(celery, settings.broker)
    # An unacknowledged task (its worker was killed) is delivered again after this long; a task still
    # running then is duplicated, which the claims and the idempotent writes make harmless.
    celery.conf.broker_transport_options = {"visibility_timeout": settings.redelivery_after_s}
    return celery


def configure_broker(celery: Celery, broker: str) -> Celery:
    celery.conf.update(
        broker_url=broker,
        result_backend=broker,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],  # as root, a worker that accepts pickle refuses to start
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        task_default_queue=RUNS_QUEUE,
    )
    return celery


@lru_cache
def client_for(broker: str) -> Celery:
    """One Celery client per broker URL and process; it sends tasks, it runs none."""
    return configure_broker(Celery("fedlens"), broker)


def enqueue_run(celery: Celery, run_id: uuid.UUID, *, centralized: bool) -> str:
    """Send by name; a centralized baseline goes to the training queue, a federated run to its orchestrators."""
    queue = TRAIN_QUEUE if centralized else RUNS_QUEUE
    # ignore_result: the outcome is read from the database; subscribing to the result channel would make a
    # broker outage raise the backend's RuntimeError after ~20 s of retries instead of kombu's OperationalError.
    return str(celery.send_task(TRAIN_RUN, args=[str(run_id)], queue=queue, ignore_result=True).id)
