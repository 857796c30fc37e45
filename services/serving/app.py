"""The serving service: predictions from each task's champion, swapped on deployment events.

Start-up order matters. The Kafka subscription (no group: every replica sees every event, from
the latest offset) is opened and its offsets pinned *before* the current state is read from the
event store, so an event is either in what the store returned or arrives on Kafka afterwards;
events in both are no-ops the second time (see `ModelTable`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from services.serving.models import (
    Champion,
    InvalidRecords,
    ModelTable,
    NoChampion,
    Prediction,
    UnknownTask,
    newest_deployment,
    predict,
    validate_records,
)
from services.serving.settings import ServingSettings
from shared.bus import EnvelopeConsumer, OutgoingRecord
from shared.events.envelope import Envelope, Producer, new_event, utcnow
from shared.events.types import (
    TOPIC_DEPLOYMENTS,
    TOPIC_TASKS,
    PredictionServed,
    deployment_stream,
    prediction_stream,
    task_stream,
)
from shared.http import health_router, install_error_handlers
from shared.model_codec import decode
from shared.registry import registered_tasks
from shared.runtime import Runtime
from shared.store.port import EventStore

log = structlog.get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# Recording served predictions


class PredictionRecorder:
    """Records served predictions as `PredictionServed` events, off the request path.

    A request only puts its predictions in a buffer; a background task appends them to the store
    (one append per task stream) every `interval` seconds, or as soon as `batch` are waiting.
    The relay then publishes them like any other event.

    Window of loss: a crash or kill loses the predictions still in the buffer, in normal operation
    at most about `interval` seconds' or `batch` predictions' worth. While the store is unreachable
    the buffer grows and appends are retried (event ids are the prediction ids, so a retry that
    had in fact succeeded is a no-op); past `backlog` waiting predictions the oldest are dropped,
    counted in `dropped` and logged. A clean shutdown flushes what is left. The callers already
    have their answers, so a loss is a gap in the audit trail, never a wrong prediction.
    """

    def __init__(
        self,
        store: EventStore,
        producer: Producer,
        *,
        interval: float = 0.2,
        batch: int = 500,
        backlog: int = 100_000,
    ) -> None:
        self._store = store
        self._producer = producer
        self._interval = interval
        self._batch = batch
        self._backlog = backlog
        self._buffer: list[Envelope | tuple[str, int, Prediction, datetime]] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.recorded = 0
        self.dropped = 0

    def record(self, task: str, model_version: int, predictions: Sequence[Prediction]) -> None:
        """Queue predictions for recording; never waits."""
        now = utcnow()
        self._buffer.extend((task, model_version, p, now) for p in predictions)
        if len(self._buffer) > self._backlog:
            excess = len(self._buffer) - self._backlog
            del self._buffer[:excess]
            self.dropped += excess
            log.error("serving.predictions_dropped", count=excess, total=self.dropped)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="serving:recorder")

    async def close(self) -> None:
        """Stop the background task and flush what is left (once; failures are logged)."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
        if self._buffer:
            log.error("serving.predictions_unrecorded", count=len(self._buffer))

    async def _run(self) -> None:
        backoff = self._interval
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            ok = await self.flush()
            backoff = self._interval if ok else min(backoff * 2, 5.0)

    async def flush(self) -> bool:
        """Append everything waiting; what fails goes back to the buffer. True if all was stored."""
        if not self._buffer:
            return True
        taken, self._buffer = self._buffer, []
        streams: dict[str, list[Envelope]] = defaultdict(list)
        for item in taken:
            envelope = item if isinstance(item, Envelope) else self._envelope(*item)
            streams[envelope.stream_id].append(envelope)
        failed: list[Envelope] = []
        for events in streams.values():
            for start in range(0, len(events), 1000):
                chunk = events[start : start + 1000]
                try:
                    await self._store.append(chunk)
                    self.recorded += len(chunk)
                except Exception as exc:  # noqa: BLE001 - kept and retried, never dropped here
                    log.warning("serving.record_failed", count=len(chunk), error=str(exc))
                    failed.extend(chunk)
        if failed:
            self._buffer[:0] = failed
        return not failed

    def _envelope(
        self, task: str, model_version: int, p: Prediction, occurred_at: datetime
    ) -> Envelope:
        payload = PredictionServed(
            task=task,
            prediction_id=p.prediction_id,
            model_version=model_version,
            entity_id=p.entity_id,
            features=p.features,
            probability=p.probability,
            label=p.label,
        )
        return new_event(
            payload,
            stream_id=prediction_stream(task),
            producer=self._producer,
            event_id=p.prediction_id,
            occurred_at=occurred_at,
        )


# ---------------------------------------------------------------------------------------------
# Following deployments


class _NoDeadLetters:
    """Serving replicas do not dead-letter: every replica sees every record, and the grouped
    consumers of the same topics already dead-letter a bad one once. The bus logs it."""

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        return None


class Deployments:
    """Keeps the model table in step with the deployment stream, from the store and from Kafka.

    Applying an event can fail for a while (the artifact volume is away, a file is being
    copied): the newest failed event of each task is kept and retried in the background, the
    old champion keeps serving meanwhile, and /readyz says the replica is behind until it loads.
    """

    def __init__(self, table: ModelTable) -> None:
        self.table = table
        self.failed: dict[str, Envelope] = {}

    async def apply(self, envelope: Envelope) -> bool:
        """Apply one event off the event loop (decoding a model takes a while)."""
        task = str(envelope.payload.get("task"))
        try:
            outcome = await asyncio.to_thread(self.table.apply, envelope)
        except Exception:  # noqa: BLE001 - the old champion keeps serving; retried below
            log.exception("serving.apply_failed", event_id=str(envelope.event_id), task=task)
            kept = self.failed.get(task)
            if kept is None or (kept.stream_version or 0) <= (envelope.stream_version or 0):
                self.failed[task] = envelope
            return False
        kept = self.failed.get(task)
        if kept is not None and (kept.stream_version or 0) <= (envelope.stream_version or 0):
            del self.failed[task]  # applied, or superseded by a newer decision
        if outcome != "ignored":
            log.info(
                "serving.event_applied",
                event_id=str(envelope.event_id),
                type=envelope.type,
                task=task,
                stream_version=envelope.stream_version,
                outcome=str(outcome),
            )
        return True

    def behind(self) -> str | None:
        if not self.failed:
            return None
        tasks = ", ".join(sorted(self.failed))
        return f"could not load the newest deployment of {tasks}; retrying"

    async def load_current(self, store: EventStore) -> None:
        """Bring the table up to the store: each task's newest spec and deployment decision."""
        for task in await registered_tasks(store):
            specs = await store.read_stream(task_stream(task))
            if specs:
                await self.apply(specs[-1])
            deciding = newest_deployment(await store.read_stream(deployment_stream(task)))
            if deciding is not None:
                await self.apply(deciding)

    async def follow(self, consumer: EnvelopeConsumer) -> None:
        """Apply deployment and task events from Kafka as they arrive."""
        try:
            async for batch in consumer.batches(max_records=100):
                for envelope in batch:
                    await self.apply(envelope)
        except asyncio.CancelledError:
            raise
        except Exception:
            # /readyz now reports the consumer down; the models in memory keep serving.
            log.exception("serving.consumer_failed")
            raise

    async def retry_failed(self, interval: float = 2.0) -> None:
        """Retry the events that failed to apply, until they load or are superseded."""
        while True:
            await asyncio.sleep(interval)
            for envelope in list(self.failed.values()):
                await self.apply(envelope)


# ---------------------------------------------------------------------------------------------
# HTTP


class PredictRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any]
    entity_id: str | None = None


class PredictRequest(BaseModel):
    """One record (`features`, optional `entity_id`) or a batch (`records`)."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] | None = None
    entity_id: str | None = None
    records: list[PredictRecord] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_or_many(self) -> PredictRequest:
        if (self.features is None) == (self.records is None):
            raise ValueError("give either `features` (one record) or `records` (a batch)")
        if self.records is not None and self.entity_id is not None:
            raise ValueError("`entity_id` goes inside each of `records`")
        return self

    def as_records(self) -> list[PredictRecord]:
        if self.records is not None:
            return self.records
        assert self.features is not None
        return [PredictRecord(features=self.features, entity_id=self.entity_id)]


class PredictionOut(BaseModel):
    prediction_id: str
    label: Any
    probability: float


class PredictResponse(BaseModel):
    task: str
    model_version: int
    predictions: list[PredictionOut]


class ModelOut(BaseModel):
    task: str
    model_version: int
    artifact_sha256: str
    promoted_at: datetime


@dataclass
class ServingState:
    """What the routes need, built in the lifespan."""

    settings: ServingSettings
    runtime: Runtime
    table: ModelTable
    recorder: PredictionRecorder
    consumer: EnvelopeConsumer
    deployments: Deployments
    follower: asyncio.Task[None] | None = None
    loaded: bool = False

    async def readiness(self) -> str | None:
        if not self.loaded:
            return "loading current models"
        if self.follower is None or self.follower.done():
            return "deployment consumer not running"
        if not self.recorder.alive:
            return "prediction recorder not running"
        return self.deployments.behind()


def _state(request: Request) -> ServingState:
    state: ServingState | None = getattr(request.app.state, "serving", None)
    if state is None:
        raise HTTPException(503, "serving is starting")
    return state


def _champion(state: ServingState, task: str) -> Champion:
    try:
        return state.table.serving(task)
    except UnknownTask as exc:
        raise HTTPException(404, str(exc)) from None
    except NoChampion as exc:
        raise HTTPException(503, str(exc)) from None


router = APIRouter(prefix="/v1/tasks/{task}", tags=["serving"])


@router.post("/predict", response_model=PredictResponse)
async def predict_route(task: str, body: PredictRequest, request: Request) -> PredictResponse:
    """Predict one record or a batch with the task's champion; every prediction is recorded."""
    state = _state(request)
    champion = _champion(state, task)  # taken once: a swap now does not affect this request
    records = body.as_records()
    if len(records) > state.settings.max_records:
        raise HTTPException(422, f"at most {state.settings.max_records} records per request")
    try:
        rows = validate_records(champion.spec, [r.features for r in records])
    except InvalidRecords as exc:
        detail = [{"index": i, "msg": reason} for i, reason in exc.errors.items()]
        raise HTTPException(422, detail) from None
    entity_ids = [r.entity_id for r in records]
    if len(rows) > state.settings.inline_records:
        predictions = await run_in_threadpool(
            predict, champion.predictor, champion.spec, rows, entity_ids
        )
    else:
        predictions = predict(champion.predictor, champion.spec, rows, entity_ids)
    state.recorder.record(task, champion.model_version, predictions)
    return PredictResponse(
        task=task,
        model_version=champion.model_version,
        predictions=[
            PredictionOut(
                prediction_id=str(p.prediction_id), label=p.label, probability=p.probability
            )
            for p in predictions
        ],
    )


@router.get("/model", response_model=ModelOut)
async def model_route(task: str, request: Request) -> ModelOut:
    """The task's current champion."""
    state = _state(request)
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


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The serving app; infrastructure is connected in its lifespan, not here."""
    settings = settings or ServingSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            state = await _start(settings, stack)
            app.state.serving = state
            try:
                yield
            finally:
                app.state.serving = None

    app = FastAPI(title="Continuo serving", lifespan=lifespan)
    app.state.serving = None
    install_error_handlers(app)

    async def ready() -> str | None:
        state: ServingState | None = app.state.serving
        return "starting" if state is None else await state.readiness()

    app.include_router(
        health_router(lambda: app.state.serving and app.state.serving.runtime, ready)
    )
    app.include_router(router)
    return app


async def _start(settings: ServingSettings, stack: contextlib.AsyncExitStack) -> ServingState:
    """Connect, subscribe, load the current state, then follow: in that order (see module doc)."""
    runtime = Runtime.build("serving", settings)
    stack.push_async_callback(runtime.stop)
    await runtime.start()

    artifacts = runtime.artifacts
    table = ModelTable(load=lambda digest: decode(artifacts.get(digest)))
    consumer = EnvelopeConsumer(
        settings.kafka_bootstrap_servers,
        [TOPIC_DEPLOYMENTS, TOPIC_TASKS],
        group_id=None,
        dead_letters=_NoDeadLetters(),
        from_beginning=False,
    )
    await consumer.start()
    stack.push_async_callback(consumer.stop)
    await consumer.pin_positions()

    recorder = PredictionRecorder(
        runtime.store,
        runtime.producer,
        interval=settings.record_interval,
        batch=settings.record_batch,
        backlog=settings.record_backlog,
    )
    recorder.start()
    stack.push_async_callback(recorder.close)  # runs before runtime.stop closes the store

    deployments = Deployments(table)
    state = ServingState(settings, runtime, table, recorder, consumer, deployments)
    await deployments.load_current(runtime.store)
    state.loaded = True
    state.follower = asyncio.create_task(deployments.follow(consumer), name="serving:deployments")
    stack.push_async_callback(_cancel, state.follower)
    retrying = asyncio.create_task(deployments.retry_failed(), name="serving:retry")
    stack.push_async_callback(_cancel, retrying)
    log.info("serving.started", tasks=len(table.tasks()), port=settings.port)
    return state


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
