"""The trainer's pure core: one task's stream of data events in, model candidates and facts out.

No Kafka, Faust or database here. The core is a deterministic function of the data events it is
given, in store order: the same events give the same predictions, the same models (same bytes) and
the same event ids. That is how a restarted trainer recovers: it replays the task's stored events
through a fresh core, and everything it emits again is a duplicate that the store ignores.

Prequential evaluation: an observation is predicted when it arrives; when its label comes (with it,
or later), the learner is scored on that earlier prediction and only then learns the row.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shared.events.envelope import Envelope
from shared.events.types import (
    ConfigSwitched,
    DriftDetected,
    LabelRecorded,
    ModelTrained,
    ObservationRecorded,
)
from shared.tasks import TaskSpec, feature_vector

_NAMESPACE = uuid.UUID("0c0471e0-7a1e-4e00-8000-000000000007")


class Learner(Protocol):
    """What the core needs of a learner (services.trainer.learner.OnlineLearner honours it)."""

    n_updates: int

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...
    def stream_vector(self) -> np.ndarray: ...
    def learn(
        self, X: np.ndarray, y: np.ndarray, proba: np.ndarray, seen: np.ndarray | None = None
    ) -> Any: ...
    def test_then_train(self, X: np.ndarray, y: np.ndarray) -> Any: ...
    def model_bytes(self) -> bytes: ...
    def champion_config(self) -> str: ...
    @property
    def metrics(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Candidate:
    """A model version ready to be stored: its bytes and the ModelTrained fact without the hash."""

    event_id: uuid.UUID
    model_bytes: bytes
    model_version: int
    parent_version: int | None
    config: str
    metrics: dict[str, float]
    first_position: int | None
    last_position: int
    n_learned: int
    n_learned_total: int

    def fact(
        self, task: str, pipeline_version: str, artifact_sha256: str, params: dict[str, Any]
    ) -> ModelTrained:
        return ModelTrained(
            task=task,
            model_version=self.model_version,
            parent_version=self.parent_version,
            pipeline_version=pipeline_version,
            artifact_sha256=artifact_sha256,
            config=self.config,
            params=params,
            metrics=self.metrics,
            first_position=self.first_position,
            last_position=self.last_position,
            n_learned=self.n_learned,
            n_learned_total=self.n_learned_total,
        )


@dataclass
class Output:
    """What one call to `TaskTraining.apply` produced, in order of occurrence."""

    candidates: list[Candidate] = field(default_factory=list)
    facts: list[tuple[uuid.UUID, DriftDetected | ConfigSwitched]] = field(default_factory=list)
    unmatched_labels: int = 0
    # Observations recorded under another version of the task's spec, not learned by this core.
    other_spec: int = 0


class Scorer(Protocol):
    """A served model, as far as shadow evaluation needs it."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass
class _Pending:
    """An observation awaiting its label: its input, what was predicted, and with what history."""

    x: list[float]
    proba: float
    seen: list[float]
    position: int


@dataclass
class _Row:
    x: list[float]
    y: int
    proba: float | None  # None: labelled on arrival, predicted as it is learned
    seen: list[float] | None
    position: int


class TaskTraining:
    """Prequential learning of one task from its data events, with fixed publish points."""

    def __init__(self, spec: TaskSpec, learner: Learner, *, pending_limit: int = 200_000) -> None:
        self.spec = spec
        self.learner = learner
        self.last_position = 0
        self.model_version = 0
        self.n_learned_total = 0
        self._since_publish = 0
        self._first_position: int | None = None
        self._last_learned_position = 0
        self._pending: OrderedDict[uuid.UUID, _Pending] = OrderedDict()
        self._pending_limit = pending_limit
        # Shadow evaluation: the served champion scored on the same labelled rows as the learner,
        # so a candidate is compared with the champion on identical events, not another window.
        self._champion: Scorer | None = None
        self.champion_version: int | None = None
        self._window: deque[tuple[bool, bool]] = deque(maxlen=spec.promotion.window)

    def set_champion(self, version: int, scorer: Scorer) -> None:
        """The model serving now answers with; shadow scores restart from here."""
        if version != self.champion_version:
            self._champion, self.champion_version = scorer, version
            self._window.clear()

    def apply(self, events: Sequence[Envelope]) -> Output:
        """Process data events in store order; events at or below `last_position` are skipped."""
        out = Output()
        segment: list[tuple[Envelope, Any]] = []
        kind = None
        for envelope in events:
            assert envelope.position is not None, "the core takes stored events only"
            if envelope.position <= self.last_position:
                continue
            self.last_position = envelope.position
            data = envelope.data()
            if isinstance(data, ObservationRecorded):
                if data.pipeline_version != self.spec.version:
                    # Recorded under another spec version: its features may not fit this one.
                    out.other_spec += 1
                    continue
                this = "labelled" if data.label is not None else "observed"
            elif isinstance(data, LabelRecorded):
                this = "label"
            else:
                continue
            if this != kind and segment:
                self._flush(kind, segment, out)
                segment = []
            kind = this
            segment.append((envelope, data))
        if segment:
            self._flush(kind, segment, out)
        return out

    def _flush(self, kind: str | None, segment: list[tuple[Envelope, Any]], out: Output) -> None:
        if kind == "observed":
            X = np.array([feature_vector(self.spec, d.features) for _, d in segment], dtype=float)
            proba = self.learner.predict_proba(X)
            seen = self.learner.stream_vector().tolist()
            for (envelope, _), x, p in zip(segment, X.tolist(), proba.tolist(), strict=True):
                self._remember(envelope.event_id, _Pending(x, p, seen, envelope.position or 0))
            return
        rows: list[_Row] = []
        if kind == "labelled":
            for envelope, d in segment:
                x = feature_vector(self.spec, d.features)
                rows.append(_Row(x, d.label, None, None, envelope.position or 0))
        else:
            for envelope, d in segment:
                pending = self._pending.pop(d.observation_id, None)
                if pending is None:
                    out.unmatched_labels += 1
                    continue
                rows.append(
                    _Row(pending.x, d.label, pending.proba, pending.seen, envelope.position or 0)
                )
        self._learn(rows, out)

    def _remember(self, observation_id: uuid.UUID, pending: _Pending) -> None:
        self._pending[observation_id] = pending
        while len(self._pending) > self._pending_limit:
            self._pending.popitem(last=False)  # oldest first: its label is the least likely to come

    def _learn(self, rows: list[_Row], out: Output) -> None:
        """Learn rows in chunks ending exactly at publish points, so versions are deterministic.

        Rows labelled on arrival are learned test-then-train (each predicted by the model as it
        was after the rows before it); late-labelled rows are scored on the prediction served
        before their label was known, and learned with the label history it was made with.
        """
        every = self.spec.learner.publish_every
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, every - self._since_publish)
            chunk = rows[start : start + take]
            start += take
            X = np.array([r.x for r in chunk], dtype=float)
            y = np.array([r.y for r in chunk], dtype=int)
            if chunk[0].proba is None:
                report = self.learner.test_then_train(X, y)
                proba = np.asarray(report.proba, dtype=float)
            else:
                proba = np.array([r.proba for r in chunk], dtype=float)
                seen = np.array([r.seen for r in chunk], dtype=float)
                report = self.learner.learn(X, y, proba, seen)
            self._shadow(X, y, proba)
            self._record(report, out)
            if self._first_position is None:
                self._first_position = chunk[0].position
            self._last_learned_position = chunk[-1].position
            self.n_learned_total += len(chunk)
            self._since_publish += len(chunk)
            if self._since_publish >= every:
                out.candidates.append(self._candidate())

    def _shadow(self, X: np.ndarray, y: np.ndarray, proba: np.ndarray) -> None:
        if self._champion is None:
            return
        champion = self._champion.predict_proba(X)
        self._window.extend(
            zip(((proba >= 0.5) == y).tolist(), ((champion >= 0.5) == y).tolist(), strict=True)
        )

    def comparison(self) -> dict[str, float]:
        """The learner's and the champion's accuracy on the same recent labelled rows."""
        if self._champion is None or not self._window:
            return {}
        n = len(self._window)
        return {
            "window_n": float(n),
            "window_accuracy": sum(ours for ours, _ in self._window) / n,
            "champion_version": float(self.champion_version or 0),
            "champion_window_accuracy": sum(theirs for _, theirs in self._window) / n,
        }

    def _record(self, report: Any, out: Output) -> None:
        task = self.spec.name
        for drift in getattr(report, "drifts", ()):
            fact = DriftDetected(
                task=task,
                detector=drift.detector,
                at_labelled=drift.at_labelled,
                model_version=self.model_version or None,
                evidence=dict(drift.evidence),
            )
            key = f"{task}/drift/{drift.detector}/{drift.at_labelled}"
            out.facts.append((uuid.uuid5(_NAMESPACE, key), fact))
        for switch in getattr(report, "switches", ()):
            switched = ConfigSwitched(
                task=task,
                from_config=switch.from_config,
                to_config=switch.to_config,
                at_labelled=switch.at_labelled,
                evidence=dict(switch.evidence),
            )
            key = f"{task}/switch/{switch.at_labelled}/{switch.to_config}"
            out.facts.append((uuid.uuid5(_NAMESPACE, key), switched))

    def _candidate(self) -> Candidate:
        parent = self.model_version or None
        self.model_version += 1
        learned, self._since_publish = self._since_publish, 0
        version = self.model_version
        return Candidate(
            event_id=uuid.uuid5(
                _NAMESPACE, f"{self.spec.name}/{self.spec.version}/model/{version}"
            ),
            model_bytes=self.learner.model_bytes(),
            model_version=version,
            parent_version=parent,
            config=self.learner.champion_config(),
            metrics={**{k: float(v) for k, v in self.learner.metrics.items()}, **self.comparison()},
            first_position=self._first_position,
            last_position=self._last_learned_position,
            n_learned=learned,
            n_learned_total=self.n_learned_total,
        )
