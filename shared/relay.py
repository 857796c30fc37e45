"""The relay (transactional outbox): tails the event store by position and publishes to Kafka.

Each service runs a relay for the events it produced (cursor `relay:<service>`), so a service that
is down delays only its own events, and the store stays the single source of truth. The cursor
moves only after the broker acknowledged the whole batch: after a crash the relay resumes from the
cursor and may publish a batch again; consumers drop the duplicates by event_id.
"""

from __future__ import annotations

import asyncio

import structlog

from shared.bus import Publisher, to_record
from shared.store.port import EventStore

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
        interval: float = 0.05,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._producer = producer
        self._batch_size = batch_size
        self._interval = interval
        self.cursor_name = f"relay:{producer or 'all'}"
        self.published = 0

    async def publish_once(self) -> int:
        """Publish the next batch after the cursor; return how many events it held."""
        cursor = await self._store.load_cursor(self.cursor_name)
        batch = await self._store.read_all(
            after=cursor, limit=self._batch_size, producer=self._producer
        )
        if not batch:
            return 0
        records = []
        for start in range(0, len(batch), 50):
            records += [to_record(e) for e in batch[start : start + 50]]
            await asyncio.sleep(0)  # serialising is CPU work: let the service's requests in
        await self._publisher.publish(records)
        last = batch[-1].position
        assert last is not None
        if not await self._store.save_cursor(self.cursor_name, last, expected=cursor):
            log.warning("relay.cursor_moved", cursor=self.cursor_name, detail="reset meanwhile")
        self.published += len(batch)
        return len(batch)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until `stop` is set; broker errors are logged and retried, never skipped."""
        stop = stop or asyncio.Event()
        backoff = self._interval
        while not stop.is_set():
            try:
                count = await self.publish_once()
                backoff = self._interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the batch stays unpublished; retry from the cursor
                log.warning("relay.publish_failed", cursor=self.cursor_name, error=str(exc))
                count = 0
                backoff = min(backoff * 2, 5.0)
            if count < self._batch_size:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                except TimeoutError:
                    pass


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
    try:
        await Relay(store, publisher, producer=producer, interval=settings.relay_interval).run(stop)
    finally:
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
