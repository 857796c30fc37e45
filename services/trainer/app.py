"""The trainer's Faust worker: an agent feeds the task data topic to `Trainer` in batches.

The agent only decodes and delegates. Undecodable records go to the dead-letter topic with their
key, source topic, partition, offset and reason (logged; counted in `/v1/status` and `/metrics`).
Faust's group membership gives one owner per partition (data is keyed by task, so one worker owns
a task).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import structlog

from services.trainer.openapi import Health, Ready, Status, document
from services.trainer.service import Trainer
from services.trainer.settings import TrainerSettings
from shared.bus import DecodeError, dead_letter_record, decode
from shared.events.types import TOPIC_DATA
from shared.metrics import dead_letters, exposition, relay_metrics
from shared.runtime import Runtime

log = structlog.get_logger(__name__)


# How often the trainer looks for tasks registered since it started (seconds).
NEW_TASKS_EVERY = 1.0


def create_app(settings: TrainerSettings | None = None) -> faust.App:
    """Build the Faust app and its agent; the runtime starts with the worker."""
    settings = settings or TrainerSettings()
    app = faust.App(
        settings.app_id,
        broker=f"continuo://{settings.kafka_bootstrap_servers}",
        value_serializer="raw",
        key_serializer="raw",
        web_host=settings.host,
        web_port=settings.port,
        web_bind=settings.host,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_partitions=3,
        topic_allow_declare=True,
        store="memory://",
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        datadir=str(settings.datadir),
    )
    # Read by services.trainer.faust_transport when it creates the consumer.
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    app.group_instance_id = settings.group_instance_id  # type: ignore[attr-defined]
    state: dict[str, Any] = {}
    data_topic = app.topic(TOPIC_DATA, value_serializer="raw", key_serializer="raw")
    dead_lettered = dead_letters()

    @app.task
    async def start_runtime() -> None:
        runtime = Runtime.build("trainer", settings)
        try:
            await runtime.start()
        except Exception as exc:
            # Without its store and relay the trainer can do nothing: stop, don't spin.
            log.exception("trainer.start_failed")
            state["failed"] = exc
            await app.crash(exc)
            return
        state["runtime"] = runtime
        trainer = Trainer(
            runtime,
            pending_limit=settings.pending_limit,
            snapshot_every=settings.snapshot_every,
        )
        state["trainer"] = trainer
        await trainer.start_tasks()

    @app.timer(interval=NEW_TASKS_EVERY)
    async def start_new_tasks() -> None:
        """A task registered after start-up (ingest registers its specs as it starts, so the
        trainer may look first) gets its version 1 within seconds, not only at its first data
        event: the first request it serves is answered (in the demo's fresh stack the first
        20 rows went unanswered in 2 of 2 runs on a slow machine)."""
        if trainer := state.get("trainer"):
            await trainer.start_tasks(new_only=True)

    @app.on_before_shutdown.connect
    async def stop_runtime(*_: Any, **__: Any) -> None:
        if trainer := state.get("trainer"):
            await trainer.snapshot_all()  # a planned restart replays nothing
        if runtime := state.get("runtime"):
            await runtime.stop()

    async def trainer() -> Trainer:
        while "trainer" not in state:
            if "failed" in state:
                raise RuntimeError("the trainer's runtime did not start") from state["failed"]
            await asyncio.sleep(0.05)
        return state["trainer"]

    @app.agent(data_topic)
    async def learn(stream: faust.StreamT) -> None:
        batches = stream.take_events(settings.batch_size, within=settings.batch_within)  # type: ignore[attr-defined]
        async for events in batches:
            envelopes, rejected = [], []
            t = await trainer()
            for event in events:
                try:
                    envelopes += decode(event.value)
                except DecodeError as exc:
                    rejected.append(dead_letter_record(event.message, str(exc)))
                # A record holds many envelopes: apply a batch's worth as soon as it is
                # decoded, so what the first of them made is stored (and served) before the
                # rest is even decoded, and a worker catching up never holds more at once.
                while len(envelopes) >= settings.batch_size:
                    await t.handle(envelopes[: settings.batch_size])
                    envelopes = envelopes[settings.batch_size :]
            if rejected:
                await t.runtime.publisher.publish(rejected)
                state["dead_letters"] = state.get("dead_letters", 0) + len(rejected)
                dead_lettered.inc(len(rejected))
            if envelopes:
                await t.handle(envelopes)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(Health(status="ok").model_dump())

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        runtime = state.get("runtime")
        ready = runtime is not None and runtime.relay_alive
        return web.json(Ready(ready=ready).model_dump(), status=200 if ready else 503)

    @app.page("/v1/status")
    async def status(web: Any, request: Any) -> Any:
        t = state.get("trainer")
        answer = Status(
            tasks=t.status() if t else {},
            models_emitted=t.models_emitted if t else 0,
            dead_letters=state.get("dead_letters", 0),
            data_partitions=_data_partitions(app),
        )
        return web.json(answer.model_dump(mode="json"))

    refresh_relay = relay_metrics(lambda: state.get("runtime"))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body, content_type = await exposition(request.headers.get("Accept"), [refresh_relay])
        return web.bytes(body, headers={"Content-Type": content_type})

    @app.page("/openapi.json")
    async def openapi(web: Any, request: Any) -> Any:
        return web.json(document())

    return app


def _data_partitions(app: Any) -> list[int]:
    """The data topic's partitions this worker is assigned now (its share of the tasks)."""
    try:
        assigned = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - no consumer yet (starting) or none any more (stopping)
        return []
    return sorted(tp.partition for tp in assigned if tp.topic == TOPIC_DATA)
