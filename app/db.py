"""Database engine and sessions; SQLite gets WAL, a busy timeout and retried writes so the API and workers can
share it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InvalidatePoolError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.errors import BUSY_MESSAGE, DatabaseBusy, is_busy
from app.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")
BUSY_TIMEOUT_S = 5  # SQLite waits this long for another writer's lock before it reports the database busy
PING_IDLE_S = 5.0  # a pooled PostgreSQL connection unused this long is tested before it is handed out


def retrying(sessions: sessionmaker[Session], work: Callable[[Session], T], *, attempts: int = 4) -> T:
    """``work`` in a fresh session, run again while SQLite reports the database busy.

    Each try already waits ``BUSY_TIMEOUT_S`` for the lock; the pauses between tries (0.5 s, doubling) let a
    writer that holds it longer finish. A failed try was rolled back whole, so running the work again is safe;
    after the last one, DatabaseBusy carries a short message instead of the SQL and its parameters.
    """
    attempt = 1
    while True:
        try:
            with sessions() as session:
                return work(session)
        except OperationalError as error:
            if not is_busy(error):
                raise
            logger.warning("the database is busy (try %d of %d)", attempt, attempts)
            if attempt == attempts:
                raise DatabaseBusy(BUSY_MESSAGE) from error
            time.sleep(0.5 * 2 ** (attempt - 1))
            attempt += 1


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@lru_cache
def get_engine(url: str) -> Engine:
    """One pooled engine per database URL and process."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # as many pooled connections as the thread pool has threads (anyio: 40), so a busy API reuses them instead of
    # opening and closing an overflow connection per request
    engine = create_engine(url, pool_size=40, max_overflow=10)
    event.listen(engine, "checkin", _returned)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _returned(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["returned_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Test a connection that sat in the pool for ``PING_IDLE_S`` (the database may have restarted meanwhile) and
    have the pool replace it if it is dead. ``pool_pre_ping`` tests every checkout: a round trip per request, 12 %
    of the API's busy time under bench.load, for connections that a busy API used milliseconds before. A database
    that goes away under a busy API still fails the queries in flight, and the pool then drops all its connections
    (as it does when a test finds one dead).
    """
    returned_at = record.info.get("returned_at")  # none yet: a connection just opened
    if returned_at is None or time.monotonic() - returned_at < PING_IDLE_S:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()  # the session starts its own transaction
    except Exception as error:  # the driver's own error classes: psycopg's OperationalError and the like
        # as pool_pre_ping does: the server went away, so every connection older than this one is dead too
        raise InvalidatePoolError(f"a pooled connection is dead: {error}") from error


@lru_cache
def _sessions(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """Sessions of the configured database; one factory per URL and process."""
    return _sessions(settings.database)


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with (``create_app``). Not a dependency override: while any override is
    set, FastAPI rebuilds every dependency's signature on every request (a third of the API's time under load).
    Async because it does no I/O: a plain ``def`` would cost a trip through the thread pool."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """A session per request. Opening one does no I/O; closing it may (the connection goes back to the pool with a
    rollback), so only the close goes to the thread pool: one trip instead of two."""
    session = session_factory(settings)()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]
