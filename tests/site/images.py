"""Real chest X-rays from ../shared/data written as a hospital's image folder, under tell-tale file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.realdata import PNEUMONIAMNIST, require_real_data

#: every file name carries this, so a test can prove no file name travels
MARKER = "patient-name"


def save_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> Path:
    """``root/{NORMAL,PNEUMONIA}/<MARKER>-<id>.png``: each uint8 image in its class's folder, named by its id."""
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        folder = root / cls
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == label):
            Image.fromarray(images[i]).save(folder / f"{MARKER}-{ids[i]}.png")
    return root


def write_image_folder(root: Path, per_class: int, offset: int = 0) -> Path:
    """``per_class`` real images of each class, from ``offset``, named by their index in PneumoniaMNIST."""
    require_real_data()
    with np.load(PNEUMONIAMNIST) as archive:
        images, labels = archive["train_images"], archive["train_labels"].reshape(-1)
    picked = np.concatenate([np.flatnonzero(labels == label)[offset : offset + per_class] for label in (0, 1)])
    return save_image_folder(root, images[picked], labels[picked], picked)
