"""Deployments for the end-to-end tests: PostgreSQL + Redis on this machine, and the embedded default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.embedded import EmbeddedRedis
from app.migrate import upgrade
from tests.e2e.stack import ROOT, Stack
from tests.realdata import SHARED_DATA
from tests.services import database_name, ensure_database, postgres_url, redis_url

PG_E2E_NAME = database_name("fedlens_e2e")
PG_E2E = postgres_url(PG_E2E_NAME)
REDIS_E2E = redis_url("e2e")


def _fresh_postgres() -> None:
    ensure_database(PG_E2E_NAME, fresh=True)
    upgrade(PG_E2E)


#: For a test of failure and recovery: the code that recovers is the same on both deployments, and the embedded
#: one is killed child by child under ``fedlens up`` in test_self_healing, so this runs on PostgreSQL + Redis only
#: (each embedded repeat cost CI half a minute). The main path, concurrent runs (SQLite's single writer) and the data
#: check run on both.
POSTGRES_REDIS_ONLY = pytest.mark.parametrize("stack", ["postgres-redis"], indirect=True)


@pytest.fixture(params=["postgres-redis", "embedded"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """API + one orchestrator + one training worker, with fast heartbeats so a dead worker is noticed in seconds."""
    env = {
        "FEDLENS_DATA_DIR": str(tmp_path / "data"),
        "FEDLENS_HEARTBEAT_S": "0.5",
        "FEDLENS_STALE_AFTER_S": "4",
        "FEDLENS_CLIENT_TIMEOUT_S": "300",
        "FEDLENS_DATA_ROOTS": json.dumps([str(p.resolve()) for p in (tmp_path, SHARED_DATA, ROOT / "examples")]),
    }
    embedded = None
    if request.param == "postgres-redis":
        _fresh_postgres()
        redis.Redis.from_url(REDIS_E2E).flushdb()
        env |= {"FEDLENS_DATABASE_URL": PG_E2E, "FEDLENS_BROKER_URL": REDIS_E2E}
    else:
        data = tmp_path / "data"
        embedded = EmbeddedRedis(data / "redis.sock", data)
        embedded.start()
        database = f"sqlite:///{data / 'fedlens.db'}"
        upgrade(database)
        env |= {"FEDLENS_DATABASE_URL": database, "FEDLENS_BROKER_URL": f"redis+socket://{data / 'redis.sock'}"}
    deployment = Stack(tmp_path, env)
    try:
        deployment.start_api()
        deployment.start_worker("runs")
        deployment.start_worker("train")
        yield deployment
    finally:
        failed = request.node.stash.get(FAILED, False)
        deployment.stop()
        if embedded:
            embedded.stop()
        if failed:
            print(deployment.logs())


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


def tiny_config(rounds: int = 3, **federation: object) -> dict[str, object]:
    return {
        "name": "e2e",
        "seed": 5,
        "data": {"train": {"format": "synthetic", "samples": 360}, "image_size": 32},
        "model": {"calibration_samples": 128},
        "federation": {"clients": 3, "rounds": rounds, **federation},
        "centralized": {"enabled": False},
    }
