"""The whole loop with the four services as separate processes, on the embedded broker and
PostgreSQL: serving answers and records each row (log and wait), labels come to ingest by
prediction id, the trainer learns them, governance promotes, serving answers with the new model."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from continuo.caller import governance_models, stream_through_serving, wait_until_learned
from continuo.demo import FEATURES, find_elec, read_rows
from continuo.simulate import Timing
from continuo.stack import Stack
from services.trainer.openapi import Status
from shared.events.types import TOPIC_DATA, TOPIC_DEAD_LETTER
from shared.store.sql import open_event_store
from tests.support import eventually


async def test_served_rows_labelled_by_prediction_id_become_models_serving_answers_with(
    pg_url: str, tmp_path: Path
):
    rows = read_rows(find_elec(), limit=3000)
    stack = Stack(tmp_path, store_url=pg_url)
    await stack.start()
    try:
        urls = {name: stack.url(name) for name in ("serving", "ingest")}
        served = await stream_through_serving(
            urls,
            "elec",
            [{f: r[f] for f in FEATURES} for r in rows],
            [r["class"] for r in rows],
            Timing(100, 1),
            progress=False,
        )
        status = await wait_until_learned(stack.url("trainer"), "elec", len(rows), timeout=60)
        models = await governance_models(stack, "elec")
        champion = models["champion"]
        async with httpx.AsyncClient(
            base_url=stack.url("governance"), headers=stack.governance_headers()
        ) as client:
            lineage = (await client.get(f"/v1/tasks/elec/models/{champion}/lineage")).json()
        dead = await _dead_letter_from_the_trainer(stack)
    finally:
        stack.stop()

    # The trainer publishes version 1 (the prior) when it starts, so serving answers from about
    # the first request (any asked before it reached serving are recorded, unanswered); then with
    # the models the trainer learned from those very rows.
    assert served.unanswered <= 1500
    assert len(served.versions) >= 3
    labels = [r["class"] for r in rows]
    right = served.right(labels)
    answered = len(rows) - served.unanswered
    # elec's spec has the price's deviation from its 24-hour mean: once the first models have
    # replaced the prior, answers are nearly all right.
    assert right[1000:].mean() > 0.95
    # The trainer's served figure is computed from the answers serving recorded: the same rows
    # and answers the client scored.
    assert status["metrics"]["served_n_labelled"] == answered
    assert status["metrics"]["served_accuracy"] == pytest.approx(right.sum() / answered)
    assert lineage["data"]["labelled_events_learned"] > 0

    store = open_event_store(pg_url)
    events = await store.read_all(limit=100_000, types=["ObservationRecorded", "LabelRecorded"])
    await store.close()
    observed = [e for e in events if e.type == "ObservationRecorded"]
    assert len(observed) == len(events) - len(observed) == len(rows)
    assert {e.producer.service for e in observed} == {"serving"}

    # A record on the data topic that is not an envelope: dead-lettered by the trainer with its
    # key, where it came from and why, and counted; the trainer went on.
    headers = dict(dead.headers)
    assert dead.key == b"elec" and dead.value == b"not an envelope"
    assert headers["source_topic"] == TOPIC_DATA.encode()
    assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) >= 0
    assert b"not a valid envelope" in headers["reason"]


async def _dead_letter_from_the_trainer(stack: Stack) -> ConsumerRecord:
    assert stack.bootstrap is not None
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    await producer.send_and_wait(TOPIC_DATA, b"not an envelope", key=b"elec")
    await producer.stop()
    consumer = AIOKafkaConsumer(
        TOPIC_DEAD_LETTER, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:

        async def found() -> ConsumerRecord | None:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if dict(record.headers).get("source_topic") == TOPIC_DATA.encode():
                        return record
            return None

        record = await eventually(found, timeout=30)
    finally:
        await consumer.stop()
    async with httpx.AsyncClient(base_url=stack.url("trainer")) as client:
        status = Status.model_validate((await client.get("/v1/status")).json())
        assert status.dead_letters >= 1
        document = (await client.get("/openapi.json")).json()
        assert "/v1/status" in document["paths"]
    return record
