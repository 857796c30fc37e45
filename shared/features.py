"""Online features: one pure, point-in-time-correct fold over a task's data events.

A task spec declares its online features (`shared.tasks.OnlineFeature`): label history (the last
label, a label mean, how many observations ago the newest known label was), counts, and a
feature's mean or deviation over recent observations, each per entity or per task. The trainer,
serving, governance and `continuo evaluate` all compute them with this one class, so the same
events in the same order give the same values, bit for bit.

Point in time: `values` reads the state as it is, before the row itself is folded in; a label
changes the state only once it is folded, so a label recorded after a prediction can never change
that prediction's inputs. Observation-derived features (`count`, `mean`, `deviation`) need no label
and are as fresh as the observations; label-derived ones are as old as the newest label known,
which is what `label_age` tells the model.

Memory: per scope (each entity, or the task), a few numbers and one short window per source
feature and per label mean. Observations awaiting their label are remembered (for `last_label` and
`label_age`, which follow observation order) up to `PENDING_LIMIT`, oldest forgotten first; this
limit is part of the definition, so every service forgets the same ones.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from shared.events.envelope import Envelope
from shared.events.types import LabelRecorded, ObservationRecorded
from shared.tasks import LABEL_KINDS, OnlineFeature, TaskSpec, feature_vector, fits

log = structlog.get_logger(__name__)

PENDING_LIMIT = 200_000
_LABEL_DEFAULT = 0.5  # before any label: no information either way
TASK_SCOPE = ""  # the key of the task-wide scope


@dataclass
class _Scope:
    """The history of one entity (or of the whole task) that the online features read."""

    count: int = 0  # observations folded
    labelled_seq: int = 0  # sequence number of the newest observation whose label is known
    last_label: float = 0.0
    labels: dict[int, deque[float]] = field(default_factory=dict)  # window -> recent labels
    values: dict[tuple[str, int], deque[float]] = field(default_factory=dict)  # (source, window)
    residuals: dict[int, deque[float]] = field(default_factory=dict)  # window -> label - served

    def copy(self) -> _Scope:
        return _Scope(
            self.count,
            self.labelled_seq,
            self.last_label,
            {w: deque(d, maxlen=d.maxlen) for w, d in self.labels.items()},
            {k: deque(d, maxlen=d.maxlen) for k, d in self.values.items()},
            {w: deque(d, maxlen=d.maxlen) for w, d in self.residuals.items()},
        )


def _mean(values: deque[float]) -> float:
    return sum(values) / len(values)


class OnlineFold:
    """The online features of one task, folded from its observations and labels in store order."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.features: tuple[OnlineFeature, ...] = spec.online_features
        self.names: tuple[str, ...] = spec.online_names
        self._scopes = {f.scope for f in self.features}
        self._entities: dict[str, _Scope] = {}
        self._task = _Scope()
        self._label_windows = {
            f.window for f in self.features if f.kind == "label_mean" and f.window is not None
        }
        self._residual_windows = {
            f.window for f in self.features if f.kind == "residual" and f.window is not None
        }
        self._value_windows = {
            (f.source, f.window)
            for f in self.features
            if f.source is not None and f.window is not None
        }
        self._uses_labels = any(f.kind in LABEL_KINDS for f in self.features)
        # Observation id -> (entity, its sequence number in the entity, in the task, the
        # probability serving answered it with, if it did).
        self._pending: OrderedDict[uuid.UUID, tuple[str, int, int, float | None]] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self.features)

    # ------------------------------------------------------------------------------ events

    def accepts(self, event: DataEvent) -> bool:
        """Whether the event fits this spec version: labels always do, an observation if it was
        recorded under it or carries every feature it reads, each value one it knows (a pipeline
        version started later learns the rows recorded before it); others are neither folded nor
        learned."""
        return (
            event.is_label
            or event.pipeline_version == self.spec.version
            or fits(self.spec, event.features or {})
        )

    def apply(self, event: DataEvent) -> list[float] | None:
        """Fold in one data event, in stream order; for an observation, return its online
        feature values: the ones it was served with, if it carries them, else computed now."""
        if not self.accepts(event):
            return None
        if event.is_label:
            assert event.observation_id is not None and event.label is not None
            self.label(event.observation_id, event.entity_id, event.label)
            return None
        features = event.features or {}
        # The values serving answered with are this fold's only under the same spec version (the
        # same names may be defined otherwise in another).
        recorded = event.online if event.pipeline_version == self.spec.version else None
        if recorded is not None and all(name in recorded for name in self.names):
            values = [float(recorded[name]) for name in self.names]
        else:
            values = self.values(event.entity_id, features)
        # A residual reads one number served (a multiclass answer has none; its spec has none).
        served = event.served if not isinstance(event.served, list) else None
        self.observe(event.event_id, event.entity_id, features, served=served)
        if event.label is not None:
            self.label(event.event_id, event.entity_id, event.label)
        return values

    # ------------------------------------------------------------------------------ reading

    def values(self, entity_id: str | None, features: Mapping[str, Any]) -> list[float]:
        """The online features of a row about to be predicted, from the state as it is now."""
        if not self.features:
            return []
        entity = self._entities.get(entity_id or "") if "entity" in self._scopes else None
        return self._read(entity, self._task, features)

    def preview(self, rows: Sequence[tuple[str | None, Mapping[str, Any]]]) -> list[list[float]]:
        """Values for a sequence of rows, each read as if the rows before it were folded in
        (a batch that will be recorded in this order); the fold itself does not change."""
        if not self.features:
            return [[] for _ in rows]
        if len(rows) == 1:
            return [self.values(*rows[0])]
        copies: dict[str, _Scope] = {}
        task = self._task.copy() if "task" in self._scopes else self._task
        out = []
        for entity_id, features in rows:
            entity = None
            if "entity" in self._scopes:
                key = entity_id or ""
                entity = copies.get(key)
                if entity is None:
                    found = self._entities.get(key)
                    entity = copies[key] = found.copy() if found is not None else _Scope()
            out.append(self._read(entity, task, features))
            self._observe_scopes(entity, task, features)
        return out

    def _read(
        self, entity: _Scope | None, task: _Scope, features: Mapping[str, Any]
    ) -> list[float]:
        out = []
        for f in self.features:
            scope = task if f.scope == "task" else (entity or _EMPTY)
            out.append(_value(f, scope, features))
        return out

    # ------------------------------------------------------------------------------ folding

    def observe(
        self,
        observation_id: uuid.UUID,
        entity_id: str,
        features: Mapping[str, Any],
        *,
        served: float | None = None,
    ) -> None:
        """Fold in an observation (after its own values were read); `served`: the probability
        serving answered it with, if it did."""
        if not self.features:
            return
        entity = self._entity(entity_id) if "entity" in self._scopes else None
        self._observe_scopes(entity, self._task, features)
        if self._uses_labels:
            self._pending[observation_id] = (
                entity_id,
                entity.count if entity is not None else 0,
                self._task.count,
                served,
            )
            while len(self._pending) > PENDING_LIMIT:
                self._pending.popitem(last=False)

    def label(self, observation_id: uuid.UUID, entity_id: str, label: float) -> None:
        """Fold in a label: from now on, predictions see it."""
        if not self._uses_labels:
            return
        pending = self._pending.pop(observation_id, None)
        entity_seq = task_seq = 0  # 0: the observation is not known here, only its label
        served = None
        if pending is not None:
            entity_id, entity_seq, task_seq, served = pending
        value = float(label)
        if "entity" in self._scopes:
            self._learn_label(self._entity(entity_id), entity_seq, value, served)
        if "task" in self._scopes:
            self._learn_label(self._task, task_seq, value, served)

    def _learn_label(self, scope: _Scope, seq: int, value: float, served: float | None) -> None:
        for w in self._label_windows:
            window = scope.labels.get(w)
            if window is None:
                window = scope.labels[w] = deque(maxlen=w)
            window.append(value)
        if served is not None:
            for w in self._residual_windows:
                window = scope.residuals.get(w)
                if window is None:
                    window = scope.residuals[w] = deque(maxlen=w)
                window.append(value - served)
        # last_label and label_age follow observation order: an older observation's late label
        # does not replace a newer one's (and a label whose observation is unknown here has no
        # place in that order).
        if seq and seq >= scope.labelled_seq:
            scope.labelled_seq = seq
            scope.last_label = value

    def _entity(self, entity_id: str) -> _Scope:
        scope = self._entities.get(entity_id)
        if scope is None:
            scope = self._entities[entity_id] = _Scope()
        return scope

    def _observe_scopes(
        self, entity: _Scope | None, task: _Scope, features: Mapping[str, Any]
    ) -> None:
        for scope in (entity, task if "task" in self._scopes else None):
            if scope is None:
                continue
            scope.count += 1
            for key in self._value_windows:
                value = features.get(key[0])
                if isinstance(value, int | float) and not isinstance(value, bool):
                    window = scope.values.get(key)
                    if window is None:
                        window = scope.values[key] = deque(maxlen=key[1])
                    window.append(float(value))

    @property
    def entities(self) -> int:
        return len(self._entities)


_EMPTY = _Scope()


def _value(f: OnlineFeature, scope: _Scope, features: Mapping[str, Any]) -> float:
    kind = f.kind
    if kind == "last_label":
        if scope.labelled_seq:
            return scope.last_label
        return _LABEL_DEFAULT if f.default is None else f.default
    if kind == "label_mean":
        window = scope.labels.get(f.window or 0)
        if window:
            return _mean(window)
        return _LABEL_DEFAULT if f.default is None else f.default
    if kind == "label_age":
        return float(scope.count - scope.labelled_seq)
    if kind == "residual":
        window = scope.residuals.get(f.window or 0)
        if window:
            return _mean(window)
        return 0.0 if f.default is None else f.default
    if kind == "count":
        return float(scope.count)
    assert f.source is not None and f.window is not None
    current = float(features[f.source])
    recent = scope.values.get((f.source, f.window))
    mean = _mean(recent) if recent else current
    return mean if kind == "mean" else current - mean


@dataclass(frozen=True, slots=True)
class DataEvent:
    """One stored data event of a task, decoded once: what the fold and the trainer read."""

    version: int  # its version in the task's data stream: the order events are applied in
    position: int  # its global store position (for lineage)
    event_id: uuid.UUID
    entity_id: str
    label: int | float | None  # a class index, or a regression's value
    # An observation's fields (None on a label event):
    features: Mapping[str, Any] | None = None
    pipeline_version: str | None = None
    online: Mapping[str, float] | None = None  # values it was served with (log and wait)
    # What it was answered (log and wait): P(class 1), a value, or the class probabilities.
    served: float | list[float] | None = None
    served_version: int | None = None  # by which model version
    served_role: str | None = None  # in which role (champion, canary)
    # A label event's observation:
    observation_id: uuid.UUID | None = None

    @property
    def is_label(self) -> bool:
        return self.observation_id is not None


def data_event(envelope: Envelope) -> DataEvent | None:
    """A stored ObservationRecorded or LabelRecorded as a DataEvent (None for other types).

    A stored event whose payload no longer validates (written before a bound was enforced, such
    as a row whose online values overflowed) is None too, logged with its id and the reason: the
    trainer, serving and governance all skip it alike (their folds stay equal), and it stays in
    the store; left to raise, it stopped every replay of the task at that row for good."""
    if envelope.type not in ("ObservationRecorded", "LabelRecorded"):
        return None
    if envelope.stream_version is None or envelope.position is None:
        raise ValueError(f"event {envelope.event_id} was never stored")
    try:
        data = envelope.data()
    except ValidationError as exc:
        log.warning(
            "features.undecodable_data_event",
            event_id=str(envelope.event_id),
            position=envelope.position,
            reason=exc.errors()[0]["msg"] if exc.errors() else str(exc),
        )
        return None
    if isinstance(data, LabelRecorded):
        return DataEvent(
            envelope.stream_version,
            envelope.position,
            envelope.event_id,
            data.entity_id,
            data.label,
            observation_id=data.observation_id,
        )
    assert isinstance(data, ObservationRecorded)
    return DataEvent(
        envelope.stream_version,
        envelope.position,
        envelope.event_id,
        data.entity_id,
        data.label,
        features=data.features,
        pipeline_version=data.pipeline_version,
        online=data.online,
        served=data.served.answer if data.served is not None else None,
        served_version=data.served.model_version if data.served is not None else None,
        served_role=data.served.role if data.served is not None else None,
    )


def model_inputs(
    spec: TaskSpec, features: Mapping[str, Any], online: Sequence[float]
) -> list[float]:
    """A row's model inputs: its model features (categories as indices), then its online
    feature values, in `spec.input_names` order."""
    return feature_vector(spec, features) + list(online)


def stored_inputs(spec: TaskSpec, events: Sequence[DataEvent]) -> dict[uuid.UUID, list[float]]:
    """Each observation's model inputs as the trainer learned it, from the task's data events
    in stream order (for audits and explanations of stored rows)."""
    fold = OnlineFold(spec)
    out: dict[uuid.UUID, list[float]] = {}
    for event in events:
        values = fold.apply(event)
        if values is not None and event.features is not None:
            out[event.event_id] = model_inputs(spec, event.features, values)
    return out
