"""Image-folder sources (``root/<split>/{NORMAL,PNEUMONIA}/*``): which files count, which are skipped and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worker.engine.data.dataset import CLASSES, DataError, Dataset, LoadReport, Roots, guarded, resize, stack
from worker.engine.data.decode import IMAGE_SUFFIXES, decode_file

# Written by operating systems and tools, never by a person meaning it as data: ignored like hidden files.
OS_METADATA = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_hidden(path: Path) -> bool:
    """Dot files and folders (.DS_Store, AppleDouble ._x, .ipynb_checkpoints) and OS metadata."""
    return path.name.startswith(".") or path.name in OS_METADATA


def listing(folder: Path, roots: Roots) -> list[tuple[str, Path]]:
    """(name, path to open) of each visible entry, sorted; with roots, an entry that leads outside them (a link) is
    a DataError naming it, before anything about its target is looked at."""
    return [(e.name, guarded(e, roots, str(e))) for e in sorted(folder.iterdir()) if not is_hidden(e)]


def image_files(folder: Path, report: LoadReport, shown: str, roots: Roots) -> list[Path]:
    """The decodable images of one class folder, sorted; everything else not hidden is counted as skipped."""
    files = []
    for _name, entry in listing(folder, roots):
        if entry.is_dir():
            report.skipped[f"sub-folder inside {shown} (class folders are not searched recursively)"] += 1
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            files.append(entry)
        else:
            report.skipped[f"unsupported file type '{entry.suffix.lower() or '(none)'}'"] += 1
    return files


def load_image_folder(root: Path, split: str, size: int, report: LoadReport, roots: Roots = None) -> Dataset:
    """Read ``root/split/{NORMAL,PNEUMONIA}``. Raises DataError naming the folder or file and what to change, never
    listing what a folder holds."""
    folder = guarded(root / split, roots)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; expected {folder}/{{{','.join(CLASSES)}}}/ with images")
    entries = listing(folder, roots)
    unknown = sum(1 for name, entry in entries if entry.is_dir() and name not in CLASSES)
    if unknown:
        raise DataError(
            f"{folder}: {unknown} folder(s) other than the class folders; a split holds only {list(CLASSES)} "
            "(names are case-sensitive)"
        )
    stray = sum(1 for _name, entry in entries if not entry.is_dir())
    if stray:
        report.skipped[f"file directly in {split}/ (not in a class folder)"] += stray
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(CLASSES):
        class_folder = guarded(folder / cls, roots, str(folder / cls))
        shown = f"{split}/{cls}"  # for skip reasons: the same for every run over this layout
        if not class_folder.is_dir():
            raise DataError(f"{class_folder}: missing class folder; every split needs {list(CLASSES)}")
        files = image_files(class_folder, report, shown, roots)
        if not files:
            raise DataError(f"{class_folder}: no .jpeg, .jpg or .png (or DICOM .dcm) images in this class folder")
        for file in files:
            decoded = decode_file(file)
            height, width = decoded.pixels.shape
            report.saw(label, width, height, decoded.bits)
            images.append(resize(decoded.pixels, size))
            labels.append(label)
    return stack(images, labels)
