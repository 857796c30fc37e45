"""The relay publishes every stored event at least once, even when killed mid-publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from aiokafka import AIOKafkaConsumer

from services.trainer.core import TaskTraining
from services.trainer.learner import OnlineLearner
from shared.bus import KafkaPublisher, decode, ensure_topics
from shared.events.envelope import Envelope
from shared.events.types import TOPIC_DATA
from shared.relay import Relay
from shared.store.sql import open_event_store
from shared.tasks import TaskSpec
from tests.support import eventually, observation


def _spec(task: str) -> TaskSpec:
    return TaskSpec.model_validate(
        {"name": task, "features": [{"name": "x"}], "target": {"name": "y"}}
    )


async def _append_observations(store_url: str, task: str, count: int) -> set[uuid.UUID]:
    store = open_event_store(store_url)
    ids: set[uuid.UUID] = set()
    for _ in range(count // 500):
        batch = [
            observation(task=task, label=1, pipeline_version=_spec(task).version)
            for _ in range(500)
        ]
        await store.append(batch)
        ids.update(e.event_id for e in batch)
    await store.close()
    return ids


async def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        TOPIC_DATA, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    return consumer


def _until(consumer: AIOKafkaConsumer, task: str, seen: list[Envelope], done):
    """A probe for `eventually`: drain what arrived for `task` into `seen`, then test `done`."""

    async def probe() -> bool:
        await _drain(consumer, task, seen)
        return done()

    return probe


async def _drain(consumer: AIOKafkaConsumer, task: str, seen: list[Envelope]) -> None:
    batches = await consumer.getmany(timeout_ms=200, max_records=5000)
    for records in batches.values():
        for record in records:
            envelope = decode(record.value)
            if envelope.payload["task"] == task:
                seen.append(envelope)


async def test_the_relay_publishes_stored_events_in_order_with_headers(sqlite_url: str, kafka: str):
    task = f"t{uuid.uuid4().hex[:8]}"
    ids = await _append_observations(sqlite_url, task, 1000)
    await ensure_topics(kafka)
    store = open_event_store(sqlite_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    relay = Relay(store, publisher, producer="tests", batch_size=300)
    while await relay.publish_once():
        pass
    assert await store.load_cursor(relay.cursor_name) == await store.head()
    consumer = await _consumer(kafka)
    seen: list[Envelope] = []
    await eventually(_until(consumer, task, seen, lambda: len(seen) >= 1000))
    stored = [e.event_id for e in await store.read_all(limit=5000)]
    arrived = [e.event_id for e in seen]
    assert arrived == stored and set(arrived) == ids  # one task, one partition: store order
    assert all(e.position for e in seen)
    await consumer.stop()
    await publisher.stop()
    await store.close()


async def test_a_relay_killed_mid_publish_resumes_and_no_event_is_lost(pg_url: str, kafka: str):
    task = f"t{uuid.uuid4().hex[:8]}"
    ids = await _append_observations(pg_url, task, 20_000)
    await ensure_topics(kafka)
    consumer = await _consumer(kafka)
    env = {**os.environ, "CONTINUO_STORE_URL": pg_url, "KAFKA_BOOTSTRAP_SERVERS": kafka}
    command = [sys.executable, "-m", "shared.relay", "--producer", "tests"]
    seen: list[Envelope] = []

    def arrived() -> set[uuid.UUID]:
        return {e.event_id for e in seen}

    relay = subprocess.Popen(command, env=env)
    # Kill it as soon as part, but not all, of the stream has arrived.
    await eventually(_until(consumer, task, seen, lambda: len(seen) > 0), timeout=30)
    relay.send_signal(signal.SIGKILL)
    relay.wait()
    assert 0 < len(arrived()) < len(ids), "the relay was not killed mid-publish"

    relay = subprocess.Popen(command, env=env)
    try:
        await eventually(_until(consumer, task, seen, lambda: arrived() == ids), timeout=60)
    finally:
        relay.terminate()
        relay.wait()
        await consumer.stop()
    assert arrived() == ids  # every event arrived, perhaps some twice
    # A real consumer (the trainer's core) applies everything that arrived, duplicates included,
    # and learns each labelled event exactly once.
    spec = _spec(task)
    core = TaskTraining(spec, OnlineLearner.from_spec(spec))
    for start in range(0, len(seen), 2000):
        core.apply(seen[start : start + 2000])
    assert core.n_learned_total == len(ids)
