"""The new-experiment form in "Hospital sites" mode: the registered sites to pick, and the config it submits."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Site, utcnow
from tests.api.pages import launched_experiment, queued_run_ids, quickstart_form
from tests.api.pagetree import Element, form_state, page


def _dataset(name: str, train: tuple[int, int], test: tuple[int, int] = (10, 10)) -> dict[str, Any]:
    counts = {
        "train": {"negative": train[0], "positive": train[1]},
        "validation": {"negative": 5, "positive": 5},
        "test": {"negative": test[0], "positive": test[1]},
    }
    return {"name": name, "format": "image-folder", "counts": counts, "fingerprint": "0" * 64, "split_seed": 7}


@pytest.fixture
def sites(session: Session) -> list[Site]:
    """hospital-b online with two datasets (one skewed), hospital-a offline, hospital-c never enrolled."""
    made = [
        Site(name="hospital-b", public_key="k" * 44, last_seen_at=utcnow(), datasets=[_dataset("chest", (30, 70))]),
        Site(name="hospital-a", public_key="q" * 44, datasets=[_dataset("chest", (40, 60)), _dataset("old", (95, 5))]),
        Site(name="hospital-c", datasets=[]),
    ]
    made[0].datasets.append(_dataset("rsna", (50, 50)))
    session.add_all(made)
    session.commit()
    return made


def _rows(root: Element) -> list[Element]:
    return root.by_id("site-choices").find("tbody").find_all("tr")


def sites_form(picked: dict[str, str] | None = None, **changes: str) -> dict[str, str]:
    """The quick-start form switched to sites mode, then the site fields ``picked`` (keys use __ for .)."""
    return quickstart_form(mode="sites", **changes) | (picked or {})


def test_sites_mode_lists_every_site_with_its_state_datasets_and_skew(client: TestClient, sites: list[Site]) -> None:
    root = page(client.get("/experiments/new"))

    rows = _rows(root)
    assert [r.attrs["data-site"] for r in rows] == ["hospital-a", "hospital-b", "hospital-c"]
    assert [r.find_all("td")[1].text for r in rows] == ["offline", "online", "not enrolled"]
    a = rows[0]
    assert [o.text for o in a.find("select").find_all("option")] == ["chest", "old"]
    assert a.find(data_dataset="chest").text == "chest: train 40 + 60 · validation 5 + 5 · test 10 + 10"
    assert a.find(data_skew="old").text == "label skew: 5% of its training images are PNEUMONIA"
    assert a.find_all(data_skew="chest") == []
    assert rows[2].find_all("option") == []
    assert "none declared yet" in rows[2].text
    picker = root.by_id("federation.sites").parent
    assert picker.attrs["data-show-when"] == "mode=sites"
    assert root.find("select", name="mode").parent.parent.find("legend").text == "Where the data is"


def test_the_training_data_clients_partition_and_baseline_hide_in_sites_mode(client: TestClient) -> None:
    root = page(client.get("/experiments/new"))

    hidden = ("data.train.format", "data.train.path", "federation.clients", "federation.partition.kind")
    for name in (*hidden, "centralized.epochs"):
        assert "mode=simulation" in _shown_when(root.find(name=name)), name
    for name in ("data.image_size", "data.test.format", "federation.rounds", "federation.intermittent.approach"):
        assert "mode=simulation" not in _shown_when(root.find(name=name)), name


def _shown_when(element: Element) -> list[str | None]:
    """The data-show-when conditions of the element's ancestors."""
    found = []
    while element.parent is not None:
        element = element.parent
        found.append(element.attrs.get("data-show-when"))
    return found


def test_the_preview_of_a_sites_form_lists_the_ticked_sites_in_the_form_order(client: TestClient) -> None:
    ticked = {"site:hospital-b": "on", "site:hospital-b:dataset": "rsna", "site:hospital-c:dataset": ""}
    ticked |= {"site:hospital-a": "on", "site:hospital-a:dataset": "chest"}
    sent = sites_form(federation__round_timeout_s="120", federation__min_sites="2") | ticked

    body = client.post("/experiments/preview", data=sent).json()

    assert body["errors"] == {}
    config = json.loads(body["json"])
    assert config["federation"]["sites"] == [
        {"site": "hospital-b", "dataset": "rsna"},
        {"site": "hospital-a", "dataset": "chest"},
    ]
    assert (config["federation"]["clients"], config["federation"]["round_timeout_s"]) == (2, 120.0)
    assert config["federation"]["min_sites"] == 2
    assert config["federation"]["partition"] == {"kind": "iid"}  # the form's "sizes" or alpha are not sent
    assert config["centralized"]["enabled"] is False  # the form's ticked baseline is not sent: no pooled data
    assert config["data"]["train"] == {"format": "synthetic", "samples": 600, "positive_fraction": 0.5}  # the default


def test_sites_mode_without_a_ticked_site_is_an_error_at_the_site_list(client: TestClient, sites: list[Site]) -> None:
    root = page(client.post("/experiments/new", data=sites_form()))

    assert root.find(data_error_for="federation.sites").text == "pick at least one site"
    assert root.find(data_error_for="federation.sites").parent.attrs["id"] == "federation.sites"
    assert root.by_id("form-errors").find("a").attrs["href"] == "#federation.sites"
    assert form_state(root.by_id("experiment-form"))["mode"] == "sites"


def test_a_site_without_a_dataset_is_an_error_next_to_its_row(client: TestClient, sites: list[Site]) -> None:
    sent = sites_form({"site:hospital-c": "on", "site:hospital-a": "on", "site:hospital-a:dataset": "chest"})

    root = page(client.post("/experiments/new", data=sent))

    note = root.find(data_error_for="site:hospital-c:dataset")
    assert note.text == "choose a dataset; this site's agent has declared none yet"
    assert note.parent is root.find("select", name="site:hospital-c:dataset").parent
    assert root.find("select", name="site:hospital-c:dataset").attrs["aria-invalid"] == "true"
    state = form_state(root.by_id("experiment-form"))
    assert (state["site:hospital-a"], state["site:hospital-c"], state["site:hospital-b"]) == ("on", "on", "")
    # the ticked sites come first, in the order they were sent: client 1 stays client 1
    assert [r.attrs["data-site"] for r in _rows(root)] == ["hospital-c", "hospital-a", "hospital-b"]


def test_more_minimum_sites_than_sites_ticked_is_an_error_at_min_sites(client: TestClient, sites: list[Site]) -> None:
    sent = sites_form({"site:hospital-a": "on", "site:hospital-a:dataset": "chest"}, federation__min_sites="2")

    root = page(client.post("/experiments/new", data=sent))

    note = root.find(data_error_for="federation.min_sites")
    assert note.text == "min_sites 2 is more than the 1 sites listed (got 2)"
    assert note.parent is root.find("input", name="federation.min_sites").parent


def test_a_valid_sites_form_launches_one_federated_run_over_the_sites(
    client: TestClient, session: Session, broker: redis.Redis, sites: list[Site]
) -> None:
    sent = sites_form({"site:hospital-a": "on", "site:hospital-a:dataset": "old", "site:hospital-b": "on"})
    sent |= {"site:hospital-b:dataset": "chest"}

    response = client.post("/experiments/new", data=sent, follow_redirects=False)

    assert response.status_code == 303, response.text
    experiment = launched_experiment(session, response.headers["location"])
    assert experiment.config["federation"]["sites"] == [
        {"site": "hospital-a", "dataset": "old"},
        {"site": "hospital-b", "dataset": "chest"},
    ]
    assert len(experiment.runs) == 1
    assert queued_run_ids(broker, "runs") == [str(experiment.runs[0].id)]


def test_edit_and_relaunch_of_a_sites_experiment_ticks_its_sites_in_order(
    client: TestClient, sites: list[Site]
) -> None:
    config = {"name": "over sites", "federation": {"sites": [{"site": "hospital-b", "dataset": "rsna"}]}}
    created = client.post("/api/experiments", json={"config": config}).json()

    root = page(client.get(f"/experiments/new?from={created['id']}"))

    state = form_state(root.by_id("experiment-form"))
    assert (state["mode"], state["site:hospital-b"], state["site:hospital-b:dataset"]) == ("sites", "on", "rsna")
    assert state["site:hospital-a"] == ""
    assert _rows(root)[0].attrs["data-site"] == "hospital-b"
    assert client.post("/experiments/preview", data=state).json()["errors"] == {}


def test_the_local_baseline_box_sits_in_sites_mode_and_sends_baselines_local(client: TestClient) -> None:
    picked = {"site:hospital-a": "on", "site:hospital-a:dataset": "chest"}
    root = page(client.get("/experiments/new"))

    ticked = client.post("/experiments/preview", data=sites_form(picked, baselines="on")).json()
    unticked = client.post("/experiments/preview", data=sites_form(picked)).json()
    simulation = client.post("/experiments/preview", data=quickstart_form(baselines="on")).json()

    assert "mode=sites" in _shown_when(root.find("input", name="baselines"))
    assert root.by_id("baselines").attrs["type"] == "checkbox"
    assert ticked["errors"] == {} and json.loads(ticked["json"])["baselines"] == ["local"]
    assert json.loads(unticked["json"])["baselines"] == []
    assert json.loads(simulation["json"])["baselines"] == []  # hidden with the sites: a simulation ignores it


def test_a_local_baseline_with_differential_privacy_is_an_error_at_the_box(
    client: TestClient, sites: list[Site]
) -> None:
    sent = sites_form({"site:hospital-a": "on", "site:hospital-a:dataset": "chest"}, baselines="on")
    sent |= {"privacy.dp.level": "sample"}

    root = page(client.post("/experiments/new", data=sent))

    note = root.find(data_error_for="baselines")
    assert note.text.startswith("a local-only model trains without differential privacy")
    assert note.parent is root.by_id("baselines").parent
    assert root.by_id("baselines").attrs["aria-invalid"] == "true"
    assert root.by_id("form-errors").find("a", data_field="baselines").attrs["href"] == "#baselines"
    assert form_state(root.by_id("experiment-form"))["baselines"] == "on"


def test_edit_and_relaunch_keeps_the_local_baseline_ticked(client: TestClient, sites: list[Site]) -> None:
    config = {"federation": {"sites": [{"site": "hospital-b", "dataset": "rsna"}]}, "baselines": ["local"]}
    created = client.post("/api/experiments", json={"config": config}).json()

    state = form_state(page(client.get(f"/experiments/new?from={created['id']}")).by_id("experiment-form"))

    assert state["baselines"] == "on"
    assert json.loads(client.post("/experiments/preview", data=state).json()["json"])["baselines"] == ["local"]
