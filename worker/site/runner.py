"""One task on this site's data with the engine's client functions; what it returns is weights and counts only."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from app.digest import file_sha256
from app.run_config import DataConfig, FederationConfig, ModelConfig
from app.sites.protocol import DpSettings, SiteTask, TaskResult, TaskSettings
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.client import KerasTrainer
from worker.engine.executor import client_evaluation, client_statistics, client_update, local_only
from worker.engine.privacy.dpsgd import DpSgdSettings
from worker.engine.protection import change_vector, moments_vector
from worker.engine.types import ClientEvaluation, Weights
from worker.site.datasets import SiteData, TaskRefused
from worker.site.masking import MaskingSessions

CACHE_DIR = "cache"
CACHED_FILES = 6  # a few rounds of global weights and the site's own last uploads
STALE_PART_S = 24 * 3600.0  # a download broken off this long ago is not resumed: its .part file is deleted
MAX_TRAINERS = 2  # each holds a compiled model; tasks of one run share one


class WeightsCache:
    """Weights files by SHA-256 in D/cache/: each global model is downloaded once and checked on every read."""

    def __init__(self, site_folder: Path) -> None:
        self.folder = site_folder / CACHE_DIR
        self.folder.mkdir(mode=0o700, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.npz"

    def get(self, sha256: str, download: Callable[[str, Path], None]) -> Weights:
        """The weights with this file hash, downloaded unless a good copy is here. ``download`` streams the file to
        the path it is given and refuses one whose hash is wrong (SiteClient.weights)."""
        path = self.path(sha256)
        if not path.is_file() or file_sha256(path) != sha256:
            download(sha256, path)
        path.touch()  # most recently used: kept by the pruning below
        self._prune()
        return load_checkpoint(path).weights

    def store(self, rnd: int, weights: Weights) -> tuple[str, Path]:
        """Write the site's weights as a checkpoint file: its SHA-256, and the file that gets uploaded (in chunks
        read from disk, never the whole model in memory)."""
        outgoing = self.folder / f"outgoing-{uuid.uuid4().hex}.npz"
        save_checkpoint(Checkpoint(rnd, weights), outgoing, durable=False)
        sha256 = file_sha256(outgoing)
        path = self.path(sha256)
        os.replace(outgoing, path)
        self._prune()
        return sha256, path

    def _prune(self) -> None:
        files = sorted(self.folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        stale = [p for p in self.folder.glob("*.part") if p.stat().st_mtime < time.time() - STALE_PART_S]
        for old in [*files[CACHED_FILES:], *stale]:
            old.unlink(missing_ok=True)


def _checked(settings: TaskSettings) -> ModelConfig:
    """The task's model, its image size, epochs and rounds within what a run config may ask: a server cannot make
    the site load images at any size or train for ever."""
    try:
        DataConfig.model_validate({"image_size": settings.image_size})
        FederationConfig.model_validate({"local_epochs": settings.local_epochs, "rounds": settings.rounds or 1})
        return ModelConfig.model_validate(settings.model)
    except ValidationError as error:
        wrong = ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors())
        raise TaskRefused(f"the task's settings are out of range: {wrong}") from None


def _counts(evaluation: ClientEvaluation) -> dict[str, dict[str, list[int] | int]]:
    """What an evaluation sends: the grid counts of the validation and test parts, never a prediction."""
    return {"validation": evaluation.validation.as_lists(), "test": evaluation.test.as_lists()}


class TaskRunner:
    """Executes tasks on the site's split; one trainer per (image size, model config), reused across rounds."""

    def __init__(self, data: SiteData) -> None:
        self.data = data
        self._trainers: dict[tuple[int, str, str], KerasTrainer] = {}
        self.masking = MaskingSessions()

    def trainer(self, image_size: int, model: ModelConfig, dp: DpSettings | None = None) -> KerasTrainer:
        """``dp`` at sample level trains with DP-SGD; at client level the server clips and noises the update."""
        if dp is not None and dp.level != "sample":
            dp = None
        key = (image_size, model.model_dump_json(), dp.model_dump_json() if dp else "")
        if key not in self._trainers:
            if len(self._trainers) >= MAX_TRAINERS:
                self._trainers.pop(next(iter(self._trainers)))
            settings = DpSgdSettings(dp.noise_multiplier, dp.clip_norm) if dp else None
            self._trainers[key] = KerasTrainer(image_size, model, dp=settings)
        return self._trainers[key]

    def run(self, task: SiteTask, weights: Weights) -> tuple[Weights | None, TaskResult]:
        """New weights to upload (train: the update; statistics: BatchNorm moments; under secure aggregation
        either one masked), and the result to post."""
        if not task.client_id.isdigit():
            raise TaskRefused("the task's client_id must be a number (it seeds local training)")
        if task.kind in ("advertise", "share", "unmask"):
            return None, TaskResult(num_examples=0, secagg=self.masking.step(task))
        if task.kind == "local" and task.settings.dp is not None:  # its training would escape the privacy ledger
            raise TaskRefused("a local baseline trains without differential privacy, and this task asks for it")
        settings = task.settings
        trainer = self.trainer(settings.image_size, _checked(settings), settings.dp)
        client = self.data.client_data(task.dataset, settings.image_size, task.client_id)
        startup = trainer.warm_up(settings.class_weight)
        if task.kind == "evaluate":
            evaluation = client_evaluation(trainer, client, weights)
            return None, TaskResult(num_examples=len(client.test), **_counts(evaluation))
        if task.kind == "local":  # only the counts leave: the local-only model stays here
            epochs = settings.local_epochs * (settings.rounds or 1)
            evaluation, fitted = local_only(
                trainer, client, weights, seed=settings.seed, epochs=epochs, class_weight=settings.class_weight
            )
            metrics = fitted | ({"startup.seconds": startup} if startup else {})
            return None, TaskResult(num_examples=len(client.train), metrics=metrics, **_counts(evaluation))
        if task.kind == "statistics":
            update = client_statistics(trainer, client, weights, rnd=task.round, seed=settings.seed)
        else:
            update = client_update(
                trainer,
                client,
                weights,
                rnd=task.round,
                seed=settings.seed,
                local_epochs=settings.local_epochs,
                class_weight=settings.class_weight,
            )
        metrics = dict(update.metrics) | ({"startup.seconds": startup} if startup else {})
        result = TaskResult(num_examples=update.num_examples, metrics=metrics)
        secure = settings.secagg
        if secure is None:
            return update.weights, result
        if task.kind == "statistics":
            vector, weight = moments_vector(update.weights), update.num_examples
        else:
            vector, weight = change_vector(
                update.weights, weights, update.num_examples, dp=settings.dp, sites=secure.sites or 1
            )
        return [self.masking.mask(task, vector, weight)], result
