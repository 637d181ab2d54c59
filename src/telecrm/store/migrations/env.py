"""Alembic environment: runs migrations on the engine handed in by telecrm.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from telecrm.store.schema import metadata

config = context.config
engine: Engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
