"""Audits, served predictions and API keys; model status derived on read.

Revision ID: g0002
Revises: g0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "g0002"
down_revision = "g0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("gov_models") as batch:
        batch.drop_column("status")
    with op.batch_alter_table("gov_tasks") as batch:
        batch.add_column(sa.Column("position", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "gov_audits",
        sa.Column("event_id", sa.Uuid(), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reasons", Json, nullable=False),
        sa.Column("window", Json, nullable=False),
        sa.Column("report", Json, nullable=False),
        sa.Column("audited_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gov_audits_task_version", "gov_audits", ["task", "model_version"])
    op.create_table(
        "gov_predictions",
        sa.Column("prediction_id", sa.Uuid(), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.String(200), nullable=True),
        sa.Column("features", Json, nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("label", Json, nullable=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_gov_predictions_task_version_position",
        "gov_predictions",
        ["task", "model_version", "position"],
    )
    op.create_table(
        "gov_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gov_api_keys")
    op.drop_index("ix_gov_predictions_task_version_position", "gov_predictions")
    op.drop_table("gov_predictions")
    op.drop_index("ix_gov_audits_task_version", "gov_audits")
    op.drop_table("gov_audits")
    with op.batch_alter_table("gov_tasks") as batch:
        batch.drop_column("position")
    with op.batch_alter_table("gov_models") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="candidate")
        )
