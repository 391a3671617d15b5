"""Request limits: bodies over the limit get 413 unread, 422s never echo the input, huge integers are 422s."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from starlette.types import Message

from app.main import create_app
from app.settings import Settings
from tests.api.factories import add_experiment, add_run

HUGE = str(2**70)


def test_a_json_body_over_the_limit_is_413_before_it_is_parsed(client: TestClient) -> None:
    body = b'{"config": {"name": "' + b"x" * (2**20) + b'"}}'

    response = client.post("/api/experiments", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert "1,048,576-byte limit" in response.json()["detail"]
    assert "xxxx" not in response.text


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 4096}))
    pulled: list[int] = []
    sent: list[Message] = []

    async def receive() -> Message:  # 1 KiB chunks without a Content-Length, as a chunked upload arrives
        pulled.append(1)
        return {"type": "http.request", "body": b"y" * 1024, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/api/experiments",
        "raw_path": b"/api/experiments",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("testclient", 50000),
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    }
    asyncio.run(app(scope, receive, send))

    assert sent[0]["status"] == 413
    assert "4,096-byte limit" in json.loads(sent[1]["body"])["detail"]
    assert len(pulled) == 5  # the fifth KiB passed the limit; nothing more was read


def test_a_form_over_the_limit_is_413(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    client = make_client(settings.model_copy(update={"max_body_bytes": 2048}))

    response = client.post("/experiments/new", data={"name": "z" * 5000})

    assert response.status_code == 413


def test_a_422_names_the_field_but_never_echoes_the_input(client: TestClient) -> None:
    secret = "s3cr3t-" * 200
    response = client.post(
        "/api/experiments",
        json={"config": {"name": secret, "seed": secret, "federation": {"clients": secret}, secret: 1}},
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert {item["field"].split(".")[0] for item in detail} == {"config"}
    assert all(set(item) == {"field", "message", "loc", "msg", "type"} for item in detail)
    assert secret not in response.text
    assert "s3cr3t-s3cr3t-" in response.text  # the unknown key is named, cut to a few dozen characters


@pytest.mark.parametrize("body", [b'{"config": ', b"t\xe9\xff"], ids=["cut short", "not UTF-8"])
def test_malformed_json_is_a_422_list(client: TestClient, body: bytes) -> None:
    response = client.post("/api/experiments", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    "url",
    [
        f"/api/experiments?offset={HUGE}",
        f"/api/experiments?limit={HUGE}",
        f"/api/runs/RUN/rounds?since={HUGE}",
        f"/api/runs/RUN/roc?round={HUGE}",
        f"/api/runs/RUN/gradcam?round={HUGE}",
        f"/api/runs/RUN/events?since={HUGE}",
    ],
)
def test_a_huge_integer_parameter_is_422(client: TestClient, session: Session, url: str) -> None:
    run = add_run(session, add_experiment(session))  # a run the caller may read: the parameter is what is wrong
    response = client.get(url.replace("RUN", str(run.id)))

    assert response.status_code == 422
    assert HUGE not in response.text


def test_a_huge_last_event_id_is_422(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))
    response = client.get(f"/api/runs/{run.id}/events", headers={"Last-Event-ID": HUGE})

    assert response.status_code == 422
    assert [item["field"] for item in response.json()["detail"]] == ["header.last-event-id"]


def test_a_huge_config_integer_is_422(client: TestClient) -> None:
    response = client.post("/api/experiments", json={"config": {"seed": 2**70, "data": {"image_size": 2**70}}})

    assert response.status_code == 422
    assert sorted(item["field"] for item in response.json()["detail"]) == ["config.data.image_size", "config.seed"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/tokens", {"name": "nightly\x00"}, "name"),
        ("/api/experiments", {"config": {"name": "a\x00b"}}, "config.name"),
        ("/api/experiments", {"config": {}, "description": "\x00"}, "description"),
    ],
)
def test_text_with_a_nul_character_is_a_422_not_a_database_error(
    client: TestClient, path: str, body: dict[str, object], field: str
) -> None:
    """PostgreSQL's text columns refuse NUL; without the check the insert failed as a 500."""
    response = client.post(path, json=body)

    assert response.status_code == 422
    assert [item["field"] for item in response.json()["detail"]] == [field]
