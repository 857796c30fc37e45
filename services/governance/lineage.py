"""Lineage rules, pure: which model versions learned from which data events.

A model version records the range of data-stream positions it learned from: `first_position`
(the first labelled row its line of models ever learned) to `last_position` (the last one this
version learned). A data event's *learned position* is where its label entered the stream: the
event's own position for an observation recorded with its label or for a label, and its label's
position for an observation labelled later (an observation never labelled was never learned).

A model "saw" an event when `first_position <= learned position <= last_position`. The learner is
continual (each version starts from its parent's state), so this over-reports a little: a row the
learner has since compacted away still counts as seen. For a data-deletion request that is the
right side to err on.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.events.envelope import Envelope
from shared.events.types import data_stream
from shared.features import data_event
from shared.store.port import EventStore


def saw(model: Mapping[str, Any], lo: int, hi: int) -> bool:
    """Whether a model's learned range overlaps the learned positions lo..hi."""
    first = model["first_position"]
    return model["last_position"] >= lo and (first is None or first <= hi)


def models_that_saw(models: Iterable[Mapping[str, Any]], lo: int, hi: int) -> list[int]:
    """Versions of the models whose learned range overlaps lo..hi, in order."""
    return sorted(m["model_version"] for m in models if saw(m, lo, hi))


# ---------------------------------------------------------------------------------------------
# Reading the store (through its port) to answer lineage questions

_DATA_TYPES = ("ObservationRecorded", "LabelRecorded")
# Past this many events scanned for late labels, assume the worst (every later model saw it).
SCAN_LIMIT = 200_000


def event_json(envelope: Envelope) -> dict[str, Any]:
    """A data event as the lineage endpoints show it."""
    return {
        "position": envelope.position,
        "event_id": str(envelope.event_id),
        "type": envelope.type,
        "occurred_at": envelope.occurred_at.isoformat(),
        "payload": envelope.payload,
    }


async def learned_positions(
    store: EventStore, task: str, lo: int, hi: int, horizon: int
) -> tuple[list[int], list[str]]:
    """Learned positions of the data events at positions lo..hi, and notes.

    `horizon` is the last position any model learned: a label after it was learned by no model.
    """
    stream = data_stream(task)
    learned: list[int] = []
    pending: set[uuid.UUID] = set()
    unlabelled = 0
    after = lo - 1
    while page := await store.read_all(
        after=after, until=hi, limit=5000, streams=[stream], types=_DATA_TYPES
    ):
        for envelope in page:
            event = data_event(envelope)  # None: a stored row no learner could decode
            if event is None:
                continue
            if event.is_label:
                learned.append(event.position)
                pending.discard(event.observation_id)  # type: ignore[arg-type]
            elif event.label is not None:
                learned.append(event.position)
            else:
                pending.add(event.event_id)
        after = page[-1].position or after
    notes: list[str] = []
    scanned, after, capped = 0, hi, False
    while pending and after < horizon:
        page = await store.read_all(
            after=after, until=horizon, limit=5000, streams=[stream], types=["LabelRecorded"]
        )
        if not page:
            break
        for envelope in page:
            event = data_event(envelope)
            if event is not None and event.observation_id in pending:
                pending.discard(event.observation_id)
                learned.append(event.position)
        scanned += len(page)
        after = page[-1].position or after
        if scanned > SCAN_LIMIT:
            learned.append(horizon)
            notes.append(
                f"stopped looking for late labels after {scanned} events: "
                "every later model is counted as having seen them"
            )
            capped = True
            break
    if pending and not capped:
        unlabelled = len(pending)
        notes.append(
            f"{unlabelled} observation(s) had no label learned by any model yet: "
            "no model learned from them"
        )
    return sorted(learned), notes


def models_that_learned(models: Iterable[Mapping[str, Any]], learned: Sequence[int]) -> list[int]:
    """Versions whose learned range contains at least one of the (sorted) learned positions."""
    versions = []
    for m in models:
        first = m["first_position"] if m["first_position"] is not None else 0
        i = bisect.bisect_left(learned, first)
        if i < len(learned) and learned[i] <= m["last_position"]:
            versions.append(m["model_version"])
    return sorted(versions)
