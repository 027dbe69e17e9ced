"""The probe_jobs table, as service.probes.db.ProbeJobRow first defined it.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
INDEXED = ("status", "kind", "backend", "owner", "created_at")


def upgrade() -> None:
    op.create_table(
        "probe_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("backend", sa.String(8), nullable=False),
        sa.Column("device", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("timeout_s", sa.Double(), nullable=False),
        sa.Column("request", JSON_DOCUMENT, nullable=False),
        sa.Column("result", JSON_DOCUMENT, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=False), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="probe_jobs_status"),
        sa.CheckConstraint("kind IN ('training', 'inference')", name="probe_jobs_kind"),
    )
    for column in INDEXED:
        op.create_index(f"ix_probe_jobs_{column}", "probe_jobs", [column])


def downgrade() -> None:
    for column in INDEXED:
        op.drop_index(f"ix_probe_jobs_{column}", "probe_jobs")
    op.drop_table("probe_jobs")
