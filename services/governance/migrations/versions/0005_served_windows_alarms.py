"""Served accuracy over time (ServedScored windows) and the trainer's alarms (drift, switches).

Revision ID: g0005
Revises: g0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "g0005"
down_revision = "g0004"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "gov_served_windows",
        sa.Column("event_id", sa.Uuid(), primary_key=True),
        sa.Column("model_version", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(16), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("correct", sa.Integer, nullable=False),
        sa.Column("to_position", sa.BigInteger, nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_gov_served_windows_task_position", "gov_served_windows", ["task", "position"]
    )
    op.create_table(
        "gov_alarms",
        sa.Column("event_id", sa.Uuid(), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("at_labelled", sa.Integer, nullable=False),
        sa.Column("detail", Json, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gov_alarms_task_position", "gov_alarms", ["task", "position"])


def downgrade() -> None:
    op.drop_table("gov_alarms")
    op.drop_table("gov_served_windows")
