"""Recording what serving answered: the audit trail, off the response path, and log-and-wait rows,
durably before the response.

`PredictionRecorder` appends `PredictionServed` events in the background: a request only puts its
predictions in a buffer, and each flush records a task's predictions in events of up to
`ROWS_PER_EVENT` rows. Window of loss: a crash or kill loses the predictions still in the buffer,
in normal operation at most about `interval` seconds' or `batch` predictions' worth. A clean
shutdown flushes what is left.

Two bounds keep memory flat:
- **Backpressure** (`high_water`): while the store takes appends but more predictions are served
  than it records, a request waits (`room()`) once `high_water` predictions are waiting, until the
  recorder has caught up below it. Sustained overload then slows callers down instead of growing
  the buffer or losing answers from the trail.
- **Outage** (`backlog`): while appends fail, requests never wait (serving stays available without
  its store); the buffer grows and appends are retried (the same events again, under the same
  event ids, so a retry that had in fact succeeded is a no-op), and past `backlog` waiting
  predictions the oldest are dropped, counted in `dropped` and logged. The callers already have
  their answers, so a loss is a gap in the audit trail, never a wrong prediction.

`ObservationLog` appends log-and-wait rows (`ObservationRecorded`, with the online-feature values
and the answer) before the caller gets its answer: the caller will post the row's label by its
prediction id, so the row must exist. Concurrent requests share appends (group commit): while one
append is in flight, the next requests' rows wait and go together in the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from services.serving.models import Prediction
from shared.events.envelope import Envelope, Producer, new_event, new_event_from_json, utcnow
from shared.events.types import (
    ObservationRecorded,
    PredictionServed,
    Served,
    data_stream,
    prediction_stream,
)
from shared.store.port import Appended, EventStore
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)
# What a request leaves for the audit trail: task, prediction, learned_through, recorded, when.
_Served = tuple[str, Prediction, int | None, bool, datetime]
# Predictions per PredictionServed event: a few hundred keep a record near 100 KB (brokers take
# 1 MB) while the costs of an event (store row, relay, Kafka record, projection) are shared.
ROWS_PER_EVENT = 250


class PredictionRecorder:
    """Records served predictions as `PredictionServed` events, off the request path."""

    def __init__(
        self,
        store: EventStore,
        producer: Producer,
        *,
        interval: float = 0.2,
        batch: int = 500,
        high_water: int = 10_000,
        backlog: int = 100_000,
    ) -> None:
        self._store = store
        self._producer = producer
        self._interval = interval
        self._batch = batch
        self._high_water = high_water
        self._backlog = backlog
        self._appending = 0  # taken from the buffer by the flush in progress, not yet stored
        self._healthy = True  # the last append succeeded
        self._drained = asyncio.Event()  # set while fewer than high_water predictions wait
        self._drained.set()
        # Envelopes to retry, or what a request left: (task, prediction, learned_through,
        # recorded, when); the events are built in the background, off the request's path.
        self._buffer: list[Envelope | _Served] = []
        self._buffered = 0  # predictions in the buffer (an envelope holds many)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.recorded = 0
        self.dropped = 0

    def record(
        self,
        task: str,
        predictions: Sequence[Prediction],
        learned: Mapping[int, int | None],
        recorded: bool,
    ) -> None:
        """Queue answered predictions (and shadows' scores) for the audit trail; never waits.
        Rows no model answered are not recorded (log and wait stored them as observations)."""
        now = utcnow()
        before = len(self._buffer)
        self._buffer.extend(
            (task, p, learned.get(p.model_version), recorded, now)
            for p in predictions
            if p.answer is not None and p.model_version is not None
        )
        self._buffered += len(self._buffer) - before
        self._trim()
        if self._buffered >= self._batch:
            self._wake.set()
        self._update_drained()

    async def room(self) -> None:
        """Wait until fewer than `high_water` predictions wait to be recorded; returns at once
        while the store is failing or the recorder is not running (see the module's doc)."""
        while not self._drained.is_set() and self._healthy and self.alive:
            self._wake.set()
            # Bounded, so that a change of health (an append failing) is noticed while waiting.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout=1.0)

    def _trim(self) -> None:
        """Drop the oldest waiting predictions past `backlog` (only reachable while the store
        fails: otherwise requests wait at `high_water`)."""
        excess = self.waiting - self._backlog
        if excess <= 0:
            return
        dropped, oldest = 0, 0
        while dropped < excess and oldest < len(self._buffer):
            dropped += _size(self._buffer[oldest])
            oldest += 1
        del self._buffer[:oldest]
        self._buffered -= dropped
        self.dropped += dropped
        log.error("serving.predictions_dropped", count=dropped, total=self.dropped)

    def _update_drained(self) -> None:
        if self.waiting < self._high_water:
            self._drained.set()
        else:
            self._drained.clear()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        """Predictions not yet stored: in the buffer, or in the append in progress."""
        return self._buffered + self._appending

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="serving:recorder")

    async def close(self) -> None:
        """Stop the background task and flush what is left (once; failures are logged)."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
        if self._buffer:
            log.error("serving.predictions_unrecorded", count=self._buffered)

    async def _run(self) -> None:
        backoff = self._interval
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            ok = await self.flush()
            backoff = self._interval if ok else min(backoff * 2, 5.0)

    async def flush(self) -> bool:
        """Append everything waiting; what fails goes back to the buffer. True if all was stored."""
        if not self._buffer:
            return True
        taken, self._buffer = self._buffer, []
        self._appending, self._buffered = self._buffered, 0
        failed: list[Envelope] = []
        try:
            # Building events is CPU work: in a thread, so that requests go on meanwhile.
            # (Yielding to the event loop every few events instead starved the recorder on a
            # busy loop: each yield waited behind everything else, and its backlog grew.)
            streams = await asyncio.to_thread(self._by_stream, taken)
            for events in streams.values():
                for start in range(0, len(events), 20):
                    chunk = events[start : start + 20]
                    size = sum(_size(e) for e in chunk)
                    try:
                        await self._store.append(chunk)
                        self.recorded += size
                    except Exception as exc:  # noqa: BLE001 - kept and retried, never dropped here
                        log.warning("serving.record_failed", count=size, error=str(exc))
                        failed.extend(chunk)
                    self._appending -= size
                    self._update_drained()
        finally:
            self._appending = 0
        if failed:
            self._buffer[:0] = failed
            self._buffered += sum(_size(e) for e in failed)
            self._trim()
        self._healthy = not failed
        self._update_drained()
        return not failed

    def _by_stream(self, taken: Sequence[Envelope | _Served]) -> dict[str, list[Envelope]]:
        """What was taken, as events by stream: envelopes to retry as they are, and each task's
        new predictions in events of up to ROWS_PER_EVENT rows."""
        streams: dict[str, list[Envelope]] = defaultdict(list)
        rows: dict[str, list[tuple[datetime, dict[str, Any]]]] = defaultdict(list)
        when, text = None, ""  # a request's rows share one time: written once
        for item in taken:
            if isinstance(item, Envelope):
                streams[item.stream_id].append(item)
                continue
            task, p, learned_through, recorded, served_at = item
            if served_at is not when:
                when, text = served_at, rfc3339(served_at)
            rows[task].append((served_at, served_row(p, learned_through, recorded, text)))
        for task, served in rows.items():
            stream = prediction_stream(task)
            for start in range(0, len(served), ROWS_PER_EVENT):
                chunk = served[start : start + ROWS_PER_EVENT]
                streams[stream].append(
                    new_event_from_json(
                        PredictionServed,
                        {"task": task, "predictions": [row for _, row in chunk]},
                        stream_id=stream,
                        producer=self._producer,
                        occurred_at=chunk[-1][0],
                    )
                )
        return streams


def rfc3339(when: datetime) -> str:
    """A time as pydantic writes it in JSON (UTC as `Z`)."""
    return when.isoformat().replace("+00:00", "Z")


def served_row(
    p: Prediction, learned_through: int | None, recorded: bool, served_at: str
) -> dict[str, Any]:
    """A `ServedPrediction` in its JSON form (`served_at` written by `rfc3339`), built directly:
    validating and dumping each row through pydantic cost a flush about 3 ms of CPU per 540
    rows, holding the interpreter lock that requests wait for (tests/unit/test_recorder.py
    holds the two equal)."""
    row = {
        "prediction_id": str(p.prediction_id),
        "model_version": p.model_version,
        "entity_id": p.entity_id,
        "features": p.features,
        "probability": p.probability,
        "label": p.label,
        "online": p.online,
        "recorded": recorded,
        "learned_through": learned_through,
        "role": p.role,
        "served_at": served_at,
    }
    if p.probabilities is not None:  # a multiclass answer (the key is absent otherwise)
        row["probabilities"] = p.probabilities
    return row


def _size(item: Envelope | _Served) -> int:
    """Predictions in a buffered item: a request's row, or a built event's rows."""
    return len(item.payload["predictions"]) if isinstance(item, Envelope) else 1


class ObservationLog:
    """Appends log-and-wait observations before their answers go out, many requests per append."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._waiting: list[tuple[list[Envelope], asyncio.Future[list[Appended]]]] = []
        self._writing: asyncio.Task[None] | None = None
        self.appends = 0
        self.recorded = 0

    async def append(self, events: list[Envelope]) -> list[Appended]:
        """Store the events (one stream), sharing an append with concurrent callers; raises what
        the store raised if the append failed (nothing of this request is then stored)."""
        future: asyncio.Future[list[Appended]] = asyncio.get_running_loop().create_future()
        self._waiting.append((events, future))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write(), name="serving:observations")
        return await future

    async def _write(self) -> None:
        while self._waiting:
            taken, self._waiting = self._waiting, []
            by_stream: defaultdict[str, list[tuple[list[Envelope], asyncio.Future]]] = defaultdict(
                list
            )
            for events, future in taken:
                by_stream[events[0].stream_id].append((events, future))
            for requests in by_stream.values():
                batch = [e for events, _ in requests for e in events]
                try:
                    appended = await self._store.append(batch)
                except Exception as exc:  # noqa: BLE001 - handed to every caller in the batch
                    for _, future in requests:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.appends += 1
                self.recorded += len(batch)
                start = 0
                for events, future in requests:
                    if not future.done():
                        future.set_result(appended[start : start + len(events)])
                    start += len(events)


def observation_events(
    spec: TaskSpec,
    predictions: Sequence[Prediction],
    learned: Mapping[int, int | None],
    producer: Producer,
) -> list[Envelope]:
    """Log and wait: each served row as an observation, named by its prediction id, with the
    online-feature values it was given and what it was answered, by which model in which role
    (nothing before any model). `learned`: how far each model version had learned online. The
    row's pipeline version is that of the values it carries (a canary's may be another's)."""
    return [
        new_event(
            ObservationRecorded(
                task=spec.name,
                pipeline_version=p.pipeline_version or spec.version,
                entity_id=p.entity_id or "",
                features=p.features,
                online=p.online,
                served=None
                if p.model_version is None or p.answer is None
                else Served(
                    model_version=p.model_version,
                    probability=p.probability,
                    value=p.value,
                    probabilities=p.probabilities,
                    learned_through=learned.get(p.model_version),
                    role=p.role,
                ),
            ),
            stream_id=data_stream(spec.name),
            producer=producer,
            event_id=p.prediction_id,
        )
        for p in predictions
    ]
