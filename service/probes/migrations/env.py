"""Alembic's environment: migrations run on the connection service.probes.db.Database.migrate hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from service.probes.db import Base

# Any constant: replicas migrating one PostgreSQL database at the same time take turns on this advisory lock.
MIGRATION_LOCK_KEY = 0x6D656D706C616E  # "memplan"

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.run_migrations()
