"""The run page's privacy panel: what protects the run, its epsilon chart and why it stopped early."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Run, RunStatus
from tests.api.factories import add_experiment, add_run, dp_round, trained
from tests.api.pagetree import page
from worker.store import save_round

PRIVATE = {
    "secure_aggregation": {"threshold": 2},
    "dp": {"level": "client", "noise_multiplier": 1.5, "clip_norm": 0.5, "delta": 1e-5, "target_epsilon": 8},
}
NOTE = "stopped before round 3: it would take epsilon to 8.31, above the target 8"


def _private_run(session: Session) -> Run:
    run = add_run(session, add_experiment(session, name="private", privacy=PRIVATE), status=RunStatus.SUCCEEDED)
    run.note = NOTE
    for number, epsilon in ((1, 5.0), (2, 7.5)):
        save_round(session, run.id, dp_round(number, epsilon), f"ckpt/{number}")
    return run


def test_a_dp_run_page_says_what_protects_it_and_why_it_stopped(client: TestClient, session: Session) -> None:
    run = _private_run(session)

    root = page(client.get(f"/runs/{run.id}"))

    assert "no TLS" in root.by_id("privacy-tls").text and not root.has_id("privacy-signed")
    secagg = root.by_id("privacy-secagg").text
    assert secagg.startswith("on: the server sees only the sum") and "threshold 2" in secagg
    dp = root.by_id("privacy-dp").text
    for fact in ("client level", "noise multiplier 1.5", "clip norm 0.5", "delta 1e-05", "target epsilon 8"):
        assert fact in dp
    assert "noise multiplier 1 gives epsilon about 30" in root.by_id("privacy-client-level").text
    assert not root.by_id("note").hidden and root.by_id("note-text").text == NOTE
    assert root.has_id("chart-epsilon")
    attrs = root.by_id("run").attrs
    assert (attrs["data-dp-level"], attrs["data-target-epsilon"]) == ("client", "8.0")


def test_a_run_without_privacy_says_off_and_draws_no_epsilon_chart(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session, name="plain"))

    root = page(client.get(f"/runs/{run.id}"))

    assert (root.by_id("privacy-secagg").text, root.by_id("privacy-dp").text) == ("off", "off")
    assert root.by_id("note").hidden and not root.has_id("chart-epsilon")
    assert not root.has_id("privacy-client-level") and root.by_id("run").attrs["data-dp-level"] == ""


def test_a_page_fetched_over_https_says_tls(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session, name="plain"))

    root = page(client.get(f"https://testserver/runs/{run.id}"))

    assert root.by_id("privacy-tls").text.startswith("TLS")


def test_the_rounds_api_gives_each_dp_rounds_epsilon_per_site(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session, name="sample", privacy={"dp": {"level": "sample"}}))
    save_round(session, run.id, dp_round(1, 2.0, {"1": 2.0, "2": 1.5}, clients=[trained("1"), trained("2")]), "ckpt/1")

    [first] = client.get(f"/api/runs/{run.id}/rounds").json()["rounds"]

    assert first["privacy"]["epsilon"] == 2.0 and first["privacy"]["sites"] == {"1": 2.0, "2": 1.5}
