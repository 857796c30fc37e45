"""The relay (transactional outbox): tails the event store by position and publishes to Kafka.

Each service runs a relay for the events it produced (cursor `relay:<service>`), so a service that
is down delays only its own events, and the store stays the single source of truth. An append
through the service's own store wakes its relay at once (`watch`); it also looks every `interval`
seconds, for events another process appended under the same producer (a second replica). The cursor
moves only after the broker acknowledged the whole batch: after a crash the relay resumes from the
cursor and may publish a batch again; consumers drop the duplicates by event_id.

A broker that lost its data (restarted empty) is noticed by its epoch (`shared.broker_epoch`),
checked every `check_every` seconds and after any failed publish: the relay then publishes its
events again from the start of the store, by itself (`relay.broker_lost` in the log).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from shared.broker_epoch import BrokerEpoch
from shared.bus import Publisher, to_records
from shared.store.port import EventStore

if TYPE_CHECKING:
    from shared.events.envelope import EnvelopeJson
    from shared.settings import CommonSettings

log = structlog.get_logger(__name__)


class Relay:
    """Publishes one producer's stored events, in position order, at least once."""

    def __init__(
        self,
        store: EventStore,
        publisher: Publisher,
        *,
        producer: str | None,
        batch_size: int = 1000,
        interval: float = 0.5,
        epoch: BrokerEpoch | None = None,
        check_every: float = 5.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._producer = producer
        self._batch_size = batch_size
        self._interval = interval
        self._epoch = epoch
        self._check_every = check_every
        self._checked_at = float("-inf")
        watch = getattr(store, "watch", None)
        self._appended: asyncio.Event | None = watch() if watch is not None else None
        self.cursor_name = f"relay:{producer or 'all'}"
        self.published = 0
        self.republished_from_start = 0  # times a lost broker was refilled
        # The next page, read while the last full one went out: (the position it follows, the
        # read). Used only if the cursor is still there when it is wanted.
        self._ahead: tuple[int, asyncio.Future[list[EnvelopeJson]]] | None = None

    @classmethod
    def for_settings(
        cls, store: EventStore, publisher: Publisher, producer: str | None, settings: CommonSettings
    ) -> Relay:
        """A service's relay as its settings configure it (CommonSettings), watching the
        broker's epoch."""
        return cls(
            store,
            publisher,
            producer=producer,
            interval=settings.relay_interval,
            epoch=BrokerEpoch(settings.kafka_bootstrap_servers),
        )

    async def check_broker(self) -> bool:
        """Compare the broker's epoch with the one this relay last published to; if it changed,
        start publishing again from the beginning of the store. True when it did."""
        if self._epoch is None:
            return False
        self._checked_at = time.monotonic()
        epoch = await self._epoch.current()
        name = f"{self.cursor_name}:broker-epoch"
        known = await self._store.load_cursor(name)
        if known == epoch:
            return False
        lost = known != 0  # 0: this relay never published to any broker before
        if lost:
            cursor = await self._store.load_cursor(self.cursor_name)
            await self._store.save_cursor(self.cursor_name, 0, expected=cursor)
            self.republished_from_start += 1
            log.warning(
                "relay.broker_lost",
                cursor=self.cursor_name,
                was_at=cursor,
                detail="the broker's epoch changed: publishing every event again from the start",
            )
        await self._store.save_cursor(name, epoch)
        return lost

    async def publish_once(self) -> int:
        """Publish the next batch after the cursor; return how many events it held. After a
        full batch, the page after it is read while this one goes out (a catching-up relay,
        `continuo replay`, waits for the store or the broker, not for both in turn)."""
        cursor = await self._store.load_cursor(self.cursor_name)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == cursor:
            batch = await ahead[1]
        else:
            if ahead is not None:  # the cursor moved meanwhile (a reset, a failed publish)
                _discard(ahead[1])
            batch = await self._read(cursor)
        if not batch:
            return 0
        last = batch[-1].position
        if len(batch) == self._batch_size:
            self._ahead = (last, asyncio.ensure_future(self._read(last)))
        await self._publisher.publish(to_records(batch))
        if not await self._store.save_cursor(self.cursor_name, last, expected=cursor):
            log.warning("relay.cursor_moved", cursor=self.cursor_name, detail="reset meanwhile")
        self.published += len(batch)
        return len(batch)

    async def _read(self, after: int) -> list[EnvelopeJson]:
        # Each event's JSON is made from its stored row (the payload as stored, not parsed).
        return await self._store.read_all_json(
            after=after, limit=self._batch_size, producer=self._producer
        )

    async def close(self) -> None:
        if self._ahead is not None:
            _discard(self._ahead[1])
            self._ahead = None
        if self._epoch is not None:
            await self._epoch.close()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until `stop` is set; broker errors are logged and retried, never skipped."""
        stop = stop or asyncio.Event()
        backoff = self._interval
        failed = False
        while not stop.is_set():
            try:
                if time.monotonic() - self._checked_at >= self._check_every:
                    await self.check_broker()
                if self._appended is not None:
                    self._appended.clear()  # before reading: an append from now on wakes it
                count = await self.publish_once()
                backoff, failed = self._interval, False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the batch stays unpublished; retry from the cursor
                log.warning("relay.publish_failed", cursor=self.cursor_name, error=str(exc))
                self._checked_at = float("-inf")  # the broker may have restarted: look again
                count, failed = 0, True
                backoff = min(backoff * 2, 5.0)
            if count < self._batch_size:
                await self._idle(stop, backoff, woken_by_appends=not failed)

    async def _idle(self, stop: asyncio.Event, timeout: float, *, woken_by_appends: bool) -> None:
        """Until `stop`, `timeout` seconds, or (unless backing off after a failure) an append
        through this process's store."""
        waits = [asyncio.ensure_future(stop.wait())]
        if self._appended is not None and woken_by_appends:
            waits.append(asyncio.ensure_future(self._appended.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()


def _discard(read: asyncio.Future[list[EnvelopeJson]]) -> None:
    """Drop a read ahead: cancelled if it is still going, its failure (if any) retrieved."""
    if not read.done():
        read.cancel()
    elif not read.cancelled():
        read.exception()


async def run_relay(producer: str | None, stop: asyncio.Event | None = None) -> None:
    """Run a relay process against the configured store and broker until stopped."""
    from shared.bus import KafkaPublisher, ensure_topics
    from shared.settings import CommonSettings
    from shared.store.sql import open_event_store

    settings = CommonSettings()
    store = open_event_store(settings.store_url)
    publisher = KafkaPublisher(
        settings.kafka_bootstrap_servers, idempotence=settings.kafka_idempotence
    )
    await ensure_topics(settings.kafka_bootstrap_servers)
    await publisher.start()
    relay = Relay.for_settings(store, publisher, producer, settings)
    try:
        await relay.run(stop)
    finally:
        await relay.close()
        await publisher.stop()
        await store.close()


if __name__ == "__main__":
    import argparse

    from shared.logging import configure_logging

    parser = argparse.ArgumentParser(description="Publish stored events to Kafka (store -> Kafka).")
    parser.add_argument("--producer", help="only this service's events (default: all)")
    args = parser.parse_args()
    configure_logging("relay")
    asyncio.run(run_relay(args.producer))
