"""Helpers for tests: throwaway PostgreSQL databases, deadlines instead of sleeps, sample events,
task names spread over the data topic's partitions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from aiokafka.partitioner import DefaultPartitioner

from continuo.loop import drift_stream
from shared.events.envelope import Envelope, Producer, new_event
from shared.events.types import ObservationRecorded

T = TypeVar("T")
TEST_PRODUCER = Producer(service="tests", version="0")


def _with_database(url: str, name: str, scheme: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, parts.netloc, f"/{name}", "", ""))


async def _admin(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_pg_database_async(admin_url: str, name: str) -> str:
    """Create an empty database beside the admin one; return its SQLAlchemy asyncpg URL."""
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    return _with_database(admin_url, name, "postgresql+asyncpg")


async def drop_pg_database_async(admin_url: str, name: str) -> None:
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_pg_database(admin_url: str, name: str) -> str:
    """`create_pg_database_async`, outside an event loop."""
    return asyncio.run(create_pg_database_async(admin_url, name))


def drop_pg_database(admin_url: str, name: str) -> None:
    asyncio.run(drop_pg_database_async(admin_url, name))


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Await `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


def observation(
    task: str = "t",
    entity: str = "e1",
    stream_id: str | None = None,
    pipeline_version: str = "v",
    **kw,
) -> Envelope:
    """A small ObservationRecorded envelope (feature x = 1.0) for store and relay tests."""
    payload = ObservationRecorded(
        task=task, pipeline_version=pipeline_version, entity_id=entity, features={"x": 1.0}, **kw
    )
    return new_event(payload, stream_id=stream_id or f"data-{task}", producer=TEST_PRODUCER)


PARTITIONS = [0, 1, 2]  # the data topic as the services create it


def partition_of(task: str) -> int:
    """Where the publisher puts a task's data (records are keyed by task)."""
    return DefaultPartitioner()(task.encode(), PARTITIONS, PARTITIONS)


def tasks_on_every_partition(count: int = 4) -> list[str]:
    """`count` (at least 3) task names that between them use every partition of the data topic."""
    chosen: list[str] = []
    for i in range(1000):
        name = f"worker-task-{i}"
        if partition_of(name) not in {partition_of(t) for t in chosen} or len(chosen) >= 3:
            chosen.append(name)
        if len(chosen) == count:
            return chosen
    raise AssertionError("no such names cover the partitions")


def labelled_streams(tasks: list[str], rows: int) -> dict[str, list[dict[str, Any]]]:
    """Per task, `rows` labelled observations as a client posts them to ingest: the drifting
    stream of `continuo/loop.py` (a drift half-way), a seed per task."""
    out = {}
    for i, task in enumerate(tasks):
        features, labels, entities = drift_stream(rows, drift_at=rows // 2, seed=20 + i)
        out[task] = [
            {"entity_id": e, "features": f, "label": y}
            for f, y, e in zip(features, labels, entities, strict=True)
        ]
    return out


async def owned_partitions(client: httpx.AsyncClient, trainer_url: str) -> set[int]:
    """The data partitions a trainer worker owns now (none while it cannot answer)."""
    try:
        return set((await client.get(f"{trainer_url}/v1/status")).json()["data_partitions"])
    except (httpx.HTTPError, ValueError, KeyError):
        return set()


async def partitions_split(
    client: httpx.AsyncClient, trainer_urls: list[str], timeout: float
) -> list[set[int]]:
    """Wait until every worker owns some partitions and none is owned twice; what each owns."""
    deadline = time.monotonic() + timeout
    while True:
        owned = [await owned_partitions(client, url) for url in trainer_urls]
        if all(owned) and sorted(p for o in owned for p in o) == PARTITIONS:
            return owned
        if time.monotonic() > deadline:
            raise AssertionError(f"the consumer group did not settle: {owned}")
        await asyncio.sleep(0.5)


# The learner with small windows and a short tick, so every behaviour shows within a few
# thousand rows (the unit tests of every kind of learner).
FAST_LEARNER = {
    "tick": 100,
    "short_window": 300,
    "short_every": 100,
    "window": 800,
    "update_every": 400,
    "rounds": 10,
    "short_rounds": 5,
    "race_window": 500,
}
