"""Build experiments, runs and rounds by hand, the way the API and the worker store them."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import Experiment, Run, RunKind, RunStatus
from app.run_config import RunConfig
from worker.engine.types import ClientRound, ClientStatus, EvalMetrics, RocCurve, RoundPrivacy, RoundResult


def add_experiment(
    session: Session,
    *,
    name: str = "study",
    clients: int = 3,
    rounds: int = 3,
    events: Sequence[dict[str, int]] = (),
    created_at: datetime | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> Experiment:
    """``created_at`` defaults to now; tests that depend on an order set it, since a clock may not tell two apart.
    ``events`` is the join/leave schedule, as in the config (``{"client": 3, "joins": 2}``); ``privacy`` the
    config's privacy section."""
    federation = {"clients": clients, "rounds": rounds, "intermittent": {"events": list(events)}}
    config = RunConfig.model_validate({"name": name, "federation": federation, "privacy": privacy or {}})
    experiment = Experiment(name=name, config=config.model_dump(mode="json"))
    if created_at is not None:
        experiment.created_at = created_at
    session.add(experiment)
    session.commit()
    return experiment


def add_run(
    session: Session,
    experiment: Experiment,
    *,
    kind: RunKind = RunKind.FEDERATED,
    status: RunStatus = RunStatus.SUCCEEDED,
    total_rounds: int = 3,
    heartbeat_at: datetime | None = None,
    created_at: datetime | None = None,
) -> Run:
    run = Run(
        experiment=experiment, kind=kind, status=status, seed=42, total_rounds=total_rounds, heartbeat_at=heartbeat_at
    )
    if created_at is not None:
        run.created_at = created_at
    session.add(run)
    session.commit()
    return run


def metrics(
    *, loss: float = 0.5, accuracy: float = 0.8, auc: float = 0.9, samples: int = 100, roc: RocCurve | None = None
) -> EvalMetrics:
    return EvalMetrics(
        loss=loss,
        accuracy=accuracy,
        auc=auc,
        sensitivity=0.7,
        specificity=0.6,
        precision=0.75,
        f1=0.72,
        samples=samples,
        roc=roc or RocCurve(fpr=[0.0, 0.25, 1.0], tpr=[0.0, 0.75, 1.0], thresholds=[1.0, 0.5, 0.0]),
    )


def round_result(
    number: int,
    *,
    evaluation: EvalMetrics | None = None,
    clients: Sequence[ClientRound] = (),
    wall_s: float = 10.0,
    train_s: float = 4.0,
    calibration_s: float = 1.0,
    aggregation_s: float = 0.5,
    evaluation_s: float = 2.0,
) -> RoundResult:
    return RoundResult(
        round=number,
        metrics=evaluation or metrics(),
        clients=list(clients),
        wall_s=wall_s,
        train_s=train_s,
        calibration_s=calibration_s,
        aggregation_s=aggregation_s,
        evaluation_s=evaluation_s,
        bytes_sent=1000 * number,
        bytes_received=2000 * number,
    )


def dp_round(number: int, epsilon: float, per_client: Mapping[str, float] | None = None, **kw: Any) -> RoundResult:
    """A round of a differentially private run: its epsilon so far at delta 1e-5, and each site's at sample level."""
    privacy = RoundPrivacy(epsilon, 1e-5, noise_multiplier=1.1, clip_norm=1.0, per_client=per_client or {})
    return dataclasses.replace(round_result(number, **kw), privacy=privacy)


def trained(client_id: str, *, samples: int = 50, loss: float = 0.4) -> ClientRound:
    return ClientRound(client_id, ClientStatus.TRAINED, samples, metrics={"train.loss": loss})


def new_id() -> str:
    return str(uuid.uuid4())
