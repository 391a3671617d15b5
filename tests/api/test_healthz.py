"""/healthz answers 200 only when the database, the broker and a worker of each required queue are alive; else 503
naming what is missing, without hosts, ports or paths (the endpoint is anonymous)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from fastapi.testclient import TestClient

from app.health.heartbeats import Heartbeat, key
from app.settings import Settings

CLOSED_PORT = "redis://127.0.0.1:1/0"
CLOSED_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def beat(broker: redis.Redis, name: str, *queues: str) -> Heartbeat:
    heartbeat = Heartbeat(broker, name, queues, period_s=60)
    heartbeat.beat()
    return heartbeat


def test_healthz_is_200_with_each_part_and_its_last_heartbeat(client: TestClient, broker: redis.Redis) -> None:
    beat(broker, "runs@a", "runs")
    beat(broker, "train@a", "train")
    beat(broker, "train@b", "train")

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["broker"], body["missing"]) == ("ok", "ok", "ok", [])
    assert (body["orchestrators"]["alive"], body["training_workers"]["alive"]) == (1, 2)
    assert body["training_workers"]["status"] == "ok" and body["training_workers"]["last_heartbeat_age_s"] < 5
    assert body["check_workers"]["status"] == "missing", "reported, though not required by default"


def test_healthz_is_503_naming_the_training_workers_when_none_beats(client: TestClient, broker: redis.Redis) -> None:
    beat(broker, "runs@a", "runs")

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["missing"] == ["training_workers (none beat in the last 15 s)"]


def test_a_worker_silent_longer_than_three_heartbeats_is_missing_with_its_last_beat(
    client: TestClient, broker: redis.Redis
) -> None:
    beat(broker, "runs@a", "runs")
    broker.hset(key("train"), "train@a", time.time() - 40)

    response = client.get("/healthz")

    assert response.status_code == 503
    workers = response.json()["training_workers"]
    assert (workers["status"], workers["alive"]) == ("missing", 0)
    assert 39 <= workers["last_heartbeat_age_s"] < 45


def test_a_worker_that_stops_cleanly_is_missing_at_once(client: TestClient, broker: redis.Redis) -> None:
    beat(broker, "runs@a", "runs")
    Heartbeat(broker, "train@a", ["train"], period_s=60).start().stop()

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["training_workers"] == {
        "status": "missing",
        "alive": 0,
        "last_heartbeat": None,
        "last_heartbeat_age_s": None,
    }


def test_a_required_check_worker_is_missing_when_none_beats(
    make_client: Callable[[Settings], TestClient], settings: Settings, broker: redis.Redis
) -> None:
    beat(broker, "all@a", "runs", "train")
    client = make_client(settings.model_copy(update={"required_workers": ["runs", "train", "check"]}))

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["missing"] == ["check_workers (none beat in the last 15 s)"]


def test_healthz_is_503_naming_the_broker_without_its_address(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    client = make_client(settings.model_copy(update={"broker_url": CLOSED_PORT}))

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert (body["database"], body["broker"], body["missing"]) == ("ok", "unreachable", ["broker"])
    assert "127.0.0.1" not in response.text


def test_healthz_is_503_naming_the_database_without_its_address(
    make_client: Callable[[Settings], TestClient], settings: Settings, broker: redis.Redis
) -> None:
    beat(broker, "all@a", "runs", "train")
    client = make_client(settings.model_copy(update={"database_url": CLOSED_DATABASE}))

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert (body["database"], body["broker"], body["missing"]) == ("unreachable", "ok", ["database"])
    assert "127.0.0.1" not in response.text and "port" not in response.text
