"""The run page of a run over hospital sites: site names for client numbers and the per-site panel."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Experiment, Run, RunStatus, Site, SiteTask, utcnow
from app.run_config import RunConfig
from tests.api.factories import add_experiment, add_run, round_result
from tests.api.pages import NO_VALUE as NA
from tests.api.pagetree import Element, page
from worker.engine.types import ClientRound, ClientStatus
from worker.store import save_round

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


def _run_over_sites(session: Session) -> Run:
    """Round 1: b and a train, c is late. Round 2: b trains, a is offline, c's agent reports an error."""
    config = RunConfig.model_validate({"name": "over sites", "federation": {"sites": SITES, "rounds": 3}})
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


def _register(session: Session, name: str, *, online: bool = True, busy_with: SiteTask | None = None) -> Site:
    counts = {"train": {"negative": 5, "positive": 5}}
    site = Site(
        name=name,
        public_key="A" * 44,
        last_seen_at=utcnow() if online else None,
        datasets=[{"name": "chest", "counts": counts}],
        busy_with=busy_with.id if busy_with else None,
    )
    session.add(site)
    session.commit()
    return site


def _task(session: Session, run: Run, site: Site, kind: str, number: int) -> SiteTask:
    task = SiteTask(
        run_id=run.id,
        round=number,
        client_id="1",
        site_id=site.id,
        kind=kind,
        dataset="chest",
        weights_sha256="0" * 64,
        settings={},
        deadline=utcnow(),
    )
    session.add(task)
    session.commit()
    return task


def test_the_panel_says_what_each_site_does_now_and_is_served_alone_for_the_page_to_refresh(
    client: TestClient, session: Session
) -> None:
    run = _run_over_sites(session)
    other = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    b = _register(session, "hospital-b")
    c = _register(session, "hospital-c")
    _register(session, "hospital-a", online=False)
    b.busy_with = _task(session, run, b, "train", 3).id
    c.busy_with = _task(session, other, c, "evaluate", 1).id
    session.commit()

    fragment = client.get(f"/runs/{run.id}/site-panel")

    assert fragment.status_code == 200
    now = {r.find("th").text: r.find("td", class_="site-now").text for r in page(fragment).find_all("tr")[1:]}
    assert now == {"hospital-b": "training, round 3", "hospital-a": "offline", "hospital-c": "busy with another run"}
    assert not page(fragment).has_id("add-site"), "no site outside the run is online"
    assert client.get(f"/runs/{other.id}/site-panel").status_code == 404


def test_an_online_site_outside_an_open_run_is_offered_to_join(client: TestClient, session: Session) -> None:
    run = _run_over_sites(session)
    _register(session, "hospital-d")
    _register(session, "hospital-e", online=False)

    form = page(client.get(f"/runs/{run.id}")).by_id("add-site")

    assert [o.text for o in form.find_all("option")] == ["hospital-d: chest"]
    run.status = RunStatus.SUCCEEDED
    session.commit()
    assert not page(client.get(f"/runs/{run.id}")).has_id("add-site"), "a finished run takes no new site"
