"""The site's own datasets: declared locally, read under its data roots, split by the site, summarised as counts."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.run_config import DataSource, OutsideDataRoots, within_roots
from app.sites.protocol import CLASSES, DATASET_NAME, SPLITS, DatasetSummary
from worker.engine import partition
from worker.engine.data import Dataset, LoadReport, load_source, require_both_classes
from worker.engine.experiment import ClientData
from worker.site.identity import SiteError

#: the size images are read at for the summary and its fingerprint, whatever size tasks later ask for
SUMMARY_SIZE = 64
SPLITS_FILE = "splits.json"


class TaskRefused(SiteError):
    """A task this site cannot do; the message goes to the server as is, so it never names a path or a file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteDataset(_Strict):
    name: str = Field(pattern=DATASET_NAME)
    source: DataSource
    max_epsilon: float | None = Field(
        None,
        gt=0,
        description="the site's own privacy budget for this dataset, summed over runs: training that would pass it is "
        "refused, and so is training without differential privacy",
    )
    delta: float | None = Field(
        None, gt=0, lt=0.01, description="the delta this site accounts each run at; default: the run's own"
    )

    @model_validator(mode="after")
    def _local_files(self) -> Self:
        if self.source.format == "synthetic":
            raise ValueError("a site declares its own files: image-folder, csv or npz")
        return self


class SplitConfig(_Strict):
    """The site's own train/validation/test split; without a seed, one is drawn once and recorded."""

    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _room_to_train(self) -> Self:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must leave images to train on (sum below 1)")
        return self


class SiteConfig(_Strict):
    """site.yaml: the datasets, the folders they may be read from, and the split."""

    datasets: list[SiteDataset] = Field(default_factory=list, max_length=50)
    data_roots: list[Path] = Field(
        default_factory=list, description="every file read must lie under one; default: the datasets' own folders"
    )
    split: SplitConfig = SplitConfig()


def _describe(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())


def parse_declaration(text: str) -> SiteDataset:
    """``NAME=FORMAT:PATH``, as ``--dataset chest=image-folder:/data/chest_xray``."""
    name, has_name, rest = text.partition("=")
    form, has_format, path = rest.partition(":")
    if not has_name or not has_format:
        raise SiteError(f"--dataset {text!r}: expected NAME=FORMAT:PATH, e.g. chest=image-folder:/data/chest_xray")
    try:
        return SiteDataset.model_validate({"name": name, "source": {"format": form, "path": path}})
    except ValidationError as error:
        raise SiteError(f"--dataset {text!r}: {_describe(error)}") from None


def _own_root(source: DataSource) -> Path:
    """Where a dataset may be read when no roots are configured: its folder, or the folder of its file."""
    path = Path(source.path or "").expanduser().resolve()
    return path if source.format == "image-folder" else path.parent


def _inside_roots(dataset: SiteDataset, roots: tuple[Path, ...]) -> SiteDataset:
    """The dataset with its path resolved (``..`` and links), refused unless it lies under one of ``roots``."""
    try:
        path = within_roots(Path(dataset.source.path or "").expanduser(), roots)
    except OutsideDataRoots:
        allowed = ", ".join(str(root) for root in roots)
        where = f"dataset {dataset.name!r}: {dataset.source.path}"
        raise SiteError(f"{where} is outside this site's data roots ({allowed})") from None
    if not path.exists():
        raise SiteError(f"dataset {dataset.name!r}: {path} does not exist")
    return dataset.model_copy(update={"source": dataset.source.model_copy(update={"path": str(path)})})


def site_config(config: Path | None, declarations: Sequence[str]) -> SiteConfig:
    """site.yaml (if given) plus the ``--dataset`` declarations, every path checked against the data roots."""
    raw: object = {}
    if config is not None:
        try:
            raw = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise SiteError(f"cannot read {config}: {error}") from error
    try:
        parsed = SiteConfig.model_validate(raw)
    except ValidationError as error:
        raise SiteError(f"{config}: {_describe(error)}") from None
    datasets = parsed.datasets + [parse_declaration(text) for text in declarations]
    if not datasets:
        raise SiteError("no dataset declared: give --dataset NAME=FORMAT:PATH or a --config site.yaml with datasets")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SiteError(f"dataset names must be unique, got {names}")
    roots = tuple(root.expanduser().resolve() for root in parsed.data_roots) or tuple(
        _own_root(d.source) for d in datasets
    )
    checked = [_inside_roots(d, roots) for d in datasets]
    return parsed.model_copy(update={"datasets": checked, "data_roots": list(roots)})


def split_indices(labels: np.ndarray, split: SplitConfig, seed: int) -> dict[str, np.ndarray]:
    """Stratified train/validation/test indices: each class is cut in the configured fractions."""
    rng = np.random.default_rng(seed)
    rest, test = partition.holdout(labels, split.test, rng)
    train, validation = partition.holdout(labels[rest], split.validation / (1 - split.test), rng)
    return {"train": rest[train], "validation": rest[validation], "test": test}


def content_fingerprint(data: Dataset) -> str:
    """SHA-256 over the sorted SHA-256 of each image's 8-bit pixels: the same images under any file names or
    order give the same fingerprint, and no single image's hash leaves the site."""
    pixels = np.round(data.images * 255).astype(np.uint8)
    return hashlib.sha256(b"".join(sorted(hashlib.sha256(p.tobytes()).digest() for p in pixels))).hexdigest()


def _default_split(source: DataSource) -> str:
    """A site's image folder holds NORMAL/ and PNEUMONIA/ itself unless ``split`` names a sub-folder."""
    return "." if source.format == "image-folder" else "train"


@dataclass(frozen=True)
class PreparedDataset:
    declared: SiteDataset
    labels: np.ndarray
    parts: dict[str, np.ndarray]  # split -> indices in the loader's order
    summary: DatasetSummary


def prepare_dataset(declared: SiteDataset, split: SplitConfig, seed: int, roots: tuple[Path, ...]) -> PreparedDataset:
    """Load once at SUMMARY_SIZE for the counts, sizes and fingerprint, and make the site's split."""
    report = LoadReport()
    source = declared.source
    data = load_source(source, SUMMARY_SIZE, 0, default_split=_default_split(source), report=report, roots=roots)
    require_both_classes(data, f"dataset {declared.name!r}")
    parts = split_indices(data.labels, split, seed)
    counts = {
        part: {cls: int(np.sum(data.labels[parts[part]] == label)) for label, cls in enumerate(CLASSES)}
        for part in SPLITS
    }
    summary = DatasetSummary.model_validate(
        {
            "name": declared.name,
            "format": declared.source.format,
            "counts": counts,
            "image_sizes": [size for size, _ in report.sizes.most_common(20)],
            "skipped": sum(report.skipped.values()),
            "fingerprint": content_fingerprint(data),
            "split_seed": seed,
        }
    )
    return PreparedDataset(declared, data.labels, parts, summary)


class SiteData:
    """The site's datasets: summarised and split once at start, then read at each task's image size."""

    def __init__(self, config: SiteConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.prepared: dict[str, PreparedDataset] = {}
        self._loaded: dict[str, tuple[int, Dataset]] = {}  # the latest image size read, per dataset
        #: every file is checked against these as it is opened: a link inside a dataset cannot lead out
        self.roots = tuple(config.data_roots)

    def prepare(self) -> list[DatasetSummary]:
        """Raises DataError (naming the file, for the operator's eyes only) when a dataset cannot be read."""
        seed = self._seed()
        for declared in self.config.datasets:
            self.prepared[declared.name] = prepare_dataset(declared, self.config.split, seed, self.roots)
        record = {
            "seed": seed,
            "fractions": {"validation": self.config.split.validation, "test": self.config.split.test},
            "datasets": {
                name: {"fingerprint": p.summary.fingerprint, "counts": p.summary.counts}
                for name, p in self.prepared.items()
            },
        }
        (self.folder / SPLITS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return self.summaries()

    def _seed(self) -> int:
        """The configured seed, else the one recorded before (the same split across restarts), else a new one."""
        if self.config.split.seed is not None:
            return self.config.split.seed
        recorded = self.folder / SPLITS_FILE
        if recorded.is_file():
            return int(json.loads(recorded.read_text())["seed"])
        return secrets.randbelow(2**31)

    def summaries(self) -> list[DatasetSummary]:
        return [p.summary for p in self.prepared.values()]

    def client_data(self, name: str, image_size: int, client_id: str) -> ClientData:
        """The dataset's split at ``image_size``, as the engine's client functions take it."""
        prepared = self.prepared.get(name)
        if prepared is None:
            raise TaskRefused(f"this site has no dataset named {name!r}")
        cached = self._loaded.get(name)
        if cached is None or cached[0] != image_size:
            source = prepared.declared.source
            data = load_source(source, image_size, 0, default_split=_default_split(source), roots=self.roots)
            if not np.array_equal(data.labels, prepared.labels):
                raise TaskRefused(f"dataset {name!r} changed since the agent started; restart the agent")
            cached = self._loaded[name] = (image_size, data)
        data = cached[1]
        parts = prepared.parts
        return ClientData(
            client_id, data.subset(parts["train"]), data.subset(parts["test"]), data.subset(parts["validation"])
        )
