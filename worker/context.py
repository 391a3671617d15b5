"""Per-process caches for workers: a run's config, its prepared data and one trainer per model shape."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

from app.db import session_factory
from app.models import Run
from app.run_config import ModelConfig, RunConfig
from app.settings import get_settings
from worker.engine.client import KerasTrainer
from worker.engine.data import Roots
from worker.engine.experiment import ClientData, Federation, prepare
from worker.engine.privacy.dpsgd import DpSgdSettings
from worker.engine.protection import dp_sgd_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    config: RunConfig
    federation: Federation
    trainer: KerasTrainer

    def client(self, client_id: str) -> ClientData:
        return next(c for c in self.federation.clients if c.client_id == client_id)


@lru_cache(maxsize=2)
def _prepared(config_json: str, roots: Roots) -> Federation:
    federation = prepare(RunConfig.model_validate_json(config_json), roots)
    for line in federation.report_lines():
        logger.info("%s", line)
    return federation


@lru_cache(maxsize=4)
def _trainer(image_size: int, model_json: str, dp: DpSgdSettings | None) -> KerasTrainer:
    return KerasTrainer(image_size, ModelConfig.model_validate_json(model_json), dp=dp)


def config_of(run_id: uuid.UUID) -> RunConfig:
    with session_factory(get_settings())() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        return RunConfig.model_validate(run.experiment.config)


@lru_cache(maxsize=8)
def run_context(run_id: uuid.UUID) -> RunContext:
    """Everything a task of this run needs; built once per worker process (data loading, model tracing), reading
    data only under the data roots."""
    return context_for(config_of(run_id), roots=get_settings().roots)


_started: set[uuid.UUID] = set()


def warm_run_context(run_id: uuid.UUID) -> tuple[RunContext, float]:
    """The run's context with its model traced, and the seconds that took on this process's first task of the
    run (loading data, building and tracing the model: the worker's start-up); 0 on later tasks."""
    started = time.perf_counter()
    ctx = run_context(run_id)
    ctx.trainer.warm_up(ctx.federation.class_weight(ctx.config))
    if run_id in _started:
        return ctx, 0.0
    _started.add(run_id)
    return ctx, time.perf_counter() - started


def context_for(cfg: RunConfig, *, roots: Roots) -> RunContext:
    """``roots``: the folders the data may be read from (the service's data roots); None reads anything."""
    config_json = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    model_json = json.dumps(cfg.model.model_dump(mode="json"), sort_keys=True)
    return RunContext(
        cfg, _prepared(config_json, roots), _trainer(cfg.data.image_size, model_json, dp_sgd_settings(cfg))
    )
