"""The Celery client of the API: tasks are sent by name, so this process never imports the worker or Keras."""

from __future__ import annotations

import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery
from celery import exceptions as celery_exceptions

from app.settings import Settings
from app.tls.redis import redis_ssl

TRAIN_RUN = "fedlens.train_run"  # these names are the whole contract with the worker
TRAIN_CLIENT = "fedlens.train_client"
CLIENT_STATISTICS = "fedlens.client_statistics"
CHECK_DATA = "fedlens.check_data"
EVALUATE_CLIENT = "fedlens.evaluate_client"
GRADCAM = "fedlens.gradcam"
RUNS_QUEUE = "runs"  # orchestration of federated runs: waits on clients, aggregates, evaluates
TRAIN_QUEUE = "train"  # model training: client rounds and centralized baselines (GPU hosts join here)
CHECK_QUEUE = "check"  # data checks before launch: seconds each, never behind a training task
CHECK_TIMEOUT_S = 60.0


def configure(celery: Celery, settings: Settings) -> Celery:
    configure_broker(celery, settings.broker, settings.redis_ca_file)
    # An unacknowledged task (its worker was killed) is delivered again after this long; a task still
    # running then is duplicated, which the claims and the idempotent writes make harmless.
    celery.conf.broker_transport_options = {"visibility_timeout": settings.redelivery_after_s}
    return celery


def configure_broker(celery: Celery, broker: str, ca_file: Path | None) -> Celery:
    ssl_options = redis_ssl(broker, ca_file)
    celery.conf.update(
        broker_use_ssl=ssl_options,
        redis_backend_use_ssl=ssl_options,
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
def client_for(broker: str, ca_file: Path | None) -> Celery:
    """One Celery client per broker URL and process; it sends tasks, it runs none."""
    return configure_broker(Celery("fedlens"), broker, ca_file)


def enqueue_run(celery: Celery, run_id: uuid.UUID, *, centralized: bool) -> str:
    """Send by name; a centralized baseline goes to the training queue, a federated run to its orchestrators."""
    queue = TRAIN_QUEUE if centralized else RUNS_QUEUE
    # ignore_result: the outcome is read from the database; subscribing to the result channel would make a
    # broker outage raise the backend's RuntimeError after ~20 s of retries instead of kombu's OperationalError.
    return str(celery.send_task(TRAIN_RUN, args=[str(run_id)], queue=queue, ignore_result=True).id)


def enqueue_gradcam(celery: Celery, run_id: uuid.UUID, rnd: int) -> str:
    """Grad-CAM of one round's model on a worker of the check queue: idle while runs train, and a gallery
    takes seconds once the run's data is loaded, so a request never waits behind a whole run."""
    return str(celery.send_task(GRADCAM, args=[str(run_id), rnd], queue=CHECK_QUEUE, ignore_result=True).id)


class CheckUnanswered(Exception):
    """No data-check worker answered in time."""


def check_data(celery: Celery, config: dict[str, Any]) -> dict[str, Any]:
    """Run the data check on a worker of the check queue and wait for its report (the API reads no images).

    Raises CheckUnanswered after CHECK_TIMEOUT_S, and kombu's OperationalError when the broker is down.
    """
    result = celery.send_task(CHECK_DATA, args=[config], queue=CHECK_QUEUE, expires=CHECK_TIMEOUT_S)
    try:
        report: dict[str, Any] = result.get(timeout=CHECK_TIMEOUT_S, propagate=True)
    except celery_exceptions.TimeoutError as error:
        raise CheckUnanswered(f"no data-check worker answered within {CHECK_TIMEOUT_S:.0f} s") from error
    finally:
        result.forget()
    return report
