"""The PostgreSQL pool: a connection that sat idle is tested before use and replaced if the server dropped it,
while a connection in steady use is handed out without that extra round trip."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from app import db
from tests.services import database_name, drop_database, ensure_database, postgres_url


@pytest.fixture
def engine() -> Iterator[Engine]:
    name = database_name("pool")
    ensure_database(name, fresh=True)
    url = postgres_url(name)
    yield db.get_engine(url)
    db.get_engine(url).dispose()
    drop_database(name)


def _pid(conn: Connection) -> int:
    return int(conn.scalar(text("SELECT pg_backend_pid()")))


def _dropped_by_the_server(engine: Engine) -> int:
    """Return a connection to the pool, then have the server terminate it (as a restart would); its backend pid."""
    with engine.connect() as victim, engine.connect() as other:
        pid = _pid(victim)
        victim.close()  # back in the pool, first in line for the next checkout
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    return pid


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = _dropped_by_the_server(engine)
    monkeypatch.setattr(db, "PING_IDLE_S", 0.0)  # every pooled connection counts as idle

    with engine.connect() as conn:
        assert _pid(conn) != dropped


def test_a_connection_returned_a_moment_ago_is_handed_out_without_a_test(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The price of skipping the round trip: a query in flight when the server goes away fails, as it would anyway."""
    _dropped_by_the_server(engine)
    monkeypatch.setattr(db, "PING_IDLE_S", 3600.0)

    with pytest.raises(OperationalError), engine.connect() as conn:
        _pid(conn)
