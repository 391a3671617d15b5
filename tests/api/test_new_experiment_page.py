"""The new-experiment page: fields, presets, errors next to fields, launch and preview."""

from __future__ import annotations

import json

import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Experiment, RunKind, RunStatus
from tests.api.pages import (
    PRESET_CONFIGS,
    PRESET_FORMS,
    QUICKSTART_CONFIG,
    QUICKSTART_FORM,
    launched_experiment,
    queued_run_ids,
    quickstart_form,
)
from tests.api.pagetree import form_state, page

# --- new experiment ---------------------------------------------------------------------------------------------


#: the form's inputs besides the config: description, sharing, and the CSRF token (empty: tests use bearer tokens)
NOT_CONFIG = {"description": "", "shared": "", "csrf_token": ""}


def test_new_experiment_form_has_the_quick_start_values_in_57_config_fields_and_a_description(
    client: TestClient,
) -> None:
    form = page(client.get("/experiments/new")).by_id("experiment-form")

    fields = [e for e in form.iter() if e.tag in ("input", "select", "textarea") and "name" in e.attrs]
    # 57 config fields (10 for csv sources, 4 for hospital sites, 8 for privacy), description, sharing, CSRF token
    assert len(fields) == 60
    assert form_state(form) == QUICKSTART_FORM | NOT_CONFIG


def test_every_field_of_the_new_experiment_page_has_a_label(client: TestClient) -> None:
    root = page(client.get("/experiments/new"))

    fields = [e for e in root.iter() if e.tag in ("input", "select", "textarea") and e.attrs.get("type") != "hidden"]
    labels = {label.attrs.get("for"): label.text for label in root.find_all("label")}
    assert len(fields) == 59
    for element in fields:
        assert labels.get(element.attrs.get("id")), element.attrs


@pytest.mark.parametrize("preset", list(PRESET_FORMS))
def test_each_preset_prefills_the_form(client: TestClient, preset: str) -> None:
    root = page(client.get("/experiments/new", params={"preset": preset}))

    assert form_state(root.by_id("experiment-form")) == PRESET_FORMS[preset] | NOT_CONFIG
    links = root.find("nav", class_="presets").find_all("a")
    assert [a.attrs["href"] for a in links] == [
        "/experiments/new?preset=quickstart",
        "/experiments/new?preset=paper-3",
        "/experiments/new?preset=paper-10",
        "/experiments/new?preset=paper-drop",
        "/experiments/new?preset=paper-keep",
    ]
    current = root.find("nav", class_="presets").find("a", aria_current="true")
    assert current.attrs["href"] == f"/experiments/new?preset={preset}"


@pytest.mark.parametrize("preset", list(PRESET_FORMS))
def test_each_preset_page_previews_exactly_its_config(client: TestClient, preset: str) -> None:
    """Every value reaches the page, selects included: a missing option would submit the first one instead."""
    state = form_state(page(client.get("/experiments/new", params={"preset": preset})).by_id("experiment-form"))

    body = client.post("/experiments/preview", data=state).json()

    assert body["errors"] == {}
    assert json.loads(body["json"]) == PRESET_CONFIGS[preset]


def test_an_unknown_preset_falls_back_to_the_quick_start(client: TestClient) -> None:
    root = page(client.get("/experiments/new", params={"preset": "nope"}))

    assert form_state(root)["name"] == "quickstart-synthetic"
    assert root.find("nav", class_="presets").find_all("a", aria_current="true") == []


def test_posting_an_invalid_form_shows_the_error_next_to_its_field_and_keeps_the_values(
    client: TestClient, session: Session, broker: redis.Redis
) -> None:
    sent = quickstart_form(name="my-study", federation__rounds="0", federation__clients="4")

    root = page(client.post("/experiments/new", data=sent))

    error = root.find(data_error_for="federation.rounds")
    assert error.text == "Input should be greater than or equal to 1 (got 0)"
    rounds = root.find("input", name="federation.rounds")
    assert error.parent is rounds.parent
    assert rounds.attrs["aria-invalid"] == "true"
    assert root.by_id("form-errors").find("strong").text == "1 field to fix"
    assert form_state(root.by_id("experiment-form")) == sent | {"shared": "", "csrf_token": ""}
    assert session.scalar(select(func.count()).where(Experiment.name == "my-study")) == 0
    assert broker.llen("runs") == 0


def test_the_error_summary_links_to_each_field_to_fix_and_can_take_the_focus(client: TestClient) -> None:
    sent = quickstart_form(federation__rounds="0", federation__intermittent__events="2 leaves soon")

    summary = page(client.post("/experiments/new", data=sent)).by_id("form-errors")

    assert summary.attrs["tabindex"] == "-1"  # focusable by new.js, not by Tab
    assert [(a.attrs["href"], a.text) for a in summary.find_all("a")] == [
        ("#federation.rounds", "federation.rounds"),
        ("#federation.intermittent.events", "federation.intermittent.events"),
    ]


def test_the_launch_button_also_heads_the_form_before_the_presets(client: TestClient) -> None:
    root = page(client.get("/experiments/new"))

    head = root.find("div", class_="page-head").find("button")

    assert (head.text, head.attrs["type"], head.attrs["form"]) == ("Create and launch", "submit", "experiment-form")


def test_a_malformed_event_line_is_shown_together_with_the_other_errors(client: TestClient) -> None:
    events = "3 joins 3\n2 leaves at round six"
    sent = quickstart_form(federation__rounds="0", federation__intermittent__events=events)

    root = page(client.post("/experiments/new", data=sent))

    assert root.find(data_error_for="federation.rounds").text.startswith("Input should be greater than or equal to 1")
    assert root.find(data_error_for="federation.intermittent.events").text == (
        "line 2 '2 leaves at round six': write one event per line as "
        "'<client> joins <round>' or '<client> leaves <round>'"
    )
    assert root.by_id("form-errors").find("strong").text == "2 fields to fix"
    assert root.find("textarea", name="federation.intermittent.events").raw_text == events


def test_fractions_that_do_not_add_up_to_one_are_shown_next_to_the_fractions_field(client: TestClient) -> None:
    sent = quickstart_form(federation__partition__kind="sizes", federation__partition__fractions="0.5, 0.3, 0.1")

    root = page(client.post("/experiments/new", data=sent))

    error = root.find(data_error_for="federation.partition.fractions")
    assert error.text == "fractions must add up to 1, they add up to 0.9"
    assert error.parent is root.find("input", name="federation.partition.fractions").parent


def test_an_event_for_an_unknown_client_is_shown_next_to_the_events(client: TestClient) -> None:
    root = page(client.post("/experiments/new", data=quickstart_form(federation__intermittent__events="4 joins 2")))

    note = root.find(data_error_for="federation.intermittent.events")
    assert note.text == "event for client 4: clients are numbered 1..3"
    assert note.parent is root.find("textarea", name="federation.intermittent.events").parent


def test_posting_a_valid_form_creates_the_experiment_and_queues_both_runs(
    client: TestClient, session: Session, broker: redis.Redis
) -> None:
    response = client.post("/experiments/new", data=quickstart_form(), follow_redirects=False)

    assert response.status_code == 303
    experiment = launched_experiment(session, response.headers["location"])
    assert (experiment.name, experiment.description) == ("quickstart-synthetic", "first try")
    assert experiment.config["federation"]["rounds"] == 5
    runs = {run.kind: run for run in experiment.runs}  # both created in one launch: no order between them
    assert len(runs) == len(experiment.runs) == 2
    federated, central = runs[RunKind.FEDERATED], runs[RunKind.CENTRALIZED]
    assert (federated.kind, federated.status, federated.total_rounds) == (RunKind.FEDERATED, RunStatus.QUEUED, 5)
    assert (central.kind, central.status, central.total_rounds) == (RunKind.CENTRALIZED, RunStatus.QUEUED, 5)
    assert response.headers["location"] == f"/runs/{federated.id}"
    assert queued_run_ids(broker, "runs") == [str(federated.id)]
    assert queued_run_ids(broker, "train") == [str(central.id)]


def test_an_unchecked_baseline_creates_and_queues_only_the_federated_run(
    client: TestClient, session: Session, broker: redis.Redis
) -> None:
    sent = quickstart_form()
    del sent["centralized.enabled"]  # browsers do not submit unchecked boxes

    response = client.post("/experiments/new", data=sent, follow_redirects=False)

    experiment = launched_experiment(session, response.headers["location"])
    assert [run.kind for run in experiment.runs] == [RunKind.FEDERATED]
    assert (broker.llen("runs"), broker.llen("train")) == (1, 0)


def test_preview_of_a_valid_form_is_the_config_without_empty_values(client: TestClient) -> None:
    body = client.post("/experiments/preview", data=quickstart_form()).json()

    assert body["errors"] == {}
    assert json.loads(body["json"]) == QUICKSTART_CONFIG
    assert yaml.safe_load(body["yaml"]) == QUICKSTART_CONFIG
    assert body["yaml"].startswith("name: quickstart-synthetic\nseed: 42\n")


def test_preview_of_an_invalid_form_shows_what_was_given_and_the_errors_per_field(client: TestClient) -> None:
    sent = quickstart_form(federation__rounds="0", federation__intermittent__events="soon")

    body = client.post("/experiments/preview", data=sent).json()

    assert set(body["errors"]) == {"federation.rounds", "federation.intermittent.events"}
    assert body["errors"]["federation.rounds"] == "Input should be greater than or equal to 1 (got 0)"
    assert json.loads(body["json"])["federation"]["rounds"] == 0
    assert yaml.safe_load(body["yaml"])["federation"]["rounds"] == 0


def test_edit_and_relaunch_fills_the_form_from_the_failed_experiment(client: TestClient) -> None:
    config = {
        "name": "wrong path",
        "data": {"train": {"format": "npz", "path": "data/missing.npz"}, "image_size": 64},
        "federation": {"clients": 4, "rounds": 7},
    }
    created = client.post("/api/experiments", json={"config": config, "description": "first try"}).json()

    form = page(client.get(f"/experiments/new?from={created['id']}")).by_id("experiment-form")

    values = {e.attrs["name"]: e.attrs.get("value") for e in form.iter() if e.tag == "input" and "name" in e.attrs}
    assert values["name"] == "wrong path"
    assert values["data.train.path"] == "data/missing.npz"
    assert values["data.image_size"] == "64"
    assert (values["federation.clients"], values["federation.rounds"]) == ("4", "7")
    assert "first try" in form.text
