"""Governance projections: tasks, models, decisions, deployments, applied events.

Revision ID: g0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "g0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "gov_applied",
        sa.Column("event_id", sa.Uuid(), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "gov_tasks",
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "gov_models",
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.Integer(), primary_key=True),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("pipeline_version", sa.String(64), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("config", sa.String(200), nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("first_position", sa.BigInteger(), nullable=True),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("n_learned", sa.Integer(), nullable=False),
        sa.Column("n_learned_total", sa.Integer(), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_table(
        "gov_decisions",
        sa.Column("event_id", sa.Uuid(), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("decided_by", sa.String(100), nullable=False),
        sa.Column("reasons", Json, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gov_decisions_task", "gov_decisions", ["task"])
    op.create_table(
        "gov_deployments",
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("since_position", sa.BigInteger(), nullable=False),
        sa.Column("deployment_version", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in ("gov_deployments", "gov_decisions", "gov_models", "gov_tasks", "gov_applied"):
        op.drop_table(table)
