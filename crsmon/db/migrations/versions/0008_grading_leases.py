"""grading leases on clinical records

``lease_token`` and ``lease_until``: the delivery whose claim counted a
record's latest grading attempt, and until when it is live. Concurrent
deliveries of one patient no longer each count an attempt (reliability.md
§1.4.4). State columns: updatable, like ``attempts`` (the 0006 triggers guard
the value columns only). Plain ADD COLUMN (no table rebuild on SQLite, so the
triggers stay).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "clinical_records",
        sa.Column("lease_token", sa.String(length=64), nullable=True),
    )
    op.add_column(
        "clinical_records",
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("clinical_records", recreate="never") as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_token")
