"""Persist runs and rounds for the worker: claims, heartbeats, one transaction per completed round."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import GLOBAL, ClientRound, FlRound, PrivacySpend, RoundMetric, Run, RunStatus, utcnow
from app.run_config import RunConfig
from worker.engine.types import RoundPrivacy, RoundResult


def claim(session: Session, run_id: uuid.UUID, worker: str, stale_after_s: float) -> bool:
    """Take the run if it is queued, or running with a stale heartbeat (its worker died); else it is someone's."""
    now = utcnow()
    taken = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .where(
            (Run.status == RunStatus.QUEUED)
            | ((Run.status == RunStatus.RUNNING) & (Run.heartbeat_at < now - timedelta(seconds=stale_after_s)))
        )
        .values(status=RunStatus.RUNNING, worker=worker, heartbeat_at=now, error=None)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(update(Run).where(Run.id == run_id, Run.started_at.is_(None)).values(started_at=now))
    session.commit()
    return bool(taken)


def heartbeat(session: Session, run_id: uuid.UUID, worker: str) -> bool:
    """Refresh the heartbeat; False when the run is no longer this worker's (requeued and claimed elsewhere)."""
    alive = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.worker == worker, Run.status == RunStatus.RUNNING)
        .values(heartbeat_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(alive)


def cancel_requested(session: Session, run_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def client_task_gate(session: Session, run_id: uuid.UUID, rnd: int) -> str | None:
    """Why a client task of round ``rnd`` should not run: "cancelled", "stale" (the round is stored), or None."""
    row = session.execute(select(Run.cancel_requested, Run.current_round).where(Run.id == run_id)).first()
    if row is None or row.cancel_requested:
        return "cancelled"
    return "stale" if row.current_round >= rnd else None


def last_round(session: Session, run_id: uuid.UUID) -> FlRound | None:
    return session.scalars(
        select(FlRound).where(FlRound.run_id == run_id).order_by(FlRound.number.desc()).limit(1)
    ).first()


def _metric(run_id: uuid.UUID, rnd: int, client: str, key: str, value: float) -> RoundMetric:
    nan = math.isnan(value)
    return RoundMetric(run_id=run_id, round=rnd, client_id=client, key=key, value=0.0 if nan else value, is_nan=nan)


def save_round(
    session: Session,
    run_id: uuid.UUID,
    result: RoundResult,
    checkpoint: str,
    *,
    weights_sha256: str | None = None,
    checkpoint_sha256: str | None = None,
    weights_path: str | None = None,
    spends: Sequence[PrivacySpend] = (),
) -> bool:
    """Store a round with its client statuses and metrics in one transaction; ``weights_sha256`` is the
    digest of the global weights its checkpoint holds (the weights the next round starts from),
    ``checkpoint_sha256`` that of the checkpoint file's bytes (what a resume verifies); ``weights_path`` the file of
    those weights alone, kept for the run's life (what a Grad-CAM of an old round reads). ``spends`` (see
    ``privacy_spends``) overwrite the run's rows of the hospitals' ledger in the same transaction, so the ledger
    never lags a stored round.

    Returns False if the round was already stored: a redelivered or repeated write is a no-op,
    so a completed round is never lost and never counted twice.
    """
    rnd = result.round
    session.add(
        FlRound(
            run_id=run_id,
            number=rnd,
            wall_s=result.wall_s,
            train_s=result.train_s,
            calibration_s=result.calibration_s,
            aggregation_s=result.aggregation_s,
            evaluation_s=result.evaluation_s,
            startup_s=result.startup_s,
            bytes_sent=result.bytes_sent,
            bytes_received=result.bytes_received,
            test_samples=result.metrics.samples,
            roc={"fpr": result.metrics.roc.fpr, "tpr": result.metrics.roc.tpr},
            checkpoint=checkpoint,
            weights_sha256=weights_sha256,
            checkpoint_sha256=checkpoint_sha256,
            weights_path=weights_path,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return False
    rows: list[ClientRound | RoundMetric] = [
        _metric(run_id, rnd, GLOBAL, f"test.{key}", value) for key, value in result.metrics.scalars().items()
    ]
    if result.privacy:
        rows += [_metric(run_id, rnd, GLOBAL, key, value) for key, value in result.privacy.scalars().items()]
        rows += [_metric(run_id, rnd, cid, "privacy.epsilon", eps) for cid, eps in result.privacy.per_client.items()]
    for c in result.clients:
        rows.append(
            ClientRound(
                run_id=run_id,
                round=rnd,
                client_id=c.client_id,
                status=str(c.status),
                event=str(c.event) if c.event else None,
                samples=c.samples,
                error=c.error,
                roc={"fpr": c.roc.fpr, "tpr": c.roc.tpr} if c.roc else None,
            )
        )
        rows += [_metric(run_id, rnd, c.client_id, key, value) for key, value in c.metrics.items()]
    session.add_all(rows)
    for spend in spends:
        session.merge(spend)
    session.execute(update(Run).where(Run.id == run_id).values(current_round=rnd, heartbeat_at=utcnow()))
    session.commit()
    return True


def privacy_spends(run_id: uuid.UUID, cfg: RunConfig, rnd: int, privacy: RoundPrivacy) -> list[PrivacySpend]:
    """Each site's epsilon so far in this run, as rows of the hospitals' ledger (app.models.PrivacySpend); at client
    level every site has spent the run's epsilon."""
    level = cfg.privacy.dp.level if cfg.privacy.dp else "client"
    return [
        PrivacySpend(
            run_id=run_id,
            site=ref.site,
            dataset=ref.dataset,
            experiment=cfg.name,
            level=level,
            epsilon=privacy.per_client.get(str(i), privacy.epsilon),
            delta=privacy.delta,
            rounds=rnd,
            updated_at=utcnow(),
        )
        for i, ref in enumerate(cfg.federation.sites, start=1)
    ]


def local_baselines_done(session: Session, run_id: uuid.UUID) -> set[str]:
    """The client ids whose local baseline is stored without an error: a resumed run does not train them again."""
    stored = session.scalar(select(Run.local_baselines).where(Run.id == run_id)) or []
    return {row["client"] for row in stored if not row.get("error")}


def save_local_baselines(session: Session, run_id: uuid.UUID, rows: Sequence[dict[str, Any]]) -> None:
    """Merge sites' local baselines into the run's, one per client (a new row replaces that client's), in client
    order."""
    run = session.get(Run, run_id, with_for_update=True)
    if run is None:
        return
    merged = {row["client"]: row for row in [*(run.local_baselines or []), *rows]}
    run.local_baselines = [merged[cid] for cid in sorted(merged, key=int)]
    session.commit()


def add_startup(
    session: Session, run_id: uuid.UUID, worker: str, seconds: float, data_report: dict[str, Any] | None
) -> None:
    """Count a claim's start-up (data, model, tracing) to the run (a resume pays it again, so it adds up) and keep
    what the data loaders saw, so that a skipped file is on record with the run, not only in a worker's log."""
    values = {"startup_s": Run.startup_s + seconds, "data_report": data_report}
    session.execute(update(Run).where(Run.id == run_id, Run.worker == worker).values(**values))
    session.commit()


def finish(
    session: Session,
    run_id: uuid.UUID,
    worker: str,
    status: RunStatus,
    *,
    error: str | None = None,
    note: str | None = None,
    model_path: str | None = None,
    model_sha256: str | None = None,
) -> None:
    """Final status, only while the run is still this worker's; the model is recorded with its file's SHA-256.
    ``note`` says why a run that succeeded stopped before its last round."""
    values: dict[str, object] = {"status": status, "finished_at": utcnow(), "error": error, "note": note}
    if model_path:
        values |= {"model_path": model_path, "model_sha256": model_sha256}
    session.execute(
        update(Run).where(Run.id == run_id, Run.worker == worker, Run.status == RunStatus.RUNNING).values(**values)
    )
    session.commit()
