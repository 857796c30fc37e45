"""PostgreSQL under concurrency: no lost appends, and a tailing reader never skips a late commit."""

from __future__ import annotations

import asyncio
import uuid

from shared.store.sql import open_event_store
from tests.support import observation


async def test_many_concurrent_appenders_are_all_stored_with_unique_versions(pg_url: str):
    store = open_event_store(pg_url, pool_size=20)
    streams = [f"s-{uuid.uuid4().hex}" for _ in range(4)]

    async def writer(i: int) -> None:
        for _ in range(10):
            await store.append([observation(stream_id=streams[i % 4]) for _ in range(3)])

    await asyncio.gather(*(writer(i) for i in range(16)))
    for stream in streams:
        versions = [e.stream_version for e in await store.read_stream(stream)]
        assert versions == list(range(1, 121))
    await store.close()


async def test_a_tailing_reader_never_skips_an_event_that_commits_late(pg_url: str):
    """Many writers append while a reader tails by position; the reader must see every event.

    Without serialised position assignment, a transaction holding a lower position can commit
    after the reader has moved past it, and the reader never sees that event.
    """
    store = open_event_store(pg_url, pool_size=20)
    written: set[uuid.UUID] = set()
    done = asyncio.Event()

    async def writer() -> None:
        for _ in range(25):
            stream = f"s-{uuid.uuid4().hex}"
            batch = [observation(stream_id=stream) for _ in range(2)]
            await store.append(batch)
            written.update(e.event_id for e in batch)

    async def reader() -> list[uuid.UUID]:
        seen: list[uuid.UUID] = []
        cursor = 0
        while True:
            finished = done.is_set()
            page = await store.read_all(after=cursor, limit=50)
            seen.extend(e.event_id for e in page)
            if page:
                cursor = page[-1].position
            elif finished:
                return seen
            else:
                await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer() for _ in range(16)))
    done.set()
    seen = await reading
    assert len(seen) == len(set(seen)) == len(written) == 800
    assert set(seen) == written
    await store.close()
