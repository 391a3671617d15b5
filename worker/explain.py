"""Grad-CAM galleries of a run's global models on a worker: the final one after success, any round on request."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from app.db import session_factory
from app.gradcam import gallery_folder
from app.models import GLOBAL, FlRound, RoundMetric
from app.settings import Settings
from worker.context import RunContext, run_context
from worker.engine.checkpoint import load_checkpoint, load_round_weights
from worker.engine.gallery import write_gallery, write_index
from worker.engine.types import Weights
from worker.failures import user_message

logger = logging.getLogger(__name__)


def announce(artifacts: Path, run_id: uuid.UUID, rnd: int) -> None:
    """Mark the gallery of round ``rnd`` pending, so a page that sees the run finish knows one is coming."""
    write_index(gallery_folder(artifacts, run_id), rnd, {"status": "pending"})


def _failed(artifacts: Path, run_id: uuid.UUID, rnd: int, exc: Exception) -> str:
    """Log the exception being handled and record it in the round's index, where the dashboard shows it."""
    logger.exception("Grad-CAM gallery of run %s round %d failed", run_id, rnd)
    write_index(gallery_folder(artifacts, run_id), rnd, {"status": "failed", "error": user_message(exc)})
    return "failed"


def round_threshold(settings: Settings, run_id: uuid.UUID, rnd: int) -> float:
    """The operating threshold the round's model was scored at (0.5 for rounds stored before thresholds)."""
    with session_factory(settings)() as session:
        stored = session.get(RoundMetric, (run_id, rnd, GLOBAL, "test.threshold"))
        return stored.value if stored is not None else 0.5


def compute(settings: Settings, ctx: RunContext, run_id: uuid.UUID, rnd: int, weights: Weights) -> str:
    """Write the gallery of these weights, its TP/TN/FP/FN taken at the round's operating threshold; a failure
    is logged and recorded in the round's index, never raised, since the run itself is already done."""
    artifacts = settings.artifacts
    folder = gallery_folder(artifacts, run_id)
    try:
        threshold = round_threshold(settings, run_id, rnd)
        write_gallery(
            ctx.trainer, weights, ctx.federation.test, folder, rnd=rnd, seed=ctx.config.seed, threshold=threshold
        )
    except Exception as exc:
        return _failed(artifacts, run_id, rnd, exc)
    logger.info("Grad-CAM gallery of run %s round %d written", run_id, rnd)
    return "ready"


def stored_weights(stored: FlRound) -> Weights:
    """A stored round's global weights, from its weights file (or, for a round stored before those were kept, its
    checkpoint); ArtifactModified (worker.engine.checkpoint) when they are not the weights recorded with the round."""
    if stored.weights_path is None:
        what = f"checkpoint of round {stored.number}"
        return load_checkpoint(Path(stored.checkpoint), sha256=stored.checkpoint_sha256, what=what).weights
    return load_round_weights(Path(stored.weights_path), weights_sha256=stored.weights_sha256, rnd=stored.number)


def round_gallery(run_id: uuid.UUID, rnd: int, settings: Settings) -> str:
    """The gallery of a stored round's global model."""
    announce(settings.artifacts, run_id, rnd)
    try:
        with session_factory(settings)() as session:
            stored = session.get(FlRound, (run_id, rnd))
        if stored is None:
            raise LookupError(f"run {run_id} has no stored round {rnd}")
        weights = stored_weights(stored)
        ctx = run_context(run_id)
    except Exception as exc:
        return _failed(settings.artifacts, run_id, rnd, exc)
    return compute(settings, ctx, run_id, rnd, weights)
