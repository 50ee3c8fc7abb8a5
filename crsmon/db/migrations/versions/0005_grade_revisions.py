"""grade revisions: a snapshot that returns at a time is written again

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 09:30:00.000000
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = ["patient_id", "evaluated_at", "rule_set", "snapshot_hash"]


@contextmanager
def _grades_rebuildable() -> Iterator[None]:
    """On SQLite, hold the adjudications aside while ``grades`` is rebuilt.

    Batch mode rebuilds the table (copy, DROP, rename). With foreign keys on,
    SQLite refuses to drop a table that adjudications still cite, and the
    pragma that turns them off is ignored inside the migration's transaction.
    So the adjudications (the only table citing grades at 0005) are copied
    out, emptied, and put back with the same ids and values once the grade
    rows, with their ids, are back: one transaction, nothing changed or lost.
    """
    if op.get_bind().dialect.name != "sqlite":
        yield
        return
    op.execute("CREATE TEMP TABLE adjudications_0005 AS SELECT * FROM adjudications")
    op.execute("DELETE FROM adjudications")
    yield
    op.execute("INSERT INTO adjudications SELECT * FROM adjudications_0005")
    op.execute("DROP TABLE adjudications_0005")


def upgrade() -> None:
    # Existing rows become revision 0: each is unique on the old key already.
    with _grades_rebuildable(), op.batch_alter_table("grades") as batch_op:
        batch_op.add_column(
            sa.Column(
                "revision", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.drop_constraint(
            batch_op.f("uq_grades_patient_id_evaluated_at_rule_set_snapshot_hash"),
            type_="unique",
        )
        batch_op.create_unique_constraint(
            batch_op.f(
                "uq_grades_patient_id_evaluated_at_rule_set_snapshot_hash_revision"
            ),
            [*OLD_KEY, "revision"],
        )


def downgrade() -> None:
    # The old key cannot hold a snapshot written twice at one time (A, B, A).
    # Grade rows are append-only and adjudications may cite them, so such rows
    # are never deleted here: the downgrade stops before changing anything.
    grades = sa.table("grades", *(sa.column(c) for c in OLD_KEY))
    repeated = op.get_bind().scalar(
        sa.select(sa.func.count()).select_from(
            sa.select(*grades.c)
            .group_by(*grades.c)
            .having(sa.func.count() > 1)
            .subquery()
        )
    )
    if repeated:
        raise RuntimeError(
            f"cannot downgrade below 0005: {repeated} snapshot(s) were written "
            "again at the same time (a revert); the 0004 unique key cannot hold them"
        )
    with _grades_rebuildable(), op.batch_alter_table("grades") as batch_op:
        batch_op.drop_constraint(
            batch_op.f(
                "uq_grades_patient_id_evaluated_at_rule_set_snapshot_hash_revision"
            ),
            type_="unique",
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_grades_patient_id_evaluated_at_rule_set_snapshot_hash"),
            OLD_KEY,
        )
        batch_op.drop_column("revision")
