"""The study's Table 3 at /api/compare: final metrics, execution and parallel time, time reduction."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Run, RunKind
from tests.api.factories import add_experiment, add_run, dp_round, metrics, new_id, round_result
from worker.store import save_round


@pytest.fixture
def study(session: Session) -> tuple[Run, Run]:
    """A federated run of 2 rounds and its centralized baseline of 3 epochs, with hand-picked timings."""
    experiment = add_experiment(session, name="table3", clients=3)
    federated = add_run(session, experiment)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED)
    fed_rounds = [
        round_result(1, wall_s=10.0, train_s=4.0, calibration_s=1.0, aggregation_s=0.5, evaluation_s=2.0),
        round_result(
            2,
            evaluation=metrics(loss=0.3, accuracy=0.85, auc=0.93),
            wall_s=12.0,
            train_s=5.0,
            calibration_s=1.0,
            aggregation_s=0.5,
            evaluation_s=2.5,
        ),
    ]
    central_epochs = [
        round_result(1, wall_s=20.0),
        round_result(2, wall_s=22.0),
        round_result(3, evaluation=metrics(loss=0.25, accuracy=0.88, auc=0.95), wall_s=24.0),
    ]
    for result in fed_rounds:
        save_round(session, federated.id, result, "ckpt")
    for result in central_epochs:
        save_round(session, central.id, result, "ckpt")
    return federated, central


FED_WALL = 10.0 + 12.0
FED_PARALLEL = (4.0 + 1.0 + 0.5 + 2.0) + (5.0 + 1.0 + 0.5 + 2.5)
CENTRAL_WALL = 20.0 + 22.0 + 24.0


def test_compare_reports_final_metrics_times_and_time_reduction(client: TestClient, study: tuple[Run, Run]) -> None:
    federated, central = study

    response = client.get("/api/compare", params={"runs": f"{federated.id},{central.id}"})

    assert response.status_code == 200, response.text
    fed_row, central_row = response.json()
    assert fed_row["run_id"] == str(federated.id)
    assert (fed_row["experiment"], fed_row["kind"], fed_row["clients"]) == ("table3", "federated", 3)
    assert (fed_row["loss"], fed_row["accuracy"], fed_row["auc"], fed_row["rounds"]) == (0.3, 0.85, 0.93, 2)
    assert (fed_row["execution_time_s"], fed_row["parallel_time_s"]) == (FED_WALL, FED_PARALLEL)
    assert fed_row["centralized_run_id"] == str(central.id)
    assert fed_row["time_reduction"] == pytest.approx((CENTRAL_WALL - FED_PARALLEL) / CENTRAL_WALL)
    assert fed_row["time_reduction"] == pytest.approx(0.75)
    assert (central_row["kind"], central_row["clients"], central_row["rounds"]) == ("centralized", None, 3)
    assert (central_row["loss"], central_row["accuracy"], central_row["auc"]) == (0.25, 0.88, 0.95)
    assert (central_row["execution_time_s"], central_row["parallel_time_s"]) == (CENTRAL_WALL, CENTRAL_WALL)
    assert central_row["time_reduction"] is None


def test_compare_finds_the_baseline_launched_with_the_federated_run(client: TestClient, study: tuple[Run, Run]) -> None:
    federated, central = study

    (row,) = client.get("/api/compare", params={"runs": str(federated.id)}).json()

    assert row["centralized_run_id"] == str(central.id)
    assert row["time_reduction"] == pytest.approx((CENTRAL_WALL - FED_PARALLEL) / CENTRAL_WALL)


@pytest.mark.parametrize("runs", ["not-a-uuid", "84c67e73-9b38-4792-b977-844f19b09ef0,12345"])
def test_compare_with_a_malformed_run_id_is_422(client: TestClient, runs: str) -> None:
    response = client.get("/api/compare", params={"runs": runs})

    assert response.status_code == 422
    assert response.json()["detail"][0]["message"].startswith("runs must be comma-separated run ids (UUIDs)")
    assert response.json()["detail"][0]["field"] == "query.runs"


@pytest.mark.parametrize("runs", ["", " , "])
def test_compare_with_no_run_ids_is_422(client: TestClient, runs: str) -> None:
    response = client.get("/api/compare", params={"runs": runs})

    assert response.status_code == 422
    assert response.json()["detail"][0]["message"] == "give at least one run id: /api/compare?runs=ID,ID"


def test_compare_without_the_runs_parameter_is_422(client: TestClient) -> None:
    response = client.get("/api/compare")

    assert response.status_code == 422
    assert [item["field"] for item in response.json()["detail"]] == ["query.runs"]


def test_compare_with_an_unknown_run_is_404(client: TestClient, study: tuple[Run, Run]) -> None:
    missing = new_id()

    response = client.get("/api/compare", params={"runs": f"{study[0].id},{missing}"})

    assert response.status_code == 404
    assert response.json()["detail"] == f"no run with id {missing}"


def test_compare_csv_is_table_3_with_one_row_per_run(client: TestClient, study: tuple[Run, Run]) -> None:
    federated, central = study

    response = client.get("/api/compare.csv", params={"runs": f"{federated.id},{central.id}"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="fedlens-table3.csv"'
    header, fed, central_row = response.text.splitlines()
    assert header == (
        "run_id,experiment,kind,status,clients,loss,accuracy,sensitivity,specificity,threshold,auc,auc_ci_low,"
        "auc_ci_high,n_negative,n_positive,rounds,execution_time_s,parallel_time_s,startup_s,time_reduction,"
        "time_reduction_with_startup,epsilon"
    )
    # the factories' metrics: sensitivity 0.7, specificity 0.6, threshold 0.5, no interval or class counts
    base = f"{federated.id},table3,federated,succeeded,3,0.3,0.85,0.7,0.6,0.5,0.93,,,,,2,22.0,16.5,0.0,0.75,0.75,"
    assert fed == base
    central_base = f"{central.id},table3,centralized,succeeded,,0.25,0.88,0.7,0.6,0.5,0.95,,,,,3,66.0,66.0,0.0,,,"
    assert central_row == central_base


def test_time_reduction_with_start_up_adds_each_sides_start_up(
    client: TestClient, session: Session, study: tuple[Run, Run]
) -> None:
    federated, central = study
    federated.startup_s, central.startup_s = 3.0, 6.0
    session.commit()

    fed_row = client.get("/api/compare", params={"runs": f"{federated.id},{central.id}"}).json()[0]

    assert (fed_row["startup_s"], fed_row["time_reduction"]) == (3.0, 0.75)
    # (66 + 6 - (16.5 + 3)) / (66 + 6)
    assert fed_row["time_reduction_with_startup"] == pytest.approx(52.5 / 72)


def test_compare_gives_a_dp_runs_final_epsilon_and_none_without_dp(
    client: TestClient, session: Session, study: tuple[Run, Run]
) -> None:
    federated, _central = study
    private = add_run(session, add_experiment(session, name="dp", privacy={"dp": {"level": "client"}}))
    for number, epsilon in ((1, 2.5), (2, 3.75)):
        save_round(session, private.id, dp_round(number, epsilon), "ckpt")

    rows = client.get("/api/compare", params={"runs": f"{private.id},{federated.id}"}).json()
    csv_rows = client.get("/api/compare.csv", params={"runs": f"{private.id},{federated.id}"}).text.splitlines()

    assert [row["epsilon"] for row in rows] == [3.75, None]
    assert csv_rows[1].endswith(",3.75") and csv_rows[2].endswith(",")
