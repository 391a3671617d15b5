"""Schemathesis on every operation of the OpenAPI schema: no server error, and every status code, content type and
body the API answers is the one its schema documents."""

from __future__ import annotations

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

import app.broker
from app.db import get_session
from app.main import create_app
from app.models import RunKind
from app.settings import Settings
from tests.api.factories import add_experiment, add_run, round_result, trained
from worker.store import save_round

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
)


@pytest.fixture
def api_schema(
    settings: Settings,
    session: Session,
    broker: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    admin_headers: dict[str, str],
) -> schemathesis.BaseSchema:
    """The app on the test database and the suite's Redis db; a data check gets the report a worker sends for data
    it cannot read (no test starts a worker, and the API would wait a minute for one)."""
    report = {"ok": False, "errors": [{"field": "data.train", "message": "no images under data.train.path"}]}
    monkeypatch.setattr(app.broker, "check_data", lambda _celery, _config: report)
    api: FastAPI = create_app(settings.model_copy(update={"required_workers": []}))  # no workers run here
    api.dependency_overrides[get_session] = lambda: session
    return schemathesis.openapi.from_asgi("/openapi.json", api, headers=admin_headers)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
def test_every_operation_answers_as_documented(case: schemathesis.Case, admin_headers: dict[str, str]) -> None:
    """As an admin, who may call every operation: authorization itself is test_authorization.py's matrix."""
    case.call_and_validate(headers=admin_headers, checks=CHECKS)


def test_the_answers_about_a_stored_run_match_the_schema(
    api_schema: schemathesis.BaseSchema, client: TestClient, session: Session
) -> None:
    """Random ids mostly meet 404s: a run with stored rounds shows that the 200 bodies match their schemas too."""
    experiment = add_experiment(session)
    run = add_run(session, experiment)
    central = add_run(session, experiment, kind=RunKind.CENTRALIZED)
    for number in (1, 2):
        save_round(session, run.id, round_result(number, clients=[trained("1"), trained("2")]), f"ckpt/{number}")
    save_round(session, central.id, round_result(1), "ckpt/c1")
    calls = {
        ("GET", "/api/experiments"): "/api/experiments",
        ("GET", "/api/experiments/{experiment_id}"): f"/api/experiments/{experiment.id}",
        ("GET", "/api/runs/{run_id}"): f"/api/runs/{run.id}",
        ("GET", "/api/runs/{run_id}/rounds"): f"/api/runs/{run.id}/rounds",
        ("GET", "/api/runs/{run_id}/roc"): f"/api/runs/{run.id}/roc",
        ("GET", "/api/runs/{run_id}/metrics.csv"): f"/api/runs/{run.id}/metrics.csv",
        ("GET", "/api/runs/{run_id}/gradcam"): f"/api/runs/{run.id}/gradcam",
        ("GET", "/api/compare"): f"/api/compare?runs={run.id},{central.id}",
        ("GET", "/api/compare.csv"): f"/api/compare.csv?runs={run.id},{central.id}",
        ("POST", "/api/runs/{run_id}/cancel"): f"/api/runs/{run.id}/cancel",
    }
    for (method, template), url in calls.items():
        response = client.request(method, url)
        assert response.status_code < 300 or (method, response.status_code) == ("POST", 409), (url, response.text)
        api_schema[template][method].validate_response(response)
