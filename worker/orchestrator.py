"""The life of a run on a worker: claim it, keep a heartbeat, resume after its last round, finish it."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.db import session_factory
from app.models import Run, RunKind, RunStatus
from app.notify import notify
from app.run_config import RunConfig
from app.settings import Settings
from worker import explain, store
from worker.celery_executor import CeleryExecutor
from worker.context import RunContext, context_for
from worker.engine.checkpoint import Checkpoint, CheckpointDir, load_checkpoint
from worker.engine.data import DataError
from worker.engine.digest import weights_sha256
from worker.engine.experiment import INIT, derive_seed, presence_for
from worker.engine.loop import Cancelled, run_centralized, run_federated
from worker.engine.strategy import strategy_for
from worker.engine.types import EvalMetrics, RoundResult, Weights

logger = logging.getLogger(__name__)
CANCEL_POLL_S = 1.0  # a cancel is seen within this; each wake-up takes CPU from training on small hosts


class Superseded(Exception):
    """Another worker claimed this run after ours went silent; stop without touching it."""


class Watch:
    """Background thread: heartbeat every ``heartbeat_s``, and a cancel check every ``CANCEL_POLL_S``."""

    def __init__(self, sessions: sessionmaker[Session], run_id: uuid.UUID, worker: str, heartbeat_s: float) -> None:
        self.sessions, self.run_id, self.worker, self.heartbeat_s = sessions, run_id, worker, heartbeat_s
        self.cancelled = threading.Event()
        self.superseded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"watch-{run_id}", daemon=True)

    def _loop(self) -> None:
        period = min(CANCEL_POLL_S, self.heartbeat_s)
        beats = max(1, round(self.heartbeat_s / period))
        tick = 0
        while not self._stop.wait(period):
            tick += 1
            try:
                with self.sessions() as session:
                    if store.cancel_requested(session, self.run_id):
                        self.cancelled.set()
                    if tick % beats == 0 and not store.heartbeat(session, self.run_id, self.worker):
                        self.superseded.set()
            except Exception:  # a database hiccup must not kill the watch; the next tick retries
                logger.exception("heartbeat of run %s failed", self.run_id)

    def should_stop(self) -> bool:
        if self.superseded.is_set():
            raise Superseded(f"run {self.run_id} was claimed by another worker")
        return self.cancelled.is_set()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execute_run(run_id: uuid.UUID, settings: Settings, celery: Celery) -> str:
    """Run (or resume) one run to its end; returns its final status, or 'skipped' if it is not ours."""
    sessions = session_factory(settings)
    me = worker_name()
    with sessions() as session:
        if not store.claim(session, run_id, me, settings.stale_after_s):
            logger.info("run %s is not claimable (finished, or alive elsewhere); skipping", run_id)
            return "skipped"
        run = session.get(Run, run_id)
        assert run is not None  # claim() just updated it
        kind, config = run.kind, run.experiment.config
        last = store.last_round(session, run_id)
    notify(settings, run_id)  # watchers see it running
    folder = settings.artifacts / "runs" / str(run_id)
    status, error, model_path = RunStatus.FAILED, None, None
    try:
        started = time.perf_counter()
        ctx = context_for(RunConfig.model_validate(config))
        if kind == RunKind.CENTRALIZED:  # it trains here: trace now, not inside epoch 1
            ctx.trainer.warm_up(ctx.federation.class_weight(ctx.config))
        with sessions() as session:
            store.add_startup(session, run_id, me, time.perf_counter() - started)
        start = load_checkpoint(Path(last.checkpoint)) if last else None
        logger.info("run %s (%s) starts after round %d on %s", run_id, kind, last.number if last else 0, me)
        with Watch(sessions, run_id, me, settings.heartbeat_s) as watch:
            weights = _train(ctx, kind, run_id, folder, sessions, celery, watch, start, settings)
        model_path = str(folder / "model.keras")
        ctx.trainer.save(weights, Path(model_path))
        final_round = _final_round(sessions, run_id)
        explain.announce(settings.artifacts, run_id, final_round)
        status = RunStatus.SUCCEEDED
    except Superseded:
        logger.warning("run %s was taken over by another worker; leaving it", run_id)
        return "superseded"
    except Cancelled:
        status = RunStatus.CANCELLED
    except DataError as exc:
        error = f"data error in {exc.field}: {exc}" if exc.field else f"data error: {exc}"
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        error = f"{type(exc).__name__}: {exc}"
    with sessions() as session:
        store.finish(session, run_id, me, status, error=error, model_path=model_path)
    notify(settings, run_id)
    shutil.rmtree(folder / "exchange", ignore_errors=True)
    logger.info("run %s %s", run_id, status)
    if status == RunStatus.SUCCEEDED:  # after finish: the run is done, whatever becomes of its gallery
        explain.compute(settings, ctx, run_id, final_round, weights)
    return str(status)


def _final_round(sessions: sessionmaker[Session], run_id: uuid.UUID) -> int:
    with sessions() as session:
        last = store.last_round(session, run_id)
    return last.number if last else 0


def _train(
    ctx: RunContext,
    kind: RunKind,
    run_id: uuid.UUID,
    folder: Path,
    sessions: sessionmaker[Session],
    celery: Celery,
    watch: Watch,
    start: Checkpoint | None,
    settings: Settings,
) -> Weights:
    cfg, trainer, federation = ctx.config, ctx.trainer, ctx.federation
    checkpoints = CheckpointDir(folder / "checkpoints", keep=3)

    def evaluate(weights: Weights, threshold: float) -> EvalMetrics:
        return trainer.evaluate(weights, federation.test, threshold)

    def on_round(result: RoundResult, checkpoint: Checkpoint) -> None:
        checkpoints.save(checkpoint)
        with sessions() as session:
            stored = store.save_round(
                session,
                run_id,
                result,
                str(checkpoints.path(result.round)),
                weights_sha256=weights_sha256(checkpoint.weights),
            )
        notify(settings, run_id)
        shutil.rmtree(folder / "exchange" / f"round-{result.round:04d}", ignore_errors=True)
        logger.info(
            "run %s round %d %s: auc %.3f",
            run_id,
            result.round,
            "stored" if stored else "already stored",
            result.metrics.auc,
        )

    initial = trainer.initial_weights(derive_seed(cfg.seed, INIT))
    if kind == RunKind.CENTRALIZED:
        return run_centralized(
            cfg,
            trainer,
            federation.central_train(),
            evaluate,
            validation=federation.central_validation(),
            class_weight=federation.class_weight(cfg),
            initial=initial,
            on_round=on_round,
            start=start,
            should_stop=watch.should_stop,
        )
    executor = CeleryExecutor(
        celery, run_id, folder / "exchange", should_stop=watch.should_stop, timeout_s=settings.client_timeout_s
    )
    return run_federated(
        cfg,
        executor,
        evaluate,
        initial=initial,
        strategy=strategy_for(cfg.federation.intermittent.approach),
        presence=presence_for(cfg),
        samples={c.client_id: len(c.train) for c in federation.clients},
        batchnorm_slots=trainer.batchnorm_slots,
        on_round=on_round,
        start=start,
        should_stop=watch.should_stop,
    )
