"""Alembic environment: the tables of app.models on the database the settings (or -x url=...) name."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.db import get_engine
from app.models import Base
from app.settings import get_settings


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
connectable = context.config.attributes.get("connection")
if connectable is not None:
    run_migrations(connectable)
else:
    with get_engine(url or get_settings().database).connect() as conn:
        run_migrations(conn)
        conn.commit()
