"""The bus: records that cannot be decoded go to the dead-letter topic with the reason."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.bus import EnvelopeConsumer, KafkaPublisher, OutgoingRecord, ensure_topics
from shared.events.types import TOPIC_DEAD_LETTER
from tests.support import eventually, observation


async def test_an_undecodable_record_is_dead_lettered_with_the_reason_and_the_rest_flow(kafka: str):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [topic, TOPIC_DEAD_LETTER], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    good = observation()
    marker = uuid.uuid4().hex.encode()
    await producer.send_and_wait(topic, b"{not json " + marker)
    await producer.send_and_wait(topic, good.to_json())
    await producer.stop()

    publisher = KafkaPublisher(kafka)
    await publisher.start()
    consumer = EnvelopeConsumer(kafka, [topic], group_id=None, dead_letters=publisher)
    await consumer.start()
    batches = consumer.batches()
    received = await anext(batches)
    await consumer.stop()
    await publisher.stop()
    assert [e.event_id for e in received] == [good.event_id]

    dead = AIOKafkaConsumer(
        TOPIC_DEAD_LETTER, bootstrap_servers=kafka, auto_offset_reset="earliest"
    )
    await dead.start()
    found = []

    async def dead_lettered() -> bool:
        for records in (await dead.getmany(timeout_ms=200)).values():
            found.extend(r for r in records if marker in (r.value or b""))
        return bool(found)

    await eventually(dead_lettered)
    await dead.stop()
    headers = dict(found[0].headers)
    assert headers["source_topic"] == topic.encode()
    assert b"not a valid envelope" in headers["reason"]


async def test_published_batches_keep_each_keys_partition_and_order(kafka: str):
    """The publisher sends batches per partition; each key lands where the producer's own
    `send` puts it (Kafka's murmur2 partitioning), in the order given, headers intact."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [topic], partitions=3)
    keys = [f"task-{i}".encode() for i in range(6)]
    records = [
        OutgoingRecord(topic, keys[i % 6], f"{i}".encode() * 200, (("n", str(i).encode()),))
        for i in range(3000)  # past one batch of 1 MB per partition
    ]
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    await publisher.publish(records)
    await publisher.stop()

    plain = AIOKafkaProducer(bootstrap_servers=kafka)
    await plain.start()
    expected = {
        key: (await plain.send_and_wait(topic, b"probe", key=key)).partition for key in keys
    }
    await plain.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest")
    await consumer.start()
    got: list = []

    async def all_read() -> bool:
        for batch in (await consumer.getmany(timeout_ms=200)).values():
            got.extend(r for r in batch if r.value != b"probe")
        return len(got) >= len(records)

    await eventually(all_read, timeout=30)
    await consumer.stop()
    assert len(got) == len(records)
    assert len(set(expected.values())) > 1  # the keys spread over partitions
    for key in keys:
        mine = [r for r in got if r.key == key]
        assert {r.partition for r in mine} == {expected[key]}
        numbers = [int(dict(r.headers)["n"]) for r in sorted(mine, key=lambda r: r.offset)]
        assert numbers == [i for i in range(3000) if i % 6 == keys.index(key)]
