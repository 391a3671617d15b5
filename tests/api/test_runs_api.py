"""REST API of runs: cancel/resume transitions, rounds as the worker stores them, ROC, CSV and model download."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import ClientRound, FlRound, RoundMetric, Run, RunKind, RunStatus, utcnow
from tests.api.conftest import STALE_AFTER_S
from tests.api.factories import add_experiment, add_run, metrics, new_id, round_result, trained
from worker.engine.types import ClientEvent, ClientStatus, RocCurve
from worker.engine.types import ClientRound as EngineClient
from worker.store import save_round


def queued_run_ids(broker: redis.Redis, queue: str) -> list[str]:
    return [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in broker.lrange(queue, 0, -1)]


def counts(session: Session, run_id: uuid.UUID) -> list[int]:
    """Rows in fl_round, client_round and round_metric for this run."""
    tables = (FlRound, ClientRound, RoundMetric)
    return [session.scalar(select(func.count()).select_from(t).where(t.run_id == run_id)) or 0 for t in tables]


def three_client_rounds(session: Session, run: Run) -> None:
    """Round 1: clients 1 and 2 train, 3 has not joined; round 2: 2 is kept, 3 joins; round 3: all train."""
    save_round(
        session,
        run.id,
        round_result(
            1,
            evaluation=metrics(loss=0.6, accuracy=0.7, auc=0.75),
            clients=[trained("1", loss=0.9), trained("2", loss=0.8), EngineClient("3", ClientStatus.ABSENT, 0)],
        ),
        "ckpt/1",
    )
    save_round(
        session,
        run.id,
        round_result(
            2,
            evaluation=metrics(loss=0.5, accuracy=0.8, auc=0.85),
            clients=[
                trained("1", loss=0.7),
                EngineClient("2", ClientStatus.KEPT, 40),
                EngineClient("3", ClientStatus.TRAINED, 30, ClientEvent.JOINED, {"train.loss": 1.1}),
            ],
        ),
        "ckpt/2",
    )
    save_round(session, run.id, round_result(3, clients=[trained("1"), trained("2"), trained("3")]), "ckpt/3")


# --- cancel and resume ------------------------------------------------------------------------------------------


def test_cancelling_a_queued_run_cancels_it_at_once(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.QUEUED, heartbeat_at=utcnow())

    body = client.post(f"/api/runs/{run.id}/cancel").json()

    assert (body["status"], body["cancel_requested"]) == ("cancelled", True)
    assert body["finished_at"] is not None


def test_cancelling_a_live_running_run_only_asks_it_to_stop(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING, heartbeat_at=utcnow())

    body = client.post(f"/api/runs/{run.id}/cancel").json()

    assert (body["status"], body["cancel_requested"], body["finished_at"]) == ("running", True, None)


def test_cancelling_a_running_run_with_a_stale_heartbeat_cancels_it_at_once(
    client: TestClient, session: Session
) -> None:
    silent_since = utcnow() - timedelta(seconds=2 * STALE_AFTER_S)
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING, heartbeat_at=silent_since)

    assert client.post(f"/api/runs/{run.id}/cancel").json()["status"] == "cancelled"


def test_cancelling_a_finished_run_is_409_naming_its_status(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.SUCCEEDED)

    response = client.post(f"/api/runs/{run.id}/cancel")

    assert response.status_code == 409
    assert f"run {run.id} is already succeeded" in response.json()["detail"]


def test_resuming_a_cancelled_run_queues_it_again_on_its_queue(
    client: TestClient, session: Session, broker: redis.Redis
) -> None:
    experiment = add_experiment(session)
    federated = add_run(session, experiment, status=RunStatus.CANCELLED)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED, status=RunStatus.FAILED)
    federated.cancel_requested, federated.finished_at, central.error = True, utcnow(), "boom"
    session.commit()

    bodies = [client.post(f"/api/runs/{run.id}/resume").json() for run in (federated, central)]

    for body in bodies:
        assert (body["status"], body["cancel_requested"], body["error"], body["finished_at"]) == (
            "queued",
            False,
            None,
            None,
        )
    assert queued_run_ids(broker, "runs") == [str(federated.id)]
    assert queued_run_ids(broker, "train") == [str(central.id)]


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.SUCCEEDED])
def test_resuming_a_run_that_is_not_failed_or_cancelled_is_409(
    client: TestClient, session: Session, broker: redis.Redis, status: RunStatus
) -> None:
    run = add_run(session, add_experiment(session), status=status)

    response = client.post(f"/api/runs/{run.id}/resume")

    assert response.status_code == 409
    assert f"is {status}; only failed or cancelled runs can be resumed" in response.json()["detail"]
    assert broker.llen("runs") == 0


# --- rounds -----------------------------------------------------------------------------------------------------


def test_rounds_return_global_metrics_timings_and_client_participation(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))
    three_client_rounds(session, run)

    body = client.get(f"/api/runs/{run.id}/rounds").json()

    assert body["run"]["current_round"] == 3
    assert [r["number"] for r in body["rounds"]] == [1, 2, 3]
    first, second = body["rounds"][0], body["rounds"][1]
    assert first["metrics"] == {
        "test.loss": 0.6,
        "test.accuracy": 0.7,
        "test.auc": 0.75,
        "test.sensitivity": 0.7,
        "test.specificity": 0.6,
        "test.precision": 0.75,
        "test.f1": 0.72,
        "test.threshold": 0.5,
    }
    assert second["metrics"]["test.auc"] == 0.85
    assert (first["wall_s"], first["critical_path_s"]) == (10.0, 4.0 + 1.0 + 0.5 + 2.0)
    assert (second["bytes_sent"], second["bytes_received"], second["test_samples"]) == (2000, 4000, 100)
    present = {"event": None, "presence": "present", "error": None}
    assert first["clients"] == [
        {"id": "1", "status": "trained", "samples": 50, "metrics": {"train.loss": 0.9}} | present,
        {"id": "2", "status": "trained", "samples": 50, "metrics": {"train.loss": 0.8}} | present,
        {"id": "3", "status": "absent", "samples": 0, "metrics": {}} | present,
    ]
    assert [(c["id"], c["status"], c["event"], c["samples"]) for c in second["clients"]] == [
        ("1", "trained", None, 50),
        ("2", "kept", None, 40),
        ("3", "trained", "joined", 30),
    ]
    assert second["clients"][2]["metrics"] == {"train.loss": 1.1}


def test_rounds_tell_not_joined_left_and_not_answering_clients_apart(client: TestClient, session: Session) -> None:
    """Client 3 joins at round 3 and client 2 leaves at round 3 (first round gone); client 1 is always a member."""
    events = [{"client": 3, "joins": 3}, {"client": 2, "leaves": 3}]
    run = add_run(session, add_experiment(session, rounds=4, events=events), total_rounds=4)
    absent = ClientStatus.ABSENT
    statuses = {  # round: (client 1, client 2, client 3)
        1: (ClientStatus.TRAINED, ClientStatus.TRAINED, absent),
        2: (absent, ClientStatus.TRAINED, absent),
        3: (ClientStatus.TRAINED, absent, absent),
        4: (ClientStatus.TRAINED, ClientStatus.KEPT, ClientStatus.TRAINED),
    }
    for number, row in statuses.items():
        clients = [EngineClient(str(i), status, 10) for i, status in enumerate(row, start=1)]
        save_round(session, run.id, round_result(number, clients=clients), f"ckpt/{number}")

    rounds = client.get(f"/api/runs/{run.id}/rounds").json()["rounds"]

    got = [[(c["status"], c["presence"]) for c in r["clients"]] for r in rounds]
    assert got == [
        [("trained", "present"), ("trained", "present"), ("absent", "not-joined")],
        [("absent", "present"), ("trained", "present"), ("absent", "not-joined")],
        [("trained", "present"), ("absent", "left"), ("absent", "present")],
        [("trained", "present"), ("kept", "left"), ("trained", "present")],
    ]
    later = client.get(f"/api/runs/{run.id}/rounds", params={"since": 2}).json()["rounds"]
    assert [c["presence"] for c in later[0]["clients"]] == ["present", "left", "present"]


def test_rounds_since_returns_only_later_rounds(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))
    three_client_rounds(session, run)

    after_one = client.get(f"/api/runs/{run.id}/rounds", params={"since": 1}).json()["rounds"]
    after_three = client.get(f"/api/runs/{run.id}/rounds", params={"since": 3}).json()["rounds"]

    assert [r["number"] for r in after_one] == [2, 3]
    assert [c["id"] for c in after_one[0]["clients"]] == ["1", "2", "3"]
    assert after_three == []


def test_clients_are_listed_in_numeric_order(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session, clients=10))
    shuffled = ["10", "3", "1", "7", "2", "9", "5", "8", "4", "6"]
    save_round(session, run.id, round_result(1, clients=[trained(c) for c in shuffled]), "ckpt/1")

    clients = client.get(f"/api/runs/{run.id}/rounds").json()["rounds"][0]["clients"]

    assert [c["id"] for c in clients] == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]


def test_saving_a_round_twice_stores_it_once(session: Session) -> None:
    run = add_run(session, add_experiment(session))
    result = round_result(1, clients=[trained("1"), trained("2")])

    first = save_round(session, run.id, result, "ckpt/1")
    stored = counts(session, run.id)
    again = save_round(session, run.id, result, "ckpt/1")

    assert (first, again) == (True, False)
    # 1 round; 2 client rows; 8 global metrics (the threshold too) + one train.loss per client
    assert stored == [1, 2, 8 + 2]
    assert counts(session, run.id) == stored


def test_nan_metrics_are_flagged_in_the_database_and_returned_as_null(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))
    nan_client = EngineClient("1", ClientStatus.TRAINED, 50, metrics={"train.loss": math.nan})
    save_round(session, run.id, round_result(1, evaluation=metrics(auc=math.nan), clients=[nan_client]), "ckpt/1")

    flagged = session.scalars(select(RoundMetric).where(RoundMetric.run_id == run.id, RoundMetric.is_nan)).all()
    body = client.get(f"/api/runs/{run.id}/rounds").json()["rounds"][0]

    assert sorted((m.client_id, m.key, m.value) for m in flagged) == [("", "test.auc", 0.0), ("1", "train.loss", 0.0)]
    assert body["metrics"]["test.auc"] is None
    assert body["metrics"]["test.loss"] == 0.5
    assert body["clients"][0]["metrics"] == {"train.loss": None}


# --- ROC, CSV, model --------------------------------------------------------------------------------------------


def test_roc_defaults_to_the_last_round_and_can_pick_one(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))
    early = RocCurve(fpr=[0.0, 0.5, 1.0], tpr=[0.0, 0.5, 1.0], thresholds=[1.0, 0.5, 0.0])
    late = RocCurve(fpr=[0.0, 0.1, 1.0], tpr=[0.0, 0.9, 1.0], thresholds=[1.0, 0.5, 0.0])
    save_round(session, run.id, round_result(1, evaluation=metrics(auc=0.5, roc=early)), "ckpt/1")
    save_round(session, run.id, round_result(2, evaluation=metrics(auc=0.9, roc=late)), "ckpt/2")

    last = client.get(f"/api/runs/{run.id}/roc").json()
    first = client.get(f"/api/runs/{run.id}/roc", params={"round": 1}).json()

    assert last == {
        "run_id": str(run.id),
        "round": 2,
        "auc": 0.9,
        "fpr": [0.0, 0.1, 1.0],
        "tpr": [0.0, 0.9, 1.0],
        "clients": [],
    }
    assert (first["round"], first["auc"], first["fpr"], first["tpr"]) == (1, 0.5, [0.0, 0.5, 1.0], [0.0, 0.5, 1.0])


def test_roc_carries_each_clients_curve_of_the_global_model_on_its_own_test_set(
    client: TestClient, session: Session
) -> None:
    run = add_run(session, add_experiment(session))
    own = RocCurve(fpr=[0.0, 0.25, 1.0], tpr=[0.0, 0.75, 1.0], thresholds=[])
    clients = [
        replace(trained("10"), metrics={"global.auc": 0.8125}, roc=own),
        replace(trained("2"), metrics={"global.auc": 0.75}, roc=RocCurve([0.0, 1.0], [0.0, 1.0], [])),
        EngineClient("3", ClientStatus.ABSENT, 0),  # did not evaluate: no curve
    ]
    save_round(session, run.id, round_result(1, clients=clients), "ckpt/1")

    body = client.get(f"/api/runs/{run.id}/roc").json()

    assert body["clients"] == [
        {"id": "2", "auc": 0.75, "fpr": [0.0, 1.0], "tpr": [0.0, 1.0]},
        {"id": "10", "auc": 0.8125, "fpr": [0.0, 0.25, 1.0], "tpr": [0.0, 0.75, 1.0]},
    ]


def test_roc_of_a_missing_round_is_404(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))
    no_rounds = client.get(f"/api/runs/{run.id}/roc")
    save_round(session, run.id, round_result(1), "ckpt/1")

    missing = client.get(f"/api/runs/{run.id}/roc", params={"round": 2})

    assert (no_rounds.status_code, missing.status_code) == (404, 404)
    assert missing.json()["detail"] == f"run {run.id} has no ROC curve for round 2"
    assert client.get(f"/api/runs/{new_id()}/roc").status_code == 404


def test_metrics_csv_has_one_row_per_round_client_and_metric(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))
    clients = [trained("1", samples=50, loss=0.25), EngineClient("2", ClientStatus.ABSENT, 0)]
    save_round(session, run.id, round_result(1, evaluation=metrics(auc=math.nan), clients=clients), "ckpt/1")

    response = client.get(f"/api/runs/{run.id}/metrics.csv")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="run-{run.id}-metrics.csv"'
    lines = response.text.splitlines()
    assert lines[0] == "round,client,status,metric,value"
    assert sorted(lines[1:]) == sorted(
        [
            "1,,,test.loss,0.5",
            "1,,,test.accuracy,0.8",
            "1,,,test.auc,",
            "1,,,test.sensitivity,0.7",
            "1,,,test.specificity,0.6",
            "1,,,test.precision,0.75",
            "1,,,test.f1,0.72",
            "1,,,test.threshold,0.5",
            "1,1,trained,samples,50",
            "1,1,trained,train.loss,0.25",
            "1,2,absent,samples,0",
        ]
    )


def test_model_is_404_until_the_run_has_a_model_file(client: TestClient, session: Session, tmp_path: Path) -> None:
    run = add_run(session, add_experiment(session))
    without = client.get(f"/api/runs/{run.id}/model")
    run.model_path = str(tmp_path / "gone.keras")
    session.commit()
    missing_file = client.get(f"/api/runs/{run.id}/model")

    assert (without.status_code, missing_file.status_code) == (404, 404)
    assert "has no final model yet (status succeeded)" in without.json()["detail"]


def test_model_downloads_the_file_the_run_points_to(client: TestClient, session: Session, tmp_path: Path) -> None:
    model = tmp_path / "final.keras"
    model.write_bytes(b"PK\x03\x04 not really a zip")
    run = add_run(session, add_experiment(session))
    run.model_path = str(model)
    run.model_sha256 = hashlib.sha256(b"PK\x03\x04 not really a zip").hexdigest()
    session.commit()

    response = client.get(f"/api/runs/{run.id}/model")

    assert response.status_code == 200
    assert response.content == b"PK\x03\x04 not really a zip"
    assert f'filename="fedlens-federated-{run.id}.keras"' in response.headers["content-disposition"]
    assert client.get(f"/api/runs/{run.id}").json()["has_model"] is True


def test_a_model_modified_after_it_was_written_is_not_served(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    model = tmp_path / "final.keras"
    model.write_bytes(b"PK\x03\x04 someone else's weights")
    run = add_run(session, add_experiment(session))
    run.model_path, run.model_sha256 = str(model), hashlib.sha256(b"PK\x03\x04 the weights trained").hexdigest()
    session.commit()

    response = client.get(f"/api/runs/{run.id}/model")

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"the final model of run {run.id} was modified after it was written; it is not served"
    }
