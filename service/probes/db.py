"""The probe-job table and a connection to it. Portable SQL only: a SQLite file by default, PostgreSQL as well.

The schema is Alembic's (service/probes/migrations): `Database.migrate` upgrades any database to the head
revision at startup; a change to ProbeJobRow comes with a new revision (tests compare the two).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    String,
    Text,
    TypeDecorator,
    create_engine,
    inspect,
    make_url,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "MIGRATIONS",
    "PHASE_CHARS",
    "Base",
    "Database",
    "ProbeJobRow",
    "UTCDateTime",
    "alembic_config",
    "connect",
    "utc_now",
]

MIGRATIONS = Path(__file__).with_name("migrations")
INITIAL_REVISION = "0001"  # the table create_all made before migrations existed
PHASE_REVISION = "0002"  # adds probe_jobs.phase
FILE_MODE = 0o600  # a SQLite file (and the journals SQLite gives the same mode) is readable by its owner only


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes stored as naive UTC (SQLite keeps no zone), read back aware."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


PHASE_CHARS = 120  # the job's current phase (migration 0002)

JsonDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class ProbeJobRow(Base):
    """One probe job; `request` and `result` hold planner.probe.ProbeRequest / ProbeResult as JSON."""

    __tablename__ = "probe_jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="probe_jobs_status"),
        CheckConstraint("kind IN ('training', 'inference')", name="probe_jobs_kind"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    model: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str] = mapped_column(String(8), index=True)
    device: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    timeout_s: Mapped[float]
    request: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    error: Mapped[str | None] = mapped_column(Text)
    phase: Mapped[str | None] = mapped_column(String(PHASE_CHARS), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def alembic_config() -> Config:
    """Alembic's configuration for the probe-job migrations (no alembic.ini: it lives in the package)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@dataclass(frozen=True, slots=True)
class Database:
    """An engine and the sessions bound to it."""

    engine: Engine
    sessions: sessionmaker[Session]

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration. A probe_jobs table made before migrations (create_all) is
        stamped as the revision its columns match (the first, or 0002 once it has `phase`). Servers starting together
        take turns (a file lock beside a SQLite file, an advisory lock on PostgreSQL)."""
        with self._migration_lock(), self.engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            inspector = inspect(connection)
            tables = inspector.get_table_names()
            if ProbeJobRow.__tablename__ in tables and "alembic_version" not in tables:
                columns = {c["name"] for c in inspector.get_columns(ProbeJobRow.__tablename__)}
                command.stamp(config, PHASE_REVISION if "phase" in columns else INITIAL_REVISION)
            command.upgrade(config, "head")

    def ping(self) -> None:
        """One round trip to the database (raises when it is unreachable)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        path = _sqlite_file(self.engine.url.render_as_string(hide_password=False))
        if path is None:
            yield
            return
        fd = os.open(f"{path}.migrate-lock", os.O_CREAT | os.O_RDWR, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _create_private(path: Path) -> None:
    """Create an empty file readable by its owner only, unless it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))


def connect(url: str) -> Database:
    """A Database for any SQLAlchemy URL; nothing connects until first use, but a new SQLite file is created here,
    0600, before SQLite would create it with the umask's mode."""
    if (path := _sqlite_file(url)) is not None and path.parent.is_dir():
        _create_private(path)
    engine = create_engine(url, pool_pre_ping=True)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
