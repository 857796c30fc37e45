"""The event store port: what every adapter (PostgreSQL, SQLite, in-memory fakes) must honour."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.events.envelope import Envelope, EnvelopeJson

# expected_version values: ANY appends at the end whatever the stream holds; NO_STREAM requires an
# empty stream; an int n requires the stream's last version to be exactly n.
ANY: None = None
NO_STREAM = 0


class ConcurrencyError(RuntimeError):
    """The stream moved on since the caller read it (someone else appended first)."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, expected {expected}: "
            "another writer appended first; re-read the stream and retry"
        )
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class EventIdTaken(ValueError):
    """Event ids of an append already name events of another stream: nothing was appended."""

    def __init__(self, stream_id: str, event_ids: Sequence[uuid.UUID]) -> None:
        super().__init__(
            f"event id(s) {', '.join(map(str, event_ids))} already name events of another "
            f"stream than {stream_id!r}"
        )
        self.event_ids = list(event_ids)


class EventIdChanged(ValueError):
    """Event ids of an append already name stored events whose content differs (an append with
    `refuse_changed`): nothing was appended."""

    def __init__(self, stream_id: str, event_ids: Sequence[uuid.UUID]) -> None:
        super().__init__(
            f"event id(s) {', '.join(map(str, event_ids))} of stream {stream_id!r} were "
            "recorded before with other content"
        )
        self.event_ids = list(event_ids)


@dataclass(frozen=True, slots=True)
class Appended:
    """What happened to one event of an append: stored now, or already stored (a retry)."""

    event_id: uuid.UUID
    position: int
    stream_version: int
    duplicate: bool


class EventStore(Protocol):
    """Append-only, globally ordered log of envelopes with per-stream versions."""

    async def append(
        self,
        events: Sequence[Envelope],
        *,
        expected_version: int | None = ANY,
        refuse_changed: bool = False,
    ) -> list[Appended]:
        """Append events of one stream atomically; a known event_id is a duplicate, not an error,
        unless it names an event of another stream (EventIdTaken: nothing is appended) or, with
        `refuse_changed`, an event of another type or payload (EventIdChanged: nothing is
        appended; for ids that clients choose, whose retries must repeat the same content)."""
        ...

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Iterable[str] | None = None,
        producer: str | None = None,
        until: int | None = None,
        streams: Iterable[str] | None = None,
        descending: bool = False,
    ) -> list[Envelope]:
        """Events with position > after (and <= until), in position order.

        `types`, `producer` and `streams` narrow the events read; `descending` reads the newest
        first (the first `limit` events counting down from `until`, or from the head).
        """
        ...

    async def read_all_json(
        self, after: int = 0, limit: int = 1000, *, producer: str | None = None
    ) -> list[EnvelopeJson]:
        """What `read_all` reads, as the bus sends it: each event's JSON, made from the stored
        row without building the envelope (the relays publish these)."""
        ...

    async def read_stream(
        self, stream_id: str, after_version: int = 0, limit: int | None = None
    ) -> list[Envelope]:
        """A stream's events in version order (at most `limit` of them)."""
        ...

    async def get(self, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Envelope]:
        """Stored events by id (missing ids are absent from the result)."""
        ...

    async def head(self) -> int:
        """The highest position stored (0 when empty)."""
        ...

    async def load_cursor(self, name: str) -> int:
        """A named reader's position (0 when it never saved one)."""
        ...

    async def save_cursor(self, name: str, position: int, *, expected: int | None = None) -> bool:
        """Record that a named reader has finished everything up to `position`.

        With `expected`, only if the cursor is still there (compare-and-set): False when someone
        else moved it meanwhile (e.g. `continuo replay` reset it), and nothing is written."""
        ...

    async def close(self) -> None: ...
