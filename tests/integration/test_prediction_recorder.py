"""The audit-trail recorder on a real store: backpressure while the store is slower than serving,
no waiting (and a bounded, counted loss) while it fails, and nothing recorded twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from services.serving.models import Prediction
from services.serving.recorder import PredictionRecorder
from shared.events.envelope import Envelope
from shared.events.types import ServedPrediction, prediction_stream
from shared.store.port import Appended
from shared.store.sql import SqlEventStore
from tests.support import TEST_PRODUCER

TASK = "elec"


class GatedStore:
    """The real store, with appends that wait for a gate or fail on demand (the store being slow
    or unreachable, without stopping the database under the other tests)."""

    def __init__(self, store: SqlEventStore) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    async def append(self, events: Sequence[Envelope]) -> list[Appended]:
        await self.gate.wait()
        if self.failing:
            raise ConnectionError("the store is unreachable")
        return await self.store.append(events)


def predictions(n: int) -> list[Prediction]:
    return [
        Prediction(uuid.uuid4(), "nsw", {"nswprice": 0.05}, {}, 0.7, "UP", model_version=1)
        for _ in range(n)
    ]


async def stored(store: SqlEventStore) -> list[ServedPrediction]:
    """The predictions recorded, in the order stored."""
    events = await store.read_stream(prediction_stream(TASK), limit=100_000)
    return [p for e in events for p in e.data().predictions]


async def test_requests_wait_while_the_store_is_behind_and_nothing_is_lost(
    store: SqlEventStore,
) -> None:
    gated = GatedStore(store)
    recorder = PredictionRecorder(
        gated, TEST_PRODUCER, interval=0.01, batch=10, high_water=50, backlog=1000
    )
    recorder.start()
    try:
        await recorder.room()  # nothing waiting: no wait
        gated.gate.clear()  # the store stops keeping up
        served = predictions(120)
        recorder.record(TASK, served, {1: 7}, recorded=False)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(recorder.room(), timeout=0.3)
        assert recorder.waiting == 120 and recorder.dropped == 0
        gated.gate.set()
        await asyncio.wait_for(recorder.room(), timeout=10)
        assert recorder.waiting < 50
    finally:
        await recorder.close()
    rows = await stored(store)
    assert sorted(str(p.prediction_id) for p in rows) == sorted(
        str(p.prediction_id) for p in served
    )
    assert recorder.recorded == 120 and recorder.dropped == 0


async def test_an_unreachable_store_never_blocks_requests_and_bounds_what_waits(
    store: SqlEventStore,
) -> None:
    gated = GatedStore(store)
    gated.failing = True
    # Flushed by hand only (a long interval, a large batch), so that what is dropped is exact.
    recorder = PredictionRecorder(
        gated, TEST_PRODUCER, interval=60, batch=10_000, high_water=50, backlog=200
    )
    recorder.start()
    try:
        first = predictions(20)
        recorder.record(TASK, first, {1: 7}, recorded=False)
        await recorder.flush()  # fails: the recorder knows the store is down
        later = predictions(300)
        for start in range(0, 300, 20):
            recorder.record(TASK, later[start : start + 20], {}, recorded=False)
            await asyncio.wait_for(recorder.room(), timeout=1)  # never waits while it fails
        assert recorder.dropped == 120  # the oldest: all of `first` and 100 of `later`
        gated.failing = False  # back: what waited is stored, once
    finally:
        await recorder.close()
    rows = await stored(store)
    assert [str(p.prediction_id) for p in rows] == [str(p.prediction_id) for p in later[100:]]
    assert recorder.waiting == 0
