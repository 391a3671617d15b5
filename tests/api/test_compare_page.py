"""The compare page: run picker and the study's Table 3 with the best values marked."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Run, RunKind
from tests.api.factories import add_experiment, add_run, dp_round, metrics, round_result
from tests.api.pages import NO_VALUE
from tests.api.pagetree import page
from worker.store import save_round

# --- compare page -----------------------------------------------------------------------------------------------


@pytest.fixture
def table3(session: Session) -> tuple[Run, Run]:
    """Federated: best accuracy, AUC and times; centralized: lowest loss."""
    experiment = add_experiment(session, name="table3", clients=3)
    federated = add_run(session, experiment, total_rounds=2)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED)
    save_round(session, federated.id, round_result(1, wall_s=10.0), "ckpt/1")
    final = replace(metrics(loss=0.35, accuracy=0.86, auc=0.96), auc_ci=(0.93, 0.99))
    save_round(
        session,
        federated.id,
        round_result(2, evaluation=final, wall_s=12.0, train_s=5.0, calibration_s=1.0, evaluation_s=3.0),
        "ckpt/2",
    )
    save_round(session, central.id, round_result(1, wall_s=20.0), "ckpt/1")
    save_round(session, central.id, round_result(2, wall_s=22.0), "ckpt/2")
    final = metrics(loss=0.25, accuracy=0.84, auc=0.91)
    save_round(session, central.id, round_result(3, evaluation=final, wall_s=24.0), "ckpt/3")
    return federated, central


def test_compare_page_without_runs_lists_every_run_to_pick(client: TestClient, table3: tuple[Run, Run]) -> None:
    federated, central = table3

    root = page(client.get("/compare"))

    assert root.find_all("table") == []
    boxes = root.find("form", class_="picker").find_all("input", type="checkbox", name="runs")
    assert [box.attrs["value"] for box in boxes] == [str(federated.id), str(central.id)]
    assert root.find("label", for_=f"pick-{federated.id}").text == (
        "table3 · federated · succeeded · 2/2 rounds · best AUC 0.960"
    )


def test_compare_page_renders_table_3_with_the_best_cells_marked(client: TestClient, table3: tuple[Run, Run]) -> None:
    federated, central = table3

    root = page(client.get("/compare", params={"runs": f"{federated.id},{central.id}"}))

    fed_row, central_row = root.by_id("compare-table").find("tbody").find_all("tr")
    assert (fed_row.attrs["data-run-id"], central_row.attrs["data-run-id"]) == (str(federated.id), str(central.id))
    # Run | Clients | Loss | Accuracy | Sens. / spec. | AUC (95% CI) | Rounds | Execution (+ start-up) | Parallel |
    # Time reduction (with start-up). federated: wall 10 + 12 = 22 s, parallel (4+1+0.5+2) +
    # (5+1+0.5+3) = 17 s; centralized: 20 + 22 + 24 = 66 s; time reduction (66 - 17) / 66 = 74 %; no start-up.
    # Sensitivity ties: no best.
    assert [td.text for td in fed_row.find_all("td")] == [
        "3",
        "0.350",
        "0.860 (best)",
        "0.700 / 0.600",
        "0.960 (0.93\u20130.99) (best)",
        "2",
        "22 s + 0 s start-up",
        "17 s",
        "+74 % (+74 %)",
    ]
    assert [td.text for td in central_row.find_all("td")] == [
        "all data",
        "0.250 (best)",
        "0.840",
        "0.700 / 0.600",
        "0.910",
        "3",
        "66 s + 0 s start-up",
        "66 s",
        NO_VALUE,
    ]
    best = [[i for i, td in enumerate(row.find_all("td")) if "best" in td.classes] for row in (fed_row, central_row)]
    assert best == [[2, 4, 6, 7], [1]]  # accuracy, AUC, both times; loss
    assert root.by_id("compare-charts").attrs["data-runs"] == f"{federated.id},{central.id}"
    assert "checked" in root.by_id(f"pick-{federated.id}").attrs


def test_compare_page_adds_epsilon_and_the_privacy_frontier_only_with_a_dp_run(
    client: TestClient, session: Session, table3: tuple[Run, Run]
) -> None:
    federated, _central = table3
    private = add_run(session, add_experiment(session, name="dp", privacy={"dp": {"level": "client"}}))
    save_round(session, private.id, dp_round(1, 2.5), "ckpt/1")

    plain = page(client.get("/compare", params={"runs": str(federated.id)}))
    mixed = page(client.get("/compare", params={"runs": f"{private.id},{federated.id}"}))

    assert "Epsilon" not in plain.by_id("compare-table").find("thead").text and not plain.has_id("cmp-frontier")
    private_row, plain_row = mixed.by_id("compare-table").find("tbody").find_all("tr")
    assert (private_row.attrs["data-epsilon"], plain_row.attrs["data-epsilon"]) == ("2.5", "")
    assert (private_row.find_all("td")[-1].text, plain_row.find_all("td")[-1].text) == ("2.50", "no DP")
    assert mixed.has_id("cmp-frontier")


def test_compare_page_ignores_run_ids_that_are_not_uuids(client: TestClient, table3: tuple[Run, Run]) -> None:
    root = page(client.get("/compare", params={"runs": "not-a-run,42"}))

    assert root.find_all("table") == []
    assert len(root.find_all("input", name="runs")) == 2


def test_compare_form_redirects_to_the_picked_runs(client: TestClient) -> None:
    picked = [str(uuid.uuid4()), str(uuid.uuid4())]

    response = client.post("/compare", data={"runs": picked}, follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == f"/compare?runs={picked[0]},{picked[1]}"


def test_compare_form_without_runs_redirects_to_the_empty_picker(client: TestClient) -> None:
    response = client.post("/compare", follow_redirects=False)

    assert (response.status_code, response.headers["location"]) == (303, "/compare?runs=")
