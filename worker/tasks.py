"""Celery tasks, thin: ids and paths in, engine and store do the work, small JSON out."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Task

from app.broker import CHECK_DATA, CLIENT_STATISTICS, EVALUATE_CLIENT, GRADCAM, TRAIN_CLIENT, TRAIN_RUN
from app.db import retrying, session_factory
from app.run_config import RunConfig
from app.settings import get_settings
from worker import explain, integrity, store
from worker.celery_app import celery_app
from worker.context import RunContext, warm_run_context
from worker.datacheck import check_data
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.digest import weights_sha256
from worker.engine.executor import client_evaluation, client_statistics, client_update
from worker.engine.types import ClientUpdate, Weights
from worker.failures import user_message
from worker.lease import Lease
from worker.orchestrator import execute_run, worker_name

logger = logging.getLogger(__name__)
MIN_LEASE_S = 5.0


@celery_app.task(name=TRAIN_RUN, acks_late=True)
def train_run(run_id: str) -> str:
    return execute_run(uuid.UUID(run_id), get_settings(), celery_app)


def _skip_reason(run_id: uuid.UUID, rnd: int) -> str | None:
    """A task is skipped if its run is being cancelled, or if its round is already stored (a stale redelivery)."""
    with session_factory(get_settings())() as session:
        return store.client_task_gate(session, run_id, rnd)


def lease_s(heartbeat_s: float) -> float:
    """A client task's lease: three heartbeats, and never under MIN_LEASE_S, since a worker busy importing
    TensorFlow or tracing the model may renew late without being dead (a lapsed lease resends the task)."""
    return max(3 * heartbeat_s, MIN_LEASE_S)


def _gated(task: Task, run_id: uuid.UUID, rnd: int, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a client task's work under its lease, unless the gate says to skip it (cancel, or a stale redelivery)."""
    skip = _skip_reason(run_id, rnd)
    if skip:
        return {skip: True}
    with Lease(task.backend.client, str(task.request.id), worker_name(), lease_s(get_settings().heartbeat_s)):
        return work()


def _client_task(
    task: Task,
    run_id: str,
    rnd: int,
    client_id: str,
    weights_ref: str,
    weights_digest: str,
    kind: str,
    work: Callable[[RunContext, Weights], ClientUpdate],
) -> dict[str, Any]:
    """Do the work and store its weights beside the global ones, in a file of this task alone (a client sent
    again after a lost worker never writes over the first attempt's file), recorded with its SHA-256."""
    task_id = str(task.request.id)

    def leased() -> dict[str, Any]:
        ctx, startup = warm_run_context(uuid.UUID(run_id))
        weights = _global_weights(weights_ref, weights_digest, rnd)
        start = weights_sha256(weights)
        logger.info(
            "run %s round %d client %s: %s task %s starts from global weights %s",
            run_id,
            rnd,
            client_id,
            kind,
            task_id,
            start,
            extra={"run_id": run_id, "round": rnd, "client": client_id, "task": task_id, "weights_sha256": start},
        )
        result = work(ctx, weights)
        out = integrity.output_path(Path(weights_ref).parent, kind, client_id, task_id)
        digest = save_checkpoint(Checkpoint(rnd, result.weights), out, durable=False)
        asked, n = integrity.Asked(rnd, client_id, kind), result.num_examples
        retrying(
            session_factory(get_settings()),
            lambda session: integrity.record(
                session, run_id=uuid.UUID(run_id), task_id=task_id, asked=asked, path=out, sha256=digest, n=n
            ),
        )
        metrics = dict(result.metrics) | ({"startup.seconds": startup} if startup else {})
        return {
            "ref": str(out),
            "num_examples": result.num_examples,
            "metrics": metrics,
            "client": client_id,
            "round": rnd,
        }

    return _gated(task, uuid.UUID(run_id), rnd, leased)


def _global_weights(ref: str, digest: str, rnd: int) -> Weights:
    """The global weights the orchestrator wrote for this round, refused if the file changed since."""
    return load_checkpoint(Path(ref), sha256=digest, what=f"the global weights file of round {rnd}").weights


@celery_app.task(name=TRAIN_CLIENT, acks_late=True, bind=True)
def train_client(self: Task, run_id: str, rnd: int, client_id: str, weights_ref: str, digest: str) -> dict[str, Any]:
    """One client's local round; the reply carries the path of its new weights, not the weights."""
    return _client_task(
        self,
        run_id,
        rnd,
        client_id,
        weights_ref,
        digest,
        "update",
        lambda ctx, weights: client_update(
            ctx.trainer,
            ctx.client(client_id),
            weights,
            rnd=rnd,
            seed=ctx.config.seed,
            local_epochs=ctx.config.federation.local_epochs,
            class_weight=ctx.federation.class_weight(ctx.config),
        ),
    )


@celery_app.task(name=CLIENT_STATISTICS, acks_late=True, bind=True)
def client_batchnorm_statistics(
    self: Task, run_id: str, rnd: int, client_id: str, weights_ref: str, digest: str
) -> dict[str, Any]:
    """BatchNorm input moments of the new global model on this client's data (forward passes only)."""
    return _client_task(
        self,
        run_id,
        rnd,
        client_id,
        weights_ref,
        digest,
        "stats",
        lambda ctx, weights: client_statistics(
            ctx.trainer, ctx.client(client_id), weights, rnd=rnd, seed=ctx.config.seed
        ),
    )


@celery_app.task(name=EVALUATE_CLIENT, acks_late=True, bind=True)
def evaluate_client(self: Task, run_id: str, rnd: int, client_id: str, weights_ref: str, digest: str) -> dict[str, Any]:
    """The global model on this client's validation and test parts; the grid counts (about 1,600 integers)
    travel in the reply itself."""

    def leased() -> dict[str, Any]:
        ctx, startup = warm_run_context(uuid.UUID(run_id))
        result = client_evaluation(ctx.trainer, ctx.client(client_id), _global_weights(weights_ref, digest, rnd))
        return {"validation": result.validation.as_lists(), "test": result.test.as_lists(), "startup_s": startup}

    return _gated(self, uuid.UUID(run_id), rnd, leased)


@celery_app.task(name=CHECK_DATA)
def check_data_task(config: dict[str, Any]) -> dict[str, Any]:
    """The data check of a config the API validated, under the data roots again (a message may bypass the API);
    its report travels back through the result backend, with a short message for any other failure."""
    try:
        return check_data(RunConfig.model_validate(config), get_settings().roots)
    except Exception as error:
        logger.exception("data check failed")
        return {"ok": False, "errors": [{"field": "data", "message": user_message(error)}]}


@celery_app.task(name=GRADCAM, acks_late=True)
def gradcam(run_id: str, rnd: int) -> str:
    """The Grad-CAM gallery of one stored round's global model, asked for through the API."""
    return explain.round_gallery(uuid.UUID(run_id), rnd, get_settings())
