"""REST API of experiments: create, list, read, validation errors and launching runs onto the Redis queues."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.models import Experiment
from app.settings import Settings
from tests.api.factories import new_id

CONFIG: dict[str, Any] = {"name": "pneumonia-iid", "federation": {"clients": 5, "rounds": 4, "local_epochs": 2}}


def create(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/experiments", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def queued_messages(broker: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Celery messages waiting in a Redis queue, oldest first, with their body decoded to (args, kwargs, embed)."""
    messages = []
    for raw in reversed(broker.lrange(queue, 0, -1)):  # kombu LPUSHes and BRPOPs: the tail is the oldest
        message = json.loads(raw)
        assert message["properties"]["body_encoding"] == "base64"
        message["decoded"] = json.loads(base64.b64decode(message["body"]))
        messages.append(message)
    return messages


def field_errors(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {item["field"]: item["message"] for item in response.json()["detail"]}


def test_create_fills_defaults_and_names_the_experiment_after_the_config(client: TestClient) -> None:
    body = create(client, {"config": CONFIG})

    assert body["name"] == "pneumonia-iid"
    assert body["description"] == ""
    assert body["runs"] == []
    config = body["config"]
    assert config["seed"] == 42
    assert config["federation"] == {
        "clients": 5,
        "rounds": 4,
        "local_epochs": 2,
        "partition": {"kind": "iid"},
        "client_test_fraction": 0.25,
        "client_validation_fraction": 0.1,
        "intermittent": {"approach": "drop", "events": [], "availability": 1.0},
        "sites": [],  # a simulation: no hospital sites
        "round_timeout_s": 3600.0,
        "min_sites": 1,
    }
    assert config["evaluation"] == {"threshold": {"method": "youden", "target_sensitivity": 0.9, "value": 0.5}}
    assert config["model"]["optimizer"] == "rmsprop"
    assert config["data"]["train"]["format"] == "synthetic"
    assert config["centralized"] == {"enabled": True, "epochs": None}


def test_create_with_an_empty_config_uses_the_default_name(client: TestClient) -> None:
    assert create(client, {"config": {}})["name"] == "experiment"


def test_an_explicit_name_wins_over_the_config_name(client: TestClient) -> None:
    body = create(client, {"name": "baseline", "description": "first try", "config": CONFIG})

    assert (body["name"], body["description"], body["config"]["name"]) == ("baseline", "first try", "pneumonia-iid")


def test_get_returns_the_stored_experiment(client: TestClient) -> None:
    created = create(client, {"config": CONFIG})

    response = client.get(f"/api/experiments/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_list_pages_newest_first_with_total_limit_and_offset(client: TestClient, session: Session) -> None:
    before = client.get("/api/experiments").json()["total"]
    ids = [create(client, {"config": {"name": name}})["id"] for name in ("first", "second", "third")]
    later = datetime.now(UTC) + timedelta(days=1)  # newer than anything stored, a minute apart: no clock races
    for minutes, experiment_id in enumerate(ids):
        row = update(Experiment).where(Experiment.id == uuid.UUID(experiment_id))
        session.execute(row.values(created_at=later + timedelta(minutes=minutes)))

    first_page = client.get("/api/experiments", params={"limit": 2}).json()
    second_page = client.get("/api/experiments", params={"limit": 2, "offset": 1}).json()

    assert (first_page["total"], first_page["limit"], first_page["offset"]) == (before + 3, 2, 0)
    assert [e["id"] for e in first_page["items"]] == [ids[2], ids[1]]
    assert [e["name"] for e in first_page["items"]] == ["third", "second"]
    assert (second_page["limit"], second_page["offset"]) == (2, 1)
    assert [e["id"] for e in second_page["items"]] == [ids[1], ids[0]]


def test_list_rejects_a_limit_above_200(client: TestClient) -> None:
    assert field_errors(client.get("/api/experiments", params={"limit": 201})).keys() == {"query.limit"}


def test_unknown_experiment_is_404_with_its_id(client: TestClient) -> None:
    missing = new_id()

    for response in (client.get(f"/api/experiments/{missing}"), client.post(f"/api/experiments/{missing}/runs")):
        assert response.status_code == 404
        assert missing in response.json()["detail"]


def test_unknown_run_is_404(client: TestClient) -> None:
    missing = new_id()

    response = client.get(f"/api/runs/{missing}")

    assert response.status_code == 404
    assert response.json() == {"detail": f"no run with id {missing}"}


def test_unknown_field_is_422_naming_its_dotted_path(client: TestClient) -> None:
    config = {"federation": {"clients": 3, "colour": "blue"}}

    errors = field_errors(client.post("/api/experiments", json={"config": config}))

    assert list(errors) == ["config.federation.colour"]
    assert "Extra inputs are not permitted" in errors["config.federation.colour"]


def test_unknown_top_level_field_is_422(client: TestClient) -> None:
    errors = field_errors(client.post("/api/experiments", json={"config": {}, "owner": "me"}))

    assert list(errors) == ["owner"]


def test_zero_rounds_is_422_naming_the_bound(client: TestClient) -> None:
    errors = field_errors(client.post("/api/experiments", json={"config": {"federation": {"rounds": 0}}}))

    assert list(errors) == ["config.federation.rounds"]
    assert "greater than or equal to 1" in errors["config.federation.rounds"]


def test_clients_of_the_wrong_type_is_422(client: TestClient) -> None:
    errors = field_errors(client.post("/api/experiments", json={"config": {"federation": {"clients": "three"}}}))

    assert list(errors) == ["config.federation.clients"]
    assert "valid integer" in errors["config.federation.clients"]


def test_unknown_partition_kind_is_422_listing_the_known_kinds(client: TestClient) -> None:
    config = {"federation": {"partition": {"kind": "stratified"}}}

    errors = field_errors(client.post("/api/experiments", json={"config": config}))

    assert list(errors) == ["config.federation.partition"]
    message = errors["config.federation.partition"]
    assert "'stratified'" in message
    assert all(kind in message for kind in ("'iid'", "'sizes'", "'dirichlet'"))


def test_an_event_out_of_range_is_422_naming_the_event_field(client: TestClient) -> None:
    config = {"federation": {"clients": 3, "rounds": 5, "intermittent": {"events": [{"client": 2, "joins": 9}]}}}

    errors = field_errors(client.post("/api/experiments", json={"config": config}))

    assert errors == {"config.federation.intermittent.events.0.joins": "client 2 joins at round 9; rounds are 1..5"}


def test_every_invalid_field_is_reported_at_once(client: TestClient) -> None:
    config = {"seed": -1, "federation": {"rounds": 0}}

    errors = field_errors(client.post("/api/experiments", json={"config": config}))

    assert set(errors) == {"config.seed", "config.federation.rounds"}


def test_malformed_uuid_in_the_path_is_422(client: TestClient) -> None:
    for path in ("/api/experiments/not-a-uuid", "/api/runs/not-a-uuid", "/api/runs/not-a-uuid/rounds"):
        response = client.get(path)
        field = "path.experiment_id" if "experiments" in path else "path.run_id"
        assert list(field_errors(response)) == [field], path


def test_launch_queues_a_federated_run_and_its_centralized_baseline(client: TestClient) -> None:
    experiment = create(client, {"config": CONFIG})

    response = client.post(f"/api/experiments/{experiment['id']}/runs")

    assert response.status_code == 201, response.text
    federated, central = response.json()["federated"], response.json()["centralized"]
    assert (federated["kind"], federated["status"], federated["total_rounds"]) == ("federated", "queued", 4)
    assert (central["kind"], central["status"], central["total_rounds"]) == ("centralized", "queued", 4 * 2)
    for run in (federated, central):
        assert (run["experiment_id"], run["seed"], run["current_round"]) == (experiment["id"], 42, 0)
        assert not run["has_model"]
    stored = client.get(f"/api/experiments/{experiment['id']}").json()["runs"]
    assert {r["id"] for r in stored} == {federated["id"], central["id"]}


def test_launch_sends_the_federated_run_to_runs_and_the_baseline_to_train(
    client: TestClient, broker: redis.Redis
) -> None:
    experiment = create(client, {"config": CONFIG})

    launched = client.post(f"/api/experiments/{experiment['id']}/runs").json()

    runs_queue, train_queue = queued_messages(broker, "runs"), queued_messages(broker, "train")
    assert len(runs_queue) == 1
    assert len(train_queue) == 1
    for message, run in ((runs_queue[0], launched["federated"]), (train_queue[0], launched["centralized"])):
        assert message["headers"]["task"] == "fedlens.train_run"
        assert message["headers"]["ignore_result"] is True  # outcomes are read from the database
        args, kwargs, _embed = message["decoded"]
        assert (args, kwargs) == ([run["id"]], {})


def test_launch_without_centralized_creates_and_sends_only_the_federated_run(
    client: TestClient, broker: redis.Redis
) -> None:
    config = {**CONFIG, "centralized": {"enabled": False}}
    experiment = create(client, {"config": config})

    launched = client.post(f"/api/experiments/{experiment['id']}/runs").json()

    assert launched["centralized"] is None
    assert [r["id"] for r in client.get(f"/api/experiments/{experiment['id']}").json()["runs"]] == [
        launched["federated"]["id"]
    ]
    assert [m["decoded"][0] for m in queued_messages(broker, "runs")] == [[launched["federated"]["id"]]]
    assert broker.llen("train") == 0


def test_launch_with_the_broker_down_is_503_and_keeps_the_runs_queued(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    client = make_client(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    experiment = create(client, {"config": CONFIG})

    response = client.post(f"/api/experiments/{experiment['id']}/runs")

    assert response.status_code == 503
    assert "the broker is unreachable" in response.json()["detail"]
    runs = client.get(f"/api/experiments/{experiment['id']}").json()["runs"]
    assert sorted((r["kind"], r["status"]) for r in runs) == [("centralized", "queued"), ("federated", "queued")]
