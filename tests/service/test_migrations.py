"""The job store's schema comes from Alembic migrations: a fresh database migrates, the ORM model matches the
migrations, a table made by create_all before them is adopted, and migrating again changes nothing."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from planner.probe import ProbeRequest
from service.probes import repository
from service.probes.db import Base, Database, alembic_config, connect


def _revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_a_fresh_database_migrates_to_head(store_url: str) -> None:
    db = connect(store_url)
    db.migrate()
    assert _revision(db) == HEAD
    assert {"probe_jobs", "alembic_version"} <= set(inspect(db.engine).get_table_names())
    db.migrate()  # again: nothing to do
    assert _revision(db) == HEAD
    job = repository.create(
        db, ProbeRequest(), model="llama-3-8b", backend="cpu", device="cpu", owner="m", timeout_s=1.0
    )
    assert repository.get(db, job.id) == job
    db.dispose()


def test_the_model_matches_the_migrations(store_url: str) -> None:
    db = connect(store_url)
    db.migrate()
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    db.dispose()


def test_a_table_made_before_migrations_is_adopted(store_url: str) -> None:
    db = connect(store_url)
    Base.metadata.create_all(db.engine)  # what start() did before migrations
    db.migrate()
    assert _revision(db) == HEAD
    db.dispose()


def test_the_migrations_downgrade_to_nothing(store_url: str) -> None:
    db = connect(store_url)
    db.migrate()
    with db.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert "probe_jobs" not in inspect(db.engine).get_table_names()
    db.dispose()
