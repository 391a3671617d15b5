"""Alembic migrations go up, down and up again, and leave exactly the schema of app.models, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from app.db import get_engine
from app.migrate import alembic_config, downgrade, upgrade
from app.models import Base
from tests.services import database_name, drop_database, ensure_database, postgres_url

PG_DATABASE = database_name("fedlens_migrations_test")  # its own database: the API tests share `test`
TABLES = {
    "experiment",
    "run",
    "fl_round",
    "client_round",
    "round_metric",
    "user_account",
    "api_token",
    "web_session",
    "audit_event",
    "site",
    "site_task",
    "privacy_spend",
    "client_artifact",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    ensure_database(PG_DATABASE, fresh=True)
    url = postgres_url(PG_DATABASE)
    try:
        yield url
    finally:
        get_engine(url).dispose()  # the pooled connections that the migrations opened
        drop_database(PG_DATABASE)


def schema(url: str) -> tuple[set[str], list[str]]:
    """The tables, and the revisions recorded in alembic_version."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revisions = MigrationContext.configure(conn).get_current_heads()
        return tables, list(revisions)
    finally:
        engine.dispose()


def test_migrations_upgrade_downgrade_and_upgrade_again(database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None

    upgrade(database_url)
    after_upgrade = schema(database_url)
    downgrade(database_url, "base")
    after_downgrade = schema(database_url)
    upgrade(database_url)

    assert after_upgrade == (TABLES | {"alembic_version"}, [head])
    assert after_downgrade == ({"alembic_version"}, [])
    assert schema(database_url) == after_upgrade


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    upgrade(database_url)

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()

    assert differences == []
