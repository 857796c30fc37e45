"""A task's deployment stream, folded once: who serves (champion, canary, shadows), its flags, and
what was decided about each model version. Governance decides on it, serving routes by it, the
trainer follows its champion and shadows; all of them fold it with this code.

Pure: events' (type, stream version, payload) in, state out. A fold can start from nothing or go
on from where it was (`apply`), so a service that missed an event catches up by stream version.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import mmh3
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.tasks import RecordError, shown, storable

POLICY = "governance/policy"
# Flags serving itself reads (any other key is the client's, served through OpenFeature).
KILL_SWITCH = "kill_switch"  # boolean: answer with the last approved champion only
LOG_AND_WAIT = "log_and_wait"  # boolean: record served rows by default (the task's serving.record)
SHADOW_SAMPLE = "shadow_sample"  # number 0-1: the share of requests the shadows score
ONLINE_FEATURES = "online_features"  # boolean: false answers with every online feature's default
# boolean, one per online feature (`online_features.<name>`): false answers with its default.
ONLINE_FEATURE = ONLINE_FEATURES + ".{name}"

ROUTING_TYPES = frozenset(
    {
        "ModelPromoted",
        "ModelRolledBack",
        "CanaryStarted",
        "CanaryWeightChanged",
        "CanaryEnded",
        "ShadowStarted",
        "ShadowStopped",
        "FlagChanged",
        "PipelineStarted",
    }
)

FlagValue = bool | float | str


class Flag(BaseModel):
    """A typed flag: a value, or variants handed out to entities by weight (percent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["boolean", "number", "string"]
    value: FlagValue
    variants: dict[str, FlagValue] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _values_fit_the_type(self) -> Flag:
        if not all(_fits("string", name) for name in [*self.variants, *self.weights]):
            raise ValueError("variant names must be text the store can hold")
        for name, value in [("value", self.value), *self.variants.items()]:
            if not _fits(self.type, value):
                raise ValueError(f"{shown(name)}: {shown(value)} is not a storable {self.type}")
        if set(self.weights) - set(self.variants):
            raise ValueError("weights name variants that do not exist")
        if any(not 0 <= w <= 100 for w in self.weights.values()):
            raise ValueError("each weight is a percentage, 0 to 100")
        if self.weights and abs(sum(self.weights.values()) - 100.0) > 1e-9:
            raise ValueError("the weights must add up to 100")
        return self


def _fits(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        try:
            return math.isfinite(value)  # an integer beyond any float overflows
        except OverflowError:
            return False
    if not isinstance(value, str):
        return False
    try:
        storable(value, "flag")
    except RecordError:
        return False
    return True


def bucket(key: str, entity: str) -> float:
    """A stable place in [0, 100) for an entity under a key: murmur3 (32-bit) of key + entity,
    as flagd's `fractional` buckets a targeting key, so every replica and every restart agree."""
    # Hashed as UTF-8 bytes (what mmh3 hashes for text too): text mmh3 cannot encode (a lone
    # surrogate) crashed the interpreter, not raised.
    text = f"{key}{entity}".encode("utf-8", "surrogatepass")
    return mmh3.hash(text, signed=False) / 2**32 * 100.0


@dataclass(frozen=True)
class Evaluation:
    value: FlagValue
    variant: str | None
    reason: Literal["STATIC", "SPLIT", "DEFAULT"]


def evaluate(key: str, flag: Flag, entity: str | None) -> Evaluation:
    """A flag's value for an entity: its variant by bucket when it has weights, else its value."""
    if not flag.weights or entity is None:
        return Evaluation(flag.value, None, "STATIC" if not flag.weights else "DEFAULT")
    place, edge = bucket(key, entity), 0.0
    for name, weight in flag.weights.items():
        edge += weight
        if place < edge:
            return Evaluation(flag.variants[name], name, "SPLIT")
    last = list(flag.weights)[-1]  # rounding at the top edge
    return Evaluation(flag.variants[last], last, "SPLIT")


def online_off(flags: Mapping[str, Flag], names: Iterable[str]) -> frozenset[str]:
    """Which of a task's online features its flags turn off (answered with their defaults):
    all with `online_features` false, else each whose `online_features.<name>` is false."""

    def off(key: str) -> bool:
        flag = flags.get(key)
        return flag is not None and evaluate(key, flag, None).value is False

    if off(ONLINE_FEATURES):
        return frozenset(names)
    return frozenset(n for n in names if off(ONLINE_FEATURE.format(name=n)))


@dataclass(frozen=True)
class Arm:
    """A model version in a role beside the champion: a canary answers `share` percent of the
    entities (sticky by entity); a shadow scores a `share` fraction of requests, never answering."""

    model_version: int
    artifact_sha256: str
    share: float
    since: int  # the deployment stream version it started at


@dataclass
class DeploymentState:
    """A task's deployment stream folded (see the module docstring)."""

    champion: int | None = None
    champion_sha256: str | None = None
    stream_version: int = 0
    promoted: set[int] = field(default_factory=set)
    approvals: dict[int, list[str]] = field(default_factory=dict)
    rejections: dict[int, list[str]] = field(default_factory=dict)
    refused: set[int] = field(default_factory=set)
    awaiting: set[int] = field(default_factory=set)
    canary: Arm | None = None
    shadows: dict[int, Arm] = field(default_factory=dict)
    flags: dict[str, Flag] = field(default_factory=dict)
    # Champions a person promoted or approved, newest last (the kill switch goes back to one).
    approved: list[tuple[int, str]] = field(default_factory=list)
    first_champion: tuple[int, str] | None = None
    # The pipeline (spec) version of each model a decision named one for (decisions recorded
    # before pipelines were named say none: those models take the task's spec).
    pipelines: dict[int, str] = field(default_factory=dict)
    # The last PipelineStarted: (its stream version, the pipeline version, replayed after).
    pipeline_started: tuple[int, str, int] | None = None
    # The pipeline the task is to run, as last decided: started, or that of the model last
    # promoted or rolled back to (None: no decision named one).
    pipeline: str | None = None

    @classmethod
    def fold(cls, events: Iterable[tuple[str, int | None, Mapping[str, Any]]]) -> DeploymentState:
        """From (type, stream_version, payload) of the stream's events, in order."""
        state = cls()
        for kind, version, payload in events:
            state.apply(kind, version, payload)
        return state

    def apply(self, kind: str, version: int | None, payload: Mapping[str, Any]) -> bool:
        """Fold in one event; False (and nothing changes) when it is not newer than the state."""
        version = version or 0
        if version and version <= self.stream_version:
            return False
        self.stream_version = max(self.stream_version, version)
        if kind == "FlagChanged":
            key, flag = str(payload["key"]), payload.get("flag")
            if flag is None:
                self.flags.pop(key, None)
            else:
                self.flags[key] = Flag.model_validate(flag)
            return True
        if kind == "PipelineStarted":
            pipeline = str(payload["pipeline_version"])
            self.pipeline_started = (version, pipeline, int(payload["from_version"]))
            self.pipeline = pipeline
            return True
        model = int(payload["model_version"])
        if payload.get("pipeline_version"):
            self.pipelines[model] = str(payload["pipeline_version"])
        if kind in ("ModelPromoted", "ModelRolledBack"):
            sha = str(payload["artifact_sha256"])
            self.pipeline = self.pipelines.get(model, self.pipeline)
            self.champion, self.champion_sha256 = model, sha
            self.promoted.add(model)
            self.awaiting.discard(model)
            self.first_champion = self.first_champion or (model, sha)
            if payload.get("decided_by") != POLICY or self.approvals.get(model):
                self.approved.append((model, sha))
            if self.canary is not None and self.canary.model_version == model:
                self.canary = None  # promoted: it is the champion now
            self.shadows.pop(model, None)
        elif kind == "PromotionRefused":
            self.refused.add(model)
            self.awaiting.discard(model)
        elif kind == "ApprovalRequested":
            self.awaiting.add(model)
        elif kind == "ApprovalGranted":
            self.approvals.setdefault(model, []).append(str(payload["by"]))
        elif kind == "ApprovalRejected":
            who = f"{payload['by']}: {payload['reason']}"
            self.rejections.setdefault(model, []).append(who)
            self.awaiting.discard(model)
        elif kind == "CanaryStarted":
            self.canary = Arm(
                model, str(payload["artifact_sha256"]), float(payload["weight"]), version
            )
        elif kind == "CanaryWeightChanged":
            if self.canary is not None and self.canary.model_version == model:
                self.canary = Arm(
                    model, self.canary.artifact_sha256, float(payload["weight"]), self.canary.since
                )
        elif kind == "CanaryEnded":
            if self.canary is not None and self.canary.model_version == model:
                self.canary = None
        elif kind == "ShadowStarted":
            self.shadows[model] = Arm(
                model, str(payload["artifact_sha256"]), float(payload["sample_rate"]), version
            )
        elif kind == "ShadowStopped":
            self.shadows.pop(model, None)
        return True

    def decided(self, version: int) -> bool:
        """Whether the automatic flow already reached a verdict on a version."""
        return version in self.promoted or version in self.refused or version in self.awaiting

    def flag(self, key: str, entity: str | None = None) -> FlagValue | None:
        """A flag's value for an entity (None when the task has no such flag)."""
        flag = self.flags.get(key)
        return None if flag is None else evaluate(key, flag, entity).value

    @property
    def killed(self) -> bool:
        return self.flag(KILL_SWITCH) is True

    def answering(self) -> tuple[int, str] | None:
        """The champion serving answers with: the last approved one under the kill switch."""
        if self.killed:
            if self.approved:
                return self.approved[-1]
            return self.first_champion
        if self.champion is None or self.champion_sha256 is None:
            return None
        return self.champion, self.champion_sha256

    def routing(self) -> dict[str, Any]:
        """Who answers, as a JSON-able summary (governance's routing view)."""

        def arm(a: Arm | None) -> dict[str, Any] | None:
            return (
                None
                if a is None
                else {
                    "model_version": a.model_version,
                    "artifact_sha256": a.artifact_sha256,
                    "share": a.share,
                }
            )

        answering = self.answering()
        return {
            "stream_version": self.stream_version,
            "champion": None
            if answering is None
            else {"model_version": answering[0], "artifact_sha256": answering[1], "share": 100.0},
            "canary": None if self.killed else arm(self.canary),
            "shadows": [] if self.killed else [arm(a) for a in self.shadows.values()],
            "flags": {k: f.model_dump(mode="json") for k, f in self.flags.items()},
            "killed": self.killed,
        }

    def canary_for(self, task: str, entity: str | None) -> bool:
        """Whether an entity's rows go to the canary: sticky by a hash of task and entity."""
        canary = self.canary
        if canary is None or entity is None or self.killed or canary.share <= 0:
            return False
        return bucket(f"{task}/canary/", entity) < canary.share
