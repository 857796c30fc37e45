"""Reading a long run of the store a page at a time, the next page read while the caller works.

A replay (governance's projection rebuild, the trainer's replay of a task) reads in big pages
by a keyset cursor (position, or stream version: `> last seen`, on an index), never by offset.
While the caller applies one page, the next is already being read: on PostgreSQL the server
works meanwhile, on SQLite the read runs in the store's worker thread. The order and the
events are exactly those of reading the pages one after the other: the next page starts after
the last event of this one, which is known before the caller sees it. (Positions become visible
in order, so a page never skips an event that commits late: shared/store/sql.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from shared.events.envelope import Envelope
from shared.store.port import EventStore

PAGE = 10_000


async def prefetched(
    read: Callable[[int], Awaitable[list[Envelope]]],
    key: Callable[[Envelope], int | None],
    after: int = 0,
) -> AsyncIterator[list[Envelope]]:
    """Pages `read(after)` returns, each `after` the `key` of the previous page's last event,
    until an empty page; the next one is read while the caller holds this one."""
    pending: asyncio.Task[list[Envelope]] | None = asyncio.ensure_future(read(after))
    try:
        while pending is not None:
            page = await pending
            pending = None
            if not page:
                return
            after = key(page[-1]) or after
            pending = asyncio.ensure_future(read(after))
            yield page
    finally:
        if pending is not None:  # the caller stopped early (or failed): drop the read ahead
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending


def position_pages(
    store: EventStore,
    *,
    after: int = 0,
    until: int | None = None,
    types: Iterable[str] | None = None,
    page: int = PAGE,
) -> AsyncIterator[list[Envelope]]:
    """The store's events after `after` (up to `until`), of `types`, in position order."""
    wanted = None if types is None else tuple(types)

    def read(last: int) -> Awaitable[list[Envelope]]:
        return store.read_all(after=last, limit=page, types=wanted, until=until)

    return prefetched(read, lambda e: e.position, after)


def stream_pages(
    store: EventStore, stream_id: str, *, after_version: int = 0, page: int = PAGE
) -> AsyncIterator[list[Envelope]]:
    """A stream's events after `after_version`, in version order."""

    def read(last: int) -> Awaitable[list[Envelope]]:
        return store.read_stream(stream_id, after_version=last, limit=page)

    return prefetched(read, lambda e: e.stream_version, after_version)
