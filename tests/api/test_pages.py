"""Dashboard pages rendered by the server: home, run, experiment and static assets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import RunKind, RunStatus
from tests.api.factories import add_experiment, add_run, new_id
from tests.api.pages import experiment_names, queued_run_ids, save_aucs
from tests.api.pagetree import Element, form_state, page

LATER = datetime.now(UTC) + timedelta(days=1)  # explicit creation times, newer than anything stored
SECOND = timedelta(seconds=1)

# --- home -------------------------------------------------------------------------------------------------------


def test_home_without_experiments_invites_to_the_quick_start(client: TestClient) -> None:
    root = page(client.get("/"))

    empty = root.find("section", class_="empty")
    assert empty.text.startswith("No experiments yet. Start with the synthetic quick start")
    assert empty.find("a").attrs["href"] == "/experiments/new?preset=quickstart"
    assert root.find_all("table") == []


def test_home_lists_an_experiment_with_its_runs_progress_and_best_auc(client: TestClient, session: Session) -> None:
    experiment = add_experiment(session, name="pneumonia-iid", clients=3, rounds=3)
    federated = add_run(session, experiment, status=RunStatus.RUNNING, total_rounds=3, created_at=LATER)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED, total_rounds=6, created_at=LATER + SECOND)
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
    """Created a minute apart in this order: kappa (best AUC 0.7, failed), theta (0.95), alpha (never launched),
    omega (0.8 and 0.6)."""
    for minutes, (name, aucs, status) in enumerate(
        (
            ("kappa", [0.7], RunStatus.FAILED),
            ("theta", [0.95], RunStatus.SUCCEEDED),
            ("alpha", [], RunStatus.QUEUED),
            ("omega", [0.8, 0.6], RunStatus.SUCCEEDED),
        )
    ):
        experiment = add_experiment(session, name=name, created_at=LATER + timedelta(minutes=minutes))
        if name == "theta":
            experiment.description = "Kermany chest X-rays"
            session.commit()
        for kind, auc in zip((RunKind.FEDERATED, RunKind.CENTRALIZED), aucs, strict=False):
            save_aucs(session, add_run(session, experiment, kind=kind, status=status), auc)


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


def test_centralized_run_page_speaks_of_epochs_and_training_data_not_of_clients(
    client: TestClient, session: Session
) -> None:
    experiment = add_experiment(session, events=[{"client": 3, "joins": 2}])
    add_run(session, experiment)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED, total_rounds=6)

    root = page(client.get(f"/runs/{central.id}"))

    assert (root.by_id("run").attrs["data-total"], root.by_id("run").attrs["data-central-id"]) == ("6", "")
    summary = root.by_id("run-summary").text
    assert summary.startswith("Baseline: the same model trained on all the training data in one place · synthetic")
    assert "client" not in summary and "intermittent" not in summary
    charts = ("chart-client-loss", "chart-client-accuracy", "chart-timeline", "chart-bytes")
    assert [chart for chart in charts if root.has_id(chart)] == []
    assert root.has_id("chart-fit-loss") and root.has_id("chart-fit-accuracy")
    assert root.find("label", class_="chart-control").text == "ROC of epoch"
    table = root.by_id("client-table")
    assert table.parent.parent.find("h2").text == "Training data"
    assert [th.text for th in table.find_all("th")] == [
        "Data",
        "Images",
        "Epochs trained",
        "Train loss",
        "Train accuracy",
    ]
    assert root.by_id("progress-text").text == "0 of 6 epochs"
    assert not root.by_id("empty").hidden
    assert "client" not in root.by_id("empty").text


@pytest.mark.parametrize(
    ("status", "cancel_requested", "line"),
    [
        (RunStatus.QUEUED, False, "The run waits for a worker (fedlens worker -Q runs and -Q train, or fedlens up)."),
        (RunStatus.RUNNING, False, "The first round is training."),
        (RunStatus.RUNNING, True, "Cancelling: the run stops before its next training task."),
        (
            RunStatus.CANCELLED,
            True,
            "The run was cancelled before its first round finished; Resume starts it from round 1.",
        ),
        (RunStatus.FAILED, False, "The run failed before its first round finished (the error is above)."),
    ],
)
def test_a_run_without_rounds_says_what_will_appear_and_why_nothing_has_yet(
    client: TestClient, session: Session, status: RunStatus, cancel_requested: bool, line: str
) -> None:
    run = add_run(session, add_experiment(session), status=status)
    run.cancel_requested = cancel_requested
    session.commit()

    root = page(client.get(f"/runs/{run.id}"))

    what, *why = [p.text for p in root.by_id("empty").find_all("p") if not p.hidden]
    assert what.startswith("No round has finished yet. The test loss, accuracy and AUC per round, the ROC curve,")
    assert why == [line]
    assert root.by_id("roc-card").hidden, "no ROC box and no round picker before a round"
    assert all(figure.hidden for figure in root.find_all("figure"))


def test_the_run_page_says_what_the_worker_read_and_opens_the_list_of_skipped_files(
    client: TestClient, session: Session
) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    seen = {"classes": {"NORMAL": 1200, "PNEUMONIA": 3400}, "sizes": {"64x64": 4600}, "bit_depths": {"8": 4600}}
    run.data_report = {
        "data.train": seen | {"skipped": {"unsupported file type '.txt'": 2, "file directly in train/": 1}},
        "data.test": seen | {"skipped": {}},
    }
    session.commit()

    report = page(client.get(f"/runs/{run.id}")).by_id("data-report")

    assert "open" in report.attrs
    assert report.find("summary").text == "What the worker read: 3 file(s) skipped"
    sources = report.find_all("ul")[0]
    train, test = [li for li in sources.children if isinstance(li, Element) and li.tag == "li"]
    assert train.text.startswith("data.train: 1,200 NORMAL, 3,400 PNEUMONIA; sizes 64x64 (4,600); 8-bit")
    assert [li.text for li in train.find("ul").find_all("li")] == [
        "2 file(s) skipped: unsupported file type '.txt'",
        "1 file(s) skipped: file directly in train/",
    ]
    assert test.find_all("ul") == []


def test_a_run_with_a_round_shows_its_roc_box_and_no_waiting_text(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session), status=RunStatus.RUNNING)
    save_aucs(session, run, 0.8)

    root = page(client.get(f"/runs/{run.id}"))

    assert not root.by_id("roc-card").hidden
    assert root.by_id("empty").hidden


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
    assert root.find("main").find("form").attrs["action"] == f"/experiments/{experiment.id}/launch"


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
    new = {run.kind: run for run in experiment.runs if run.id != old.id}  # one launch: no order between them
    assert len(experiment.runs) == 3
    assert {kind: run.status for kind, run in new.items()} == {
        RunKind.FEDERATED: RunStatus.QUEUED,
        RunKind.CENTRALIZED: RunStatus.QUEUED,
    }
    assert response.headers["location"] == f"/runs/{new[RunKind.FEDERATED].id}"
    assert queued_run_ids(broker, "runs") == [str(new[RunKind.FEDERATED].id)]
    assert queued_run_ids(broker, "train") == [str(new[RunKind.CENTRALIZED].id)]


def test_unknown_experiment_page_is_404(client: TestClient) -> None:
    assert client.get(f"/experiments/{new_id()}").status_code == 404


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
