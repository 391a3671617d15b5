"""Grad-CAM galleries of a run, API side: read the worker's JSON indexes, serve their PNGs, ask for another round."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Literal

from celery import Celery
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import broker, runs
from app.errors import BadRequest, InvalidTransition, NotFound, Unavailable
from app.models import FlRound

INDEX_NAME = re.compile(r"round-(\d+)\.json")  # one index per explained round, written by worker.engine.gallery
SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}\.png")  # no dots but the suffix, no slashes


class GradcamItem(BaseModel):
    file: str = Field(description="PNG of the heat map over the image: GET /api/runs/{id}/gradcam/{file}")
    category: Literal["TP", "TN", "FP", "FN"]
    rank: int = Field(description="1 = the most confident of its category")
    index: int = Field(description="position of the image in the common test set")
    label: str
    prediction: str = Field(description="also the class whose evidence the heat map shows")
    probability: float = Field(description="predicted probability of PNEUMONIA")


class GradcamRead(BaseModel):
    run_id: uuid.UUID
    status: Literal["missing", "pending", "ready", "failed"]
    round: int | None = None
    rounds: list[int] = Field(description="rounds that have a gallery (any status)")
    items: list[GradcamItem] = []
    counts: dict[str, int] = Field({}, description="TP, TN, FP and FN among the images predicted")
    layer: str | None = Field(None, description="the convolution explained")
    map_size: list[int] | None = None
    threshold: float | None = None
    test_samples: int | None = None
    candidates: int | None = Field(None, description="test images predicted (a seeded sample of a large test set)")
    error: str | None = None
    updated_at: datetime | None = None


class GradcamRequested(BaseModel):
    run_id: uuid.UUID
    round: int
    task_id: str
    status: Literal["queued"] = "queued"


def gallery_folder(artifacts: Path, run_id: uuid.UUID) -> Path:
    """Where the workers write a run's galleries and the API reads them (the shared artifact store)."""
    return artifacts / "runs" / str(run_id) / "gradcam"


def _indexes(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    found = ((INDEX_NAME.fullmatch(p.name), p) for p in folder.iterdir())
    return {int(m.group(1)): p for m, p in found if m}


def read_gallery(*, session: Session, artifacts: Path, run_id: uuid.UUID, round_number: int | None) -> GradcamRead:
    """The gallery of one round, by default of the latest round explained; status ``missing`` when there is none."""
    runs.get_run(session=session, run_id=run_id)
    indexes = _indexes(gallery_folder(artifacts, run_id))
    chosen = round_number if round_number is not None else max(indexes, default=None)
    rounds = sorted(indexes)
    if chosen is None or chosen not in indexes:
        return GradcamRead(run_id=run_id, status="missing", round=chosen, rounds=rounds)
    stored = json.loads(indexes[chosen].read_text())
    return GradcamRead.model_validate(stored | {"run_id": run_id, "round": chosen, "rounds": rounds})


def gallery_file(*, session: Session, artifacts: Path, run_id: uuid.UUID, name: str) -> Path:
    """A PNG that one of the run's indexes names; any other name is refused before the disk is touched."""
    if not SAFE_FILE.fullmatch(name):
        raise BadRequest("not a gallery file name: letters, digits, '-' and '_', then .png", "path.file")
    runs.get_run(session=session, run_id=run_id)
    folder = gallery_folder(artifacts, run_id)
    named = {
        item.get("file") for path in _indexes(folder).values() for item in json.loads(path.read_text()).get("items", [])
    }
    if name in named and (folder / name).is_file():
        return folder / name
    raise NotFound(f"run {run_id} has no gallery file {name!r}")


def _weights_kept(stored: FlRound) -> bool:
    return Path(stored.weights_path or stored.checkpoint).is_file()


def request_gallery(
    *, session: Session, celery: Celery, run_id: uuid.UUID, round_number: int | None
) -> GradcamRequested:
    """Queue the Grad-CAM of a round's global model (default: the last completed round) from its stored weights."""
    run = runs.get_run(session=session, run_id=run_id)
    rnd = round_number if round_number is not None else run.current_round
    stored = session.get(FlRound, (run_id, rnd))
    if stored is None:
        done = f"rounds 1 to {run.current_round}" if run.current_round else "none yet"
        raise NotFound(f"run {run_id} has no completed round {rnd} (completed: {done})")
    if not _weights_kept(stored):
        kept = session.scalars(select(FlRound).where(FlRound.run_id == run_id).order_by(FlRound.number)).all()
        available = [r.number for r in kept if _weights_kept(r)]
        raise InvalidTransition(
            f"the weights of round {rnd} are no longer on the server (a run stored before every round's weights "
            "were kept has only its last checkpoints); rounds that can be explained: "
            + (", ".join(map(str, available)) or "none")
        )
    try:
        task_id = broker.enqueue_gradcam(celery, run_id, rnd)
    except OperationalError as error:
        raise Unavailable("the broker is unreachable; the gallery needs a worker behind it") from error
    return GradcamRequested(run_id=run_id, round=rnd, task_id=task_id)
