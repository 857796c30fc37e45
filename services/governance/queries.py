"""Reading the projections as JSON: the same functions serve the live tables, a rebuilt copy and a
throwaway as-of copy, so all three give identical answers for the same events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.governance.projections import model_status
from services.governance.schema import (
    alarms,
    audits,
    decisions,
    deployments,
    models,
    predictions,
    served_windows,
    tasks,
)
from shared.events.types import data_stream


class Missing(LookupError):
    """Not in the projection (HTTP 404); the message names what."""


def iso(value: datetime) -> str:
    """UTC ISO-8601 whatever the database returned (SQLite gives naive datetimes back)."""
    return (
        value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    ).isoformat()


def _jsonable(row: Any) -> dict[str, Any]:
    out = {}
    for key, value in dict(row._mapping).items():
        if isinstance(value, datetime):
            value = iso(value)
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[key] = value
    return out


async def task_row(conn: AsyncConnection, task: str) -> dict[str, Any]:
    row = (await conn.execute(select(tasks).where(tasks.c.task == task))).first()
    if row is None:
        raise Missing(f"unknown task {task!r}")
    return _jsonable(row)


async def list_tasks(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(tasks.c.task, tasks.c.version).order_by(tasks.c.task))).all()
    return [{"task": r.task, "version": r.version} for r in rows]


async def champion(conn: AsyncConnection, task: str) -> int | None:
    row = (
        await conn.execute(select(deployments.c.model_version).where(deployments.c.task == task))
    ).first()
    return row.model_version if row else None


async def _decision_types(conn: AsyncConnection, task: str) -> dict[int, list[str]]:
    rows = (
        await conn.execute(
            select(decisions.c.model_version, decisions.c.type)
            .where(decisions.c.task == task)
            .order_by(decisions.c.position)
        )
    ).all()
    by_version: dict[int, list[str]] = {}
    for r in rows:
        by_version.setdefault(r.model_version, []).append(r.type)
    return by_version


async def _audit_summary(conn: AsyncConnection, task: str) -> dict[int, dict[str, Any]]:
    rows = (
        await conn.execute(
            select(audits.c.model_version, audits.c.passed, audits.c.reasons)
            .where(audits.c.task == task, audits.c.scope == "candidate")
            .order_by(audits.c.position)
        )
    ).all()
    return {r.model_version: {"passed": r.passed, "reasons": r.reasons} for r in rows}


def _model_json(
    row: Any, current: int | None, kinds: list[str], audit: dict[str, Any] | None
) -> dict[str, Any]:
    data = _jsonable(row)
    data["status"] = model_status(data["model_version"], current, kinds, data["role"])
    data["audit"] = audit
    return data


async def list_models(conn: AsyncConnection, task: str) -> dict[str, Any]:
    await task_row(conn, task)
    rows = (
        await conn.execute(
            select(models).where(models.c.task == task).order_by(models.c.model_version)
        )
    ).all()
    current = await champion(conn, task)
    kinds = await _decision_types(conn, task)
    audited = await _audit_summary(conn, task)
    return {
        "task": task,
        "champion": current,
        "models": [
            _model_json(r, current, kinds.get(r.model_version, []), audited.get(r.model_version))
            for r in rows
        ],
    }


async def model(conn: AsyncConnection, task: str, version: int) -> dict[str, Any]:
    await task_row(conn, task)
    row = (
        await conn.execute(
            select(models).where(models.c.task == task, models.c.model_version == version)
        )
    ).first()
    if row is None:
        raise Missing(f"task {task!r} has no model version {version}")
    kinds = await _decision_types(conn, task)
    audited = await _audit_summary(conn, task)
    return _model_json(
        row, await champion(conn, task), kinds.get(version, []), audited.get(version)
    )


async def decisions_of(
    conn: AsyncConnection, task: str, version: int | None = None
) -> list[dict[str, Any]]:
    query = select(decisions).where(decisions.c.task == task)
    if version is not None:
        query = query.where(decisions.c.model_version == version)
    rows = (await conn.execute(query.order_by(decisions.c.position))).all()
    return [_jsonable(r) for r in rows]


async def lineage(conn: AsyncConnection, task: str, version: int) -> dict[str, Any]:
    """A model's lineage: pipeline version, the data range it learned, ancestors, decisions."""
    spec = await task_row(conn, task)
    this = await model(conn, task, version)
    chain, parent = [], this["parent_version"]
    while parent is not None:
        row = (
            await conn.execute(
                select(
                    models.c.model_version, models.c.parent_version, models.c.artifact_sha256
                ).where(models.c.task == task, models.c.model_version == parent)
            )
        ).first()
        if row is None:
            break
        chain.append({"model_version": row.model_version, "artifact_sha256": row.artifact_sha256})
        parent = row.parent_version
    return {
        "model": this,
        "pipeline": {
            "version": this["pipeline_version"],
            "current_spec_version": spec["version"],
        },
        "data": {
            "stream": data_stream(task),
            "first_position": this["first_position"],
            "last_position": this["last_position"],
            "labelled_events_learned": this["n_learned_total"],
            "events": f"/v1/tasks/{task}/models/{version}/events",
        },
        "ancestors": chain,
        "decisions": await decisions_of(conn, task, version),
    }


async def deployment(conn: AsyncConnection, task: str) -> dict[str, Any]:
    await task_row(conn, task)
    row = (await conn.execute(select(deployments).where(deployments.c.task == task))).first()
    if row is None:
        raise Missing(f"task {task!r} has no champion yet")
    return _jsonable(row)


async def audits_of(
    conn: AsyncConnection, task: str, version: int | None = None, scope: str | None = None
) -> list[dict[str, Any]]:
    await task_row(conn, task)
    query = select(audits).where(audits.c.task == task)
    if version is not None:
        query = query.where(audits.c.model_version == version)
    if scope is not None:
        query = query.where(audits.c.scope == scope)
    rows = (await conn.execute(query.order_by(audits.c.position))).all()
    return [_jsonable(r) for r in rows]


async def prediction(conn: AsyncConnection, prediction_id: uuid.UUID) -> dict[str, Any]:
    row = (
        await conn.execute(select(predictions).where(predictions.c.prediction_id == prediction_id))
    ).first()
    if row is None:
        raise Missing(f"no prediction {prediction_id} is known to governance")
    return _jsonable(row)


async def models_rows(conn: AsyncConnection, task: str) -> list[dict[str, Any]]:
    """Every model version's learned range (for lineage questions)."""
    rows = (
        await conn.execute(
            select(
                models.c.model_version,
                models.c.first_position,
                models.c.last_position,
                models.c.pipeline_version,
            )
            .where(models.c.task == task)
            .order_by(models.c.model_version)
        )
    ).all()
    return [dict(r._mapping) for r in rows]


async def latest_audits(conn: AsyncConnection, task: str) -> dict[str, dict[str, Any] | None]:
    """The newest audit of each scope: `candidate` (a version on rows it never learned, with
    outcomes) and `live` (the champion's served predictions, selection rates only)."""
    await task_row(conn, task)
    newest: dict[str, dict[str, Any] | None] = {}
    for scope in ("candidate", "live"):
        row = (
            await conn.execute(
                select(audits)
                .where(audits.c.task == task, audits.c.scope == scope)
                .order_by(audits.c.position.desc())
                .limit(1)
            )
        ).first()
        newest[scope] = _jsonable(row) if row is not None else None
    return newest


async def newest_predictions(
    conn: AsyncConnection, task: str, version: int, limit: int
) -> list[dict[str, Any]]:
    """A model version's newest recorded answers, newest first (ids to follow to their lineage;
    the index on task, version and position keeps this a short read however many there are)."""
    await task_row(conn, task)
    known = (
        await conn.execute(
            select(models.c.model_version).where(
                models.c.task == task, models.c.model_version == version
            )
        )
    ).first()
    if known is None:
        raise Missing(f"task {task!r} has no model version {version}")
    rows = (
        await conn.execute(
            select(
                predictions.c.prediction_id,
                predictions.c.position,
                predictions.c.entity_id,
                predictions.c.probability,
                predictions.c.label,  # a regression's answer (its probability is None)
                predictions.c.role,
                predictions.c.served_at,
            )
            .where(predictions.c.task == task, predictions.c.model_version == version)
            .order_by(predictions.c.position.desc())
            .limit(limit)
        )
    ).all()
    return [_jsonable(r) for r in rows]


async def served_accuracy(conn: AsyncConnection, task: str, after: int = 0) -> list[dict[str, Any]]:
    """Served accuracy over time: each window's counts per model version and role, oldest
    first (`after`: only windows stored after that position). A regression's windows hold
    the summed absolute error and the MAE instead (`correct` and `accuracy` None)."""
    await task_row(conn, task)
    rows = (
        await conn.execute(
            select(served_windows)
            .where(served_windows.c.task == task, served_windows.c.position > after)
            .order_by(served_windows.c.position, served_windows.c.model_version)
        )
    ).all()
    return [
        {
            "model_version": r.model_version,
            "role": r.role,
            "n": r.n,
            "correct": r.correct,
            "accuracy": r.correct / r.n if r.n and r.correct is not None else None,
            "abs_error": r.abs_error,
            "mae": r.abs_error / r.n if r.n and r.abs_error is not None else None,
            "to_position": r.to_position,
            "position": r.position,
            "at": iso(r.scored_at),
        }
        for r in rows
    ]


async def alarms_of(conn: AsyncConnection, task: str) -> list[dict[str, Any]]:
    """The trainer's drift alarms, configuration switches and drops, oldest first."""
    await task_row(conn, task)
    rows = (
        await conn.execute(select(alarms).where(alarms.c.task == task).order_by(alarms.c.position))
    ).all()
    return [_jsonable(r) for r in rows]
