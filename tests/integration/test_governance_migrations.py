"""Governance's own tables migrate up and down on both stores, with a regression's rows in them
(g0006: a prediction with a value and no probability, a served window with an absolute error)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.governance.app import MIGRATIONS
from services.governance.schema import models, predictions, served_windows
from shared.store.migrate import alembic_config, upgrade_async

TABLE = "gov_alembic_version"


async def test_regression_rows_survive_the_upgrade_and_a_downgrade_drops_only_them(
    store_url: str,
):
    await upgrade_async(store_url, MIGRATIONS, TABLE)
    engine = create_async_engine(store_url)
    now = datetime.now(UTC)
    row = {"position": 1, "task": "demand", "model_version": 2, "entity_id": "e", "features": {}}
    row |= {"served_at": now}
    window = {"position": 2, "task": "demand", "n": 200, "to_position": 2, "scored_at": now}
    window |= {"model_version": 2, "role": "champion"}
    async with engine.begin() as conn:
        await conn.execute(
            insert(predictions),
            [
                row | {"prediction_id": uuid.uuid4(), "probability": None, "label": 41.5},
                row | {"prediction_id": uuid.uuid4(), "probability": 0.7, "label": 1},
            ],
        )
        await conn.execute(
            insert(served_windows),
            [
                window | {"event_id": uuid.uuid4(), "abs_error": 300.5, "correct": None},
                window | {"event_id": uuid.uuid4(), "abs_error": None, "correct": 150},
            ],
        )
        assert (await conn.execute(select(func.count()).select_from(predictions))).scalar() == 2
    config = alembic_config(store_url, MIGRATIONS, TABLE)
    await asyncio.to_thread(command.downgrade, config, "g0005")
    async with engine.begin() as conn:
        # The binary rows stay; the regression's, which the old tables cannot hold, go.
        count = "SELECT count(*) FROM {}"
        assert (await conn.execute(text(count.format("gov_predictions")))).scalar() == 1
        assert (await conn.execute(text(count.format("gov_served_windows")))).scalar() == 1
    await upgrade_async(store_url, MIGRATIONS, TABLE)
    async with engine.begin() as conn:
        assert (await conn.execute(select(served_windows.c.correct))).scalars().all() == [150]
    await engine.dispose()


async def test_a_multiclass_prediction_keeps_its_class_probabilities_and_downgrades_to_its_class(
    store_url: str,
):
    """g0007: a prediction's class probabilities; a downgrade keeps the row and its class."""
    await upgrade_async(store_url, MIGRATIONS, TABLE)
    engine = create_async_engine(store_url)
    row = {"position": 1, "task": "triage", "model_version": 2, "entity_id": "e", "features": {}}
    row |= {"served_at": datetime.now(UTC), "prediction_id": uuid.uuid4(), "probability": None}
    async with engine.begin() as conn:
        await conn.execute(
            insert(predictions), [row | {"label": "urgent", "probabilities": [0.2, 0.7, 0.1]}]
        )
        stored = (await conn.execute(select(predictions.c.probabilities))).scalar()
        assert stored == [0.2, 0.7, 0.1]
    config = alembic_config(store_url, MIGRATIONS, TABLE)
    await asyncio.to_thread(command.downgrade, config, "g0006")
    async with engine.begin() as conn:
        labels = (await conn.execute(text("SELECT label FROM gov_predictions"))).scalars().all()
        assert [str(label).strip('"') for label in labels] == ["urgent"]
    await upgrade_async(store_url, MIGRATIONS, TABLE)
    async with engine.begin() as conn:
        assert (await conn.execute(select(predictions.c.probabilities))).scalars().all() == [None]
    await engine.dispose()


async def test_a_model_of_many_classes_keeps_its_whole_configuration(store_url: str):
    """g0008: a multiclass model names each class's configuration (100 classes: about 3,000
    characters), kept whole on both stores; a downgrade cuts it to the old column's 200."""
    await upgrade_async(store_url, MIGRATIONS, TABLE)
    engine = create_async_engine(store_url)
    config = ",".join(["blend-fast/short-4000"] * 100)
    row = {"task": "triage", "model_version": 3, "parent_version": 2, "pipeline_version": "1"}
    row |= {"artifact_sha256": "0" * 64, "config": config, "params": {}, "metrics": {}}
    row |= {"first_position": 1, "last_position": 9, "n_learned": 9, "n_learned_total": 9}
    row |= {"trained_at": datetime.now(UTC), "event_id": uuid.uuid4(), "position": 10}
    async with engine.begin() as conn:
        await conn.execute(insert(models), [row])
        assert (await conn.execute(select(models.c.config))).scalar() == config
    await asyncio.to_thread(
        command.downgrade, alembic_config(store_url, MIGRATIONS, TABLE), "g0007"
    )
    async with engine.begin() as conn:
        kept = (await conn.execute(text("SELECT config FROM gov_models"))).scalar()
        assert kept == config[:200]
    await upgrade_async(store_url, MIGRATIONS, TABLE)
    await engine.dispose()
