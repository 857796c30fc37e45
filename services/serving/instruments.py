"""Serving's Prometheus instruments (docs/metrics.md): predictions served, their latency, the
recorder's backlog and drops, and freshness.

The predict path is hot (about a millisecond a request): its label-bound children are cached by
label values, so a request costs a count per row, a lookup and an increment per arm that answered,
and one histogram observation.

Freshness is the time from a label's acceptance (its event's `recorded_at`, stamped by ingest's
store append) to the first answer by a model that had learned it. Serving's models learn every
label their task's fold learns, online, as the fold applies it (services/serving/online.py), and
a model's `learned_through` is the data stream version of the last row it learned. So: each row
the fold learns is queued with its version and acceptance time; when the task answers with models
that had learned through version v (the champion's, or the least of champion and canary while a
canary runs), every queued label up to v is observed, now minus its acceptance, and dropped. The
cost is per label learned, never per prediction beyond one lookup. Left out: labels the fold
applied while it was built from the store (a replica starting: their age is the replica's, not
the system's), and a task's oldest labels past `FRESHNESS_QUEUE` while it has no model to answer.
Ingest's clock stamps a label and serving's reads the answer's time: across hosts, their skew is
in the figure.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import FollowedTotal, Refresh

if TYPE_CHECKING:
    from services.serving.models import Prediction
    from services.serving.recorder import PredictionRecorder

# Labels queued per task for freshness; past it, the oldest are dropped unobserved.
FRESHNESS_QUEUE = 10_000

PREDICTIONS_SERVED = Counter(
    "continuo_predictions_served_total",
    "Rows answered, by the model version and role (champion, canary) that answered them",
    ["task", "model_version", "role"],
)
PREDICT_DURATION = Histogram(
    "continuo_predict_duration_seconds",
    "Predict requests answered (200), from the route's start (body parsed) to the answer encoded",
    ["task"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LABEL_FRESHNESS = Histogram(
    "continuo_label_freshness_seconds",
    "From a label's acceptance by ingest to serving's first answer by a model that had learned it",
    ["task"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
RECORDER_WAITING = Gauge(
    "continuo_recorder_waiting_predictions",
    "Predictions answered and waiting to be recorded in the audit trail (the recorder's backlog)",
)
PREDICTIONS_DROPPED = Counter(
    "continuo_predictions_dropped_total",
    "Predictions dropped from the audit trail: past the backlog's bound while the store failed",
)

_served: dict[tuple[str, int, str], Any] = {}
_durations: dict[str, Any] = {}


def answered(task: str, predictions: Sequence[Prediction], seconds: float) -> None:
    """A predict request answered: its rows by model version and role, and its duration."""
    arms: dict[tuple[int, str], int] = {}
    for p in predictions:
        if p.model_version is not None:
            arm = (p.model_version, p.role)
            arms[arm] = arms.get(arm, 0) + 1
    for (version, role), rows in arms.items():
        child = _served.get((task, version, role))
        if child is None:
            child = _served[(task, version, role)] = PREDICTIONS_SERVED.labels(
                task, str(version), role
            )
        child.inc(rows)
    duration = _durations.get(task)
    if duration is None:
        duration = _durations[task] = PREDICT_DURATION.labels(task)
    duration.observe(seconds)


class Freshness:
    """Labels learned and not yet answered with, per task (see the module's docstring)."""

    def __init__(
        self,
        observe: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.time,
        limit: int = FRESHNESS_QUEUE,
    ) -> None:
        self._observe = observe or _observe_freshness
        self._clock = clock
        self._limit = limit
        self._waiting: dict[str, deque[tuple[int, float]]] = {}

    def learned(self, task: str, labels: Iterable[tuple[int, float]]) -> None:
        """Rows the task's models have just learned: (data stream version, accepted at, in unix
        seconds), in stream order."""
        queue = self._waiting.get(task)
        if queue is None:
            queue = self._waiting[task] = deque(maxlen=self._limit)
        queue.extend(labels)

    def answered(self, task: str, learned_through: int | None) -> None:
        """The task answered with models that had learned through this version (None: models
        that do not learn, nothing observed)."""
        queue = self._waiting.get(task)
        if not queue or learned_through is None:
            return
        now = self._clock()
        while queue and queue[0][0] <= learned_through:
            self._observe(task, now - queue.popleft()[1])


_freshness: dict[str, Any] = {}


def _observe_freshness(task: str, seconds: float) -> None:
    child = _freshness.get(task)
    if child is None:
        child = _freshness[task] = LABEL_FRESHNESS.labels(task)
    child.observe(seconds)


def recorder_metrics(recorder: Callable[[], PredictionRecorder | None]) -> Refresh:
    """The recorder's backlog and drops, read at each scrape."""
    dropped = FollowedTotal(PREDICTIONS_DROPPED)

    async def refresh() -> None:
        current = recorder()
        if current is not None:
            RECORDER_WAITING.set(current.waiting)
            dropped.follow(current.dropped)

    return refresh
