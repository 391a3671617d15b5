"""Server-rendered pages: home table, new-experiment form and its preview, run, experiment and compare pages, assets."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import forms
from app.models import Experiment, Run, RunKind, RunStatus
from app.run_config import RunConfig
from tests.api.factories import add_experiment, add_run, metrics, new_id, round_result
from tests.api.pagetree import Element, form_state, page
from worker.store import save_round

SCHEDULE_TEXT = "3 joins 3\n2 leaves 6"
NO_VALUE = "\N{EN DASH}"  # what the pages show for a missing number


def queued_run_ids(broker: redis.Redis, queue: str) -> list[str]:
    return [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in broker.lrange(queue, 0, -1)]


def save_aucs(session: Session, run: Run, *aucs: float) -> None:
    for number, auc in enumerate(aucs, start=1):
        save_round(session, run.id, round_result(number, evaluation=metrics(auc=auc)), f"ckpt/{number}")


def experiment_names(root: Element) -> list[str]:
    return [th.find("a").text for th in root.find("table", class_="experiments").find_all("th", scope="rowgroup")]


def launched_experiment(session: Session, location: str) -> Experiment:
    """The experiment of the run a redirect points to."""
    run = session.get(Run, uuid.UUID(location.removeprefix("/runs/")))
    assert run is not None, location
    return run.experiment


def quickstart_form(**changes: str) -> dict[str, str]:
    """The quick-start form as a browser submits it, with some fields changed (keys use __ for .)."""
    form = forms.form_values(forms.preset_config("quickstart")) | {"description": "first try"}
    return form | {key.replace("__", "."): value for key, value in changes.items()}


# --- home -------------------------------------------------------------------------------------------------------


def test_home_without_experiments_invites_to_the_quick_start(client: TestClient) -> None:
    root = page(client.get("/"))

    empty = root.find("section", class_="empty")
    assert empty.text.startswith("No experiments yet. Start with the synthetic quick start")
    assert empty.find("a").attrs["href"] == "/experiments/new?preset=quickstart"
    assert root.find_all("table") == []


def test_home_lists_an_experiment_with_its_runs_progress_and_best_auc(client: TestClient, session: Session) -> None:
    experiment = add_experiment(session, name="pneumonia-iid", clients=3, rounds=3)
    federated = add_run(session, experiment, status=RunStatus.RUNNING, total_rounds=3)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED, total_rounds=6)
    save_aucs(session, federated, 0.87, 0.81)  # the best round is not the last
    save_aucs(session, central, 0.9)

    table = page(client.get("/")).find("table", class_="experiments")

    head = table.find("th", scope="rowgroup")
    assert (head.find("a").text, head.find("a").attrs["href"]) == ("pneumonia-iid", f"/experiments/{experiment.id}")
    assert head.attrs["rowspan"] == "2"
    first, second = table.find("tbody").find_all("tr")
    assert first.find_all("td")[0].text == "3"  # clients
    cells = [[td.text for td in row.find_all("td")[-5:-1]] for row in (first, second)]
    assert cells == [["federated", "running", "2/3", "0.870"], ["centralized", "succeeded", "1/6", "0.900"]]
    assert [row.find_all("td")[-5].find("a").attrs["href"] for row in (first, second)] == [
        f"/runs/{federated.id}",
        f"/runs/{central.id}",
    ]
    assert first.find("progress").attrs["aria-label"] == "2 of 3 rounds"


def test_home_shows_an_experiment_that_was_never_launched(client: TestClient, session: Session) -> None:
    add_experiment(session, name="draft")

    row = page(client.get("/")).find("table", class_="experiments").find("tbody").find("tr")

    assert row.find("td", class_="muted").text == "not launched yet"


@pytest.fixture
def greek(session: Session) -> None:
    """In this order: kappa (best AUC 0.7, failed), theta (0.95), alpha (never launched), omega (0.8 and 0.6)."""
    for name, aucs, status in (
        ("kappa", [0.7], RunStatus.FAILED),
        ("theta", [0.95], RunStatus.SUCCEEDED),
        ("alpha", [], RunStatus.QUEUED),
        ("omega", [0.8, 0.6], RunStatus.SUCCEEDED),
    ):
        experiment = add_experiment(session, name=name)
        if name == "theta":
            experiment.description = "Kermany chest X-rays"
            session.commit()
        for kind, auc in zip((RunKind.FEDERATED, RunKind.CENTRALIZED), aucs, strict=False):
            save_aucs(session, add_run(session, experiment, kind=kind, status=status), auc)
        time.sleep(0.002)  # distinct created_at even on a coarse clock


@pytest.mark.parametrize(
    ("sort", "names"),
    [
        ("newest", ["omega", "alpha", "theta", "kappa"]),
        ("name", ["alpha", "kappa", "omega", "theta"]),
        ("auc", ["theta", "omega", "kappa", "alpha"]),
    ],
)
@pytest.mark.usefixtures("greek")
def test_home_sorts_experiments(client: TestClient, sort: str, names: list[str]) -> None:
    root = page(client.get("/", params={"sort": sort}))

    assert experiment_names(root) == names
    assert form_state(root)["sort"] == sort


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"q": "KAP"}, ["kappa"]),
        ({"q": "kermany"}, ["theta"]),  # the description matches
        ({"status": "failed"}, ["kappa"]),
        ({"status": "succeeded", "sort": "name"}, ["omega", "theta"]),
        ({"q": "a", "status": "succeeded"}, ["omega", "theta"]),
    ],
)
@pytest.mark.usefixtures("greek")
def test_home_filters_by_name_and_run_status(client: TestClient, params: dict[str, str], names: list[str]) -> None:
    assert experiment_names(page(client.get("/", params=params))) == names


@pytest.mark.usefixtures("greek")
def test_home_with_no_match_says_so_and_keeps_the_filters(client: TestClient) -> None:
    root = page(client.get("/", params={"q": "zeta", "status": "running"}))

    assert root.find("section", class_="empty").text == "No experiment matches these filters. Show all experiments."
    assert (form_state(root)["q"], form_state(root)["status"]) == ("zeta", "running")


# --- new experiment ---------------------------------------------------------------------------------------------


def test_new_experiment_form_has_one_field_per_config_value_and_a_description(client: TestClient) -> None:
    form = page(client.get("/experiments/new")).by_id("experiment-form")

    fields = [e for e in form.iter() if e.tag in ("input", "select", "textarea") and "name" in e.attrs]
    named = [e.attrs["name"] or "" for e in fields]
    assert sorted(named) == sorted([*forms.form_values(RunConfig()), "description"])
    assert len(named) == 30  # 29 config fields and the description


def test_every_field_of_the_new_experiment_page_has_a_label(client: TestClient) -> None:
    root = page(client.get("/experiments/new"))

    fields = [e for e in root.iter() if e.tag in ("input", "select", "textarea")]
    labels = {label.attrs.get("for"): label.text for label in root.find_all("label")}
    assert len(fields) == 30
    for element in fields:
        assert labels.get(element.attrs.get("id")), element.attrs


PRESET_VALUES = {
    "quickstart": {
        "name": "quickstart",
        "data.train.format": "synthetic",
        "data.train.samples": "600",
        "data.test.format": "holdout",
        "data.image_size": "32",
        "federation.clients": "3",
        "federation.rounds": "5",
        "centralized.enabled": "on",
        "centralized.epochs": "5",
    },
    "paper-3": {
        "name": "paper-3-clients",
        "data.train.format": "image-folder",
        "data.train.path": "data/chest_xray",
        "data.train.split": "train",
        "data.test.format": "image-folder",
        "data.test.path": "data/chest_xray",
        "data.test.split": "test",
        "data.image_size": "150",
        "federation.clients": "3",
        "federation.rounds": "10",
        "federation.intermittent.events": "",
        "centralized.epochs": "",
    },
    "paper-10": {"name": "paper-10-clients", "federation.clients": "10", "federation.partition.kind": "iid"},
    "paper-drop": {"federation.intermittent.approach": "drop", "federation.intermittent.events": SCHEDULE_TEXT},
    "paper-keep": {"federation.intermittent.approach": "keep-last", "federation.intermittent.events": SCHEDULE_TEXT},
}


@pytest.mark.parametrize("preset", list(forms.PRESETS))
def test_each_preset_prefills_the_form(client: TestClient, preset: str) -> None:
    root = page(client.get("/experiments/new", params={"preset": preset}))

    state = form_state(root.by_id("experiment-form"))
    assert {key: state[key] for key in PRESET_VALUES[preset]} == PRESET_VALUES[preset]
    current = root.find("nav", class_="presets").find("a", aria_current="true")
    assert current.attrs["href"] == f"/experiments/new?preset={preset}"


@pytest.mark.parametrize("preset", list(forms.PRESETS))
def test_each_preset_page_submits_exactly_its_config(client: TestClient, preset: str) -> None:
    """Every value reaches the page, selects included: a missing option would submit the first one instead."""
    state = form_state(page(client.get("/experiments/new", params={"preset": preset})).by_id("experiment-form"))

    cfg, _raw, errors = forms.validate_form(state)

    assert errors == {}
    assert cfg == forms.preset_config(preset)


def test_an_unknown_preset_falls_back_to_the_quick_start(client: TestClient) -> None:
    root = page(client.get("/experiments/new", params={"preset": "nope"}))

    assert form_state(root)["name"] == "quickstart"
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
    assert form_state(root.by_id("experiment-form")) == sent
    assert session.scalar(select(func.count()).where(Experiment.name == "my-study")) == 0
    assert broker.llen("runs") == 0


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
    assert "clients are numbered 1..3" in note.text


def test_posting_a_valid_form_creates_the_experiment_and_queues_both_runs(
    client: TestClient, session: Session, broker: redis.Redis
) -> None:
    response = client.post("/experiments/new", data=quickstart_form(), follow_redirects=False)

    assert response.status_code == 303
    experiment = launched_experiment(session, response.headers["location"])
    assert (experiment.name, experiment.description) == ("quickstart", "first try")
    assert experiment.config["federation"]["rounds"] == 5
    federated, central = experiment.runs
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
    expected: dict[str, Any] = {
        "name": "quickstart",
        "seed": 42,
        "data": {
            "train": {"format": "synthetic", "samples": 600, "positive_fraction": 0.5},
            "test_fraction": 0.2,
            "image_size": 32,
        },
        "model": {
            "optimizer": "rmsprop",
            "learning_rate": 0.001,
            "batch_size": 32,
            "batchnorm": "federated",
            "calibration_samples": 512,
        },
        "federation": {
            "clients": 3,
            "rounds": 5,
            "local_epochs": 1,
            "partition": {"kind": "iid"},
            "client_test_fraction": 0.25,
            "intermittent": {"approach": "drop", "events": [], "availability": 1.0},
        },
        "centralized": {"enabled": True, "epochs": 5},
    }

    body = client.post("/experiments/preview", data=quickstart_form()).json()

    assert body["errors"] == {}
    assert json.loads(body["json"]) == expected
    assert yaml.safe_load(body["yaml"]) == expected
    assert body["yaml"].startswith("name: quickstart\nseed: 42\n")


def test_preview_of_an_invalid_form_shows_what_was_given_and_the_errors_per_field(client: TestClient) -> None:
    sent = quickstart_form(federation__rounds="0", federation__intermittent__events="soon")

    body = client.post("/experiments/preview", data=sent).json()

    assert set(body["errors"]) == {"federation.rounds", "federation.intermittent.events"}
    assert body["errors"]["federation.rounds"] == "Input should be greater than or equal to 1 (got 0)"
    assert json.loads(body["json"])["federation"]["rounds"] == 0
    assert yaml.safe_load(body["yaml"])["federation"]["rounds"] == 0


# --- run page ---------------------------------------------------------------------------------------------------


def test_federated_run_page_carries_its_id_total_and_baseline_and_has_the_timeline(
    client: TestClient, session: Session
) -> None:
    experiment = add_experiment(session, rounds=4)
    federated = add_run(session, experiment, status=RunStatus.RUNNING, total_rounds=4)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED, status=RunStatus.QUEUED, total_rounds=4)
    save_aucs(session, federated, 0.8)

    root = page(client.get(f"/runs/{federated.id}"))

    run = root.by_id("run")
    assert (run.attrs["data-run-id"], run.attrs["data-total"], run.attrs["data-kind"]) == (
        str(federated.id),
        "4",
        "federated",
    )
    assert run.attrs["data-central-id"] == str(central.id)
    assert root.has_id("chart-timeline")
    assert root.by_id("progress-text").text == "1 of 4 rounds"
    assert root.by_id("empty").hidden


def test_centralized_run_page_has_no_timeline(client: TestClient, session: Session) -> None:
    experiment = add_experiment(session)
    add_run(session, experiment)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED, total_rounds=6)

    root = page(client.get(f"/runs/{central.id}"))

    assert (root.by_id("run").attrs["data-total"], root.by_id("run").attrs["data-central-id"]) == ("6", "")
    assert not root.has_id("chart-timeline")
    assert not root.has_id("chart-bytes")
    assert root.by_id("progress-text").text == "0 of 6 epochs"
    assert not root.by_id("empty").hidden


@pytest.mark.parametrize(
    ("status", "cancel_shown", "resume_shown"),
    [
        (RunStatus.QUEUED, True, False),
        (RunStatus.RUNNING, True, False),
        (RunStatus.SUCCEEDED, False, False),
        (RunStatus.FAILED, False, True),
        (RunStatus.CANCELLED, False, True),
    ],
)
def test_run_page_offers_cancel_while_active_and_resume_after_a_failure_or_cancel(
    client: TestClient, session: Session, status: RunStatus, cancel_shown: bool, resume_shown: bool
) -> None:
    run = add_run(session, add_experiment(session), status=status)

    root = page(client.get(f"/runs/{run.id}"))

    assert (not root.by_id("cancel").hidden, not root.by_id("resume").hidden) == (cancel_shown, resume_shown)


def test_failed_run_page_shows_its_error_in_the_alert(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.FAILED)
    run.error = "ValueError: data/chest_xray has no train folder"
    session.commit()

    alert = page(client.get(f"/runs/{run.id}")).by_id("error")

    assert not alert.hidden
    assert alert.attrs["role"] == "alert"
    assert alert.find(id="error-text").text == "ValueError: data/chest_xray has no train folder"


def test_run_page_without_an_error_hides_the_alert(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))

    assert page(client.get(f"/runs/{run.id}")).by_id("error").hidden


def test_unknown_run_page_is_404(client: TestClient) -> None:
    assert client.get(f"/runs/{new_id()}").status_code == 404


# --- experiment page --------------------------------------------------------------------------------------------


def test_experiment_page_lists_its_runs_with_best_auc_and_its_config(client: TestClient, session: Session) -> None:
    experiment = add_experiment(session, name="pneumonia-iid", clients=4, rounds=3)
    experiment.description = "Kermany, 4 hospitals"
    session.commit()
    run = add_run(session, experiment)
    save_aucs(session, run, 0.91, 0.88)

    root = page(client.get(f"/experiments/{experiment.id}"))

    assert root.find("h1").text == "pneumonia-iid"
    assert root.find("main").find("p").text == "Kermany, 4 hospitals"
    (item,) = root.find("ul", class_="run-list").find_all("li")
    assert item.find("a").attrs["href"] == f"/runs/{run.id}"
    assert "2/3 rounds, best AUC 0.910" in item.text
    shown = yaml.safe_load(root.find("pre", class_="config").raw_text)
    assert (shown["name"], shown["federation"]["clients"], shown["federation"]["rounds"]) == ("pneumonia-iid", 4, 3)
    assert root.find("form").attrs["action"] == f"/experiments/{experiment.id}/launch"


def test_experiment_page_without_runs_invites_to_launch(client: TestClient, session: Session) -> None:
    experiment = add_experiment(session)

    root = page(client.get(f"/experiments/{experiment.id}"))

    assert root.find("p", class_="empty").text == 'Not launched yet: press "Launch again" to start a run.'


def test_launching_again_redirects_to_the_new_federated_run(
    client: TestClient, session: Session, broker: redis.Redis
) -> None:
    experiment = add_experiment(session, rounds=3)
    old = add_run(session, experiment)

    response = client.post(f"/experiments/{experiment.id}/launch", follow_redirects=False)

    assert response.status_code == 303
    session.refresh(experiment)
    new = [run for run in experiment.runs if run.id != old.id]
    assert [(run.kind, run.status) for run in new] == [
        (RunKind.FEDERATED, RunStatus.QUEUED),
        (RunKind.CENTRALIZED, RunStatus.QUEUED),
    ]
    assert response.headers["location"] == f"/runs/{new[0].id}"
    assert queued_run_ids(broker, "runs") == [str(new[0].id)]
    assert queued_run_ids(broker, "train") == [str(new[1].id)]


def test_unknown_experiment_page_is_404(client: TestClient) -> None:
    assert client.get(f"/experiments/{new_id()}").status_code == 404


# --- compare page -----------------------------------------------------------------------------------------------


@pytest.fixture
def table3(session: Session) -> tuple[Run, Run]:
    """Federated: best accuracy, AUC and times; centralized: lowest loss."""
    experiment = add_experiment(session, name="table3", clients=3)
    federated = add_run(session, experiment, total_rounds=2)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED)
    save_round(session, federated.id, round_result(1, wall_s=10.0), "ckpt/1")
    final = metrics(loss=0.35, accuracy=0.86, auc=0.96)
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
    # Run | Clients | Loss | Accuracy | AUC | Rounds | Execution | Parallel | Time reduction
    # federated: wall 10 + 12 = 22 s, parallel (4+1+0.5+2) + (5+1+0.5+3) = 17 s; centralized: 20 + 22 + 24 = 66 s;
    # time reduction (66 - 17) / 66 = 74 %
    assert [td.text for td in fed_row.find_all("td")] == [
        "3",
        "0.350",
        "0.860 (best)",
        "0.960 (best)",
        "2",
        "22 s",
        "17 s",
        "+74 %",
    ]
    assert [td.text for td in central_row.find_all("td")] == [
        "all data",
        "0.250 (best)",
        "0.840",
        "0.910",
        "3",
        "66 s",
        "66 s",
        NO_VALUE,
    ]
    best = [[i for i, td in enumerate(row.find_all("td")) if "best" in td.classes] for row in (fed_row, central_row)]
    assert best == [[2, 3, 5, 6], [1]]  # accuracy, AUC, both times; loss
    assert root.by_id("compare-charts").attrs["data-runs"] == f"{federated.id},{central.id}"
    assert "checked" in root.by_id(f"pick-{federated.id}").attrs


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


# --- assets -----------------------------------------------------------------------------------------------------


def test_plotly_is_served_locally(client: TestClient) -> None:
    response = client.get("/static/vendor/plotly.min.js")

    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert len(response.content) > 1_000_000


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/static/css/fedlens.css", "text/css"), ("/static/js/run.js", "javascript")],
)
def test_dashboard_assets_are_served(client: TestClient, path: str, content_type: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert content_type in response.headers["content-type"]
    assert len(response.content) > 1000
