"""Models keep their role (candidate or challenger); served predictions who answered (champion
or canary).

Revision ID: g0004
Revises: g0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "g0004"
down_revision = "g0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gov_models") as batch:
        batch.add_column(
            sa.Column("role", sa.String(16), nullable=False, server_default="candidate")
        )
    with op.batch_alter_table("gov_predictions") as batch:
        batch.add_column(
            sa.Column("role", sa.String(16), nullable=False, server_default="champion")
        )


def downgrade() -> None:
    with op.batch_alter_table("gov_predictions") as batch:
        batch.drop_column("role")
    with op.batch_alter_table("gov_models") as batch:
        batch.drop_column("role")
