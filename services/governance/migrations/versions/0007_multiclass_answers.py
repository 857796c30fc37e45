"""Multiclass tasks: a served prediction keeps the probability of each class it was answered
(lineage shows them), beside the class answered (`label`).

Revision ID: g0007
Revises: g0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "g0007"
down_revision = "g0006"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("gov_predictions") as batch:
        batch.add_column(sa.Column("probabilities", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gov_predictions") as batch:
        batch.drop_column("probabilities")
