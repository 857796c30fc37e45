"""Governance HTTP API: the registry, lineage and deployment read models."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.governance.schema import decisions, deployments, models, tasks
from services.governance.service import Governance
from services.governance.settings import GovernanceSettings
from shared.bus import EnvelopeConsumer
from shared.events.types import (
    TOPIC_DEPLOYMENTS,
    TOPIC_GOVERNANCE,
    TOPIC_MODELS,
    TOPIC_TASKS,
    data_stream,
)
from shared.http import health_router, install_error_handlers
from shared.runtime import Runtime
from shared.store.migrate import upgrade_async

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


async def _consume(consumer: EnvelopeConsumer, governance: Governance) -> None:
    async for batch in consumer.batches():
        try:
            await governance.handle(batch)
        except Exception:  # keep consuming; the batch is retried after a restart (not committed)
            log.exception("governance.batch_failed", events=len(batch))
            raise


def create_app(settings: GovernanceSettings | None = None) -> FastAPI:
    settings = settings or GovernanceSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upgrade_async(settings.database_url, MIGRATIONS, "gov_alembic_version")
        engine = create_async_engine(settings.database_url)
        runtime = Runtime.build("governance", settings)
        await runtime.start()
        governance = Governance(runtime, engine)
        consumer = EnvelopeConsumer(
            settings.kafka_bootstrap_servers,
            [TOPIC_TASKS, TOPIC_MODELS, TOPIC_DEPLOYMENTS, TOPIC_GOVERNANCE],
            group_id=settings.consumer_group,
            dead_letters=runtime.publisher,
        )
        await consumer.start()
        app.state.runtime, app.state.engine, app.state.governance = runtime, engine, governance
        app.state.consuming = asyncio.create_task(_consume(consumer, governance))
        try:
            yield
        finally:
            app.state.consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await app.state.consuming
            await consumer.stop()
            await runtime.stop()
            await engine.dispose()

    app = FastAPI(title="Continuo governance", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)

    async def consumer_alive() -> str | None:
        task = getattr(app.state, "consuming", None)
        return None if task is not None and not task.done() else "event consumer stopped"

    app.include_router(health_router(lambda: getattr(app.state, "runtime", None), consumer_alive))

    def engine(request: Request) -> AsyncEngine:
        return request.app.state.engine

    async def known_task(request: Request, task: str) -> dict[str, Any]:
        async with engine(request).connect() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.task == task))).first()
        if row is None:
            raise HTTPException(404, f"unknown task {task!r}")
        return dict(row._mapping)

    async def model_row(request: Request, task: str, version: int) -> dict[str, Any]:
        await known_task(request, task)
        async with engine(request).connect() as conn:
            row = (
                await conn.execute(
                    select(models).where(models.c.task == task, models.c.model_version == version)
                )
            ).first()
        if row is None:
            raise HTTPException(404, f"task {task!r} has no model version {version}")
        return _model_json(row._mapping)

    @app.get("/v1/tasks/{task}/models")
    async def list_models(request: Request, task: str) -> dict[str, Any]:
        await known_task(request, task)
        async with engine(request).connect() as conn:
            rows = (
                await conn.execute(
                    select(models).where(models.c.task == task).order_by(models.c.model_version)
                )
            ).all()
            deployment = (
                await conn.execute(select(deployments).where(deployments.c.task == task))
            ).first()
        return {
            "task": task,
            "champion": deployment.model_version if deployment else None,
            "models": [_model_json(r._mapping) for r in rows],
        }

    @app.get("/v1/tasks/{task}/models/{version}")
    async def get_model(request: Request, task: str, version: int) -> dict[str, Any]:
        return await model_row(request, task, version)

    @app.get("/v1/tasks/{task}/models/{version}/lineage")
    async def lineage(request: Request, task: str, version: int) -> dict[str, Any]:
        model = await model_row(request, task, version)
        spec = await known_task(request, task)
        chain, parent = [], model["parent_version"]
        async with engine(request).connect() as conn:
            while parent is not None:
                row = (
                    await conn.execute(
                        select(
                            models.c.model_version,
                            models.c.parent_version,
                            models.c.artifact_sha256,
                        ).where(models.c.task == task, models.c.model_version == parent)
                    )
                ).first()
                if row is None:
                    break
                chain.append(
                    {"model_version": row.model_version, "artifact_sha256": row.artifact_sha256}
                )
                parent = row.parent_version
            history = (
                await conn.execute(
                    select(decisions)
                    .where(decisions.c.task == task, decisions.c.model_version == version)
                    .order_by(decisions.c.position)
                )
            ).all()
        return {
            "model": model,
            "pipeline": {
                "version": model["pipeline_version"],
                "current_spec_version": spec["version"],
            },
            "data": {
                "stream": data_stream(task),
                "first_position": model["first_position"],
                "last_position": model["last_position"],
                "labelled_events_learned": model["n_learned_total"],
            },
            "ancestors": chain,
            "decisions": [
                {
                    "type": d.type,
                    "decided_by": d.decided_by,
                    "reasons": d.reasons,
                    "decided_at": d.decided_at.isoformat(),
                    "position": d.position,
                }
                for d in history
            ],
        }

    @app.get("/v1/tasks/{task}/deployment")
    async def deployment(request: Request, task: str) -> dict[str, Any]:
        await known_task(request, task)
        async with engine(request).connect() as conn:
            row = (
                await conn.execute(select(deployments).where(deployments.c.task == task))
            ).first()
        if row is None:
            raise HTTPException(404, f"task {task!r} has no champion yet")
        return dict(row._mapping)

    return app


def _model_json(row: Any) -> dict[str, Any]:
    data = dict(row)
    data["event_id"] = str(data["event_id"])
    data["trained_at"] = data["trained_at"].isoformat()
    return data
