"""Celery tasks, thin: ids and paths in, engine and store do the work, small JSON out."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from app.broker import CLIENT_STATISTICS, TRAIN_CLIENT, TRAIN_RUN
from app.db import session_factory
from app.settings import get_settings
from worker import store
from worker.celery_app import celery_app
from worker.context import run_context
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.executor import client_statistics, client_update
from worker.orchestrator import execute_run


@celery_app.task(name=TRAIN_RUN, acks_late=True)
def train_run(run_id: str) -> str:
    return execute_run(uuid.UUID(run_id), get_settings(), celery_app)


def _cancelled(run_id: uuid.UUID) -> bool:
    with session_factory(get_settings())() as session:
        return store.cancel_requested(session, run_id)


@celery_app.task(name=TRAIN_CLIENT, acks_late=True)
def train_client(run_id: str, rnd: int, client_id: str, weights_ref: str) -> dict[str, Any]:
    """One client's local round; the new weights go beside the global ones, the reply carries their path."""
    rid = uuid.UUID(run_id)
    if _cancelled(rid):
        return {"cancelled": True}
    ctx = run_context(rid)
    weights = load_checkpoint(Path(weights_ref)).weights
    update = client_update(
        ctx.trainer,
        ctx.client(client_id),
        weights,
        rnd=rnd,
        seed=ctx.config.seed,
        local_epochs=ctx.config.federation.local_epochs,
    )
    out = Path(weights_ref).with_name(f"update-{client_id}.npz")
    save_checkpoint(Checkpoint(rnd, update.weights), out)
    return {"ref": str(out), "num_examples": update.num_examples, "metrics": dict(update.metrics)}


@celery_app.task(name=CLIENT_STATISTICS, acks_late=True)
def client_batchnorm_statistics(run_id: str, rnd: int, client_id: str, weights_ref: str) -> dict[str, Any]:
    """BatchNorm input moments of the new global model on this client's data (forward passes only)."""
    rid = uuid.UUID(run_id)
    if _cancelled(rid):
        return {"cancelled": True}
    ctx = run_context(rid)
    weights = load_checkpoint(Path(weights_ref)).weights
    stats = client_statistics(ctx.trainer, ctx.client(client_id), weights, rnd=rnd, seed=ctx.config.seed)
    out = Path(weights_ref).with_name(f"stats-{client_id}.npz")
    save_checkpoint(Checkpoint(rnd, stats.weights), out)
    return {"ref": str(out), "num_examples": stats.num_examples, "metrics": dict(stats.metrics)}
