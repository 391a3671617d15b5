"""Where the suites find PostgreSQL and Redis: each suite its own Redis database, each test slot its own databases.

``FEDLENS_TEST_SLOT`` (0, the default, to 4) lets several checkouts run their suites side by side on one machine
without sharing a database or a Redis db: slot s uses PostgreSQL databases suffixed ``_s<s>`` (created on first use)
and Redis dbs 15 - 3s (api), 14 - 3s (e2e) and 13 - 3s (worker). Under pytest-xdist, worker gw<i> takes slot
``FEDLENS_TEST_SLOT + i``, so the workers of one run never share one either.
"""

from __future__ import annotations

import os

import psycopg

PG_SERVER = os.environ.get("FEDLENS_TEST_PG_SERVER", "postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("FEDLENS_TEST_REDIS_SERVER", "127.0.0.1:6379")
SLOT = int(os.environ.get("FEDLENS_TEST_SLOT", "0")) + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
if not 0 <= SLOT <= 4:
    raise ValueError(f"FEDLENS_TEST_SLOT plus the xdist worker number must be 0..4 (Redis has 16 dbs), got {SLOT}")
_SUITE_OFFSET = {"api": 0, "e2e": 1, "worker": 2}


def redis_url(suite: str) -> str:
    """The Redis database of one suite in this slot; suites never share one, so a flush never hits another."""
    return f"redis://{REDIS_SERVER}/{15 - 3 * SLOT - _SUITE_OFFSET[suite]}"


def database_name(base: str) -> str:
    return base if SLOT == 0 else f"{base}_s{SLOT}"


def postgres_url(database: str) -> str:
    return f"postgresql+psycopg://{PG_SERVER}/{database}"


def ensure_database(database: str, *, fresh: bool = False) -> None:
    """Create the database if missing (or drop and recreate it when ``fresh``)."""
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')


def drop_database(database: str) -> None:
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
