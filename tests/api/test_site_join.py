"""A hospital site joining a run over sites that is already training: POST /api/runs/{id}/sites."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Experiment, Run, RunStatus
from app.run_config import RunConfig
from tests.api.factories import add_run, round_result
from tests.api.pagetree import page
from tests.api.sites import add_site, add_task
from worker.engine.types import ClientRound, ClientStatus
from worker.store import save_round


def _run(session: Session, status: RunStatus, *, rounds_done: int = 0, training: bool = False, **config: Any) -> Run:
    """Sites a and b, 4 rounds, ``rounds_done`` stored; ``training``: the next round's site tasks are queued."""
    sites = [{"site": "hospital-a", "dataset": "chest"}, {"site": "hospital-b", "dataset": "chest"}]
    federation = {"sites": sites, "rounds": 4, **config.pop("federation", {})}
    cfg = RunConfig.model_validate({"name": "open", "federation": federation, **config})
    experiment = Experiment(name="open", config=cfg.model_dump(mode="json"))
    session.add(experiment)
    session.commit()
    run = add_run(session, experiment, status=status, total_rounds=4)
    for number in range(1, rounds_done + 1):
        clients = [ClientRound(c, ClientStatus.TRAINED, 60) for c in ("1", "2")]
        save_round(session, run.id, round_result(number, clients=clients), f"ckpt/{number}")
    if training:
        site = add_site(session, "hospital-a")
        add_task(session, str(site.id), run.id, "0" * 64, round=rounds_done + 1)
    return run


def _join(client: TestClient, run: Run, headers: dict[str, str], site: str = "hospital-c") -> Any:
    return client.post(f"/api/runs/{run.id}/sites", json={"site": site, "dataset": "chest"}, headers=headers)


def test_a_site_joins_a_running_run_at_the_first_round_that_has_not_started(
    client: TestClient, session: Session, admin_headers: dict[str, str]
) -> None:
    add_site(session, "hospital-c")
    run = _run(session, RunStatus.RUNNING, rounds_done=1, training=True)  # round 2 is training now

    answer = _join(client, run, admin_headers)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"client": 3, "joins": 3}
    session.expire_all()
    cfg = RunConfig.model_validate(session.get(Experiment, run.experiment_id).config)  # type: ignore[union-attr]
    assert [s.site for s in cfg.federation.sites] == ["hospital-a", "hospital-b", "hospital-c"]
    assert cfg.federation.clients == 3
    assert [(e.client, e.joins) for e in cfg.federation.intermittent.events] == [(3, 3)]
    panel = page(client.get(f"/runs/{run.id}", headers=admin_headers)).by_id("site-table")
    assert [r.find("th").text for r in panel.find("tbody").find_all("tr")][-1] == "hospital-c"


def test_a_run_between_rounds_takes_the_site_from_the_next_one(
    client: TestClient, session: Session, admin_headers: dict[str, str]
) -> None:
    add_site(session, "hospital-c")
    run = _run(session, RunStatus.RUNNING, rounds_done=2)  # round 2 stored, round 3's tasks not queued yet

    assert _join(client, run, admin_headers).json() == {"client": 3, "joins": 3}


def test_a_round_the_orchestrator_has_begun_is_not_promised_though_its_tasks_are_not_queued_yet(
    client: TestClient, session: Session, admin_headers: dict[str, str]
) -> None:
    add_site(session, "hospital-c")
    run = _run(session, RunStatus.RUNNING, rounds_done=1)
    run.started_round = 2  # SiteExecutor.newcomers(2) has run: round 2 asks only the sites it knew then
    session.commit()

    assert _join(client, run, admin_headers).json() == {"client": 3, "joins": 3}


def test_a_queued_run_takes_the_site_from_its_first_round(
    client: TestClient, session: Session, admin_headers: dict[str, str]
) -> None:
    add_site(session, "hospital-c")
    run = _run(session, RunStatus.QUEUED)

    assert _join(client, run, admin_headers).json() == {"client": 3, "joins": 1}
    session.expire_all()
    cfg = RunConfig.model_validate(session.get(Experiment, run.experiment_id).config)  # type: ignore[union-attr]
    assert cfg.federation.intermittent.events == [], "a member from round 1 needs no join event"


@pytest.mark.parametrize(
    ("status", "rounds_done", "config", "site", "expected", "words"),
    [
        (RunStatus.SUCCEEDED, 4, {}, {}, 409, "has finished"),
        (RunStatus.RUNNING, 4, {}, {}, 409, "last round (4)"),
        (RunStatus.RUNNING, 0, {"privacy": {"dp": {"level": "sample"}}}, {}, 409, "differential privacy"),
        (RunStatus.RUNNING, 0, {}, {"online": False}, 422, "offline"),
        (RunStatus.RUNNING, 0, {}, {"datasets": ("rsna",)}, 422, "declares no dataset 'chest'"),
    ],
)
def test_a_join_that_cannot_work_is_refused_with_the_reason(
    client: TestClient,
    session: Session,
    admin_headers: dict[str, str],
    status: RunStatus,
    rounds_done: int,
    config: dict[str, Any],
    site: dict[str, Any],
    expected: int,
    words: str,
) -> None:
    add_site(session, "hospital-c", **site)
    run = _run(session, status, rounds_done=rounds_done, **config)
    before = session.get(Experiment, run.experiment_id).config  # type: ignore[union-attr]

    answer = _join(client, run, admin_headers)

    assert answer.status_code == expected, answer.text
    assert words in str(answer.json()["detail"])
    session.expire_all()
    assert session.get(Experiment, run.experiment_id).config == before  # type: ignore[union-attr]


def test_a_site_cannot_join_twice_and_an_unknown_site_is_named(
    client: TestClient, session: Session, admin_headers: dict[str, str]
) -> None:
    add_site(session, "hospital-a")
    run = _run(session, RunStatus.RUNNING)

    twice = _join(client, run, admin_headers, site="hospital-a")
    unknown = _join(client, run, admin_headers, site="hospital-z")

    assert twice.status_code == 409 and "takes part in this run already" in twice.json()["detail"]
    assert unknown.status_code == 404 and "no site named 'hospital-z'" in unknown.json()["detail"]


def test_a_simulated_run_takes_no_sites(client: TestClient, session: Session, admin_headers: dict[str, str]) -> None:
    add_site(session, "hospital-c")
    cfg = RunConfig.model_validate({"name": "simulation"})
    experiment = Experiment(name="simulation", config=cfg.model_dump(mode="json"))
    session.add(experiment)
    session.commit()
    run = add_run(session, experiment, status=RunStatus.RUNNING)

    answer = _join(client, run, admin_headers)

    assert answer.status_code == 409 and "over hospital sites" in answer.json()["detail"]
