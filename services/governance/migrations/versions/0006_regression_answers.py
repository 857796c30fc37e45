"""Regression tasks: a served prediction may hold a value and no probability, and a served window
the summed absolute error of its answers instead of a count of right ones.

Revision ID: g0006
Revises: g0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "g0006"
down_revision = "g0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gov_predictions") as batch:
        batch.alter_column("probability", existing_type=sa.Float, nullable=True)
    with op.batch_alter_table("gov_served_windows") as batch:
        batch.alter_column("correct", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("abs_error", sa.Float, nullable=True))


def downgrade() -> None:
    # A regression's rows cannot be held by the tables as they were; they are projections of
    # stored events, which stay (and come back with an upgrade and a rebuild).
    op.execute("DELETE FROM gov_served_windows WHERE correct IS NULL")
    op.execute("DELETE FROM gov_predictions WHERE probability IS NULL")
    with op.batch_alter_table("gov_served_windows") as batch:
        batch.drop_column("abs_error")
        batch.alter_column("correct", existing_type=sa.Integer, nullable=False)
    with op.batch_alter_table("gov_predictions") as batch:
        batch.alter_column("probability", existing_type=sa.Float, nullable=False)
