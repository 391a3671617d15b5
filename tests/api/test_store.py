"""The worker's writes on the real PostgreSQL: claims, idempotent rounds, and which client tasks may still run."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import FlRound, RoundMetric, RunStatus, utcnow
from tests.api.factories import add_experiment, add_run, round_result, trained
from worker import store


def test_a_queued_run_is_claimed_once(session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.QUEUED)

    assert store.claim(session, run.id, "worker-a", stale_after_s=60)
    assert not store.claim(session, run.id, "worker-b", stale_after_s=60)
    session.refresh(run)
    assert (run.status, run.worker) == (RunStatus.RUNNING, "worker-a")


def test_a_running_run_whose_heartbeat_went_stale_is_taken_over(session: Session) -> None:
    silent = utcnow() - timedelta(seconds=120)
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING, heartbeat_at=silent)

    assert store.claim(session, run.id, "worker-b", stale_after_s=60)
    assert not store.heartbeat(session, run.id, "worker-a"), "the first worker learns the run is no longer its"


def test_a_round_keeps_the_digest_of_its_checkpoint_weights(session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)

    store.save_round(session, run.id, round_result(1), "ckpt/1", weights_sha256="ab" * 32, checkpoint_sha256="cd" * 32)

    stored = session.get(FlRound, (run.id, 1))
    assert stored is not None
    assert (stored.checkpoint, stored.weights_sha256, stored.checkpoint_sha256) == ("ckpt/1", "ab" * 32, "cd" * 32)


def test_a_finished_run_keeps_the_digest_of_its_model_file(session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    run.worker = "worker-a"
    session.commit()

    store.finish(session, run.id, "worker-a", RunStatus.SUCCEEDED, model_path="m.keras", model_sha256="ef" * 32)

    session.refresh(run)
    assert (run.status, run.model_path, run.model_sha256) == (RunStatus.SUCCEEDED, "m.keras", "ef" * 32)


def test_a_round_stored_twice_is_counted_once(session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    result = round_result(1, clients=[trained("1"), trained("2")])

    assert store.save_round(session, run.id, result, "ckpt/1")
    assert not store.save_round(session, run.id, result, "ckpt/1")
    assert session.scalar(select(func.count()).select_from(FlRound).where(FlRound.run_id == run.id)) == 1
    metric_rows = select(func.count()).select_from(RoundMetric).where(RoundMetric.run_id == run.id)
    assert session.scalar(metric_rows) == len(result.metrics.scalars()) + 2  # global metrics + train.loss of two


def test_client_tasks_of_a_stored_round_or_a_cancelled_run_are_skipped(session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    assert store.client_task_gate(session, run.id, 1) is None

    store.save_round(session, run.id, round_result(1), "ckpt/1")
    assert store.client_task_gate(session, run.id, 1) == "stale"  # redelivered after a lost worker: nothing to do
    assert store.client_task_gate(session, run.id, 2) is None

    run.cancel_requested = True
    session.commit()
    assert store.client_task_gate(session, run.id, 2) == "cancelled"


def test_local_baselines_merge_per_site_in_client_order_and_a_resume_skips_those_that_succeeded(
    session: Session,
) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    late = {"client": "2", "site": "b", "dataset": "chest", "epochs": 4, "error": "site b did not answer"}
    trained_10 = {"client": "10", "site": "j", "dataset": "chest", "epochs": 4, "metrics": {"auc": 0.8}}
    trained_1 = {"client": "1", "site": "a", "dataset": "chest", "epochs": 4, "metrics": {"auc": 0.7}}

    store.save_local_baselines(session, run.id, [trained_10, late])
    assert store.local_baselines_done(session, run.id) == {"10"}
    store.save_local_baselines(session, run.id, [trained_1, late | {"error": None, "metrics": {"auc": 0.9}}])

    session.refresh(run)
    assert [row["client"] for row in run.local_baselines or []] == ["1", "2", "10"]  # "2" before "10"
    assert [row["metrics"]["auc"] for row in run.local_baselines or []] == [0.7, 0.9, 0.8]
    assert store.local_baselines_done(session, run.id) == {"1", "2", "10"}
