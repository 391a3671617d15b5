"""Run an experiment in this process and keep its rounds, checkpoints and results in a folder."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from app.run_config import RunConfig
from worker.engine.checkpoint import Checkpoint, CheckpointDir
from worker.engine.client import KerasTrainer
from worker.engine.data import Dataset
from worker.engine.executor import InProcessExecutor
from worker.engine.experiment import INIT, derive_seed, prepare, presence_for
from worker.engine.gallery import write_gallery
from worker.engine.loop import BudgetSpent, run_centralized, run_federated
from worker.engine.protection import RunPrivacy, dp_sgd_settings, moments_pooling, strategy_with_privacy
from worker.engine.types import EvalMetrics, RoundResult, Weights
from worker.report import Record, phase_summary, round_record, time_reduction

Progress = Callable[[str, RoundResult], None]

logger = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """The output folder holds a different experiment."""


class PhaseLog:
    """``DIR/<phase>/rounds.jsonl`` plus checkpoints: a round counts once its line is written."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rounds_file = folder / "rounds.jsonl"
        self.checkpoints = CheckpointDir(folder / "checkpoints")
        self._torn_line_checked = False

    def records(self) -> list[Record]:
        """Complete lines only: a line torn by a killed process is ignored and that round redone."""
        if not self.rounds_file.exists():
            return []
        records = []
        for line in self.rounds_file.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                records.append(json.loads(line))
        return records

    def resume_point(self) -> Checkpoint | None:
        records = self.records()
        if not records:
            return None
        return self.checkpoints.load(records[-1]["round"])

    def append(self, result: RoundResult, checkpoint: Checkpoint) -> None:
        """Checkpoint first, then the record: a crash between them redoes the round, never skips it."""
        self.checkpoints.save(checkpoint)
        if not self._torn_line_checked:  # only a process killed before this one can have left a torn line
            self._truncate_torn_line()
            self._torn_line_checked = True
        with open(self.rounds_file, "a") as file:
            file.write(json.dumps(round_record(result)) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def _truncate_torn_line(self) -> None:
        if self.rounds_file.exists():
            text = self.rounds_file.read_text()
            if text and not text.endswith("\n"):
                self.rounds_file.write_text(text[: text.rfind("\n") + 1])


def _claim_folder(output: Path, cfg: RunConfig, fresh: bool) -> None:
    config_file = output / "config.json"
    wanted = cfg.model_dump(mode="json")
    if config_file.exists() and not fresh:
        if json.loads(config_file.read_text()) != wanted:
            raise RunFolderError(f"{output} holds a different experiment; choose another folder or pass --fresh")
        return
    if fresh:
        for phase in ("federated", "centralized"):
            log = PhaseLog(output / phase)
            log.rounds_file.unlink(missing_ok=True)
            for rnd in log.checkpoints.rounds():
                log.checkpoints.path(rnd).unlink()
    output.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(wanted, indent=2))


def _persist(phase: str, log: PhaseLog, progress: Progress) -> Callable[[RoundResult, Checkpoint], None]:
    def on_round(result: RoundResult, checkpoint: Checkpoint) -> None:
        log.append(result, checkpoint)
        progress(phase, result)

    return on_round


def run_local(
    cfg: RunConfig,
    output: Path,
    *,
    progress: Progress = lambda phase, result: None,
    notice: Callable[[str], None] = logger.info,
    fresh: bool = False,
) -> Record:
    """Federated run, then the centralized baseline, resuming both after their last completed round.

    ``notice`` receives what the data loaders saw (counts per class, sizes, skipped files) before training.
    """
    _claim_folder(output, cfg, fresh)
    started = time.perf_counter()
    federation = prepare(cfg)
    for line in federation.report_lines():
        notice(line)
    trainer = KerasTrainer(cfg.data.image_size, cfg.model, dp=dp_sgd_settings(cfg))
    trainer.warm_up(federation.class_weight(cfg))
    # One-off costs (data, model, tracing), paid once in this process and shared by both phases; a standalone
    # run of either would pay them too, so both report them, outside their rounds' times.
    startup_s = time.perf_counter() - started
    initial = trainer.initial_weights(derive_seed(cfg.seed, INIT))

    def evaluate(weights: Weights, threshold: float) -> EvalMetrics:
        return trainer.evaluate(weights, federation.test, threshold)

    fed_log = PhaseLog(output / "federated")
    clients = {c.client_id: c for c in federation.clients}
    samples = {cid: len(c.train) for cid, c in clients.items()}
    strategy = strategy_with_privacy(cfg, len(samples))
    stopped = None
    try:
        final = run_federated(
            cfg,
            InProcessExecutor(
                trainer,
                clients,
                seed=cfg.seed,
                local_epochs=cfg.federation.local_epochs,
                class_weight=federation.class_weight(cfg),
            ),
            evaluate,
            initial=initial,
            strategy=strategy,
            privacy=RunPrivacy.for_run(cfg, samples, strategy),
            pool_moments=moments_pooling(strategy),
            presence=presence_for(cfg),
            samples=samples,
            batchnorm_slots=trainer.batchnorm_slots,
            on_round=_persist("federated", fed_log, progress),
            start=fed_log.resume_point(),
        )
    except BudgetSpent as spent:
        if not fed_log.records():
            raise ValueError(f"{spent}; raise the target epsilon or the noise multiplier") from None
        final, stopped = spent.weights, str(spent)
        notice(stopped)
    trainer.save(final, output / "federated.keras")
    results: Record = {
        "name": cfg.name,
        "config": cfg.model_dump(mode="json"),
        "data": federation.report_dicts(),
        "federated": phase_summary(fed_log.records()) | {"startup_s": startup_s, "stopped": stopped},
        "centralized": None,
    }
    if cfg.centralized.enabled:
        central_log = PhaseLog(output / "centralized")
        central_final = run_centralized(
            cfg,
            trainer,
            federation.central_train(),
            evaluate,
            validation=federation.central_validation(),
            class_weight=federation.class_weight(cfg),
            initial=initial,
            on_round=_persist("centralized", central_log, progress),
            start=central_log.resume_point(),
        )
        results["centralized"] = phase_summary(central_log.records()) | {"startup_s": startup_s}
        results["time_reduction"] = time_reduction(
            results["federated"]["critical_path_s"], results["centralized"]["wall_time_s"]
        )
    (output / "results.json").write_text(json.dumps(results, indent=1))
    _gallery(trainer, final, federation.test, fed_log, cfg.seed)
    if cfg.centralized.enabled:
        _gallery(trainer, central_final, federation.test, central_log, cfg.seed)
    return results


def _gallery(trainer: KerasTrainer, weights: Weights, test: Dataset, log: PhaseLog, seed: int) -> None:
    """Grad-CAM of the phase's final model in ``<phase>/gradcam/``: PNGs and ``round-NNNN.json``, its TP/TN/FP/FN
    taken at the final round's operating threshold."""
    last = log.records()[-1]
    threshold = last["metrics"].get("threshold", 0.5)
    write_gallery(trainer, weights, test, log.folder / "gradcam", rnd=last["round"], seed=seed, threshold=threshold)
