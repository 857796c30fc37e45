"""Which model serves each task, and how a batch of records becomes predictions. No I/O here.

`ModelTable` follows the deployment events (`ModelPromoted`, `ModelRolledBack`) and the task specs
(`TaskRegistered`). Each task's deployment stream numbers its decisions, so an event whose stream
version is not newer than the one already applied is a no-op: replays, duplicates and the overlap
between the start-up load from the store and the Kafka subscription are all harmless.

Swapping a model replaces one reference in a copy-on-write mapping. A request takes its `Champion`
once and predicts with it to the end, so a swap never changes a model under a request in flight.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from shared.events.envelope import Envelope
from shared.events.types import (
    ModelPromoted,
    ModelRolledBack,
    TaskRegistered,
    deployment_stream,
    task_stream,
)
from shared.features import model_inputs
from shared.tasks import RecordError, TaskSpec, validate_features

# Probability of class 1 at or above which the predicted label is class 1.
THRESHOLD = 0.5


class Predictor(Protocol):
    """What serving needs of a decoded model (shared.model_codec's predictor honours it)."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) for each row of X."""
        ...


# Loads and decodes the artifact stored under a sha256 (I/O; injected by the app).
PredictorLoader = Callable[[str], Predictor]
# Brings a newly loaded model up to the labels after its version (injected by the app).
Warmer = Callable[[str, Predictor], None]


@dataclass(frozen=True, slots=True)
class Champion:
    """The model serving a task, with the spec its inputs are validated against."""

    task: str
    model_version: int
    artifact_sha256: str
    predictor: Predictor
    # The task's spec when the model was promoted: a later spec version applies to later models.
    spec: TaskSpec
    promoted_at: datetime
    # Position of the deciding event in the task's deployment stream.
    stream_version: int


class UnknownTask(LookupError):
    """No task of that name is registered."""


class NoChampion(LookupError):
    """The task is registered but has no model to serve yet."""


class Outcome(StrEnum):
    """What `ModelTable.apply` did with an event."""

    APPLIED = "applied"
    STALE = "stale"  # not newer than what the table already holds
    PENDING = "pending"  # a promotion for a task whose spec is not known yet: kept for later
    IGNORED = "ignored"  # not an event the table follows


class ModelTable:
    """The champion of every task, kept current by deployment and task events.

    `apply` may be called from one thread at a time (it takes a lock); readers never lock. A
    caller may load a promotion's model beforehand (`to_load`, `load`: slow, off the event loop)
    and pass it to `apply`; `warm` runs on a new model just before it starts serving.
    """

    def __init__(self, load: PredictorLoader, warm: Warmer | None = None) -> None:
        self._load = load
        self._warm = warm
        self._lock = threading.Lock()
        self._specs: Mapping[str, TaskSpec] = {}
        self._spec_versions: dict[str, int] = {}
        self._champions: Mapping[str, Champion] = {}
        self._deployed: dict[str, int] = {}
        self._pending: dict[str, Envelope] = {}

    def champion(self, task: str) -> Champion | None:
        return self._champions.get(task)

    def spec(self, task: str) -> TaskSpec | None:
        return self._specs.get(task)

    def tasks(self) -> list[str]:
        """Every registered task, by name."""
        return sorted(self._specs)

    def serving(self, task: str) -> Champion:
        """The champion a request for `task` uses; raises UnknownTask or NoChampion."""
        champion = self._champions.get(task)
        if champion is not None:
            return champion
        if task not in self._specs:
            raise UnknownTask(f"unknown task {task!r}")
        raise NoChampion(f"task {task!r} has no promoted model yet")

    def deployed_version(self, task: str) -> int:
        """The deployment stream version last applied for a task (0: none)."""
        return self._deployed.get(task, 0)

    def to_load(self, envelope: Envelope) -> str | None:
        """The artifact `apply` would have to load for this event (None: nothing to load)."""
        if envelope.type not in ("ModelPromoted", "ModelRolledBack"):
            return None
        digest = str(envelope.payload.get("artifact_sha256"))
        current = self._champions.get(str(envelope.payload.get("task")))
        return None if current is not None and current.artifact_sha256 == digest else digest

    def load(self, digest: str) -> Predictor:
        return self._load(digest)

    def apply(self, envelope: Envelope, loaded: Predictor | None = None) -> Outcome:
        """Follow one stored event; a loader error propagates and leaves the table unchanged.
        `loaded`: the event's model, loaded beforehand."""
        if envelope.type not in ("ModelPromoted", "ModelRolledBack", "TaskRegistered"):
            return Outcome.IGNORED
        if envelope.stream_version is None:
            raise ValueError(
                f"event {envelope.event_id} was never stored: it has no stream version"
            )
        with self._lock:
            if envelope.type == "TaskRegistered":
                return self._register(envelope)
            return self._deploy(envelope, loaded)

    def _register(self, envelope: Envelope) -> Outcome:
        data = envelope.data()
        assert isinstance(data, TaskRegistered)
        if envelope.stream_id != task_stream(data.task):
            return Outcome.IGNORED
        assert envelope.stream_version is not None
        if envelope.stream_version <= self._spec_versions.get(data.task, 0):
            return Outcome.STALE
        spec = TaskSpec.model_validate(data.spec)
        self._spec_versions[data.task] = envelope.stream_version
        self._specs = {**self._specs, data.task: spec}
        if (pending := self._pending.get(data.task)) is not None:
            self._deploy(pending)  # if loading fails, the promotion stays pending
        return Outcome.APPLIED

    def _deploy(self, envelope: Envelope, loaded: Predictor | None = None) -> Outcome:
        data = envelope.data()
        assert isinstance(data, ModelPromoted | ModelRolledBack)
        version = envelope.stream_version
        assert version is not None
        if envelope.stream_id != deployment_stream(data.task):
            return Outcome.IGNORED
        if version <= self._deployed.get(data.task, 0):
            return Outcome.STALE
        spec = self._specs.get(data.task)
        if spec is None:
            held = self._pending.get(data.task)
            if held is None or (held.stream_version or 0) < version:
                self._pending[data.task] = envelope
            return Outcome.PENDING
        current = self._champions.get(data.task)
        if current is not None and current.artifact_sha256 == data.artifact_sha256:
            predictor = current.predictor  # the same model, as it has learned since
        else:
            predictor = loaded if loaded is not None else self._load(data.artifact_sha256)
            if self._warm is not None:
                self._warm(data.task, predictor)
        self._swap(
            Champion(
                task=data.task,
                model_version=data.model_version,
                artifact_sha256=data.artifact_sha256,
                predictor=predictor,
                spec=spec,
                promoted_at=envelope.occurred_at,
                stream_version=version,
            )
        )
        self._deployed[data.task] = version
        self._pending.pop(data.task, None)
        return Outcome.APPLIED

    def _swap(self, champion: Champion) -> None:
        # One reference replaced: readers see the old mapping or the new one, never a mix.
        self._champions = {**self._champions, champion.task: champion}


def newest_deployment(events: Sequence[Envelope]) -> Envelope | None:
    """The deciding event of a deployment stream: its newest promotion or rollback."""
    deciding = [e for e in events if e.type in ("ModelPromoted", "ModelRolledBack")]
    return max(deciding, key=lambda e: e.stream_version or 0, default=None)


class InvalidRecords(ValueError):
    """Some records of a request do not fit the task's spec; `errors` maps index to reason."""

    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__("; ".join(f"record {i}: {reason}" for i, reason in errors.items()))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Prediction:
    prediction_id: uuid.UUID
    entity_id: str | None
    features: dict[str, Any]
    online: dict[str, float]  # the online-feature values the model was given
    probability: float | None  # None: no model yet (a recorded row before the first model)
    label: Any


def validate_records(spec: TaskSpec, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every record's features checked and coerced; raises InvalidRecords naming each bad one."""
    valid: list[dict[str, Any]] = []
    errors: dict[int, str] = {}
    for index, features in enumerate(records):
        try:
            valid.append(validate_features(spec, features))
        except RecordError as exc:
            errors[index] = str(exc)
    if errors:
        raise InvalidRecords(errors)
    return valid


def predict(
    predictor: Predictor,
    spec: TaskSpec,
    rows: Sequence[dict[str, Any]],
    entity_ids: Sequence[str | None],
    online: Sequence[Sequence[float]],
) -> list[Prediction]:
    """Predict validated rows with one model, given each row's online-feature values (in
    `spec.online_names` order); the label is the class at `THRESHOLD`."""
    if not rows:
        return []
    X = np.asarray(
        [model_inputs(spec, row, values) for row, values in zip(rows, online, strict=True)],
        dtype=np.float64,
    )
    probabilities = np.asarray(predictor.predict_proba(X), dtype=np.float64).reshape(-1)
    negative, positive = spec.target.classes
    names = spec.online_names
    return [
        Prediction(
            prediction_id=uuid.uuid4(),
            entity_id=entity_id,
            features=row,
            online=dict(zip(names, values, strict=True)),
            probability=float(p),
            label=positive if p >= THRESHOLD else negative,
        )
        for row, entity_id, values, p in zip(rows, entity_ids, online, probabilities, strict=True)
    ]


def unanswered(
    spec: TaskSpec,
    rows: Sequence[dict[str, Any]],
    entity_ids: Sequence[str | None],
    online: Sequence[Sequence[float]],
) -> list[Prediction]:
    """Rows recorded before the task has any model: ids to label them by, and no answer."""
    names = spec.online_names
    return [
        Prediction(uuid.uuid4(), entity_id, row, dict(zip(names, values, strict=True)), None, None)
        for row, entity_id, values in zip(rows, entity_ids, online, strict=True)
    ]
