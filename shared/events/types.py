"""Every event type Continuo records, with its stream and topic. See docs/events.md.

Streams group the events of one aggregate in order (the store numbers them); topics are where the
relay publishes them, keyed by task so that one task's events keep their order in one partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.events.envelope import Payload, event_type, upcaster

# Kafka topics. Observations and labels share one topic so a task's data arrives in store order.
TOPIC_TASKS = "continuo.tasks"
TOPIC_DATA = "continuo.data"
TOPIC_MODELS = "continuo.models"
TOPIC_DEPLOYMENTS = "continuo.deployments"
TOPIC_GOVERNANCE = "continuo.governance"
TOPIC_DEAD_LETTER = "continuo.dead-letter"
# One marker record that names the broker's life (shared/broker_epoch.py): no events.
TOPIC_EPOCH = "continuo.broker-epoch"
ALL_TOPICS = (
    TOPIC_TASKS,
    TOPIC_DATA,
    TOPIC_MODELS,
    TOPIC_DEPLOYMENTS,
    TOPIC_GOVERNANCE,
    TOPIC_DEAD_LETTER,
    TOPIC_EPOCH,
)


def task_stream(task: str) -> str:
    return f"task-{task}"


def data_stream(task: str) -> str:
    return f"data-{task}"


def model_stream(task: str) -> str:
    """Model versions of a task: stream version N is model version N (unique in the store)."""
    return f"models-{task}"


def deployment_stream(task: str) -> str:
    return f"deployments-{task}"


def governance_stream(task: str) -> str:
    return f"governance-{task}"


def snapshot_stream(task: str) -> str:
    """The trainer's snapshots of a task (services/trainer/snapshots.py), newest last."""
    return f"snapshots-{task}"


def prediction_stream(task: str) -> str:
    """Predictions served for a task (recorded by serving, in batches)."""
    return f"predictions-{task}"


@event_type("TaskRegistered")
class TaskRegistered(Payload):
    """A task spec version was registered; `version` is the spec's content hash. Registered
    through governance, it names who and why (ingest's, from the tasks directory, neither)."""

    task: str
    version: str
    spec: dict[str, Any]
    registered_by: str | None = None
    reason: str | None = None


class Served(BaseModel):
    """What serving answered for a row it recorded as an observation (log and wait)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_version: int
    probability: float | None = None  # P(class 1) of a binary task
    # A regression's answer; left out of a binary row's payload (readers from before it, whose
    # model forbids unknown fields, still read those rows).
    value: float | None = Field(None, exclude_if=lambda v: v is None)
    # A multiclass task's answer: P(each class), in the spec's class order (left out as `value`).
    probabilities: list[float] | None = Field(None, exclude_if=lambda v: v is None)
    # The data stream version through which the model had learned when it answered (its
    # online parts go on learning after it is published); None: as published.
    learned_through: int | None = None
    role: str = "champion"  # or "canary", for the canary's share of entities

    @model_validator(mode="after")
    def _one_answer(self) -> Served:
        given = [a for a in (self.probability, self.value, self.probabilities) if a is not None]
        if len(given) != 1:
            raise ValueError(
                "served: exactly one of probability (binary), value (regression) and "
                "probabilities (multiclass)"
            )
        return self

    @property
    def answer(self) -> float | list[float]:
        """What was answered: P(class 1), the value of a regression, or a multiclass task's
        class probabilities."""
        if self.probabilities is not None:
            return self.probabilities
        return self.probability if self.probability is not None else cast(float, self.value)


@event_type("ObservationRecorded", version=2)
class ObservationRecorded(Payload):
    """Features of one entity at one time, optionally with its label (a binary task's class
    index, or a regression's value).

    A row recorded by serving (log and wait) carries the online-feature values it was predicted
    with (`online`, by name) and what it was answered (`served`); its event id is the prediction
    id, so its label can name either. Rows from ingest carry neither: whoever needs their online
    features computes them from the events before them (shared.features).
    """

    task: str
    pipeline_version: str
    entity_id: str
    features: dict[str, Any]
    label: int | float | None = None
    online: dict[str, float] | None = None
    served: Served | None = None


@upcaster("ObservationRecorded", from_version=1)
def _observation_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 had no log and wait: no online-feature values, nothing served."""
    return {**payload, "online": None, "served": None}


@event_type("LabelRecorded")
class LabelRecorded(Payload):
    """The (late) label of an earlier observation: a class index, or a regression's value."""

    task: str
    observation_id: uuid.UUID
    entity_id: str
    label: int | float


@event_type("ModelTrained", version=2)
class ModelTrained(Payload):
    """A model version with its lineage: what it learned from, under which spec, how well.

    `role`: a `candidate` to replace the champion (the usual), a `challenger` the trainer
    published after a drift, or an `entrant`: the runner-up configuration of the trainer's race
    (published when the policy runs entrants); the last two run as live shadows
    beside the champion."""

    task: str
    model_version: int
    parent_version: int | None
    pipeline_version: str
    artifact_sha256: str
    config: str
    params: dict[str, Any]
    metrics: dict[str, float]
    first_position: int | None
    last_position: int
    n_learned: int
    n_learned_total: int
    role: str = "candidate"


@upcaster("ModelTrained", from_version=1)
def _model_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 models were all candidates (there were no challengers)."""
    return {**payload, "role": "candidate"}


@event_type("TrainerSnapshotted")
class TrainerSnapshotted(Payload):
    """The trainer's state for a task as of data stream version `data_version`, filed as an
    artifact: a restart loads it and replays only the data events after it.

    Only the trainer build that wrote it reads it (`build`: a digest of the trainer's code and
    the libraries it pickles), under the same spec version; any other replays from the start."""

    task: str
    pipeline_version: str
    build: str
    data_version: int
    last_position: int
    model_version: int
    n_learned_total: int
    artifact_sha256: str
    size_bytes: int


@event_type("DriftDetected")
class DriftDetected(Payload):
    """A detector saw the prequential error change; on a rise (`evidence["rise"]`) the learner
    adapted (and a challenger starts), on a fall (ADWIN sees both) nothing is done."""

    task: str
    detector: str
    at_labelled: int
    model_version: int | None
    evidence: dict[str, Any] = Field(default_factory=dict)


def drift_summary(detector: str, evidence: Mapping[str, Any]) -> str:
    """What a drift detector saw, in words (a `DriftDetected` payload's, as JSON gives it back):
    `adwin, error 0.480 -> 0.100: a fall, nothing to adapt`."""
    seen = detector
    if "error_before" in evidence and "error_after" in evidence:
        seen += f", error {evidence['error_before']:.3f} -> {evidence['error_after']:.3f}"
    if "rise" in evidence:
        rise = evidence["rise"]
        seen += ": a rise, the learner adapts" if rise else ": a fall, nothing to adapt"
    return seen


@event_type("ConfigSwitched")
class ConfigSwitched(Payload):
    """The racing population chose another configuration as champion candidate."""

    task: str
    from_config: str
    to_config: str
    at_labelled: int
    evidence: dict[str, Any] = Field(default_factory=dict)


@event_type("ConfigDropped")
class ConfigDropped(Payload):
    """The trainer's search (successive halving) took a configuration out of its race: the one
    with the lowest recent accuracy among those it searches, never the champion. `evidence`:
    the recent accuracy of every configuration racing until then, and the rows the survivors get
    before the next drop (`next_budget_rows`, 0: the search is over)."""

    task: str
    config: str
    at_labelled: int
    evidence: dict[str, Any] = Field(default_factory=dict)


@event_type("ConfigChosen", version=2)
class ConfigChosen(Payload):
    """Governance's decision calls for another of the race's configurations than the one the
    trainer's race may have as champion: it promoted an `entrant`, or it rolled back (`rollback`)
    to a model the trainer made. From here on the race runs the configuration of the model serving
    answers with (if the race has it; the same configuration changes nothing). `decided_at`: the
    decision's version in the task's deployment stream (null in events of schema version 1).

    Recorded in the task's data stream, between the rows, so that the trainer (and any replay)
    applies it at the same place in the stream: the models after it are the same bytes however
    often the stream is replayed. Applies to the trainer's core of `pipeline_version` only."""

    task: str
    pipeline_version: str
    config: str
    model_version: int  # the promoted entrant, or the version rolled back to
    reason: str
    decided_at: int | None = None
    rollback: bool = False


@upcaster("ConfigChosen", from_version=1)
def _config_chosen_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 was recorded only for promoted entrants, keyed by their version."""
    return {**data, "decided_at": None, "rollback": False}


@event_type("PipelineChosen")
class PipelineChosen(Payload):
    """The trainer trains the task with pipeline (spec) version `pipeline_version` from here on:
    governance started that pipeline (`PipelineStarted`), or promoted or rolled back to a model
    of it. The trainer's new learner first learns the data events after `from_version` up to
    this event (a replay from the store: it catches up), then every row after it.

    Recorded by the trainer in the task's data stream, between the rows, like ConfigChosen: any
    replay switches at the same place and makes the same models. `decided_at`: the decision's
    version in the task's deployment stream (its id is derived from it)."""

    task: str
    pipeline_version: str
    from_version: int
    reason: str
    decided_at: int


@event_type("PipelineStarted")
class PipelineStarted(Payload):
    """A person decided that the task's trainer runs another registered pipeline (spec)
    version, caught up by replaying the data stream after `from_version`; the models serving
    answers with change only when one of the new pipeline's is promoted."""

    task: str
    pipeline_version: str
    previous_version: str | None
    from_version: int
    reason: str
    decided_by: str


@event_type("ModelPromoted")
class ModelPromoted(Payload):
    """A model version became the task's champion (served to users). `pipeline_version`: the
    spec version whose inputs it takes (null in events recorded before pipelines were named:
    the task's spec)."""

    task: str
    model_version: int
    artifact_sha256: str
    previous_version: int | None
    reason: str
    decided_by: str
    pipeline_version: str | None = None


@event_type("PromotionRefused")
class PromotionRefused(Payload):
    """A model version was not promoted; every reason is kept."""

    task: str
    model_version: int
    reasons: list[str]
    decided_by: str


@event_type("ModelRolledBack")
class ModelRolledBack(Payload):
    """The champion was set back to an earlier version."""

    task: str
    model_version: int
    artifact_sha256: str
    from_version: int | None
    reason: str
    decided_by: str
    pipeline_version: str | None = None


class ServedPrediction(BaseModel):
    """One prediction serving returned to a caller (or a shadow scored): by which model version,
    for which input, when.

    `online` holds the online-feature values the model was given; `recorded` says the row was
    also recorded as an observation (log and wait; the observation's id is the prediction id);
    `learned_through` how far the model's online parts had learned since it was published.
    """

    model_config = ConfigDict(extra="forbid")

    prediction_id: uuid.UUID
    model_version: int
    entity_id: str | None
    features: dict[str, Any]
    probability: float | None  # P(class 1); None for a regression, whose `label` is its value
    label: Any
    # A multiclass answer: P(each class) in the spec's class order; left out of other rows.
    probabilities: list[float] | None = Field(None, exclude_if=lambda v: v is None)
    online: dict[str, float] = Field(default_factory=dict)
    recorded: bool = False
    # The data stream version through which the model had learned (see Served).
    learned_through: int | None = None
    role: str = "champion"  # "canary", or "shadow": scored beside the answer, never returned
    served_at: datetime | None = None  # None: the event's occurred_at (v2 events)


@event_type("PredictionServed", version=3)
class PredictionServed(Payload):
    """Predictions serving returned to callers (and shadows' scores of the same rows), recorded
    together: one event holds what one task's recorder flushed, up to a few hundred rows.

    (v2 held one prediction per event; storing, relaying and projecting each one as an event of
    its own cost serving more CPU than answering it. A v2 event reads as a v3 event of one row.)
    """

    task: str
    predictions: list[ServedPrediction] = Field(min_length=1)

    @classmethod
    def one(cls, task: str, **prediction: Any) -> PredictionServed:
        """An event of a single prediction (`ServedPrediction`'s fields)."""
        return cls(task=task, predictions=[ServedPrediction(**prediction)])


@upcaster("PredictionServed", from_version=1)
def _prediction_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 predictions used no online features, were never recorded as observations, and came
    from models as published."""
    return {
        **payload,
        "online": {},
        "recorded": False,
        "learned_through": None,
        "role": "champion",
    }


@upcaster("PredictionServed", from_version=2)
def _prediction_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v2 held one prediction per event."""
    row = {k: v for k, v in payload.items() if k != "task"}
    return {"task": payload["task"], "predictions": [row]}


@event_type("AuditCompleted")
class AuditCompleted(Payload):
    """A bias audit of a model version: a candidate on labelled data, or the champion live.

    `report` is services.governance.audit.AuditReport as a dict; `window` says what was audited
    (positions, rows, and for `live` audits which metrics could not be computed without outcomes).
    """

    task: str
    model_version: int
    scope: str  # "candidate" | "live"
    window: dict[str, Any]
    report: dict[str, Any]
    passed: bool
    reasons: list[str]


@event_type("ApprovalRequested")
class ApprovalRequested(Payload):
    """A model version passed the automatic checks and waits for human approvals."""

    task: str
    model_version: int
    approvals_required: int
    reasons: list[str]
    decided_by: str


@event_type("ApprovalGranted")
class ApprovalGranted(Payload):
    """A person approved a model version for promotion."""

    task: str
    model_version: int
    by: str
    reason: str


@event_type("ApprovalRejected")
class ApprovalRejected(Payload):
    """A person rejected a model version: it will not be promoted automatically."""

    task: str
    model_version: int
    by: str
    reason: str


@event_type("CanaryStarted")
class CanaryStarted(Payload):
    """A model version answers `weight` percent of the task's entities (sticky by entity)."""

    task: str
    model_version: int
    artifact_sha256: str
    weight: float
    reason: str
    decided_by: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    pipeline_version: str | None = None  # as in ModelPromoted


@event_type("CanaryWeightChanged")
class CanaryWeightChanged(Payload):
    """The canary's share of entities changed."""

    task: str
    model_version: int
    weight: float
    reason: str
    decided_by: str


@event_type("CanaryEnded")
class CanaryEnded(Payload):
    """The canary stopped answering: promoted (a ModelPromoted follows), rolled back, stopped by a
    person, or inconclusive; with the evidence it was decided on."""

    task: str
    model_version: int
    # "promoted" | "rolled_back" | "stopped" | "inconclusive" | "superseded" (a challenger's,
    # by one of a later drift) | "replaced" (by the same challenger's newer version)
    outcome: str
    reason: str
    decided_by: str
    evidence: dict[str, Any] = Field(default_factory=dict)


@event_type("ShadowStarted")
class ShadowStarted(Payload):
    """A model version scores a `sample_rate` share of requests beside the champion, recorded
    with its role, never returned."""

    task: str
    model_version: int
    artifact_sha256: str
    sample_rate: float
    reason: str
    decided_by: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    pipeline_version: str | None = None  # as in ModelPromoted


@event_type("ShadowStopped")
class ShadowStopped(Payload):
    """A shadow stopped scoring (it became the canary, lost, or a person stopped it)."""

    task: str
    model_version: int
    # "canary" | "refused" (its audit) | "lost" | "stopped" | "inconclusive" | "superseded" (a
    # challenger's, by one of a later drift) | "replaced" (by the same challenger's newer version)
    outcome: str
    reason: str
    decided_by: str
    evidence: dict[str, Any] = Field(default_factory=dict)


@event_type("FlagChanged")
class FlagChanged(Payload):
    """A task's feature flag was set (`flag`: shared.deployments.Flag as a dict) or removed."""

    task: str
    key: str
    flag: dict[str, Any] | None
    reason: str
    decided_by: str


@event_type("ArmsScored")
class ArmsScored(Payload):
    """What the trainer measured of the champion, the canary and the shadows on labelled rows
    since each started (the evidence governance's canary analysis decides on)."""

    task: str
    champion_version: int | None
    canary: dict[str, Any] | None  # {model_version, champion: {n, correct, log_loss}, canary: ...}
    shadows: list[dict[str, Any]] = Field(default_factory=list)  # paired with the champion
    at_labelled: int


@event_type("ServedScored")
class ServedScored(Payload):
    """Served accuracy over one window of labelled rows that serving answered and recorded (log
    and wait): for each model version and role (champion, canary: serving's recorded answers;
    shadows: the trainer's copy of each shadow, scoring the row on arrival with serving's inputs),
    how many of those rows it answered and how many it got right (a regression: the sum of its
    absolute errors, `abs_error`, instead). One per `window` such rows, in the order the trainer
    learned their labels; `to_position` is the store position of the last label in the window.
    What the caller got, measured on the labels that came later."""

    task: str
    window: int  # labelled served rows per window
    n_windows: int  # this window's number, 1, 2, ... (names the fact)
    to_position: int
    arms: list[dict[str, Any]]  # [{model_version, role, n, correct | abs_error}]


@event_type("ArmsServed")
class ArmsServed(Payload):
    """What one serving replica answered with each arm of a task over an interval, while a canary
    ran: `arms` holds {role, model_version, requests, errors, latency} (shared.arm_health)."""

    task: str
    replica: str
    seconds: float
    arms: list[dict[str, Any]]


# Which topic each event type is published to.
TOPIC_OF_TYPE: dict[str, str] = {
    "TaskRegistered": TOPIC_TASKS,
    "ObservationRecorded": TOPIC_DATA,
    "LabelRecorded": TOPIC_DATA,
    "ConfigChosen": TOPIC_DATA,
    "PipelineChosen": TOPIC_DATA,
    "PipelineStarted": TOPIC_DEPLOYMENTS,
    "ModelTrained": TOPIC_MODELS,
    "DriftDetected": TOPIC_MODELS,
    "TrainerSnapshotted": TOPIC_MODELS,
    "ConfigSwitched": TOPIC_MODELS,
    "ConfigDropped": TOPIC_MODELS,
    "ModelPromoted": TOPIC_DEPLOYMENTS,
    "PromotionRefused": TOPIC_DEPLOYMENTS,
    "ModelRolledBack": TOPIC_DEPLOYMENTS,
    "PredictionServed": TOPIC_GOVERNANCE,
    "AuditCompleted": TOPIC_GOVERNANCE,
    "ApprovalRequested": TOPIC_DEPLOYMENTS,
    "ApprovalGranted": TOPIC_DEPLOYMENTS,
    "ApprovalRejected": TOPIC_DEPLOYMENTS,
    "CanaryStarted": TOPIC_DEPLOYMENTS,
    "CanaryWeightChanged": TOPIC_DEPLOYMENTS,
    "CanaryEnded": TOPIC_DEPLOYMENTS,
    "ShadowStarted": TOPIC_DEPLOYMENTS,
    "ShadowStopped": TOPIC_DEPLOYMENTS,
    "FlagChanged": TOPIC_DEPLOYMENTS,
    "ArmsScored": TOPIC_MODELS,
    "ServedScored": TOPIC_MODELS,
    "ArmsServed": TOPIC_GOVERNANCE,
}


def topic_for(event_type_name: str) -> str:
    """The topic an event type goes to; unknown types go to the governance topic."""
    return TOPIC_OF_TYPE.get(event_type_name, TOPIC_GOVERNANCE)
