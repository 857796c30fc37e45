"""Who answers each task's requests: the champion, a canary, shadows, and the task's flags. No I/O.

`RoutingTable` follows the task specs (`TaskRegistered`) and each task's deployment stream, folded
by `shared.deployments.DeploymentState` (the fold governance decides on and the trainer follows).
Events are applied in stream order (the caller fills gaps from the store); one that is not newer
than the state is a no-op, so replays and the overlap between the start-up load and the Kafka or
Redis subscriptions are harmless.

A change swaps one reference in a copy-on-write mapping of `Routes`: a request takes its task's
routes once and predicts with them to the end, so a swap never changes a model under a request in
flight. Models are kept per task and artifact: a version that goes from canary to champion keeps
its model, and what it learned online since; two tasks never share one (a model learns its own
task's labels, and answers with its own task's spec, even when two tasks' artifacts are the same
bytes).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import numpy as np

from shared.deployments import DeploymentState, Flag, bucket
from shared.events.envelope import Envelope
from shared.events.types import TaskRegistered, deployment_stream, task_stream
from shared.tasks import TaskSpec, reads_within


class Predictor(Protocol):
    """What serving needs of a model (shared.online_models.LiveModel honours it)."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) for each row of X."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Each row's answer: P(class 1), or a regression's value."""
        ...


# Loads and decodes the artifact stored under a sha256 (I/O; injected by the app).
PredictorLoader = Callable[[str], Predictor]
# Brings a newly loaded model up to the labels after its version (injected by the app).
Warmer = Callable[[TaskSpec, Predictor], None]


class Role(StrEnum):
    CHAMPION = "champion"
    CANARY = "canary"
    SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class Served:
    """A model version in a role: the champion answers, a canary answers its share of entities,
    a shadow scores a share of requests and never answers."""

    role: Role
    model_version: int
    artifact_sha256: str
    predictor: Predictor
    share: float  # canary: percent of entities; shadow: fraction of requests; champion: 100
    # The spec (pipeline version) whose inputs it takes: the champion's is the routes' spec; a
    # canary or shadow may be of another pipeline (docs/pipelines.md).
    spec: TaskSpec | None = None


@dataclass(frozen=True, slots=True)
class Routes:
    """One task's routing, as of one deployment stream version."""

    task: str
    spec: TaskSpec
    champion: Served | None
    canary: Served | None = None
    shadows: tuple[Served, ...] = ()
    flags: Mapping[str, Flag] = field(default_factory=dict)
    killed: bool = False
    stream_version: int = 0
    changed_at: datetime | None = None

    def arm(self, entity: str | None) -> Served | None:
        """Who answers an entity's rows: the canary for its share of entities (sticky: the same
        entity gets the same arm on every replica and after restarts), else the champion."""
        canary = self.canary
        if canary is not None and entity is not None and canary.share > 0:
            if bucket(f"{self.task}/canary/", entity) < canary.share:
                return canary
        return self.champion

    def models(self) -> list[Served]:
        """Every model in a role (each learns the task's labels)."""
        return [m for m in (self.champion, self.canary, *self.shadows) if m is not None]

    def spec_of(self, served: Served) -> TaskSpec:
        return served.spec or self.spec

    def specs(self) -> dict[str, TaskSpec]:
        """Every spec version a model in a role takes its inputs from (the routes' first)."""
        out = {self.spec.version: self.spec}
        for served in self.models():
            out.setdefault(self.spec_of(served).version, self.spec_of(served))
        return out


class UnknownTask(LookupError):
    """No task of that name is registered."""


class NoChampion(LookupError):
    """The task is registered but has no model to serve yet."""


class Outcome(StrEnum):
    """What `RoutingTable.apply` did with an event."""

    APPLIED = "applied"
    STALE = "stale"  # not newer than what the table already holds
    PENDING = "pending"  # a decision for a task whose spec is not known yet: kept for later
    IGNORED = "ignored"  # not an event the table follows


class RoutingTable:
    """The routes of every task, kept current by task and deployment events.

    `apply` is called from the event loop (where models also learn and answer); the slow part of
    a change, loading models, can be done beforehand off the loop (`to_load`, then `load`)."""

    def __init__(self, load: PredictorLoader, warm: Warmer | None = None) -> None:
        self._load = load
        self._warm = warm
        self._specs: dict[str, TaskSpec] = {}
        self._spec_versions: dict[str, int] = {}
        # Every registered version of each task's spec: a model takes its pipeline's inputs.
        self._versions: dict[tuple[str, str], TaskSpec] = {}
        self._states: dict[str, DeploymentState] = {}
        self._routes: Mapping[str, Routes] = {}
        self._models: dict[tuple[str, str], Predictor] = {}  # by (task, artifact)
        # The task's spec when each model was first loaded: its inputs are that spec's.
        self._model_specs: dict[tuple[str, str], TaskSpec] = {}
        self._pending: dict[str, list[Envelope]] = {}

    # -- reading --------------------------------------------------------------------------------

    def routes(self, task: str) -> Routes:
        """A task's routes; raises UnknownTask."""
        routes = self._routes.get(task)
        if routes is None:
            raise UnknownTask(f"unknown task {task!r}")
        return routes

    def serving(self, task: str) -> Served:
        """The model that answers a task's requests; raises UnknownTask or NoChampion."""
        champion = self.routes(task).champion
        if champion is None:
            raise NoChampion(f"task {task!r} has no promoted model yet")
        return champion

    def spec(self, task: str) -> TaskSpec | None:
        return self._specs.get(task)

    def tasks(self) -> list[str]:
        return sorted(self._specs)

    def stream_version(self, task: str) -> int:
        """The deployment stream version applied for a task (0: none)."""
        state = self._states.get(task)
        return 0 if state is None else state.stream_version

    # -- following ------------------------------------------------------------------------------

    def to_load(self, envelope: Envelope) -> list[str]:
        """The artifacts `apply` would load for this event (none: nothing slow to do)."""
        task = str(envelope.payload.get("task"))
        state = self._states.get(task)
        if envelope.stream_id != deployment_stream(task) or task not in self._specs:
            return []
        after = copy.deepcopy(state) if state is not None else DeploymentState()
        if not after.apply(envelope.type, envelope.stream_version, envelope.payload):
            return []
        return [sha for sha in _needed(after) if (task, sha) not in self._models]

    def load(self, digest: str) -> Predictor:
        return self._load(digest)

    def restore_needs(self, events: list[Envelope]) -> list[str]:
        """The artifacts `restore` would load for a whole deployment stream."""
        if not events:
            return []
        task, state = str(events[0].payload.get("task")), _fold(events)
        return [sha for sha in _needed(state) if (task, sha) not in self._models]

    def restore(
        self, task: str, events: list[Envelope], loaded: Mapping[str, Predictor] | None = None
    ) -> None:
        """Take a task's whole deployment stream at once (start-up): only the models it routes
        to now are loaded, not every champion it ever had."""
        self._commit(task, _fold(events), loaded or {})

    def apply(self, envelope: Envelope, loaded: Mapping[str, Predictor] | None = None) -> Outcome:
        """Follow one stored event; a loader error propagates and leaves the table unchanged.
        `loaded`: models of this event, loaded beforehand, by artifact."""
        if envelope.stream_version is None:
            raise ValueError(
                f"event {envelope.event_id} was never stored: it has no stream version"
            )
        task = str(envelope.payload.get("task"))
        if envelope.type == "TaskRegistered":
            return self._register(envelope)
        if envelope.stream_id != deployment_stream(task):
            return Outcome.IGNORED
        if task not in self._specs:
            self._pending.setdefault(task, []).append(envelope)
            return Outcome.PENDING
        return self._deploy(task, envelope, loaded or {})

    def _register(self, envelope: Envelope) -> Outcome:
        data = envelope.data()
        assert isinstance(data, TaskRegistered) and envelope.stream_version is not None
        if envelope.stream_id != task_stream(data.task):
            return Outcome.IGNORED
        spec = TaskSpec.model_validate(data.spec)
        self._versions.setdefault((data.task, spec.version), spec)
        if envelope.stream_version <= self._spec_versions.get(data.task, 0):
            return Outcome.STALE
        self._specs[data.task] = spec
        self._spec_versions[data.task] = envelope.stream_version
        pending = sorted(self._pending.pop(data.task, []), key=lambda e: e.stream_version or 0)
        for held in pending:
            self._deploy(data.task, held, {})
        self._rebuild(data.task)
        return Outcome.APPLIED

    def _deploy(self, task: str, envelope: Envelope, loaded: Mapping[str, Predictor]) -> Outcome:
        before = self._states.get(task) or DeploymentState()
        state = copy.deepcopy(before)
        if not state.apply(envelope.type, envelope.stream_version, envelope.payload):
            return Outcome.STALE
        self._commit(task, state, loaded, envelope.occurred_at)
        return Outcome.APPLIED

    def _commit(
        self,
        task: str,
        state: DeploymentState,
        loaded: Mapping[str, Predictor],
        at: datetime | None = None,
    ) -> None:
        """Load the models a task's new state routes to, then take the state; a loader error
        leaves the table as it was."""
        models, specs = dict(self._models), dict(self._model_specs)
        for sha in _needed(state):
            specs.setdefault((task, sha), self._model_spec(task, state, sha))
            if (task, sha) not in models:
                model = loaded.get(sha) or self._load(sha)
                if self._warm is not None:
                    self._warm(specs[task, sha], model)
                models[task, sha] = model
        self._states[task], self._models, self._model_specs = state, models, specs
        self._rebuild(task, at)
        self._forget_unused()

    def _model_spec(self, task: str, state: DeploymentState, sha: str) -> TaskSpec:
        """The spec whose inputs a model takes: its pipeline's, as the decisions name it (the
        task's current spec for decisions recorded before pipelines were named)."""
        arms = [a for a in (state.canary, *state.shadows.values()) if a is not None]
        held = [state.answering(), *((a.model_version, a.artifact_sha256) for a in arms)]
        for arm in held:
            if arm is not None and arm[1] == sha and arm[0] in state.pipelines:
                found = self._versions.get((task, state.pipelines[arm[0]]))
                if found is None:  # its TaskRegistered is on another topic: not here yet
                    raise LookupError(
                        f"{task}: pipeline version {state.pipelines[arm[0]][:12]} of model "
                        f"{arm[0]} is not registered here yet"
                    )
                return found
        return self._specs[task]

    def _rebuild(self, task: str, at: datetime | None = None) -> None:
        spec = self._specs.get(task)
        if spec is None:
            return
        state = self._states.get(task) or DeploymentState()
        answering = state.answering()
        if answering is not None and (task, answering[1]) in self._model_specs:
            spec = self._model_specs[task, answering[1]]  # the champion's inputs are its spec's
        routes = Routes(
            task=task,
            spec=spec,
            champion=None,
            flags=dict(state.flags),
            killed=state.killed,
            stream_version=state.stream_version,
            changed_at=at,
        )
        if answering is not None and (task, answering[1]) in self._models:
            version, sha = answering
            champion = Served(Role.CHAMPION, version, sha, self._models[task, sha], 100.0, spec)
            routes = replace(routes, champion=champion)

        def arm_spec(sha: str) -> TaskSpec | None:
            """A canary's or shadow's spec, if it can be answered beside the champion: its
            model is loaded, and every feature it reads is one the champion's spec validates,
            of the same type (requests are validated by the champion's spec)."""
            found = self._model_specs.get((task, sha))
            if (task, sha) not in self._models or found is None:
                return None
            return found if reads_within(found, spec) else None

        if not state.killed:
            canary = state.canary
            canary_spec = arm_spec(canary.artifact_sha256) if canary is not None else None
            if canary is not None and canary_spec is not None:
                model = self._models[task, canary.artifact_sha256]
                arm = Served(
                    Role.CANARY,
                    canary.model_version,
                    canary.artifact_sha256,
                    model,
                    canary.share,
                    canary_spec,
                )
                routes = replace(routes, canary=arm)
            shadows = tuple(
                Served(
                    Role.SHADOW,
                    a.model_version,
                    a.artifact_sha256,
                    self._models[task, a.artifact_sha256],
                    a.share,
                    found,
                )
                for a in state.shadows.values()
                if (found := arm_spec(a.artifact_sha256)) is not None
            )
            routes = replace(routes, shadows=shadows)
        # One reference replaced: readers see the old mapping or the new one, never a mix.
        self._routes = {**self._routes, task: routes}

    def _forget_unused(self) -> None:
        used = {(task, sha) for task, state in self._states.items() for sha in _needed(state)}
        self._models = {key: m for key, m in self._models.items() if key in used}
        self._model_specs = {key: s for key, s in self._model_specs.items() if key in used}


def _needed(state: DeploymentState) -> list[str]:
    """The artifacts a state routes to (the champion it answers with, canary, shadows)."""
    needed = []
    answering = state.answering()
    if answering is not None:
        needed.append(answering[1])
    if not state.killed:
        if state.canary is not None:
            needed.append(state.canary.artifact_sha256)
        needed += [a.artifact_sha256 for a in state.shadows.values()]
    return needed


def _fold(events: list[Envelope]) -> DeploymentState:
    ordered = sorted(events, key=lambda e: e.stream_version or 0)
    return DeploymentState.fold((e.type, e.stream_version, e.payload) for e in ordered)
