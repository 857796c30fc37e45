"""Serving's HTTP routes: decode, route each row to its model, predict, record, encode.

A request's rows go to the task's champion, or to the canary for the canary's share of entities
(sticky by entity); shadows score the same rows after the answer has gone out, recorded with
their role and never returned. The task's flags (shared.deployments) are read here: log and wait
by default, online features off, the shadows' sample rate; the kill switch is in the routes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.serving import instruments
from services.serving.models import (
    InvalidRecords,
    Prediction,
    predict,
    unanswered,
    validate_records,
)
from services.serving.recorder import observation_events
from services.serving.routing import Role, Routes, Served, UnknownTask
from services.serving.schemas import (
    FlagEvaluation,
    FlagNotFound,
    FlagsEvaluation,
    ModelOut,
    OfrepError,
    OfrepRequest,
    PredictRequest,
    PredictResponse,
    RoutingOut,
)
from services.serving.state import ServingState, serving_state
from shared.deployments import (
    LOG_AND_WAIT,
    SHADOW_SAMPLE,
    evaluate,
    online_off,
)
from shared.http import error_responses, refusal
from shared.store.sql import STORE_FAILURES
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)

router = APIRouter(
    prefix="/v1/tasks/{task}",
    tags=["serving"],
    responses=error_responses(400, 404, 413, 415, 422, 503),
)


def _routes(state: ServingState, task: str) -> Routes:
    try:
        return state.table.routes(task)
    except UnknownTask as exc:
        raise HTTPException(404, str(exc)) from None


def _refuse(errors: dict[int, str]) -> HTTPException:
    """A 422 in FastAPI's validation-error shape, naming each record by its index."""
    return HTTPException(
        422,
        [
            {"loc": ["body", "records", i], "msg": reason, "type": "value_error", "index": i}
            for i, reason in errors.items()
        ],
    )


def _flag(routes: Routes, key: str, default: Any) -> Any:
    flag = routes.flags.get(key)
    return default if flag is None else evaluate(key, flag, None).value


@router.post("/predict", response_model=PredictResponse)
async def predict_route(task: str, body: PredictRequest, request: Request) -> Response:
    """Predict one record or a batch with the task's champion (or its canary, for the canary's
    share of entities), given the online features as of now; with `record` (log and wait) the
    rows are stored as observations before the answer."""
    answer = await predict_answer(serving_state(request), task, body)
    return Response(answer, media_type="application/json")


async def predict_answer(state: ServingState, task: str, body: PredictRequest) -> bytes:
    """The predict route's work, its answer encoded as `PredictResponse` documents it; raises
    HTTPException for a refusal. (The route above, and `direct.py`'s lane that reaches it
    without FastAPI's request machinery.)"""
    started = time.perf_counter()
    routes = _routes(state, task)  # taken once: a swap now does not affect this request
    spec = routes.spec
    record = body.record
    if record is None:
        record = bool(_flag(routes, LOG_AND_WAIT, spec.serving.record))
    if routes.champion is None and not record:
        raise HTTPException(503, f"task {task!r} has no promoted model yet")
    records = body.as_records()
    if len(records) > state.settings.max_records:
        raise HTTPException(422, f"at most {state.settings.max_records} records per request")
    try:
        rows = validate_records(spec, [r.features for r in records])
    except InvalidRecords as exc:
        raise _refuse(exc.errors) from None
    entity_ids = [r.entity_id for r in records]
    if record or spec.entity_scoped:
        why = "the row is recorded" if record else f"task {task!r} has per-entity online features"
        missing = {i: f"entity_id: required ({why})" for i, e in enumerate(entity_ids) if not e}
        if missing:
            raise _refuse(missing)

    async def values(of: TaskSpec) -> list[list[float]]:
        """The rows' online features as spec `of` defines them, as of now."""
        off = online_off(routes.flags, of.online_names)
        return await state.online_values(of, rows, entity_ids, record, body.after_position, off=off)

    try:
        online = {spec.version: await values(spec)}
    except STORE_FAILURES as exc:
        log.warning("serving.online_sync_failed", task=task, error=str(exc))
        raise HTTPException(503, "the event store is unavailable; retry") from None
    if len(routes.specs()) > 1:
        online |= await _other_pipelines(state, routes, values)
    failed: list[Served] = []
    if routes.champion is None:  # log and wait before the first model: record, answer nothing
        predictions = unanswered(spec, rows, entity_ids, online[spec.version])
    else:
        # On the event loop, where the models also learn: never half-way through a label.
        try:
            predictions = _answer(routes, rows, entity_ids, online, failed)
        except Exception:
            if routes.canary is not None:
                state.health.observe(task, (), _ms(started), [_arm(routes.champion)])
            raise
        state.online.freshness.answered(task, _learned_through(routes))
    if record:
        events = observation_events(spec, predictions, _learned(routes), state.producer)
        try:
            appended = await state.observations.append(events)
        except STORE_FAILURES as exc:
            log.warning("serving.record_observations_failed", task=task, error=str(exc))
            raise HTTPException(
                503, "the event store is unavailable; nothing was recorded: retry the request"
            ) from None
        try:
            for version in online:  # every fold in use reads its replica's own writes
                await state.online.own_writes(routes.specs()[version], events, appended)
        except STORE_FAILURES as exc:  # recorded all the same; the data topic brings them
            log.warning("serving.own_writes_not_folded", task=task, error=str(exc))
    state.recorder.record(task, predictions, _learned(routes), record)
    if routes.shadows and routes.champion is not None:
        sample = _flag(routes, SHADOW_SAMPLE, None)
        state.shadows.submit(routes, predictions, online, sample)
    # Backpressure: while the store records fewer answers than are served, wait for it.
    await state.recorder.room()
    champion = routes.champion
    if routes.canary is not None:  # the counts are read for the canary's guardrails only
        state.health.observe(
            task,
            {(p.role, p.model_version) for p in predictions if p.model_version is not None},
            _ms(started),
            [_arm(a) for a in failed],
        )
    # Encoded here, as `PredictResponse` documents it: the hot path skips a validation pass over
    # what this function has just built.
    classes = [str(c) for c in spec.target.classes] if spec.target.kind == "multiclass" else None
    answer = {
        "task": task,
        "model_version": champion.model_version if champion is not None else None,
        "recorded": record,
        "predictions": [_out(p, classes) for p in predictions],
    }
    encoded = orjson.dumps(answer)
    instruments.answered(task, predictions, time.perf_counter() - started)
    return encoded


async def _other_pipelines(
    state: ServingState,
    routes: Routes,
    values: Callable[[TaskSpec], Awaitable[list[list[float]]]],
) -> dict[str, list[list[float]]]:
    """The online features of a canary's or shadow's other pipeline, where its fold is built
    (it is built in the background when the arm starts: until then, and if reading it fails,
    the champion answers the canary's rows and the shadow skips the request)."""
    out: dict[str, list[list[float]]] = {}
    for version, spec in routes.specs().items():
        if version == routes.spec.version:
            continue
        if spec.online_features and state.online.fold(spec) is None:
            continue
        try:
            out[version] = await values(spec)
        except STORE_FAILURES as exc:
            log.warning("serving.arm_online_failed", task=routes.task, error=str(exc))
    return out


def _answer(
    routes: Routes,
    rows: list[dict[str, Any]],
    entity_ids: list[str | None],
    online: Mapping[str, list[list[float]]],
    failed: list[Served],
) -> list[Prediction]:
    """Each row predicted by the model its entity is routed to, in request order. A canary that
    fails is added to `failed` and its rows are answered by the champion; a champion that fails
    fails the request."""
    arms: dict[int, tuple[Served, list[int]]] = {}
    for i, entity in enumerate(entity_ids):
        arm = routes.arm(entity)
        assert arm is not None and routes.champion is not None
        if routes.spec_of(arm).version not in online:
            arm = routes.champion  # its pipeline's fold is not ready: the champion answers
        arms.setdefault(id(arm), (arm, []))[1].append(i)
    out: list[Prediction | None] = [None] * len(rows)
    for arm, index in arms.values():

        def args(served: Served, index: list[int] = index) -> tuple[Any, ...]:
            spec = routes.spec_of(served)  # its own pipeline's inputs
            values = online[spec.version]
            return (
                spec,
                [rows[i] for i in index],
                [entity_ids[i] for i in index],
                [values[i] for i in index],
            )

        try:
            predicted = predict(
                arm.predictor, *args(arm), model_version=arm.model_version, role=arm.role.value
            )
        except Exception as exc:
            champion = routes.champion
            if arm.role is not Role.CANARY or champion is None:
                raise
            log.warning(
                "serving.canary_failed",
                task=routes.task,
                version=arm.model_version,
                rows=len(index),
                error=repr(exc),
            )
            failed.append(arm)
            predicted = predict(
                champion.predictor,
                *args(champion),
                model_version=champion.model_version,
                role=champion.role.value,
            )
        for i, p in zip(index, predicted, strict=True):
            out[i] = p
    return [p for p in out if p is not None]


def _arm(served: Served) -> tuple[str, int]:
    return served.role.value, served.model_version


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _learned_through(routes: Routes) -> int | None:
    """The data stream version every model that may have answered had learned through: the
    champion's, the least of champion's and canary's while a canary runs (None: a model that
    does not learn online)."""
    arms = (routes.champion,) if routes.canary is None else (routes.champion, routes.canary)
    versions = [getattr(a.predictor, "learned_through", None) for a in arms if a is not None]
    known = [v for v in versions if v is not None]
    return min(known) if known and len(known) == len(versions) else None


def _learned(routes: Routes) -> dict[int, int | None]:
    """How far each model in a role had learned (by version), for the records."""
    return {m.model_version: getattr(m.predictor, "learned_through", None) for m in routes.models()}


def _out(p: Prediction, classes: list[str] | None) -> dict[str, Any]:
    """A prediction as `PredictionOut` documents it (`classes`: a multiclass task's, as keys)."""
    return {
        "prediction_id": str(p.prediction_id),
        "label": p.label,
        "probability": p.probability,
        "value": p.value,
        "probabilities": None
        if p.probabilities is None or classes is None
        else dict(zip(classes, p.probabilities, strict=True)),
        "interval": p.interval,
        "model_version": p.model_version,
        "role": p.role,
        "online_features": p.online,
    }


@router.get("/model", response_model=ModelOut)
async def model_route(task: str, request: Request) -> ModelOut:
    """The task's current champion."""
    state = serving_state(request)
    champion = _routes(state, task).champion
    if champion is None:
        raise HTTPException(404, f"task {task!r} has no promoted model yet")
    return ModelOut(
        task=task,
        model_version=champion.model_version,
        artifact_sha256=champion.artifact_sha256,
    )


@router.get("/routing", response_model=RoutingOut)
async def routing_route(task: str, request: Request) -> RoutingOut:
    """Who answers, as this replica applies it: champion, canary, shadows, flags."""
    routes = _routes(serving_state(request), task)
    return RoutingOut.of(routes)


@router.get("/online", tags=["serving"])
async def online_route(task: str, request: Request) -> dict[str, Any]:
    """How far this replica's online features have followed the task's data stream."""
    state = serving_state(request)
    spec = _routes(state, task).spec
    status = state.online.status().get(task, {})
    return {"task": task, "online_features": bool(spec.online_features), **status}


# -- OpenFeature remote evaluation (OFREP): client code reads the task's flags with the OpenFeature
# SDK and its OFREP provider, base URL http://serving/v1/tasks/{task}/.


class _OfrepRoute(APIRoute):
    """OFREP's own shape for a request body that does not validate (`OfrepError`, 400), so that
    the OpenFeature OFREP provider raises its typed errors (an invalid context, not a general
    failure); a body in another content type, or none, stays a 415."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                refused = refusal(request, exc)
                if refused.status_code not in (400, 422):
                    return refused
                details = "; ".join(
                    f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}"
                    for e in exc.errors()
                )
                error = OfrepError(
                    key=request.path_params.get("key"),
                    errorCode="PARSE_ERROR" if refused.status_code == 400 else "INVALID_CONTEXT",
                    errorDetails=details,
                )
                return JSONResponse(error.model_dump(exclude_none=True), status_code=400)
            except StarletteHTTPException as exc:  # FastAPI's 400 for a body it cannot decode
                if exc.status_code != 400:
                    raise
                error = OfrepError(
                    key=request.path_params.get("key"),
                    errorCode="PARSE_ERROR",
                    errorDetails=str(exc.detail),
                )
                return JSONResponse(error.model_dump(exclude_none=True), status_code=400)

        return route


ofrep = APIRouter(
    prefix="/v1/tasks/{task}/ofrep/v1",
    tags=["flags (OFREP)"],
    route_class=_OfrepRoute,
    responses={
        **error_responses(413, 415),
        400: {"model": OfrepError, "description": "not JSON, or a context OFREP cannot use"},
        404: {"model": FlagNotFound, "description": "no such task, or (OFREP's shape) flag"},
    },
)


@ofrep.post("/evaluate/flags/{key}", response_model=FlagEvaluation)
async def evaluate_flag(task: str, key: str, body: OfrepRequest, request: Request) -> Any:
    """One flag's value for the context's `targetingKey` (the entity): variants by murmur3 of
    flag key and entity, as flagd's fractional rollout."""
    routes = _routes(serving_state(request), task)
    flag = routes.flags.get(key)
    if flag is None:
        return JSONResponse(
            {"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": f"no flag {key!r}"},
            status_code=404,
        )
    result = evaluate(key, flag, body.targeting_key())
    return FlagEvaluation(
        key=key, value=result.value, reason=result.reason, variant=result.variant, metadata={}
    )


@ofrep.post("/evaluate/flags", response_model=FlagsEvaluation)
async def evaluate_flags(task: str, body: OfrepRequest, request: Request) -> FlagsEvaluation:
    """Every flag of the task for the context's entity (OFREP bulk evaluation)."""
    routes = _routes(serving_state(request), task)
    entity = body.targeting_key()
    return FlagsEvaluation(
        flags=[
            FlagEvaluation(key=key, value=r.value, reason=r.reason, variant=r.variant, metadata={})
            for key, flag in sorted(routes.flags.items())
            for r in [evaluate(key, flag, entity)]
        ]
    )
