"""The relay publishes every stored event at least once, even when killed mid-publish."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer

from services.trainer.core import TaskTraining
from services.trainer.learner import OnlineLearner
from shared.broker import free_port, start_broker_ready
from shared.broker_epoch import BrokerEpoch
from shared.bus import RECORD_ENVELOPES, KafkaPublisher, decode, ensure_topics
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


def _until(consumer: AIOKafkaConsumer, task: str, seen: list[Envelope], done, headers=None):
    """A probe for `eventually`: drain what arrived for `task` into `seen`, then test `done`."""

    async def probe() -> bool:
        await _drain(consumer, task, seen, headers)
        return done()

    return probe


async def _drain(
    consumer: AIOKafkaConsumer, task: str, seen: list[Envelope], headers: list | None = None
) -> None:
    batches = await consumer.getmany(timeout_ms=200, max_records=5000)
    for records in batches.values():
        for record in records:
            envelopes = decode(record.value)
            if envelopes[0].payload["task"] == task:
                seen += envelopes
                if headers is not None:
                    headers.append((dict(record.headers), envelopes))


async def _stored_and_relay(store_url: str, kafka: str):
    """1,000 observations of a new task in the store, and a relay (batches of 300) to publish
    them: the task, its event ids, the store, the started publisher and the relay."""
    task = f"t{uuid.uuid4().hex[:8]}"
    ids = await _append_observations(store_url, task, 1000)
    await ensure_topics(kafka)
    store = open_event_store(store_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    return task, ids, store, publisher, Relay(store, publisher, producer="tests", batch_size=300)


async def test_the_relay_publishes_stored_events_in_order_with_headers(sqlite_url: str, kafka: str):
    task, ids, store, publisher, relay = await _stored_and_relay(sqlite_url, kafka)
    while await relay.publish_once():
        pass
    assert await store.load_cursor(relay.cursor_name) == await store.head()
    consumer = await _consumer(kafka)
    seen: list[Envelope] = []
    records: list = []
    await eventually(_until(consumer, task, seen, lambda: len(seen) >= 1000, records))
    stored = [e.event_id for e in await store.read_all(limit=5000)]
    arrived = [e.event_id for e in seen]
    assert arrived == stored and set(arrived) == ids  # one task, one partition: store order
    assert all(e.position for e in seen)
    # Consecutive events of one task share records (batches of 300: 300, 200 at most each),
    # and each record's headers say what it holds without decoding it.
    assert 1 < len(records) < 1000
    assert max(len(envelopes) for _, envelopes in records) <= RECORD_ENVELOPES
    for headers, envelopes in records:
        assert headers["type"] == b"ObservationRecorded"
        assert int(headers["count"]) == len(envelopes)
        assert int(headers["position"]) == envelopes[0].position
        assert int(headers["last_position"]) == envelopes[-1].position
        assert headers["event_id"] == str(envelopes[0].event_id).encode()
    await consumer.stop()
    await publisher.stop()
    await store.close()


async def test_a_page_read_ahead_is_dropped_when_the_cursor_is_reset(sqlite_url: str, kafka: str):
    # After a full batch the relay reads the next page while publishing; `continuo replay`
    # resetting the cursor meanwhile must make it publish from the new cursor, not that page.
    task, ids, store, publisher, relay = await _stored_and_relay(sqlite_url, kafka)
    start = await store.head() - 1000  # other tests share the file: this task's events follow
    await store.save_cursor(relay.cursor_name, start)
    assert await relay.publish_once() == 300  # and the next 300 are being read meanwhile
    await store.save_cursor(relay.cursor_name, start)  # the reset
    while await relay.publish_once():
        pass
    await relay.close()
    consumer = await _consumer(kafka)
    seen: list[Envelope] = []
    await eventually(_until(consumer, task, seen, lambda: len(seen) >= 1300))
    arrived = [e.event_id for e in seen]
    stored = [e.event_id for e in await store.read_all(after=start, limit=5000)]
    assert arrived == stored[:300] + stored and set(arrived) == ids
    await consumer.stop()
    await publisher.stop()
    await store.close()


async def test_an_append_through_the_relays_own_store_wakes_it_without_waiting_for_a_poll(
    sqlite_url: str, kafka: str
):
    task = f"t{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka)
    store = open_event_store(sqlite_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    relay = Relay(store, publisher, producer="tests", interval=60.0)  # a poll would be too late
    while await relay.publish_once():  # what earlier tests left, out of the way
        pass
    consumer = await _consumer(kafka)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(0.2)  # the relay has looked, found nothing, and is waiting
        seen: list[Envelope] = []
        appended = []
        for count in range(1, 4):  # each append wakes it, however many came before
            event = observation(task=task, label=1, pipeline_version=_spec(task).version)
            await store.append([event])
            appended.append(event.event_id)
            await eventually(_until(consumer, task, seen, lambda n=count: len(seen) >= n))
        assert [e.event_id for e in seen] == appended
    finally:
        stop.set()
        await running
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


async def test_a_broker_that_comes_back_empty_is_refilled_by_the_relay_on_its_own(
    sqlite_url: str,
):
    """The broker is stopped and started again on the same address with nothing in it: the
    relay notices by the broker's epoch and publishes every event again, with what was stored
    while the broker was away; nobody runs `continuo replay`."""
    port = free_port()
    broker = await start_broker_ready(port)
    bootstrap = broker.bootstrap
    task = f"t{uuid.uuid4().hex[:8]}"
    first = await _append_observations(sqlite_url, task, 500)
    await ensure_topics(bootstrap)
    store = open_event_store(sqlite_url)
    publisher = KafkaPublisher(bootstrap)
    await publisher.start()
    relay = Relay(
        store,
        publisher,
        producer="tests",
        interval=0.02,
        epoch=BrokerEpoch(bootstrap),
        check_every=0.2,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        consumer = await _consumer(bootstrap)
        seen: list[Envelope] = []
        await eventually(_until(consumer, task, seen, lambda: len(seen) >= 500), timeout=30)
        await consumer.stop()
        assert relay.republished_from_start == 0

        broker.stop()
        during = await _append_observations(sqlite_url, task, 500)  # stored while it is away
        broker = await start_broker_ready(port)
        started = time.monotonic()
        consumer = await _consumer(bootstrap)
        seen = []
        everything = first | during
        await eventually(
            _until(consumer, task, seen, lambda: {e.event_id for e in seen} >= everything),
            timeout=60,
        )
        healed = time.monotonic() - started
        await consumer.stop()
        await asyncio.sleep(1.0)  # five more checks: the same broker is not taken for a new one
        assert relay.republished_from_start == 1
        print(f"refilled {len(seen)} events {healed:.1f} s after the broker came back")
    finally:
        stop.set()
        await running
        await relay.close()
        await publisher.stop()
        await store.close()
        broker.stop()
