"""A busy SQLite: writes are retried until the other writer lets go, and users get a short message, never SQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import db
from app.auth import accounts
from app.db import session_factory
from app.errors import BUSY_MESSAGE, DatabaseBusy
from app.main import create_app
from app.migrate import upgrade
from app.models import Role
from app.settings import Settings


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite file whose connections wait 0.2 s for a lock (5 s in service), so that tests are quick."""
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", 0.2)
    url = f"sqlite:///{tmp_path / 'fedlens.db'}"
    upgrade(url)
    return url


class Locker:
    """Another process's writer: holds SQLite's write lock until released."""

    def __init__(self, url: str) -> None:
        self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")
        self.lock = threading.Lock()
        self.held = True

    def release(self) -> None:
        with self.lock:
            if self.held:
                self.conn.execute("COMMIT")
                self.conn.close()
                self.held = False


@pytest.fixture
def locked(database: str) -> Iterator[Locker]:
    locker = Locker(database)
    yield locker
    locker.release()


def write(session: Session) -> int:
    session.execute(
        text(
            "INSERT INTO experiment (id, name, description, config, created_at) VALUES "
            "('00000000000000000000000000000001', 'x', '', '{}', '2026-01-01')"
        )
    )
    session.commit()
    return int(session.scalar(text("SELECT count(*) FROM experiment")) or 0)


def test_a_write_is_retried_until_the_other_writer_lets_go(
    database: str, locked: Locker, caplog: pytest.LogCaptureFixture
) -> None:
    threading.Timer(1.0, locked.release).start()

    count = db.retrying(db.session_factory(Settings(database_url=database)), write)

    assert count == 1
    assert "the database is busy (try 1 of 4)" in caplog.text


def test_a_write_that_stays_locked_fails_with_a_short_message_and_no_sql(database: str, locked: Locker) -> None:
    with pytest.raises(DatabaseBusy) as raised:
        db.retrying(db.session_factory(Settings(database_url=database)), write, attempts=2)

    assert str(raised.value) == BUSY_MESSAGE
    assert "INSERT" not in str(raised.value) and "fedlens.db" not in str(raised.value)


@pytest.fixture
def token(database: str, tmp_path: Path) -> str:
    """A researcher's token, made before the database is locked."""
    with session_factory(Settings(database_url=database, data_dir=tmp_path))() as session:
        user = accounts.create_user(session=session, name="busy", role=Role.RESEARCHER)
        return accounts.issue_token(session=session, user=user, name="t", lifetime=timedelta(days=1)).secret


def test_the_api_answers_503_with_a_short_message_while_the_database_is_locked(
    database: str, token: str, locked: Locker, tmp_path: Path
) -> None:
    client = TestClient(
        create_app(Settings(database_url=database, data_dir=tmp_path)), headers={"Authorization": f"Bearer {token}"}
    )

    response = client.post("/api/experiments", json={"config": {"name": "busy"}})

    assert response.status_code == 503
    assert response.json() == {"detail": BUSY_MESSAGE}
    assert response.headers["retry-after"] == "2"
