"""The Kafka bus: envelopes as JSON records, topic creation, consumers with a dead-letter topic.

Records are keyed by task, so all of one task's events of a topic land in one partition, in the
order the relay published them (store order). A record holds a run of consecutive envelopes of
one topic and key, as a JSON array in store order (up to `RECORD_ENVELOPES` of them, or
`RECORD_BYTES`): every consumer pays a per-record cost (Faust's stream machinery in the trainer
was a third of its CPU at one envelope per record), and a 100-row request is 100 events. A
single JSON envelope (what a relay wrote before 2026-11-28, or another producer) still decodes.
Headers name the types, the count and the first and last positions, so tools can route and skip
without decoding the body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from shared.events.envelope import Envelope, EnvelopeJson, UnknownEventType
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


def record_key(event: EnvelopeJson) -> bytes:
    """Partition key: the task the event belongs to (its stream when it names no task)."""
    return (event.task or event.stream_id).encode()


RECORD_ENVELOPES = 500
RECORD_BYTES = 512 << 10


def to_records(events: Sequence[EnvelopeJson] | Sequence[Envelope]) -> list[OutgoingRecord]:
    """The records for stored events, in order: each run of consecutive events with the same
    topic and key in one record (a JSON array), up to RECORD_ENVELOPES or RECORD_BYTES. Relays
    pass what the store read as JSON (`EventStore.read_all_json`); envelopes are serialised."""
    items = [e if isinstance(e, EnvelopeJson) else EnvelopeJson.of(e) for e in events]
    records: list[OutgoingRecord] = []
    run: list[EnvelopeJson] = []
    size = 0

    def close() -> None:
        first, last = run[0], run[-1]
        headers = (
            ("type", ",".join(dict.fromkeys(e.type for e in run)).encode()),
            ("count", str(len(run)).encode()),
            ("event_id", first.event_id.encode()),
            ("position", str(first.position).encode()),
            ("last_position", str(last.position).encode()),
        )
        value = b"[" + b",".join(e.body for e in run) + b"]"
        records.append(OutgoingRecord(topic_for(first.type), record_key(first), value, headers))

    for item in items:
        if run and (
            len(run) >= RECORD_ENVELOPES
            or size + len(item.body) > RECORD_BYTES
            or topic_for(item.type) != topic_for(run[0].type)
            or record_key(item) != record_key(run[0])
        ):
            close()
            run, size = [], 0
        run.append(item)
        size += len(item.body) + 1
    if run:
        close()
    return records


def decode(value: bytes | None) -> list[Envelope]:
    """A record's envelopes (a JSON array of them, or one), each payload fitting its registered
    type; any that does not makes the whole record undecodable."""
    if value is None:
        raise DecodeError("empty record value")
    try:
        doc = orjson.loads(value)
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            raise ValueError("an empty array of envelopes")
        envelopes = [Envelope.model_validate(item) for item in items]
        for envelope in envelopes:
            envelope.data()
    except UnknownEventType as exc:
        raise DecodeError(str(exc)) from exc
    except (ValidationError, ValueError) as exc:
        raise DecodeError(f"not a valid envelope: {str(exc)[:500]}") from exc
    return envelopes


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

    async def pin_positions(self, timeout: float = 30.0) -> None:
        """Resolve now where every assigned partition starts reading.

        Without a group, the "latest" offset is otherwise looked up lazily at the first fetch, and
        records published in between would be skipped. Call after `start`, before reading the
        state the consumer is meant to follow. aiokafka retries the lookup for as long as the
        broker does not answer it: past `timeout` seconds (for all partitions together) this
        raises instead, so that a service whose broker cannot answer fails its start with the
        reason rather than hanging in it.
        """
        deadline = time.monotonic() + timeout
        for partition in self._consumer.assignment():
            left = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._consumer.position(partition), left)
            except TimeoutError:
                raise RuntimeError(
                    f"the broker gave no start offset for {partition.topic}[{partition.partition}]"
                    f" within {timeout:g} s"
                ) from None

    async def batches(self, max_envelopes: int = 1000) -> AsyncIterator[list[Envelope]]:
        """Yield decoded envelopes in batches of at most `max_envelopes` (a record holds many);
        commit once the caller has resumed past every batch of what was fetched."""
        while True:
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=max_envelopes)
            if not fetched:
                continue
            envelopes: list[Envelope] = []
            rejected: list[OutgoingRecord] = []
            for records in fetched.values():
                for record in records:
                    try:
                        envelopes += decode(record.value)
                    except DecodeError as exc:
                        rejected.append(dead_letter_record(record, str(exc)))
                    # Decoded as they are handed on: a consumer catching up (a replica that
                    # starts behind) never decodes more than a batch and a record at once.
                    while len(envelopes) >= max_envelopes:
                        yield envelopes[:max_envelopes]
                        envelopes = envelopes[max_envelopes:]
            if rejected:
                await self._dead_letters.publish(rejected)
                self.dead_lettered += len(rejected)
            if envelopes:
                yield envelopes
            if self._group:
                await self._consumer.commit()
