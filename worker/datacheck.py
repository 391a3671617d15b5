"""The data check: what a config's sources hold and how they split, before a run is launched (no TensorFlow)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from app.run_config import RunConfig
from worker.engine.data import CLASSES, DataError, Dataset, Roots
from worker.engine.data.dataset import summarize
from worker.engine.experiment import prepare

THUMBNAILS_PER_CLASS = 3
THUMBNAIL_PX = 96


def _counts(data: Dataset) -> dict[str, int]:
    per_class = np.bincount(data.labels, minlength=2)
    return {cls: int(n) for cls, n in zip(CLASSES, per_class, strict=True)}


def _png(image: np.ndarray) -> str:
    pixels = Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8))
    buffer = io.BytesIO()
    pixels.resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnails(data: Dataset) -> list[dict[str, str]]:
    """The first few images of each class, as decoded (so a wrong bit depth or inversion shows at a glance)."""
    shown = []
    for label, cls in enumerate(CLASSES):
        for index in np.flatnonzero(data.labels == label)[:THUMBNAILS_PER_CLASS]:
            shown.append({"label": cls, "png": _png(data.images[index])})
    return shown


def check_data(cfg: RunConfig, roots: Roots = None) -> dict[str, Any]:
    """Load and split the data as a run would (under ``roots``, as the service's workers do); report counts,
    sizes, bit depths, skipped files and thumbnails.

    Never raises DataError: a data problem is returned under ``errors`` with the config field it concerns.
    """
    try:
        federation = prepare(cfg, roots)
    except DataError as error:
        return {"ok": False, "errors": [{"field": error.field or "data", "message": str(error)}]}
    return {
        "ok": True,
        "errors": [],
        "sources": federation.report_dicts(),
        "test": _counts(federation.test),
        "clients": [
            {"id": c.client_id, "train": _counts(c.train), "validation": _counts(c.validation), "test": _counts(c.test)}
            for c in federation.clients
        ],
        "thumbnails": thumbnails(federation.central_train()),
    }


def describe(check: dict[str, Any]) -> list[str]:
    """The check as lines for a terminal."""
    if not check["ok"]:
        return [f"{e['field']}: {e['message']}" for e in check["errors"]]
    lines = [f"{name}: {line}" for name, source in check["sources"].items() for line in summarize(source)]
    lines.append("common test set: " + ", ".join(f"{n:,} {cls}" for cls, n in check["test"].items()))
    for client in check["clients"]:
        train = ", ".join(f"{n:,} {cls}" for cls, n in client["train"].items())
        held = f"validation {sum(client['validation'].values()):,}; own test {sum(client['test'].values()):,}"
        lines.append(f"client {client['id']}: train {train}; {held}")
    return lines
