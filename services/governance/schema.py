"""Governance's read models, built only from events (and rebuildable from position 0)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.store.sql import JSON_CODEC

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")


def governance_engine(url: str, **options: Any) -> AsyncEngine:
    """An engine for these tables, its JSON columns written as the event store writes its own."""
    return create_async_engine(url, json_serializer=JSON_CODEC["json_serializer"], **options)


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
    # Position of the TaskRegistered event: the newest spec version wins, whatever the order.
    Column("position", BigInteger, nullable=False, server_default="0"),
)

models = Table(
    "gov_models",
    metadata,
    Column("task", String(64), primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("parent_version", Integer, nullable=True),
    Column("pipeline_version", String(64), nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("config", Text, nullable=False),  # a multiclass model: every class's, joined
    Column("params", Json, nullable=False),
    Column("metrics", Json, nullable=False),
    Column("first_position", BigInteger, nullable=True),
    Column("last_position", BigInteger, nullable=False),
    Column("n_learned", Integer, nullable=False),
    Column("n_learned_total", Integer, nullable=False),
    # "candidate" (to replace the champion) or "challenger" (to run beside it as a shadow)
    Column("role", String(16), nullable=False, server_default="candidate"),
    Column("trained_at", DateTime(timezone=True), nullable=False),
    Column("event_id", Uuid(), nullable=False),
    Column("position", BigInteger, nullable=False),
    # No status column: a model's status is derived when read from `decisions` and `deployments`
    # (see projections.model_status), so the answer does not depend on the order in which Kafka
    # delivers the models and deployments topics.
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

audits = Table(
    "gov_audits",
    metadata,
    Column("event_id", Uuid(), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("task", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("scope", String(16), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("reasons", Json, nullable=False),
    Column("window", Json, nullable=False),
    Column("report", Json, nullable=False),
    Column("audited_at", DateTime(timezone=True), nullable=False),
    Index("ix_gov_audits_task_version", "task", "model_version"),
)

# Every prediction serving recorded: what lineage and explanations of a prediction id start from.
predictions = Table(
    "gov_predictions",
    metadata,
    Column("prediction_id", Uuid(), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("task", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("entity_id", String(200), nullable=True),
    Column("features", Json, nullable=False),
    Column("probability", Float, nullable=True),  # None for a regression: its label is its value
    Column("label", Json, nullable=True),
    # A multiclass answer: P(each class), in the spec's class order (None for other kinds).
    Column("probabilities", Json, nullable=True),
    Column("served_at", DateTime(timezone=True), nullable=False),
    # The online-feature values the model was given (None before they existed).
    Column("online", Json, nullable=True),
    # Who answered: the "champion" or the "canary" (shadows' scores are not answers).
    Column("role", String(16), nullable=False, server_default="champion"),
    Index("ix_gov_predictions_task_version_position", "task", "model_version", "position"),
)

# Served accuracy over time: per ServedScored window, each model version and role's counts.
served_windows = Table(
    "gov_served_windows",
    metadata,
    Column("event_id", Uuid(), primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("task", String(64), nullable=False),
    Column("n", Integer, nullable=False),
    Column("correct", Integer, nullable=True),  # a classifier's right answers
    Column("abs_error", Float, nullable=True),  # a regression's summed absolute error
    Column("to_position", BigInteger, nullable=False),  # the window's last label
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Index("ix_gov_served_windows_task_position", "task", "position"),
)

# What the trainer observed while learning: drift alarms and configuration switches.
alarms = Table(
    "gov_alarms",
    metadata,
    Column("event_id", Uuid(), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("task", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("model_version", Integer, nullable=True),
    Column("at_labelled", Integer, nullable=False),
    Column("detail", Json, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Index("ix_gov_alarms_task_position", "task", "position"),
)

# The projections, in the order a rebuild empties them; API keys are not a projection.
PROJECTION_TABLES = (
    applied,
    tasks,
    models,
    decisions,
    deployments,
    audits,
    predictions,
    served_windows,
    alarms,
)

# API keys (not built from events: a secret never enters the event store). Only a hash is kept.
api_keys = Table(
    "gov_api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # "cli" or "bootstrap" (from GOVERNANCE_BOOTSTRAP_KEYS at start-up)
    Column("source", String(16), nullable=False),
)
