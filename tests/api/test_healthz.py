"""The health check answers 200 only when both the database and the broker do, else 503 naming what failed."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.settings import Settings

CLOSED_PORT = "redis://127.0.0.1:1/0"
CLOSED_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def test_healthz_is_200_when_database_and_broker_answer(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


def test_healthz_is_503_naming_the_broker_when_it_is_unreachable(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    client = make_client(settings.model_copy(update={"broker_url": CLOSED_PORT}))

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("error: ")
    assert "127.0.0.1:1" in body["broker"]


def test_healthz_is_503_naming_the_database_when_it_is_unreachable(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    client = make_client(settings.model_copy(update={"database_url": CLOSED_DATABASE}))

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["broker"] == "ok"
    assert body["database"].startswith("error: ")
    assert "port 1 failed" in body["database"]
