"""The run page of a run over hospital sites: site names for client numbers and the per-site panel."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Experiment, Run, RunStatus
from app.run_config import RunConfig
from app.schemas import ClientRoundRead, LocalBaselineRead
from app.sites.panel import Versus, cell_state, compare_local
from tests.api.factories import add_experiment, add_run, round_result
from tests.api.pages import NO_VALUE as NA
from tests.api.pagetree import Element, page
from tests.api.sites import add_site, add_task
from worker.engine.types import ClientRound, ClientStatus
from worker.store import save_local_baselines, save_round

SITES = [
    {"site": "hospital-b", "dataset": "rsna"},
    {"site": "hospital-a", "dataset": "chest"},
    {"site": "hospital-c", "dataset": "chest"},
]
LATE = "site hospital-c did not answer the train task within 60 s"
OFFLINE = "site hospital-a was offline when round 2 started"
OWN_TEST = {"global.accuracy": 0.8, "global.auc": 0.85, "global.sensitivity": 0.75, "global.specificity": 0.9}


def _trained(client_id: str, samples: int, **metrics: float) -> ClientRound:
    return ClientRound(client_id, ClientStatus.TRAINED, samples, metrics={"train.loss": 0.4, **metrics})


def _failed(client_id: str, error: str) -> ClientRound:
    return ClientRound(client_id, ClientStatus.FAILED, 0, error=error)


def _run_over_sites(session: Session, **extra: object) -> Run:
    """Round 1: b and a train, c is late. Round 2: b trains, a is offline, c's agent reports an error."""
    config = RunConfig.model_validate({"name": "over sites", "federation": {"sites": SITES, "rounds": 3}} | extra)
    experiment = Experiment(name="over sites", config=config.model_dump(mode="json"))
    session.add(experiment)
    session.commit()
    run = add_run(session, experiment, status=RunStatus.RUNNING, total_rounds=3)
    first = [_trained("1", 120, **{"global.accuracy": 0.7}), _trained("2", 80), _failed("3", LATE)]
    second = [_trained("1", 130, **OWN_TEST), _failed("2", OFFLINE), _failed("3", "the site reported: out of memory")]
    save_round(session, run.id, round_result(1, clients=first), "ckpt/1")
    save_round(session, run.id, round_result(2, clients=second), "ckpt/2")
    return run


def _cells(row: Element) -> list[str]:
    return [td.text for td in row.find_all("td")]


def test_a_run_over_sites_names_its_clients_by_site(client: TestClient, session: Session) -> None:
    run = _run_over_sites(session)

    root = page(client.get(f"/runs/{run.id}"))

    names = json.loads(root.by_id("run").attrs["data-client-names"] or "")
    assert names == {"1": "hospital-b", "2": "hospital-a", "3": "hospital-c"}
    summary = root.by_id("run-summary").text
    assert summary.startswith("3 hospital sites (hospital-b: rsna, hospital-a: chest, hospital-c: chest) · images at")


def test_the_site_panel_shows_each_sites_state_per_round_samples_and_own_test_metrics(
    client: TestClient, session: Session
) -> None:
    run = _run_over_sites(session)

    panel = page(client.get(f"/runs/{run.id}")).by_id("site-table")

    head = [th.text for th in panel.find("thead").find_all("th")]
    assert head[:7] == ["Site", "Client", "Dataset", "Now", "Images", "Round 1", "Round 2"]
    assert head[7:] == ["Global AUC", "Accuracy", "Sens. / spec."]
    rows = panel.find("tbody").find_all("tr")
    assert [r.find("th").text for r in rows] == ["hospital-b", "hospital-a", "hospital-c"]
    b, a, c = rows
    unknown = "unknown site"  # no site of these names is registered
    assert _cells(b) == ["1", "rsna", unknown, "130", "trained", "trained", "0.850", "0.800", "0.750 / 0.900"]
    assert _cells(a) == ["2", "chest", unknown, "80", "trained", f"offline {OFFLINE}", NA, NA, f"{NA} / {NA}"]
    out_of_memory = "failed the site reported: out of memory"
    assert _cells(c) == ["3", "chest", unknown, NA, f"late {LATE}", out_of_memory, NA, NA, f"{NA} / {NA}"]
    assert c.find("td", data_round="1").find("span").classes == ["badge", "state-late"]


def test_a_simulated_run_has_no_site_panel_and_no_site_names(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)

    root = page(client.get(f"/runs/{run.id}"))

    assert not root.has_id("site-panel")
    assert root.by_id("run").attrs["data-client-names"] == "{}"
    assert root.by_id("run-summary").text.startswith("3 clients · synthetic data at")


def test_a_run_over_sites_says_its_updates_are_signed(client: TestClient, session: Session) -> None:
    run = _run_over_sites(session)

    root = page(client.get(f"/runs/{run.id}"))

    assert "signed with the site's Ed25519 key" in root.by_id("privacy-signed").text


def test_the_panel_says_what_each_site_does_now_and_is_served_alone_for_the_page_to_refresh(
    client: TestClient, session: Session
) -> None:
    run = _run_over_sites(session)
    other = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    b = add_site(session, "hospital-b")
    c = add_site(session, "hospital-c")
    add_site(session, "hospital-a", online=False)
    b.busy_with = add_task(session, str(b.id), run.id, "0" * 64, round=3).id
    c.busy_with = add_task(session, str(c.id), other.id, "0" * 64, kind="evaluate").id
    session.commit()

    fragment = client.get(f"/runs/{run.id}/site-panel")

    assert fragment.status_code == 200
    now = {r.find("th").text: r.find("td", class_="site-now").text for r in page(fragment).find_all("tr")[1:]}
    assert now == {"hospital-b": "training, round 3", "hospital-a": "offline", "hospital-c": "busy with another run"}
    assert not page(fragment).has_id("add-site"), "no site outside the run is online"
    assert client.get(f"/runs/{other.id}/site-panel").status_code == 404


def test_an_online_site_outside_an_open_run_is_offered_to_join(client: TestClient, session: Session) -> None:
    run = _run_over_sites(session)
    add_site(session, "hospital-d")
    add_site(session, "hospital-e", online=False)

    form = page(client.get(f"/runs/{run.id}")).by_id("add-site")

    assert [o.text for o in form.find_all("option")] == ["hospital-d: chest"]
    run.status = RunStatus.SUCCEEDED
    session.commit()
    assert not page(client.get(f"/runs/{run.id}")).has_id("add-site"), "a finished run takes no new site"


LOCAL_B = {"auc": 0.8, "accuracy": 0.82, "sensitivity": 0.7, "specificity": 0.95, "tp": 7.0}
LOCAL_ROWS = [
    {"client": "1", "site": "hospital-b", "dataset": "rsna", "epochs": 6, "samples": 130, "threshold": 0.615}
    | {"metrics": LOCAL_B, "train": {"train.loss": 0.2}},
    {"client": "2", "site": "hospital-a", "dataset": "chest", "epochs": 6}
    | {"error": "site hospital-a was offline when the local baseline started"},
]


def test_compare_local_puts_each_metric_beside_the_federated_one_with_the_difference() -> None:
    local = LocalBaselineRead.model_validate(LOCAL_ROWS[0])
    federated = {"auc": 0.85, "accuracy": 0.8, "sensitivity": 0.6, "specificity": None}

    compared = compare_local(federated, local)

    assert [(v.key, v.federated, v.local) for v in compared.versus] == [
        ("auc", 0.85, 0.8),
        ("sensitivity", 0.6, 0.7),
        ("specificity", None, 0.95),
    ]
    assert [v.difference for v in compared.versus] == [pytest.approx(0.05), pytest.approx(-0.1), None]
    assert (compared.threshold, compared.error) == (0.615, "")
    assert Versus("auc", 0.9, None).difference is None


def test_the_site_panel_shows_federated_against_local_only_per_site_with_the_difference(
    client: TestClient, session: Session
) -> None:
    run = _run_over_sites(session, baselines=["local"])
    save_local_baselines(session, run.id, LOCAL_ROWS)

    root = page(client.get(f"/runs/{run.id}"))

    assert root.by_id("local-title").text == "Federated vs local-only"
    table = root.by_id("local-table")
    groups = [th.text for th in table.find("thead").find_all("th", scope="colgroup")]
    assert groups == ["AUC", "Sensitivity", "Specificity"]
    assert [th.text for th in table.find("thead").find_all("th", scope="col")][-3:] == [
        "Federated",
        "Local only",
        "Difference",
    ]
    b, a = table.find("tbody").find_all("tr")
    assert (b.find("th").text, a.find("th").text) == ("hospital-b", "hospital-a")
    assert _cells(b) == ["0.850", "0.800", "+0.050", "0.750", "0.700", "+0.050", "0.900", "0.950", "-0.050", "0.615"]
    assert b.find("td", data_difference="specificity").text == "-0.050"
    offline = "site hospital-a was offline when the local baseline started"
    assert _cells(a) == [NA, NA, NA] * 3 + [offline]
    assert not root.has_id("local-pending")


def test_a_run_that_asked_for_a_local_baseline_says_when_it_comes(client: TestClient, session: Session) -> None:
    run = _run_over_sites(session, baselines=["local"])

    root = page(client.get(f"/runs/{run.id}"))

    assert "after the last round" in root.by_id("local-pending").text
    assert not root.has_id("local-table")


def test_a_run_without_a_local_baseline_shows_no_comparison(client: TestClient, session: Session) -> None:
    run = _run_over_sites(session)

    root = page(client.get(f"/runs/{run.id}"))

    assert root.has_id("site-table")
    assert not root.has_id("local-title") and not root.has_id("local-table") and not root.has_id("local-pending")


def test_the_runs_json_carries_each_sites_local_baseline(client: TestClient, session: Session) -> None:
    run = _run_over_sites(session, baselines=["local"])
    simulated = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    assert client.get(f"/api/runs/{run.id}").json()["local_baselines"] is None  # not stored yet
    save_local_baselines(session, run.id, LOCAL_ROWS)

    body = client.get(f"/api/runs/{run.id}").json()

    b, a = body["local_baselines"]
    assert (b["site"], b["threshold"], b["metrics"]["auc"], b["error"]) == ("hospital-b", 0.615, 0.8, None)
    assert (a["site"], a["metrics"], a["error"]) == ("hospital-a", {}, LOCAL_ROWS[1]["error"])
    assert client.get(f"/api/runs/{run.id}/rounds").json()["run"]["local_baselines"] == body["local_baselines"]
    assert client.get(f"/api/runs/{simulated.id}").json()["local_baselines"] is None


def test_a_site_given_up_mid_round_is_offline_and_a_kept_one_stays_kept() -> None:
    """Heartbeats that stop during a round make an offline site; under keep-last a failed site whose last update
    counted is kept, whatever its failure."""
    gone = "site hospital-a went offline during round 2: no heartbeat for 12 s, so its train task was given up"
    given_up = ClientRoundRead(id="2", status="failed", event=None, samples=80, error=gone)
    kept = ClientRoundRead(id="3", status="kept", event=None, samples=60, error=LATE)

    assert (cell_state(given_up), cell_state(kept)) == ("offline", "kept")
