"""Served predictions keep the online-feature values the model was given (for explanations).

Revision ID: g0003
Revises: g0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "g0003"
down_revision = "g0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("gov_predictions") as batch:
        batch.add_column(sa.Column("online", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gov_predictions") as batch:
        batch.drop_column("online")
