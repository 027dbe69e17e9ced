"""probe_jobs.phase: what a queued or running probe is doing now (its last phase when it ended).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PHASE_CHARS = 120  # service.probes.db.PHASE_CHARS when this revision was written


def upgrade() -> None:
    with op.batch_alter_table("probe_jobs") as batch:  # batch: SQLite alters by copying the table
        batch.add_column(sa.Column("phase", sa.String(PHASE_CHARS), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("probe_jobs") as batch:
        batch.drop_column("phase")
