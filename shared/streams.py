"""Reading one stream exactly once and in order, whatever order Kafka delivered it in.

Several services append to a task's data stream (ingest's observations and labels, serving's
log-and-wait rows), each through its own relay, so Kafka can deliver version 8 before version 7. The
store numbers every stream without gaps, and a delivered event proves that every lower version of
its stream is already stored (versions are assigned under the append lock). So a consumer applies
delivered events while they follow on from what it has applied, and reads the store for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.events.envelope import Envelope
from shared.store.port import EventStore

PAGE = 5000


def contiguous(events: Iterable[Envelope], applied: int) -> tuple[list[Envelope], bool]:
    """The events after version `applied`, in version order (duplicates dropped), and whether
    they follow on from `applied` without a gap."""
    fresh: dict[int, Envelope] = {}
    for event in events:
        version = event.stream_version
        if version is None:
            raise ValueError(f"event {event.event_id} was never stored")
        if version > applied:
            fresh[version] = event
    ordered = [fresh[v] for v in sorted(fresh)]
    expected = range(applied + 1, applied + 1 + len(ordered))
    return ordered, all(e.stream_version == v for e, v in zip(ordered, expected, strict=True))


async def read_after(store: EventStore, stream_id: str, applied: int) -> list[Envelope]:
    """Every stored event of a stream after version `applied`, in order (paged reads)."""
    out: list[Envelope] = []
    while page := await store.read_stream(stream_id, after_version=applied, limit=PAGE):
        out.extend(page)
        applied = page[-1].stream_version or applied
        if len(page) < PAGE:
            break
    return out


async def in_order(
    store: EventStore, stream_id: str, applied: int, delivered: Iterable[Envelope]
) -> list[Envelope]:
    """What to apply next, in order: the delivered events if they follow on from `applied`,
    else everything the store holds after it (which includes them)."""
    ordered, gapless = contiguous(delivered, applied)
    if gapless:
        return ordered
    return await read_after(store, stream_id, applied)
