"""Helpers for tests: throwaway PostgreSQL databases, deadlines instead of sleeps, sample events,
task names spread over the data topic's partitions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka.partitioner import DefaultPartitioner

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
