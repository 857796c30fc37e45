"""Which events make up a task's audit trail, and reading them page by page (by position)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.events.envelope import Envelope
from shared.events.types import (
    data_stream,
    deployment_stream,
    governance_stream,
    model_stream,
    prediction_stream,
    task_stream,
)
from shared.store.port import EventStore

_DATA_TYPES = {"ObservationRecorded", "LabelRecorded"}


def trail_streams(task: str, include: Iterable[str], types: Iterable[str]) -> tuple[str, ...]:
    """The task's streams: spec, models, deployments and governance; data and predictions only
    when asked for (by `include`, or by naming their event types)."""
    wanted = set(include)
    types = set(types)
    if types & _DATA_TYPES:
        wanted.add("data")
    if "PredictionServed" in types:
        wanted.add("predictions")
    streams = [task_stream(task), model_stream(task), deployment_stream(task)]
    streams.append(governance_stream(task))
    if "data" in wanted:
        streams.append(data_stream(task))
    if "predictions" in wanted:
        streams.append(prediction_stream(task))
    return tuple(streams)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class TrailQuery:
    streams: Sequence[str]
    types: Sequence[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    until_position: int | None = None

    def _in_time(self, envelope: Envelope) -> bool:
        at = _utc(envelope.recorded_at or envelope.occurred_at)
        if self.since is not None and at < _utc(self.since):
            return False
        return self.until is None or at <= _utc(self.until)

    async def page(
        self, store: EventStore, after: int, limit: int
    ) -> tuple[list[Envelope], int | None]:
        """Up to `limit` matching events after a position, and where the next page starts (None
        at the end). Time filters apply to when the store recorded each event."""
        found: list[Envelope] = []
        while len(found) < limit:
            batch = await store.read_all(
                after=after,
                limit=max(limit, 500),
                types=self.types,
                streams=self.streams,
                until=self.until_position,
            )
            if not batch:
                return found, None
            for envelope in batch:
                after = envelope.position or after
                if self._in_time(envelope):
                    found.append(envelope)
                    if len(found) == limit:
                        return found, after
        return found, after
