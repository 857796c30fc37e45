"""Projecting events into governance's read models, idempotently (an event applies once)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.governance.schema import applied, decisions, deployments, models, tasks
from shared.events.envelope import Envelope
from shared.events.types import (
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    PromotionRefused,
    TaskRegistered,
)

PROJECTED_TYPES = (
    "TaskRegistered",
    "ModelTrained",
    "ModelPromoted",
    "ModelRolledBack",
    "PromotionRefused",
)


async def apply_events(conn: AsyncConnection, events: Sequence[Envelope]) -> list[Envelope]:
    """Apply the events not applied before, in the caller's transaction; return those applied."""
    wanted = [e for e in events if e.type in PROJECTED_TYPES]
    if not wanted:
        return []
    done = set(
        (
            await conn.execute(
                select(applied.c.event_id).where(
                    applied.c.event_id.in_([e.event_id for e in wanted])
                )
            )
        ).scalars()
    )
    fresh: list[Envelope] = []
    for envelope in wanted:
        if envelope.event_id in done:
            continue
        done.add(envelope.event_id)
        await _apply(conn, envelope)
        await conn.execute(
            applied.insert().values(event_id=envelope.event_id, position=envelope.position or 0)
        )
        fresh.append(envelope)
    return fresh


async def _apply(conn: AsyncConnection, envelope: Envelope) -> None:
    data = envelope.data()
    if isinstance(data, TaskRegistered):
        await conn.execute(delete(tasks).where(tasks.c.task == data.task))
        await conn.execute(
            tasks.insert().values(
                task=data.task,
                version=data.version,
                spec=data.spec,
                registered_at=envelope.occurred_at,
            )
        )
    elif isinstance(data, ModelTrained):
        await conn.execute(
            models.insert().values(
                **data.model_dump(exclude={"task", "model_version"}),
                task=data.task,
                model_version=data.model_version,
                trained_at=envelope.occurred_at,
                event_id=envelope.event_id,
                position=envelope.position or 0,
                status="candidate",
            )
        )
    elif isinstance(data, ModelPromoted | ModelRolledBack):
        await _set_champion(conn, data.task, data.model_version, envelope)
        await _record_decision(
            conn, envelope, data.task, data.model_version, data.decided_by, [data.reason]
        )
    elif isinstance(data, PromotionRefused):
        await conn.execute(
            update(models)
            .where(models.c.task == data.task, models.c.model_version == data.model_version)
            .values(status="refused")
        )
        await _record_decision(
            conn, envelope, data.task, data.model_version, data.decided_by, data.reasons
        )


async def _set_champion(conn: AsyncConnection, task: str, version: int, envelope: Envelope) -> None:
    await conn.execute(
        update(models)
        .where(models.c.task == task, models.c.status == "champion")
        .values(status="retired")
    )
    await conn.execute(
        update(models)
        .where(models.c.task == task, models.c.model_version == version)
        .values(status="champion")
    )
    await conn.execute(delete(deployments).where(deployments.c.task == task))
    await conn.execute(
        deployments.insert().values(
            task=task,
            model_version=version,
            since_position=envelope.position or 0,
            deployment_version=envelope.stream_version or 0,
        )
    )


async def _record_decision(
    conn: AsyncConnection, envelope: Envelope, task: str, version: int, by: str, reasons: list[str]
) -> None:
    await conn.execute(
        decisions.insert().values(
            event_id=envelope.event_id,
            position=envelope.position or 0,
            task=task,
            type=envelope.type,
            model_version=version,
            decided_by=by,
            reasons=reasons,
            decided_at=envelope.occurred_at,
        )
    )
