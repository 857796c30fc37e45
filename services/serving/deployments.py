"""Keeping serving's model table in step with the deployment stream, from the store and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from services.serving.models import ModelTable, newest_deployment
from shared.bus import EnvelopeConsumer, OutgoingRecord
from shared.events.envelope import Envelope
from shared.events.types import deployment_stream, task_stream
from shared.registry import registered_tasks
from shared.store.port import EventStore

log = structlog.get_logger(__name__)


class NoDeadLetters:
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
        """Apply one event: its model is loaded off the event loop (decoding takes a while),
        then brought up to date and swapped in on the loop, where it learns and answers."""
        task = str(envelope.payload.get("task"))
        try:
            digest = self.table.to_load(envelope)
            loaded = await asyncio.to_thread(self.table.load, digest) if digest else None
            outcome = self.table.apply(envelope, loaded)
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
        await consume(consumer, self._apply_batch, "serving.consumer_failed")

    async def _apply_batch(self, batch: Sequence[Envelope]) -> None:
        for envelope in batch:
            await self.apply(envelope)

    async def retry_failed(self, interval: float = 2.0) -> None:
        """Retry the events that failed to apply, until they load or are superseded."""
        while True:
            await asyncio.sleep(interval)
            for envelope in list(self.failed.values()):
                await self.apply(envelope)


async def consume(
    consumer: EnvelopeConsumer,
    handle: Callable[[Sequence[Envelope]], Awaitable[None]],
    failure: str,
) -> None:
    """Feed a consumer's batches to `handle` until cancelled; a failure is logged and raised
    (the replica's /readyz then reports the follower down; the models in memory keep serving)."""
    try:
        async for batch in consumer.batches(max_records=500):
            await handle(batch)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(failure)
        raise
