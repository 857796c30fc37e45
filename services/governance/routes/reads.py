"""Read endpoints (viewer): registry, lineage both ways, audits, explanations."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy.ext.asyncio import AsyncEngine

from services.governance import lineage, queries
from services.governance.explain import (
    UnknownClass,
    global_importance,
    prediction_contributions,
)
from services.governance.routes.deps import Version, governance, read_engine, viewer
from services.governance.service import Governance
from shared.events.types import data_stream
from shared.http import MAX_POSITION, MAX_VERSION
from shared.model_codec import OneVsRestPredictor
from shared.registry import spec_versions
from shared.tasks import TaskSpec

router = APIRouter(prefix="/v1", tags=["registry"], dependencies=[Depends(viewer)])
Engine = Annotated[AsyncEngine, Depends(read_engine)]
Gov = Annotated[Governance, Depends(governance)]


@router.get("/tasks")
async def list_tasks(engine: Engine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return {"tasks": await queries.list_tasks(conn)}


@router.get("/tasks/{task}/pipelines")
async def pipelines(task: str, gov: Gov) -> dict[str, Any]:
    """The task's pipeline versions: each registered one, the one the trainer runs (`running`),
    the champion's, and the last started."""
    return await gov.pipelines.listing(task)


@router.get("/tasks/{task}/models")
async def list_models(task: str, engine: Engine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await queries.list_models(conn, task)


@router.get("/tasks/{task}/models/{version}")
async def get_model(task: str, version: Version, engine: Engine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await queries.model(conn, task, version)


@router.get("/tasks/{task}/models/{version}/lineage")
async def model_lineage(task: str, version: Version, engine: Engine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await queries.lineage(conn, task, version)


@router.get("/tasks/{task}/models/{version}/events")
async def model_events(
    task: str,
    version: Version,
    engine: Engine,
    gov: Gov,
    after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    """The data events in the range the model learned from, paginated by position."""
    async with engine.connect() as conn:
        this = await queries.model(conn, task, version)
    first = this["first_position"] or 0
    page = await gov.store.read_all(
        after=max(after, first - 1),
        until=this["last_position"],
        limit=limit,
        streams=[data_stream(task)],
        types=["ObservationRecorded", "LabelRecorded"],
    )
    full = len(page) == limit
    return {
        "task": task,
        "model_version": version,
        "first_position": this["first_position"],
        "last_position": this["last_position"],
        "events": [lineage.event_json(e) for e in page],
        "next_after": page[-1].position if page and full else None,
    }


@router.get("/tasks/{task}/data/models")
async def models_that_saw(
    task: str,
    engine: Engine,
    gov: Gov,
    event_id: uuid.UUID | None = None,
    first_position: Annotated[int | None, Query(ge=1, le=MAX_POSITION)] = None,
    last_position: Annotated[int | None, Query(ge=1, le=MAX_POSITION)] = None,
) -> dict[str, Any]:
    """Which model versions learned from a data event (`event_id`) or a range of positions."""
    if (event_id is None) == (first_position is None):
        raise HTTPException(422, "give either event_id or first_position (and last_position)")
    if event_id is not None:
        found = (await gov.store.get([event_id])).get(event_id)
        if found is None or found.stream_id != data_stream(task):
            raise HTTPException(404, f"no data event {event_id} in task {task!r}")
        lo = hi = found.position or 0
    else:
        assert first_position is not None
        lo, hi = first_position, last_position if last_position is not None else first_position
        if hi < lo:
            raise HTTPException(422, "last_position is before first_position")
    async with engine.connect() as conn:
        await queries.task_row(conn, task)
        models = await queries.models_rows(conn, task)
    horizon = max((m["last_position"] for m in models), default=0)
    learned, notes = await lineage.learned_positions(gov.store, task, lo, hi, horizon)
    return {
        "task": task,
        "event_id": str(event_id) if event_id else None,
        "first_position": lo,
        "last_position": hi,
        "learned_at": {"first": learned[0], "last": learned[-1]} if learned else None,
        "model_versions": lineage.models_that_learned(models, learned),
        "notes": notes,
        "rule": "a model saw an event when its label entered the stream within the model's "
        "learned range first_position..last_position (continual learner: over-reports)",
    }


@router.get("/tasks/{task}/served-accuracy")
async def served_accuracy(
    task: str,
    engine: Engine,
    after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> dict[str, Any]:
    """Served accuracy over time: for each window of labelled rows serving answered and
    recorded (the trainer's ServedScored facts), how many each model version answered in each
    role and how many it got right; `after` a store position, for polling."""
    async with engine.connect() as conn:
        return {"task": task, "windows": await queries.served_accuracy(conn, task, after)}


@router.get("/tasks/{task}/alarms")
async def task_alarms(task: str, engine: Engine) -> dict[str, Any]:
    """The trainer's drift alarms, configuration switches and its search's drops
    (DriftDetected, ConfigSwitched, ConfigDropped)."""
    async with engine.connect() as conn:
        return {"task": task, "alarms": await queries.alarms_of(conn, task)}


@router.get("/tasks/{task}/deployment")
async def deployment(task: str, engine: Engine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await queries.deployment(conn, task)


@router.get("/tasks/{task}/routing")
async def routing(task: str, gov: Gov) -> dict[str, Any]:
    """Who answers the task's requests, folded from its deployment stream (the source of truth
    serving replicas converge to): champion (the last approved one under the kill switch),
    canary and its weight, shadows and their sample rates, flags."""
    await gov.spec(task)  # 404 for an unknown task
    return {"task": task, **(await gov.deployment_state(task)).routing()}


@router.get("/tasks/{task}/audits")
async def task_audits(
    task: str,
    engine: Engine,
    scope: Literal["candidate", "live"] | None = None,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> dict[str, Any]:
    async with engine.connect() as conn:
        return {"task": task, "audits": await queries.audits_of(conn, task, version, scope)}


@router.get("/tasks/{task}/models/{version}/audits")
async def model_audits(task: str, version: Version, engine: Engine) -> dict[str, Any]:
    async with engine.connect() as conn:
        await queries.model(conn, task, version)
        return {
            "task": task,
            "model_version": version,
            "audits": await queries.audits_of(conn, task, version),
        }


@router.get("/tasks/{task}/models/{version}/explanation")
async def model_explanation(
    task: str, version: Version, engine: Engine, gov: Gov
) -> dict[str, Any]:
    """Global feature importance (total split gain) of a model version; a multiclass model's
    summed over its classes' models, and each class's own."""
    async with engine.connect() as conn:
        this = await queries.model(conn, task, version)
    predictor = await gov.predictor(this["artifact_sha256"])
    classes: tuple[Any, ...] = ()
    if isinstance(predictor, OneVsRestPredictor):
        classes = (await _spec_of(gov, task, this["pipeline_version"])).target.classes
    importance = await asyncio.to_thread(global_importance, predictor, classes)
    return {
        "task": task,
        "model_version": version,
        "importance": "total split gain, members weighted by |weight|",
        **importance,
    }


async def _spec_of(gov: Governance, task: str, pipeline_version: str) -> TaskSpec:
    spec = (await spec_versions(gov.store, task)).get(pipeline_version)
    if spec is None:
        raise HTTPException(404, f"pipeline version {pipeline_version} is not registered")
    return spec


@router.get("/predictions/{prediction_id}")
async def prediction_lineage(prediction_id: uuid.UUID, engine: Engine, gov: Gov) -> dict[str, Any]:
    """A prediction, the model version that made it, and that model's lineage. A multiclass
    answer's `probabilities` are keyed by class, as serving answered them."""
    async with engine.connect() as conn:
        served = await queries.prediction(conn, prediction_id)
        model_lineage = await queries.lineage(conn, served["task"], served["model_version"])
    if served.get("probabilities") is not None:
        spec = await _spec_of(gov, served["task"], model_lineage["pipeline"]["version"])
        classes = [str(c) for c in spec.target.classes]
        served["probabilities"] = dict(zip(classes, served["probabilities"], strict=True))
    return {"prediction": served, **model_lineage}


@router.get("/predictions/{prediction_id}/explanation")
async def prediction_explanation(
    prediction_id: uuid.UUID,
    engine: Engine,
    gov: Gov,
    class_: Annotated[
        str | None,
        Query(alias="class", description="a multiclass task: the class to explain, as text"),
    ] = None,
) -> dict[str, Any]:
    """Per-feature TreeSHAP contributions to one served prediction, in its kind's unit (log-odds
    of class 1; a regression's value; the log-odds of one class against the rest)."""
    async with engine.connect() as conn:
        served = await queries.prediction(conn, prediction_id)
        this = await queries.model(conn, served["task"], served["model_version"])
    spec = await _spec_of(gov, served["task"], this["pipeline_version"])
    if class_ is not None and spec.target.kind != "multiclass":
        raise HTTPException(
            422, f"`class` applies to a multiclass task; {spec.name!r} is {spec.target.kind}"
        )
    predictor = await gov.predictor(this["artifact_sha256"])
    answer = {
        "binary": served["probability"],
        "regression": served["label"],  # a regression's label is its value
        "multiclass": served.get("probabilities"),
    }[spec.target.kind]
    try:
        explained = await asyncio.to_thread(
            prediction_contributions,
            spec,
            predictor,
            served["features"],
            served.get("online"),
            answer,
            class_name=class_,
        )
    except UnknownClass as exc:
        raise HTTPException(422, str(exc)) from exc
    out = {
        "prediction_id": str(prediction_id),
        "task": served["task"],
        "model_version": served["model_version"],
        **explained,
    }
    if spec.target.kind == "binary":
        out["served_probability"] = served["probability"]
    elif spec.target.kind == "regression":
        out["served_value"] = served["label"]
    return out
