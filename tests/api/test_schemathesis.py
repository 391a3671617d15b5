"""Schemathesis on every operation of the OpenAPI schema: no server error, and every status code, content type and
body the API answers is the one its schema documents."""

from __future__ import annotations

import pytest
import redis
import schemathesis
from fastapi import FastAPI
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
from app.settings import Settings
from tests.api.auth import auth_headers

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
)


@pytest.fixture
def api_schema(
    settings: Settings, session: Session, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> schemathesis.BaseSchema:
    """The app on the test database and the suite's Redis db; a data check gets the report a worker sends for data
    it cannot read (no test starts a worker, and the API would wait a minute for one)."""
    report = {"ok": False, "errors": [{"field": "data.train", "message": "no images under data.train.path"}]}
    monkeypatch.setattr(app.broker, "check_data", lambda _celery, _config: report)
    api: FastAPI = create_app(settings)
    api.dependency_overrides[get_session] = lambda: session
    return schemathesis.openapi.from_asgi("/openapi.json", api)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=auth_headers(), checks=CHECKS)
