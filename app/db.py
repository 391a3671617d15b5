"""Database engine and sessions; SQLite gets WAL, a busy timeout and retried writes so the API and workers can
share it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.errors import BUSY_MESSAGE, DatabaseBusy, is_busy
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)
T = TypeVar("T")
BUSY_TIMEOUT_S = 5  # SQLite waits this long for another writer's lock before it reports the database busy


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
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(get_engine(settings.database), expire_on_commit=False)


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    with session_factory(settings)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
