"""Governance's work: keep the projections current and decide promotions as models appear.

Decisions are made on the event store's deployment stream (the system of record, current the
moment governance appends), not on the projection, which lags by a Kafka round trip. A decision's
event id is derived from the task and model version, so deciding twice records once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.governance.policy import decide
from services.governance.projections import apply_events
from services.governance.schema import models
from shared.events.envelope import Envelope, new_event
from shared.events.types import (
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    PromotionRefused,
    deployment_stream,
)
from shared.registry import registered_tasks
from shared.runtime import Runtime

log = structlog.get_logger(__name__)
_NAMESPACE = uuid.UUID("9e0c0471-90e5-4a11-8d3c-000000000004")
POLICY = "governance/policy"


class Governance:
    def __init__(self, runtime: Runtime, engine: AsyncEngine) -> None:
        self.runtime = runtime
        self.engine = engine

    async def handle(self, events: Sequence[Envelope]) -> None:
        """Project a batch, then decide on every model it newly brought."""
        async with self.engine.begin() as conn:
            fresh = await apply_events(conn, events)
        for envelope in fresh:
            if envelope.type == "ModelTrained":
                await self.consider(envelope)

    async def champion(self, task: str) -> int | None:
        """The champion version according to the store's deployment stream."""
        champion = None
        for envelope in await self.runtime.store.read_stream(deployment_stream(task)):
            data = envelope.data()
            if isinstance(data, ModelPromoted | ModelRolledBack):
                champion = data.model_version
        return champion

    async def _metrics(self, task: str, version: int) -> dict[str, float] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(models.c.metrics).where(
                        models.c.task == task, models.c.model_version == version
                    )
                )
            ).first()
        return dict(row.metrics) if row else None

    async def consider(self, envelope: Envelope) -> None:
        trained = envelope.data()
        assert isinstance(trained, ModelTrained)
        spec = (await registered_tasks(self.runtime.store)).get(trained.task)
        if spec is None:
            log.error("governance.unknown_task", task=trained.task)
            return
        current = await self.champion(trained.task)
        if current is not None and current >= trained.model_version:
            return  # a newer (or this) model already serves; nothing to decide
        champion_metrics = await self._metrics(trained.task, current) if current else None
        decision = decide(spec.promotion, trained.metrics, champion_metrics)
        payload: ModelPromoted | PromotionRefused
        if decision.promote:
            payload = ModelPromoted(
                task=trained.task,
                model_version=trained.model_version,
                artifact_sha256=trained.artifact_sha256,
                previous_version=current,
                reason="; ".join(decision.reasons),
                decided_by=POLICY,
            )
        else:
            payload = PromotionRefused(
                task=trained.task,
                model_version=trained.model_version,
                reasons=decision.reasons,
                decided_by=POLICY,
            )
        event = new_event(
            payload,
            stream_id=deployment_stream(trained.task),
            producer=self.runtime.producer,
            event_id=uuid.uuid5(_NAMESPACE, f"{trained.task}/decision/{trained.model_version}"),
            causation=envelope,
        )
        await self.runtime.store.append([event])
        log.info(
            "governance.decided",
            task=trained.task,
            version=trained.model_version,
            promoted=decision.promote,
            reasons=decision.reasons,
        )
