"""Keeping serving's model table in step with the deployment stream, from the store and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from services.serving.online import OnlineFeatures
from services.serving.routing import RoutingTable
from shared.bus import EnvelopeConsumer, OutgoingRecord
from shared.events.envelope import Envelope
from shared.events.types import deployment_stream, task_stream
from shared.registry import registered_tasks
from shared.store.port import EventStore
from shared.streams import in_order, read_after
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)


class NoDeadLetters:
    """Serving replicas do not dead-letter: every replica sees every record, and the grouped
    consumers of the same topics already dead-letter a bad one once. The bus logs it."""

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        return None


class Deployments:
    """Keeps the routing table in step with each task's deployment stream, in stream order,
    from the store and from Kafka (and Redis, where it is on): a delivered event that does not
    follow on from what was applied brings the rest from the store first.

    Applying an event can fail for a while (the artifact volume is away, a file is being
    copied): the newest failed event of each task is kept and retried in the background, the
    old routes keep serving meanwhile, and /readyz says the replica is behind until it loads.
    """

    def __init__(
        self, table: RoutingTable, store: EventStore, folds: OnlineFeatures | None = None
    ) -> None:
        self.table = table
        self.store = store
        # The online folds of the spec versions a task's models take their inputs from: one
        # a task has begun to use (a pipeline switch, an arm of another pipeline) is built in
        # the background rather than in the first request after it; others are dropped.
        self._folds = folds
        self._building: set[asyncio.Task[None]] = set()
        self._loading = False
        self.failed: dict[str, Envelope] = {}
        self._lock = asyncio.Lock()

    async def apply(self, envelope: Envelope) -> bool:
        """Apply one event, and any the task's stream holds before it that were not applied."""
        task = str(envelope.payload.get("task"))
        if envelope.stream_id != deployment_stream(task):
            return await self._apply_one(envelope)
        async with self._lock:
            ordered = await in_order(
                self.store, envelope.stream_id, self.table.stream_version(task), [envelope]
            )
            for event in ordered:
                if not await self._apply_one(event):
                    return False
        return True

    async def catch_up(self, heads: dict[str, int]) -> None:
        """Read from the store what a task's stream holds beyond what was applied, for each task
        whose newest decision (as the fast path last published it) is newer than ours."""
        for task, head in heads.items():
            if head > self.table.stream_version(task) and self.table.spec(task) is not None:
                async with self._lock:
                    missed = await read_after(
                        self.store, deployment_stream(task), self.table.stream_version(task)
                    )
                    for event in missed:
                        if not await self._apply_one(event):
                            break

    async def _apply_one(self, envelope: Envelope) -> bool:
        """Load the event's models off the event loop (decoding takes a while), then bring them
        up to date and swap them in on the loop, where they learn and answer."""
        task = str(envelope.payload.get("task"))
        try:
            loaded = {}
            for digest in self.table.to_load(envelope):
                loaded[digest] = await asyncio.to_thread(self.table.load, digest)
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
        if outcome == "applied" and not self._loading and self.table.spec(task):
            self.follow_folds(task)
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

    def follow_folds(self, task: str) -> None:
        """Keep the folds of the specs the task's routes use; build those missing."""
        folds = self._folds
        if folds is None:
            return
        specs = self.table.routes(task).specs()
        folds.retain(task, list(specs))
        for spec in specs.values():
            if folds.fold(spec) is None:
                running = asyncio.create_task(self._build(folds, spec), name=f"fold:{task}")
                self._building.add(running)
                running.add_done_callback(self._building.discard)

    @staticmethod
    async def _build(folds: OnlineFeatures, spec: TaskSpec) -> None:
        try:
            await folds.prepare(spec)
        except Exception:  # noqa: BLE001 - the first request that needs it builds it again
            log.exception("serving.fold_build_failed", task=spec.name)

    async def load_current(self) -> None:
        """Bring the table up to the store: every spec of each task and its deployment stream
        (the folds are built once after, for the specs the tasks answer with)."""
        self._loading = True
        try:
            await self._load_current()
        finally:
            self._loading = False

    async def _load_current(self) -> None:
        for task in await registered_tasks(self.store):
            for registered in await self.store.read_stream(task_stream(task)):
                await self.apply(registered)  # every version: models take their pipeline's
            events = await self.store.read_stream(deployment_stream(task))
            loaded = {}
            for digest in self.table.restore_needs(events):
                loaded[digest] = await asyncio.to_thread(self.table.load, digest)
            self.table.restore(task, events, loaded)

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
        async for batch in consumer.batches(max_envelopes=500):
            await handle(batch)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(failure)
        raise
