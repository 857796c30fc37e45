"""The Kafka bus: envelopes as JSON records, topic creation, consumers with a dead-letter topic.

Records are keyed by task, so all of one task's events of a topic land in one partition, in the
order the relay published them (store order). Headers repeat the envelope's type, id and position
so tools can route without decoding the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from shared.events.envelope import Envelope, UnknownEventType
from shared.events.types import ALL_TOPICS, TOPIC_DEAD_LETTER, TOPIC_EPOCH, topic_for

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class Publisher(Protocol):
    """Publishes records and returns only once the broker acknowledged all of them."""

    async def publish(self, records: Sequence[OutgoingRecord]) -> None: ...


class DecodeError(ValueError):
    """A record is not a valid Continuo envelope; the message is the dead-letter reason."""


def record_key(envelope: Envelope) -> bytes:
    """Partition key: the task the event belongs to (its stream when it names no task)."""
    return str(envelope.payload.get("task") or envelope.stream_id).encode()


def to_record(envelope: Envelope) -> OutgoingRecord:
    headers = (
        ("type", envelope.type.encode()),
        ("event_id", str(envelope.event_id).encode()),
        ("schema_version", str(envelope.schema_version).encode()),
        ("position", str(envelope.position or 0).encode()),
    )
    return OutgoingRecord(
        topic_for(envelope.type), record_key(envelope), envelope.to_json(), headers
    )


def decode(value: bytes | None) -> Envelope:
    """Decode a record's value into an envelope whose payload fits its registered type."""
    if value is None:
        raise DecodeError("empty record value")
    try:
        envelope = Envelope.from_json(value)
        envelope.data()
    except UnknownEventType as exc:
        raise DecodeError(str(exc)) from exc
    except (ValidationError, ValueError) as exc:
        raise DecodeError(f"not a valid envelope: {str(exc)[:500]}") from exc
    return envelope


class KafkaPublisher:
    """aiokafka producer with acks=all; idempotence is a setting (off on the embedded broker).

    The producer is made at `start` (aiokafka producers hold a connection pool from the moment
    they exist, and one never started would leak it)."""

    def __init__(self, bootstrap: str, *, idempotence: bool = False, linger_ms: int = 5) -> None:
        self._settings = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "enable_idempotence": idempotence,
            "linger_ms": linger_ms,
            "max_batch_size": 1 << 20,
            "max_request_size": 8 << 20,
        }
        self._producer: AIOKafkaProducer | None = None
        # The producer's default: murmur2 of the key, as Kafka's Java client partitions.
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self._settings)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Send the records in batches, one per partition (and more while one fills up), each
        to the partition the producer's own partitioner picks for its key, in order; return
        when the broker acknowledged all. (`send` record by record cost the relays twice as
        much CPU as the store read and the serialising together.)"""
        if self._producer is None:
            raise RuntimeError("KafkaPublisher.publish before start()")
        producer = self._producer
        partitions: dict[str, list[int]] = {}
        by_partition: dict[tuple[str, int], list[OutgoingRecord]] = {}
        for record in records:
            if record.topic not in partitions:
                partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
            known = partitions[record.topic]
            partition = self._partitioner(record.key, known, known)
            by_partition.setdefault((record.topic, partition), []).append(record)
        futures = []
        for (topic, partition), batch_records in by_partition.items():
            batch = producer.create_batch()
            for record in batch_records:
                if not _add(batch, record):  # full: send it, and start the next
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if not _add(batch, record):
                        raise ValueError(f"a record of {len(record.value)} bytes fits no batch")
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)


def _add(batch: Any, record: OutgoingRecord) -> bool:
    appended = batch.append(
        key=record.key, value=record.value, timestamp=None, headers=list(record.headers)
    )
    return appended is not None


# The broker-epoch marker must outlive any retention: were it deleted, every relay would take the
# broker for a new one and publish everything again (shared/broker_epoch.py).
_TOPIC_CONFIGS = {TOPIC_EPOCH: {"retention.ms": "-1", "retention.bytes": "-1"}}


async def ensure_topics(
    bootstrap: str, topics: Iterable[str] = ALL_TOPICS, *, partitions: int = 3, replication: int = 1
) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(t, partitions, replication, topic_configs=_TOPIC_CONFIGS.get(t))
            for t in topics
            if t not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another service created them first
            log.info("bus.topics_created", topics=[t.name for t in missing])
    finally:
        await admin.close()


class SourceRecord(Protocol):
    """Where a consumed record came from (aiokafka's ConsumerRecord and Faust's Message)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any


def dead_letter_record(record: SourceRecord, reason: str) -> OutgoingRecord:
    """What goes to the dead-letter topic for an undecodable record: its key and bytes, where it
    came from and why; logged (`bus.dead_letter`) as it is made."""
    log.warning(
        "bus.dead_letter",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason[:1000],
    )
    headers = (
        ("reason", reason.encode()[:1000]),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
    )
    key, value = record.key, record.value
    return OutgoingRecord(
        TOPIC_DEAD_LETTER,
        key if isinstance(key, bytes) else b"",
        value if isinstance(value, bytes) else b"",
        headers,
    )


class EnvelopeConsumer:
    """Consumes envelopes in batches; records that do not decode go to the dead-letter topic.

    Offsets are committed only after the caller has handled a batch (at-least-once); consumers
    are idempotent by event_id, so a batch seen twice has the effect of once.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        *,
        group_id: str | None,
        dead_letters: Publisher,
        from_beginning: bool = True,
        fetch_max_wait_ms: int = 100,
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self._group = group_id
        self._dead_letters = dead_letters
        self.dead_lettered = 0  # records sent to the dead-letter topic

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def pin_positions(self) -> None:
        """Resolve now where every assigned partition starts reading.

        Without a group, the "latest" offset is otherwise looked up lazily at the first fetch, and
        records published in between would be skipped. Call after `start`, before reading the
        state the consumer is meant to follow.
        """
        for partition in self._consumer.assignment():
            await self._consumer.position(partition)

    async def batches(self, max_records: int = 1000) -> AsyncIterator[list[Envelope]]:
        """Yield decoded envelopes batch by batch; commit after the caller resumes the iterator."""
        while True:
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=max_records)
            if not fetched:
                continue
            envelopes: list[Envelope] = []
            rejected: list[OutgoingRecord] = []
            for records in fetched.values():
                for record in records:
                    try:
                        envelopes.append(decode(record.value))
                    except DecodeError as exc:
                        rejected.append(dead_letter_record(record, str(exc)))
            if rejected:
                await self._dead_letters.publish(rejected)
                self.dead_lettered += len(rejected)
            if envelopes:
                yield envelopes
            if self._group:
                await self._consumer.commit()
