"""Grad-CAM galleries: the most confident TP/TN/FP/FN test images, their heat maps as PNGs and a JSON index."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from worker.engine.data import CLASSES, Dataset
from worker.engine.gradcam import grad_cam, target_layer

if TYPE_CHECKING:
    from worker.engine.client import KerasTrainer
    from worker.engine.types import Weights

CATEGORIES = ("TP", "TN", "FP", "FN")
PER_CATEGORY = 4
MAX_CANDIDATES = 1000  # test images predicted per gallery; a larger test set is sampled (seeded)
DISPLAY_PX = 224  # side of the PNGs: the study's 150 px and the small test sizes alike are shown at this size
#: Anchors of the heat colour map (blue, cyan, yellow, red: the usual Grad-CAM look), value → RGB in [0, 1].
HEAT_ANCHORS = np.array(
    [
        [0.0, 0.0, 0.0, 0.5],
        [0.125, 0.0, 0.0, 1.0],
        [0.375, 0.0, 1.0, 1.0],
        [0.625, 1.0, 1.0, 0.0],
        [0.875, 1.0, 0.0, 0.0],
        [1.0, 0.5, 0.0, 0.0],
    ]
)
MAX_OPACITY = 0.6  # of the heat over the X-ray where the map is 1; it fades out towards 0


@dataclass(frozen=True)
class Example:
    index: int  # position in the arrays it was picked from
    category: str  # TP, TN, FP or FN
    rank: int  # 1 = the most confident of its category
    label: int
    probability: float  # of PNEUMONIA


def categories(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Boolean masks of the true/false positives and negatives, PNEUMONIA being predicted at p >= threshold."""
    predicted = probabilities >= threshold
    positive = labels == 1
    return {
        "TP": positive & predicted,
        "TN": ~positive & ~predicted,
        "FP": ~positive & predicted,
        "FN": positive & ~predicted,
    }


def pick_examples(
    labels: np.ndarray, probabilities: np.ndarray, per_category: int, threshold: float = 0.5
) -> list[Example]:
    """The ``per_category`` most confident true/false positives and negatives, in CATEGORIES order.

    Confidence is p for a PNEUMONIA prediction and 1 - p for NORMAL; ties go to the lower index, so the
    same predictions always give the same gallery.
    """
    confidence = np.where(probabilities >= threshold, probabilities, 1.0 - probabilities)
    picked = []
    for category, mask in categories(labels, probabilities, threshold).items():
        members = np.flatnonzero(mask)
        order = members[np.lexsort((members, -confidence[members]))]
        picked += [
            Example(int(i), category, rank, int(labels[i]), float(probabilities[i]))
            for rank, i in enumerate(order[:per_category], start=1)
        ]
    return picked


def candidates(n: int, limit: int, seed: int) -> np.ndarray:
    """Indices of the test images a gallery draws from: all of them, or a seeded sample of ``limit`` (sorted)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 0x6CA]).choice(n, limit, replace=False))


def heat_colors(values: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] for values in [0, 1], piecewise linear between HEAT_ANCHORS."""
    clipped = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(clipped, HEAT_ANCHORS[:, 0], HEAT_ANCHORS[:, c]) for c in (1, 2, 3)], axis=-1)


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map blended over the grayscale image, (H, W, 3) uint8; weak heat leaves the X-ray visible."""
    gray = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=-1)
    alpha = (MAX_OPACITY * np.clip(heat, 0.0, 1.0))[..., None]
    pixels: np.ndarray = np.round(255 * ((1 - alpha) * gray + alpha * heat_colors(heat))).astype(np.uint8)
    return pixels


def save_png(pixels: np.ndarray, path: Path, size: int = DISPLAY_PX) -> None:
    Image.fromarray(pixels, mode="RGB").resize((size, size), Image.Resampling.BICUBIC).save(
        path, format="PNG", optimize=True
    )


def index_name(rnd: int) -> str:
    return f"round-{rnd:04d}.json"


def write_index(folder: Path, rnd: int, index: dict[str, Any]) -> None:
    """Write-then-rename, so a reader sees the old index or the new one, never half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / index_name(rnd)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"round": rnd, "updated_at": datetime.now(UTC).isoformat()} | index, indent=1))
    os.replace(tmp, path)


def write_gallery(
    trainer: KerasTrainer,
    weights: Weights,
    test: Dataset,
    folder: Path,
    *,
    rnd: int,
    seed: int,
    per_category: int = PER_CATEGORY,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Grad-CAM of the global model of round ``rnd`` on its common test set: PNGs and ``round-NNNN.json`` in ``folder``.

    The PNGs are written first and the index last, so an index only ever names files that exist.
    """
    pool = candidates(len(test), MAX_CANDIDATES, seed)
    labels, probabilities = test.labels[pool], trainer.predict(weights, test.images[pool])
    examples = pick_examples(labels, probabilities, per_category, threshold)
    rows = pool[[e.index for e in examples]].astype(int)
    explained = np.array([e.category in ("TP", "FP") for e in examples], np.uint8)  # the predicted class
    model = trainer.model
    model.set_weights(weights)
    heat = grad_cam(model, test.images[rows], explained)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for example, row, cls, cam in zip(examples, rows, explained, heat, strict=True):
        name = f"r{rnd:04d}-{example.category.lower()}-{example.rank}.png"
        save_png(overlay(test.images[row, ..., 0], cam), folder / name)
        items.append(
            asdict(example)
            | {"file": name, "index": int(row), "label": CLASSES[example.label], "prediction": CLASSES[cls]}
        )
    layer = model.layers[target_layer(model)]
    index = {
        "status": "ready",
        "items": items,
        "counts": {c: int(mask.sum()) for c, mask in categories(labels, probabilities, threshold).items()},
        "layer": layer.name,
        "map_size": list(layer.output.shape[1:3]),
        "threshold": threshold,
        "test_samples": len(test),
        "candidates": len(pool),
    }
    write_index(folder, rnd, index)
    return index
