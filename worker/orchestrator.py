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

from app.db import retrying, session_factory
from app.digest import file_sha256
from app.models import FlRound, Run, RunKind, RunStatus
from app.notify import notify
from app.run_config import RunConfig
from app.settings import Settings
from worker import explain, site_baselines, store
from worker.celery_executor import CeleryExecutor
from worker.context import RunContext, context_for
from worker.engine.checkpoint import ArtifactModified, Checkpoint, CheckpointDir, load_checkpoint, save_round_weights
from worker.engine.digest import weights_sha256
from worker.engine.executor import Executor
from worker.engine.experiment import INIT, derive_seed, presence_for
from worker.engine.loop import BudgetSpent, Cancelled, Evaluate, Newcomers, run_centralized, run_federated
from worker.engine.metrics import pooled_metrics
from worker.engine.protection import RunPrivacy, moments_pooling, strategy_with_privacy
from worker.engine.types import EvalMetrics, RoundResult, Weights
from worker.failures import user_message
from worker.site_executor import Signals, SiteExecutor, site_slots
from worker.site_secure import SecureSites

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
    if not retrying(sessions, lambda session: store.claim(session, run_id, me, settings.stale_after_s)):
        logger.info("run %s is not claimable (finished, or alive elsewhere); skipping", run_id)
        return "skipped"
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run is not None  # claim() just updated it
        kind, config = run.kind, run.experiment.config
        last = store.last_round(session, run_id)
    notify(settings, run_id)  # watchers see it running
    folder = settings.artifacts / "runs" / str(run_id)
    status, error, model_path, model_sha256, explains = RunStatus.FAILED, None, None, None, False
    note: str | None = None
    try:
        # The heartbeat starts with the claim: loading the data and importing TensorFlow can outlast stale_after_s,
        # and a run silent that long would be requeued, claimed by another worker and started over, again and again.
        with Watch(sessions, run_id, me, settings.heartbeat_s) as watch:
            started = time.perf_counter()
            ctx = context_for(RunConfig.model_validate(config), roots=settings.roots)
            if kind == RunKind.CENTRALIZED:  # it trains here: trace now, not inside epoch 1
                ctx.trainer.warm_up(ctx.federation.class_weight(ctx.config))
            startup_s = time.perf_counter() - started
            report = ctx.federation.report_dicts() or None
            retrying(sessions, lambda session: store.add_startup(session, run_id, me, startup_s, report))
            start = _resume_point(last)
            logger.info("run %s (%s) starts after round %d on %s", run_id, kind, last.number if last else 0, me)
            try:
                weights = _train(ctx, kind, run_id, folder, sessions, celery, watch, start, settings)
            except BudgetSpent as spent:
                if _final_round(sessions, run_id) == 0:
                    raise ValueError(f"{spent}; raise the target epsilon or the noise multiplier") from None
                weights, note = spent.weights, str(spent)
        model_path = str(folder / "model.keras")
        ctx.trainer.save(weights, Path(model_path))
        model_sha256 = file_sha256(Path(model_path))
        final_round = _final_round(sessions, run_id)
        explains = len(ctx.federation.test) > 0  # Grad-CAM needs images on the server: a common test set
        if explains:
            explain.announce(settings.artifacts, run_id, final_round)
        status = RunStatus.SUCCEEDED
    except Superseded:
        logger.warning("run %s was taken over by another worker; leaving it", run_id)
        return "superseded"
    except Cancelled:
        status = RunStatus.CANCELLED
    except ArtifactModified as exc:
        logger.error("run %s failed its integrity check: %s", run_id, exc)
        error = str(exc)
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        error = user_message(exc)
    retrying(
        sessions,
        lambda session: store.finish(
            session, run_id, me, status, error=error, note=note, model_path=model_path, model_sha256=model_sha256
        ),
    )
    notify(settings, run_id)
    shutil.rmtree(folder / "exchange", ignore_errors=True)
    logger.info("run %s %s", run_id, status)
    if status == RunStatus.SUCCEEDED and explains:  # after finish: done, whatever becomes of its gallery
        explain.compute(settings, ctx, run_id, final_round, weights)
    return str(status)


def _federated_evaluation(sites: SiteExecutor) -> Evaluate:
    def evaluate(_weights: Weights, threshold: float) -> EvalMetrics:
        counts = sites.pooled_test()
        if counts is None:
            raise RuntimeError("no site evaluated the global model this round; see the Sites page")
        return pooled_metrics(counts, threshold)

    return evaluate


def _resume_point(last: FlRound | None) -> Checkpoint | None:
    """The last stored round's checkpoint, refused if its bytes are not those recorded with the round."""
    if last is None:
        return None
    what = f"checkpoint of round {last.number}"
    return load_checkpoint(Path(last.checkpoint), sha256=last.checkpoint_sha256, what=what)


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

    def evaluate_on_server(weights: Weights, threshold: float) -> EvalMetrics:
        return trainer.evaluate(weights, federation.test, threshold)

    evaluate: Evaluate = evaluate_on_server

    def on_round(result: RoundResult, checkpoint: Checkpoint) -> None:
        digest = checkpoints.save(checkpoint)
        weights_file = save_round_weights(result.round, checkpoint.weights, folder / "weights")
        path, weights_digest = str(checkpoints.path(result.round)), weights_sha256(checkpoint.weights)
        spends = store.privacy_spends(run_id, cfg, result.round, result.privacy) if result.privacy else []
        stored = retrying(
            sessions,
            lambda session: store.save_round(
                session,
                run_id,
                result,
                path,
                weights_sha256=weights_digest,
                checkpoint_sha256=digest,
                weights_path=str(weights_file),
                spends=spends,
            ),
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
    executor: Executor
    newcomers: Newcomers | None = None
    sites: SiteExecutor | None = None
    if cfg.over_sites:
        with sessions() as session:
            slots = site_slots(session, cfg)
        executor = sites = SiteExecutor(
            sessions,
            run_id,
            cfg,
            slots,
            settings.artifacts,
            should_stop=watch.should_stop,
            offline_after_s=settings.site_offline_after_s,
            signals=Signals(settings, run_id),
        )
        samples, newcomers = sites.samples(), sites.newcomers
        if not len(federation.test):  # no server-held test set: federated evaluation on the sites' own test sets
            evaluate = _federated_evaluation(sites)
    else:
        samples = {c.client_id: len(c.train) for c in federation.clients}
        executor = CeleryExecutor(
            celery,
            run_id,
            folder / "exchange",
            sessions=sessions,
            samples=samples,
            should_stop=watch.should_stop,
            timeout_s=settings.client_timeout_s,
        )
    strategy = strategy_with_privacy(cfg, len(samples))
    secure = None
    if sites is not None and cfg.privacy.secure_aggregation is not None:
        secure = SecureSites(sites, cfg, trainer.batchnorm_slots)  # the agents mask; the server only unmasks sums
    weights = run_federated(
        cfg,
        executor,
        evaluate,
        initial=initial,
        strategy=strategy,
        privacy=RunPrivacy.for_run(cfg, samples, strategy),
        pool_moments=moments_pooling(strategy),
        secure=secure,
        newcomers=newcomers,
        presence=presence_for(cfg),
        samples=samples,
        batchnorm_slots=trainer.batchnorm_slots,
        on_round=on_round,
        start=start,
        should_stop=watch.should_stop,
    )
    if sites is not None and "local" in cfg.baselines:  # after the last round: it never delays a round
        site_baselines.collect(sessions, run_id, sites, initial)
        notify(settings, run_id)
    return weights
