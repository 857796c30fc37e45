"""The serving service: predictions from each task's champion, with online features, swapped on
deployment events.

Modules: `models` (validation and one model's answers, pure), `routing` (who answers: champion,
canary, shadows, flags), `online` (each task's online-feature fold, kept live from the data
topic), `recorder` (the audit trail and log-and-wait rows), `shadows` (scoring off the response
path), `health` (each arm's requests, failures and latencies: the canary's guardrails),
`instruments` (Prometheus metrics, `GET /metrics`), `deployments` (following the deployment
stream), `schemas` and `routes` (HTTP; `direct`: the predict route's lane past FastAPI's
request machinery), `state` (what the routes share). This module wires them in
the lifespan.

Start-up order matters. The Kafka subscriptions (no group: every replica sees every event, from
the latest offset) are opened and their offsets pinned *before* the current state is read from the
event store, so an event is either in what the store returned or arrives on Kafka afterwards;
events in both are no-ops the second time (deployments by stream version, data events by their
version in the task's data stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from fastapi import FastAPI

from services.serving.deployments import Deployments, NoDeadLetters, consume
from services.serving.direct import ServingApp
from services.serving.health import ArmsHealth
from services.serving.instruments import recorder_metrics
from services.serving.online import OnlineFeatures
from services.serving.recorder import ObservationLog, PredictionRecorder
from services.serving.routes import ofrep, router
from services.serving.routing import RoutingTable, UnknownTask
from services.serving.settings import ServingSettings
from services.serving.shadows import ShadowScorer
from services.serving.state import ServingState
from shared.bus import EnvelopeConsumer
from shared.events.types import TOPIC_DATA, TOPIC_DEPLOYMENTS, TOPIC_TASKS
from shared.fanout import Fanout
from shared.http import health_router, install_error_handlers
from shared.metrics import metrics_router, relay_metrics
from shared.online_models import LearnedRow, LiveModel
from shared.runtime import Runtime
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)


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

    app = ServingApp(
        title="Continuo serving", lifespan=lifespan, max_body_size=settings.max_body_bytes
    )
    app.state.serving = None
    install_error_handlers(app)

    async def ready() -> str | None:
        state: ServingState | None = app.state.serving
        return "starting" if state is None else await state.readiness()

    app.include_router(
        health_router(lambda: app.state.serving and app.state.serving.runtime, ready)
    )
    app.include_router(
        metrics_router(
            relay_metrics(lambda: app.state.serving and app.state.serving.runtime),
            recorder_metrics(lambda: app.state.serving and app.state.serving.recorder),
        )
    )
    app.include_router(router)
    app.include_router(ofrep)
    return app


def _consumer(settings: ServingSettings, *topics: str) -> EnvelopeConsumer:
    return EnvelopeConsumer(
        settings.kafka_bootstrap_servers,
        list(topics),
        group_id=None,
        dead_letters=NoDeadLetters(),
        from_beginning=False,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )


async def _start(settings: ServingSettings, stack: contextlib.AsyncExitStack) -> ServingState:
    """Connect, subscribe, load the current state, then follow: in that order (see module doc)."""
    runtime = Runtime.build("serving", settings)
    stack.push_async_callback(runtime.stop)
    await runtime.start()

    artifacts = runtime.artifacts
    online = OnlineFeatures(runtime.store)
    table = RoutingTable(
        load=lambda digest: LiveModel(artifacts.get(digest)),
        warm=lambda spec, model: _warm(online, spec, model),
    )
    online.on_learned(lambda spec, rows: _learn(table, spec, rows))
    decisions = _consumer(settings, TOPIC_DEPLOYMENTS, TOPIC_TASKS)
    data = _consumer(settings, TOPIC_DATA)
    for consumer in (decisions, data):
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        await consumer.pin_positions()

    recorder = PredictionRecorder(
        runtime.store,
        runtime.producer,
        interval=settings.record_interval,
        batch=settings.record_batch,
        high_water=settings.record_high_water,
        backlog=settings.record_backlog,
    )
    recorder.start()
    stack.push_async_callback(recorder.close)  # runs before runtime.stop closes the store

    shadows = ShadowScorer(recorder)
    shadows.start()
    stack.push_async_callback(shadows.close)  # before the recorder's close: its scores recorded
    health = ArmsHealth(
        runtime.store,
        runtime.producer,
        lambda task: _runs_canary(table, task),
        interval=settings.health_interval,
    )
    health.start()
    stack.push_async_callback(health.close)
    deployments = Deployments(table, runtime.store, online)
    state = ServingState(
        settings,
        runtime,
        table,
        recorder,
        ObservationLog(runtime.store),
        deployments,
        online,
        shadows,
        health,
    )
    await deployments.load_current()
    # Each task's folds for the specs its models take their inputs from; then the models catch
    # up on what they learned (loading them above learned nothing: no fold yet).
    for task in table.tasks():
        specs = table.routes(task).specs()
        online.retain(task, list(specs))
        for spec in specs.values():
            await online.prepare(spec)
    state.loaded = True
    # What start-up loaded (models, folds, specs) lives as long as the process: out of the
    # collector's way, so a full collection does not walk it while requests wait (gc.freeze).
    gc.collect()
    gc.freeze()
    state.followers = (
        asyncio.create_task(deployments.follow(decisions), name="serving:deployments"),
        asyncio.create_task(
            consume(data, online.apply, "serving.data_consumer_failed"), name="serving:online"
        ),
    )
    for follower in state.followers:
        stack.push_async_callback(_cancel, follower)
    if settings.redis_url:
        # The fast path for routing decisions; without Redis they come through Kafka alone.
        fanout = Fanout(settings.redis_url)
        stack.push_async_callback(fanout.close)
        fast = asyncio.create_task(
            fanout.follow(deployments.apply, deployments.catch_up, table.tasks),
            name="serving:fanout",
        )
        stack.push_async_callback(_cancel, fast)
    retrying = asyncio.create_task(deployments.retry_failed(), name="serving:retry")
    stack.push_async_callback(_cancel, retrying)
    log.info("serving.started", tasks=len(table.tasks()), port=settings.port)
    return state


def _runs_canary(table: RoutingTable, task: str) -> bool:
    try:
        return table.routes(task).canary is not None
    except UnknownTask:
        return False


def _warm(online: OnlineFeatures, spec: TaskSpec, model: Any) -> None:
    """Bring a model about to serve up to the rows learned since its version (a model of
    another pipeline than the fold's catches up when the fold is built for it)."""
    if isinstance(model, LiveModel):
        learned = model.learn(online.recent(spec, model.learned_through))
        log.info("serving.model_caught_up", task=spec.name, rows=len(learned))


def _learn(table: RoutingTable, spec: TaskSpec, rows: Sequence[LearnedRow]) -> None:
    """Every model in a role that takes the fold's inputs learns each row the fold learned
    (online parts; trees as published): the champion, the canary and the shadows alike, each
    from its own pipeline's fold."""
    task = spec.name
    try:
        routes = table.routes(task)
    except UnknownTask:
        return
    for served in routes.models():
        if routes.spec_of(served).version != spec.version:
            continue  # rows of another pipeline's inputs (its own fold brings them)
        if isinstance(served.predictor, LiveModel):
            try:
                served.predictor.learn(rows)
            except Exception:  # noqa: BLE001 - one broken model must not stop the others learning
                log.exception(
                    "serving.model_learn_failed",
                    task=task,
                    version=served.model_version,
                    role=served.role.value,
                )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
