"""Projecting events into governance's read models, idempotently (an event applies once).

Every table is keyed by the event (or the fact) it comes from, so the result does not depend on
the order in which Kafka delivers different topics: live, rebuilt from position 0, or built as of
a position, the same events give the same tables. The one table updated in place (deployments) is
guarded by the deployment stream's version, which orders it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.governance.schema import (
    alarms,
    applied,
    audits,
    decisions,
    deployments,
    models,
    predictions,
    served_windows,
    tasks,
)
from shared.events.envelope import Envelope
from shared.events.types import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    AuditCompleted,
    CanaryEnded,
    CanaryStarted,
    ConfigDropped,
    ConfigSwitched,
    DriftDetected,
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    PredictionServed,
    PromotionRefused,
    ServedScored,
    ShadowStarted,
    ShadowStopped,
    TaskRegistered,
)
from shared.store.pages import position_pages

DECISION_TYPES = (
    "ModelPromoted",
    "ModelRolledBack",
    "PromotionRefused",
    "ApprovalRequested",
    "ApprovalGranted",
    "ApprovalRejected",
)
# A model's runs beside the champion (their reasons carry the canary analysis's figures).
ROUTING_TYPES = ("ShadowStarted", "ShadowStopped", "CanaryStarted", "CanaryEnded")
PROJECTED_TYPES = (
    "TaskRegistered",
    "ModelTrained",
    "AuditCompleted",
    "PredictionServed",
    *DECISION_TYPES,
    *ROUTING_TYPES,
    "ServedScored",
    "DriftDetected",
    "ConfigSwitched",
    "ConfigDropped",
    # Nothing to project; marked applied so that each is judged once (Governance.handle).
    "ArmsScored",
    "ArmsServed",
)


async def apply_events(conn: AsyncConnection, events: Sequence[Envelope]) -> list[Envelope]:
    """Apply the events not applied before, in the caller's transaction; return those applied."""
    wanted = [e for e in events if e.type in PROJECTED_TYPES]
    if not wanted:
        return []
    done: set[Any] = set()
    ids = [e.event_id for e in wanted]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found = await conn.execute(select(applied.c.event_id).where(applied.c.event_id.in_(chunk)))
        done.update(found.scalars())
    fresh: list[Envelope] = []
    for envelope in wanted:
        if envelope.event_id in done:
            continue
        done.add(envelope.event_id)
        fresh.append(envelope)
    # The answers callers got (a shadow's score of the same row is evidence for the canary
    # analysis, kept in the store; it is not a prediction anyone received).
    served = [row for e in fresh if e.type == "PredictionServed" for row in _prediction_rows(e)]
    if served:  # the bulk of the traffic: one executemany
        await conn.execute(predictions.insert(), served)
    for envelope in fresh:
        if envelope.type != "PredictionServed":
            await _apply(conn, envelope)
    if fresh:
        await conn.execute(
            applied.insert(),
            [{"event_id": e.event_id, "position": e.position or 0} for e in fresh],
        )
    return fresh


def _prediction_rows(envelope: Envelope) -> list[dict[str, Any]]:
    """The answers callers got, in a PredictionServed event (not its shadows' scores)."""
    data = envelope.data()
    assert isinstance(data, PredictionServed)
    return [
        {
            "prediction_id": p.prediction_id,
            "position": envelope.position or 0,
            "task": data.task,
            "model_version": p.model_version,
            "entity_id": p.entity_id,
            "features": p.features,
            "probability": p.probability,
            "label": p.label,
            "probabilities": p.probabilities,
            "served_at": p.served_at or envelope.occurred_at,
            "online": p.online,
            "role": p.role,
        }
        for p in data.predictions
        if p.role != "shadow"
    ]


async def _apply(conn: AsyncConnection, envelope: Envelope) -> None:
    data = envelope.data()
    if isinstance(data, TaskRegistered):
        await _register(conn, data, envelope)
    elif isinstance(data, ModelTrained):
        await conn.execute(
            models.insert().values(
                **data.model_dump(exclude={"task", "model_version"}),
                task=data.task,
                model_version=data.model_version,
                trained_at=envelope.occurred_at,
                event_id=envelope.event_id,
                position=envelope.position or 0,
            )
        )
    elif isinstance(data, AuditCompleted):
        await conn.execute(
            audits.insert().values(
                event_id=envelope.event_id,
                position=envelope.position or 0,
                task=data.task,
                model_version=data.model_version,
                scope=data.scope,
                passed=data.passed,
                reasons=data.reasons,
                window=data.window,
                report=data.report,
                audited_at=envelope.occurred_at,
            )
        )
    elif isinstance(data, ModelPromoted | ModelRolledBack):
        await _set_champion(conn, data.task, data.model_version, envelope)
        await _record_decision(
            conn, envelope, data.task, data.model_version, data.decided_by, [data.reason]
        )
    elif isinstance(data, PromotionRefused | ApprovalRequested):
        await _record_decision(
            conn, envelope, data.task, data.model_version, data.decided_by, data.reasons
        )
    elif isinstance(data, ApprovalGranted | ApprovalRejected):
        await _record_decision(
            conn, envelope, data.task, data.model_version, data.by, [data.reason]
        )
    elif isinstance(data, ServedScored) and data.arms:
        await conn.execute(
            served_windows.insert(),
            [
                {
                    "event_id": envelope.event_id,
                    "model_version": arm["model_version"],
                    "role": arm["role"],
                    "position": envelope.position or 0,
                    "task": data.task,
                    "n": arm["n"],
                    "correct": arm.get("correct"),
                    "abs_error": arm.get("abs_error"),
                    "to_position": data.to_position,
                    "scored_at": envelope.occurred_at,
                }
                for arm in data.arms
            ],
        )
    elif isinstance(data, DriftDetected | ConfigSwitched | ConfigDropped):
        detail = data.model_dump(exclude={"task", "at_labelled"})
        await conn.execute(
            alarms.insert().values(
                event_id=envelope.event_id,
                position=envelope.position or 0,
                task=data.task,
                type=envelope.type,
                model_version=getattr(data, "model_version", None),
                at_labelled=data.at_labelled,
                detail=detail,
                occurred_at=envelope.occurred_at,
            )
        )
    elif isinstance(data, ShadowStarted | ShadowStopped | CanaryStarted | CanaryEnded):
        outcome = getattr(data, "outcome", None)
        reasons = [data.reason] if outcome is None else [f"{outcome}: {data.reason}"]
        await _record_decision(
            conn, envelope, data.task, data.model_version, data.decided_by, reasons
        )


async def _register(conn: AsyncConnection, data: TaskRegistered, envelope: Envelope) -> None:
    """The newest spec version (by position in the store) is the task's current one."""
    current = (
        await conn.execute(select(tasks.c.position).where(tasks.c.task == data.task))
    ).scalar()
    if current is not None and current > (envelope.position or 0):
        return
    await conn.execute(delete(tasks).where(tasks.c.task == data.task))
    await conn.execute(
        tasks.insert().values(
            task=data.task,
            version=data.version,
            spec=data.spec,
            registered_at=envelope.occurred_at,
            position=envelope.position or 0,
        )
    )


async def _set_champion(conn: AsyncConnection, task: str, version: int, envelope: Envelope) -> None:
    current = (
        await conn.execute(
            select(deployments.c.deployment_version).where(deployments.c.task == task)
        )
    ).scalar()
    if current is not None and current >= (envelope.stream_version or 0):
        return  # an older decision delivered late: the newer one already holds
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


# What a model's newest decision says about it (the champion is read from deployments).
_STATUS_OF_DECISION = {
    "ModelPromoted": "retired",
    "ModelRolledBack": "retired",
    "PromotionRefused": "refused",
    "ApprovalRequested": "awaiting_approval",
    "ApprovalGranted": "awaiting_approval",
    "ApprovalRejected": "rejected",
    "ShadowStarted": "shadow",
    "CanaryStarted": "canary",
    "ShadowStopped": "stopped",
    "CanaryEnded": "stopped",
}


def model_status(
    version: int, champion: int | None, decision_types: Sequence[str], role: str = "candidate"
) -> str:
    """champion | retired | refused | rejected | awaiting_approval | shadow | canary | stopped |
    candidate | challenger.

    `decision_types` are the model's decisions in store order. A model running as a shadow or
    canary is that; one that once served as the champion is retired; otherwise the newest
    decision that changes the model's standing decides (a grant after a request still awaits the
    rest of the approvals). A model with no decision yet is a `candidate` to replace the
    champion, or a `challenger` published to run beside it.
    """
    if champion == version:
        return "champion"
    newest = next((k for k in reversed(decision_types) if k in _STATUS_OF_DECISION), None)
    if newest in ("ShadowStarted", "CanaryStarted"):
        return _STATUS_OF_DECISION[newest]  # running beside the champion now
    if "ModelPromoted" in decision_types or "ModelRolledBack" in decision_types:
        return "retired"
    return role if newest is None else _STATUS_OF_DECISION[newest]


async def replay_into(
    conn: AsyncConnection,
    store: Any,
    until: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Apply the store's projected events (positions 1..until, or all) in order; return the count.

    The same code builds the live tables (after they are emptied) and a throwaway as-of copy.
    Pages of `PAGE` events by position, the next read while this one is applied;
    `progress(n)` after each page of n events read.
    """
    count = 0
    async for page in position_pages(store, until=until, types=PROJECTED_TYPES):
        count += len(await apply_events(conn, page))
        if progress is not None:
            progress(len(page))
    return count
