"""The probe-job table and a connection to it. Portable SQL only: a SQLite file by default, PostgreSQL as well."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = ["PHASE_CHARS", "Base", "Database", "ProbeJobRow", "UTCDateTime", "connect", "utc_now"]


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


PHASE_CHARS = 120
# Columns added after the first release: create_tables adds them to a table that predates them.
_ADDED_COLUMNS = {"phase": f"VARCHAR({PHASE_CHARS})"}

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


@dataclass(frozen=True, slots=True)
class Database:
    """An engine and the sessions bound to it."""

    engine: Engine
    sessions: sessionmaker[Session]

    def create_tables(self) -> None:
        """Create missing tables, and add the columns a table from an earlier memplan lacks (portable ALTER TABLE)."""
        Base.metadata.create_all(self.engine)
        present = {column["name"] for column in inspect(self.engine).get_columns(ProbeJobRow.__tablename__)}
        with self.engine.begin() as connection:
            for name, sql_type in _ADDED_COLUMNS.items():
                if name not in present:
                    connection.execute(text(f"ALTER TABLE {ProbeJobRow.__tablename__} ADD COLUMN {name} {sql_type}"))

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def connect(url: str) -> Database:
    """A Database for any SQLAlchemy URL; nothing connects until first use."""
    engine = create_engine(url, pool_pre_ping=True)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
