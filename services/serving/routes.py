"""Serving's HTTP routes: decode, call the model table and the online features, encode."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request

from services.serving.models import (
    Champion,
    InvalidRecords,
    NoChampion,
    Prediction,
    UnknownTask,
    predict,
    unanswered,
    validate_records,
)
from services.serving.recorder import observation_events, served_events
from services.serving.schemas import ModelOut, PredictionOut, PredictRequest, PredictResponse
from services.serving.state import ServingState, serving_state
from shared.store.sql import STORE_FAILURES
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/tasks/{task}", tags=["serving"])


def _champion(state: ServingState, task: str) -> Champion:
    try:
        return state.table.serving(task)
    except UnknownTask as exc:
        raise HTTPException(404, str(exc)) from None
    except NoChampion as exc:
        raise HTTPException(503, str(exc)) from None


def _refuse(errors: dict[int, str]) -> HTTPException:
    return HTTPException(422, [{"index": i, "msg": reason} for i, reason in errors.items()])


@router.post("/predict", response_model=PredictResponse)
async def predict_route(task: str, body: PredictRequest, request: Request) -> PredictResponse:
    """Predict one record or a batch with the task's champion, given the online features as of
    now; with `record` (log and wait) the rows are stored as observations before the answer."""
    state = serving_state(request)
    champion = _champion_or_cold_start(state, task, body)
    spec = champion.spec if champion is not None else _registered(state, task)
    records = body.as_records()
    if len(records) > state.settings.max_records:
        raise HTTPException(422, f"at most {state.settings.max_records} records per request")
    try:
        rows = validate_records(spec, [r.features for r in records])
    except InvalidRecords as exc:
        raise _refuse(exc.errors) from None
    entity_ids = [r.entity_id for r in records]
    record = spec.serving.record if body.record is None else body.record
    if record or spec.entity_scoped:
        why = "the row is recorded" if record else f"task {task!r} has per-entity online features"
        missing = {i: f"entity_id: required ({why})" for i, e in enumerate(entity_ids) if not e}
        if missing:
            raise _refuse(missing)
    try:
        online = await state.online_values(spec, rows, entity_ids, record, body.after_position)
    except STORE_FAILURES as exc:
        log.warning("serving.online_sync_failed", task=task, error=str(exc))
        raise HTTPException(503, "the event store is unavailable; retry") from None
    if champion is None:  # log and wait before the first model: record, answer nothing
        predictions = unanswered(spec, rows, entity_ids, online)
    else:
        # On the event loop, where the champion also learns: never half-way through a label.
        predictions = predict(champion.predictor, spec, rows, entity_ids, online)
    version = champion.model_version if champion is not None else None
    learned = getattr(champion.predictor, "learned_through", None) if champion else None
    if record:
        events = observation_events(spec, version, learned, predictions, state.producer)
        try:
            appended = await state.observations.append(events)
        except STORE_FAILURES as exc:
            log.warning("serving.record_observations_failed", task=task, error=str(exc))
            raise HTTPException(
                503, "the event store is unavailable; nothing was recorded: retry the request"
            ) from None
        try:
            await state.online.own_writes(spec, events, appended)
        except STORE_FAILURES as exc:  # recorded all the same; the data topic brings them
            log.warning("serving.own_writes_not_folded", task=task, error=str(exc))
    if version is not None:
        state.recorder.record(served_events(task, version, learned, predictions, record))
    return PredictResponse(
        task=task,
        model_version=version,
        recorded=record,
        predictions=[_out(p) for p in predictions],
    )


def _champion_or_cold_start(
    state: ServingState, task: str, body: PredictRequest
) -> Champion | None:
    """The champion; None when there is none yet but the request records its rows (they are how
    the first model gets learned), else 404/503."""
    try:
        return _champion(state, task)
    except HTTPException as exc:
        if exc.status_code == 503 and state.table.spec(task) is not None:
            spec = state.table.spec(task)
            assert spec is not None
            if body.record or (body.record is None and spec.serving.record):
                return None
        raise


def _registered(state: ServingState, task: str) -> TaskSpec:
    spec = state.table.spec(task)
    if spec is None:
        raise HTTPException(404, f"unknown task {task!r}")
    return spec


def _out(p: Prediction) -> PredictionOut:
    return PredictionOut(
        prediction_id=str(p.prediction_id),
        label=p.label,
        probability=p.probability,
        online_features=p.online,
    )


@router.get("/model", response_model=ModelOut)
async def model_route(task: str, request: Request) -> ModelOut:
    """The task's current champion."""
    state = serving_state(request)
    try:
        champion = state.table.serving(task)
    except (UnknownTask, NoChampion) as exc:
        raise HTTPException(404, str(exc)) from None
    return ModelOut(
        task=task,
        model_version=champion.model_version,
        artifact_sha256=champion.artifact_sha256,
        promoted_at=champion.promoted_at,
    )


@router.get("/online", tags=["serving"])
async def online_route(task: str, request: Request) -> dict[str, Any]:
    """How far this replica's online features have followed the task's data stream."""
    state = serving_state(request)
    status = state.online.status().get(task)
    if status is None:
        if state.table.spec(task) is None:
            raise HTTPException(404, f"unknown task {task!r}")
        return {"task": task, "online_features": False}
    return {"task": task, "online_features": True, **status}
