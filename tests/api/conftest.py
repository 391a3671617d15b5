"""API test fixtures: a migrated PostgreSQL rolled back per test, a flushed Redis db per test, a TestClient."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.orm import Session

from app.auth import accounts
from app.db import get_session
from app.main import create_app
from app.migrate import upgrade
from app.models import Role
from app.settings import Settings
from app.sites.protocol import public_key_text
from tests.api.sites import Agent
from tests.services import database_name, ensure_database, postgres_url, redis_url

DATABASE_URL = os.environ.get("FEDLENS_TEST_DATABASE_URL") or postgres_url(database_name("test"))
BROKER_URL = redis_url("api")
STALE_AFTER_S = 60.0


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The test database, emptied (alembic_version included) and migrated to head once per test session."""
    if "FEDLENS_TEST_DATABASE_URL" not in os.environ:
        ensure_database(database_name("test"))
    engine = create_engine(DATABASE_URL)
    with engine.begin() as conn:
        existing = MetaData()
        existing.reflect(conn)
        existing.drop_all(conn)
    upgrade(DATABASE_URL)
    yield engine
    engine.dispose()


class SharedSession(Session):
    """The one session a test shares with the app it calls. The app closes its session early to give the
    connection back to the pool (app.auth.deps); here there is one connection, and the test keeps using the
    objects it made, so closing must not detach them."""

    def close(self) -> None:
        self.flush()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """Roll each test back; commits made by the code under test become savepoints (STYLE.md section 6)."""
    with engine.connect() as conn:
        outer = conn.begin()
        with SharedSession(bind=conn, join_transaction_mode="create_savepoint") as s:
            yield s
        outer.rollback()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The api suite's Redis db, empty at the start of each test; Celery's Redis transport keeps a queue as a list."""
    client = redis.Redis.from_url(BROKER_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, engine: Engine) -> Settings:
    """Data roots: the test's own folder and ./data, where the presets' relative paths lead."""
    return Settings(
        database_url=DATABASE_URL,
        broker_url=BROKER_URL,
        data_dir=tmp_path,
        stale_after_s=STALE_AFTER_S,
        data_roots=(tmp_path, Path("data").resolve()),
    )


def bearer(session: Session, name: str, role: Role) -> dict[str, str]:
    """Headers that authenticate as a (new or existing) user of that name and role."""
    user = accounts.ensure_user(session=session, name=name, role=role)
    issued = accounts.issue_token(session=session, user=user, name="test", lifetime=timedelta(days=1))
    return {"Authorization": f"Bearer {issued.secret}"}


@pytest.fixture
def admin_headers(session: Session) -> dict[str, str]:
    return bearer(session, "test-admin", Role.ADMIN)


@pytest.fixture
def make_client(session: Session, broker: redis.Redis, admin_headers: dict[str, str]) -> Callable[..., TestClient]:
    """A TestClient for these settings whose requests share the test's rolled-back session.

    It signs its requests as an admin with a bearer token unless ``headers`` says otherwise ({} for anonymous):
    the authorization rules themselves are tested in test_authorization.py.

    The client is not entered as a context manager, so the app's lifespan does not run: its stale-run
    watchdog would open its own database sessions outside the test transaction and enqueue requeued
    runs into its Redis db at times the tests do not control, making the queue contents flaky.
    """

    def make(settings: Settings, headers: dict[str, str] | None = None) -> TestClient:
        app = create_app(settings)

        def test_session() -> Iterator[Session]:
            yield session

        app.dependency_overrides[get_session] = test_session
        return TestClient(app, headers=admin_headers if headers is None else headers)

    return make


@pytest.fixture
def client(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return make_client(settings)


@pytest.fixture
def anonymous(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return make_client(settings, headers={})


@pytest.fixture
def enroll(client: TestClient, anonymous: TestClient) -> Callable[[str], Agent]:
    """Enroll a new site of that name through the API: its agent, signing with a fresh key."""

    def make(name: str) -> Agent:
        invitation = client.post("/api/sites", json={"name": name}).json()
        key = Ed25519PrivateKey.generate()
        body = {"token": invitation["enrollment_token"], "public_key": public_key_text(key), "agent_version": "0.1"}
        enrolled = anonymous.post("/api/site/enroll", json=body)
        assert enrolled.status_code == 201, enrolled.text
        return Agent(anonymous, enrolled.json()["site_id"], key)

    return make
