"""Has the broker lost what it held? A marker record that names the broker's life (its epoch).

A broker that restarts empty (the embedded one always does; a Kafka cluster that lost its disks)
comes back with no topics, or with topics behind the event store. Nothing in Kafka says so, and
high watermarks cannot be trusted for it (the embedded broker under-reports them). So the first
relay to find the marker topic empty writes a random number to it, and every relay reads the
first record of that topic back: the broker's epoch. A relay remembers, in the store, the epoch
it last published to; when the broker shows another, everything the relay had published may be
gone, and it publishes its events again from the start (`shared.relay`). Consumers already skip
what they applied (by event id, or by stream version).
"""

from __future__ import annotations

import random

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.bus import ensure_topics
from shared.events.types import TOPIC_EPOCH

log = structlog.get_logger(__name__)
_MARKER = TopicPartition(TOPIC_EPOCH, 0)


class BrokerEpoch:
    """Reads (and, on an empty broker, writes) the broker's epoch marker."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def current(self) -> int:
        """The broker's epoch: the first record of the marker topic, written first if it is
        empty (then the topics are created again as well: the broker lost them)."""
        found = await self._first()
        if found is None:
            await ensure_topics(self._bootstrap)
            producer = await self._the_producer()
            marker = random.getrandbits(62) + 1  # fits a store cursor (BIGINT)
            await producer.send_and_wait(TOPIC_EPOCH, str(marker).encode(), partition=0)
            found = await self._first()  # another relay's marker may have come first
            log.info("broker_epoch.marked", epoch=found)
        if found is None:
            raise RuntimeError("the broker's epoch marker was written but cannot be read")
        return found

    async def _first(self) -> int | None:
        consumer = await self._the_consumer()
        await consumer.seek_to_beginning(_MARKER)
        fetched = await consumer.getmany(_MARKER, timeout_ms=1000, max_records=1)
        for record in fetched.get(_MARKER, []):
            try:
                return int(record.value or b"")
            except ValueError:
                return None
        return None

    async def _the_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
            await consumer.start()
            consumer.assign([_MARKER])
            self._consumer = consumer
        return self._consumer

    async def _the_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()
        self._consumer = self._producer = None
