"""Governance's read models, built only from events (and rebuildable from position 0)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer, MetaData, String, Table, Uuid
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")

# Every event applied to the projections, recorded in the same transaction as its effect.
applied = Table(
    "gov_applied",
    metadata,
    Column("event_id", Uuid(), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

tasks = Table(
    "gov_tasks",
    metadata,
    Column("task", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("spec", Json, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
)

models = Table(
    "gov_models",
    metadata,
    Column("task", String(64), primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("parent_version", Integer, nullable=True),
    Column("pipeline_version", String(64), nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("config", String(200), nullable=False),
    Column("params", Json, nullable=False),
    Column("metrics", Json, nullable=False),
    Column("first_position", BigInteger, nullable=True),
    Column("last_position", BigInteger, nullable=False),
    Column("n_learned", Integer, nullable=False),
    Column("n_learned_total", Integer, nullable=False),
    Column("trained_at", DateTime(timezone=True), nullable=False),
    Column("event_id", Uuid(), nullable=False),
    Column("position", BigInteger, nullable=False),
    # candidate | champion | retired | refused
    Column("status", String(16), nullable=False),
)

decisions = Table(
    "gov_decisions",
    metadata,
    Column("event_id", Uuid(), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("task", String(64), nullable=False, index=True),
    Column("type", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("decided_by", String(100), nullable=False),
    Column("reasons", Json, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

deployments = Table(
    "gov_deployments",
    metadata,
    Column("task", String(64), primary_key=True),
    Column("model_version", Integer, nullable=False),
    Column("since_position", BigInteger, nullable=False),
    Column("deployment_version", BigInteger, nullable=False),
)
