"""Real chest X-rays from ../shared/data written as a hospital's image folder, under tell-tale file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.realdata import PNEUMONIAMNIST, require_real_data

#: every file name carries this, so a test can prove no file name travels
MARKER = "patient-name"


def write_image_folder(root: Path, per_class: int, offset: int = 0) -> Path:
    """``root/{NORMAL,PNEUMONIA}/<MARKER>-<i>.png``: ``per_class`` real images of each class, from ``offset``."""
    require_real_data()
    with np.load(PNEUMONIAMNIST) as archive:
        images, labels = archive["train_images"], archive["train_labels"].reshape(-1)
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        folder = root / cls
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == label)[offset : offset + per_class]:
            Image.fromarray(images[i]).save(folder / f"{MARKER}-{i}.png")
    return root
