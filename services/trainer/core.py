"""The trainer's pure core: one task's stream of data events in, model candidates and facts out.

No Kafka, Faust or database here. The core is a deterministic function of the data events it is
given, in stream order: the same events give the same predictions, the same models (same bytes) and
the same event ids. That is how a restarted trainer recovers: it replays the task's stored events
through a fresh core, and everything it emits again is a duplicate that the store ignores.

Inputs: a row's model features, then its online features (`shared.features`): the values serving
predicted it with when it recorded the row (log and wait), else the values the fold gives at the
row's place in the stream. Either way the learner learns a row with exactly what a prediction of
that row could have used, and never anything recorded after it.

Pipelines: the core trains one version of the task's spec at a time. A `PipelineChosen` event in
the data stream switches it to another: `apply` stops there and says so (`Output.switch`); the
trainer replays the stored data events the event names into the incoming pipeline (`catch_up`),
and `switched` puts it in place and publishes its first model. Model versions go on counting.

Two figures are kept. `served_*`: the accuracy of what serving answered, on rows it recorded (the
headline). The learner's own (`accuracy`): each row predicted by the learner when the row arrived,
before its label was known (prequential; a diagnostic, fresher than any published model).

Kinds of target: an answer is P(class 1) of a binary task, the value of a regression, or a
multiclass task's class probabilities (a list, in class order); rows are compared on their loss
(`services.trainer.metrics.row_losses`: 0/1 errors of a classifier of either kind, or absolute
errors) and a regression's figures are errors (MAE, RMSE, R^2), not accuracies.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from services.trainer.arms import Arms, Labelled
from services.trainer.metrics import (
    Answer,
    metrics_for,
    row_loss,
    row_losses,
)
from shared.events.envelope import Envelope
from shared.events.types import (
    ArmsScored,
    ConfigChosen,
    ConfigDropped,
    ConfigSwitched,
    DriftDetected,
    ModelTrained,
    PipelineChosen,
    ServedScored,
)
from shared.features import DataEvent, OnlineFold, data_event, model_inputs
from shared.online_models import (
    MIN_RESIDUALS,
    RESIDUALS,
    LearnedRow,
    RecentRows,
    batch_invariant,
    conformal_reach,
)
from shared.tasks import TaskSpec

_NAMESPACE = uuid.UUID("0c0471e0-7a1e-4e00-8000-000000000007")
# Version 1 is the learner as it starts, published at the task's first data event: serving answers
# with it at once and its online parts learn from the first label on. Then early versions after
# this many labelled rows, twice as many, ... until `publish_every`; then every `publish_every`.
FIRST_PUBLISH = 50
# The newest model versions whose interval reach the core keeps to score the intervals serving
# answered with them (an answer of an older version, rolled back to, is not counted).
KEPT_REACHES = 1000
# While a canary or shadows run, their counts go to governance every this many labelled rows.
ARMS_EVERY = 50
# Labelled served rows per ServedScored window (served accuracy over time, per model version).
SERVED_WINDOW = 200
# After a rise in error (a drift), a learner started afresh learns the rows that follow; after
# this many it is published as a challenger (governance runs it as a live shadow). Not before the
# task has this many labelled rows: early alarms are the learner finding its feet.
CHALLENGER_ROWS = 250
CHALLENGERS_AFTER = 1000
# The challenger goes on learning and is published again at twice the rows each time (250, 500,
# 1,000, each version the child of the one before), so the shadow or canary governance runs of it
# follows what it learns; it stops after this many rows (its last version), or when a later drift
# starts a new one. While it learns, the trainer learns each row twice: up to 4,000 rows cost 15%
# more time through the system on Agrawal for no gain in served accuracy (docs/benchmarks.md).
CHALLENGER_LAST = 4 * CHALLENGER_ROWS
# After a pipeline switch the core folds on the pipeline it left (its champion is scored with its
# own inputs) for this many labelled rows, to the first publish point past them: long enough for
# a new pipeline's model to be promoted or rolled back by any policy here; then each row is
# folded once again.
PREVIOUS_ROWS = 20_000


def config_choice(
    trained: ModelTrained, *, decided_at: int, rollback: bool
) -> tuple[uuid.UUID, ConfigChosen] | None:
    """The ConfigChosen event, with its id, that makes the race of `trained`'s spec version run
    `trained`'s configuration, when governance's decision (at `decided_at` in the deployment
    stream) calls for it: it promoted `trained`, an entrant, or it rolled back to `trained`,
    whatever its role. A promotion of the race's own candidate needs none: the race chose that
    configuration itself. The id is derived from the decision: whoever appends it, however often,
    and after whatever restart, the data stream holds it once; a later decision about the same
    version (promoted again after a rollback) is another event."""
    config, version = trained.config, trained.model_version
    if rollback:
        reason = f"rolled back to v{version} ({config}): the race runs {config}"
    elif trained.role == "entrant":
        reason = f"entrant v{version} ({config}) was promoted: the race runs {config}"
    else:
        return None
    key = f"{trained.task}/{trained.pipeline_version}/decision/{decided_at}"
    return uuid.uuid5(_NAMESPACE, key), ConfigChosen(
        task=trained.task,
        pipeline_version=trained.pipeline_version,
        config=config,
        model_version=version,
        reason=reason,
        decided_at=decided_at,
        rollback=rollback,
    )


class Learner(Protocol):
    """What the core needs of a learner (services.trainer.learner.OnlineLearner honours it, and
    services.trainer.multiclass.OneVsRest, whose answers are rows of class probabilities)."""

    @property
    def n_updates(self) -> int: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...
    # The champion's P(class 1) and each racing configuration's (rows x configurations; None:
    # the learner judges nothing on them), as of now: asked when observations arrive.
    def predict_on_arrival(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...
    def learn(
        self, X: np.ndarray, y: np.ndarray, proba: np.ndarray, configs: np.ndarray | None = None
    ) -> Any: ...
    def test_then_train(self, X: np.ndarray, y: np.ndarray) -> Any: ...
    # `residuals`: a regression's, what its prediction intervals are calibrated on.
    def model_bytes(
        self,
        learned_through: int = 0,
        config: str | None = None,
        residuals: Sequence[float] | None = None,
    ) -> bytes: ...
    def champion_config(self) -> str: ...
    def entrant(self) -> tuple[str, dict[str, Any]] | None: ...
    def choose(self, config: str, evidence: Mapping[str, Any]) -> Any: ...
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
    pipeline_version: str  # the spec version it was trained under
    params: dict[str, Any]  # that spec's learner parameters
    # or "challenger" (published after a drift) or "entrant" (a configuration of the race that
    # is the runner-up of its race), to run as a shadow
    role: str = "candidate"

    def fact(self, task: str, artifact_sha256: str) -> ModelTrained:
        return ModelTrained(
            task=task,
            model_version=self.model_version,
            parent_version=self.parent_version,
            pipeline_version=self.pipeline_version,
            artifact_sha256=artifact_sha256,
            config=self.config,
            params=dict(self.params),
            metrics=self.metrics,
            first_position=self.first_position,
            last_position=self.last_position,
            n_learned=self.n_learned,
            n_learned_total=self.n_learned_total,
            role=self.role,
        )


@dataclass
class Output:
    """What one call to `TaskTraining.apply` produced, in order of occurrence."""

    candidates: list[Candidate] = field(default_factory=list)
    facts: list[
        tuple[uuid.UUID, DriftDetected | ConfigSwitched | ConfigDropped | ArmsScored | ServedScored]
    ] = field(default_factory=list)
    unmatched_labels: int = 0
    # Observations recorded under another version of the task's spec that do not fit this one.
    other_spec: int = 0
    # A PipelineChosen `apply` stopped at (the events after it are not applied yet), and how
    # many of the events given it applied (that one included).
    switch: Switch | None = None
    consumed: int = 0


@dataclass(frozen=True)
class Switch:
    """A pipeline switch under way: the incoming pipeline learns the data events after
    `from_version` up to `to_version` (the PipelineChosen's own version), then takes over."""

    pipeline_version: str
    from_version: int
    to_version: int
    position: int  # the PipelineChosen's store position


class Scorer(Protocol):
    """The served model, as serving runs it: predicting (P(class 1), or a regression's value),
    and learning the labels after it (shared.online_models.LiveModel)."""

    learned_through: int

    def predict(self, X: np.ndarray) -> np.ndarray: ...
    def learn(self, rows: Sequence[LearnedRow]) -> list[float]: ...


@dataclass(slots=True)
class _Pending:
    """An observation awaiting its label: its inputs and what was predicted for it."""

    x: list[float]
    proba: Answer  # the learner's prediction when the row arrived
    served: Answer | None  # serving's answer, for rows it recorded
    position: int
    champion: Answer | None  # the shadow champion's prediction when the row arrived
    served_version: int | None = None
    served_role: str | None = None
    shadows: dict[int, Answer] = field(default_factory=dict)  # each shadow's, at arrival
    configs: np.ndarray | None = None  # each racing configuration's prediction, at arrival
    champion_x: list[float] | None = None  # its inputs as the previous pipeline's (`_Previous`)


@dataclass(slots=True)
class _Row:
    x: list[float]
    y: float  # the class index (0 or 1), or a regression's value
    proba: Answer | None  # None: labelled on arrival, predicted as it is learned
    served: Answer | None
    position: int
    version: int  # the data stream version of the event that labelled it
    champion: Answer | None = None  # the champion's prediction when the row arrived
    served_version: int | None = None
    served_role: str | None = None
    shadows: dict[int, Answer] = field(default_factory=dict)
    configs: np.ndarray | None = None  # each racing configuration's prediction, at arrival
    champion_x: list[float] | None = None  # its inputs as the previous pipeline's
    observed: int = 0  # the position of its observation (where serving's answer was recorded)


@dataclass
class _Previous:
    """The pipeline the core ran before its last switch, folded on over the stream: a champion
    of that pipeline (serving answers with it until one of the new pipeline's models is
    promoted) is scored with its own inputs, so the new pipeline's candidates are compared with
    it like for like. A function of the stream: it starts at a switch, ends at the next."""

    spec: TaskSpec
    fold: OnlineFold
    recent: RecentRows
    # The inputs of observations folded in and not flushed yet, by event id.
    arrived: dict[uuid.UUID, list[float]] = field(default_factory=dict)

    def see(self, event: DataEvent) -> None:
        values = self.fold.apply(event)
        if values is not None and event.features is not None and not event.is_label:
            self.arrived[event.event_id] = model_inputs(self.spec, event.features, values)

    def take(self, events: Sequence[DataEvent]) -> list[list[float] | None]:
        return [self.arrived.pop(e.event_id, None) for e in events]


def _previous_rows(rows: Sequence[_Row]) -> list[LearnedRow]:
    """Labelled rows as the previous pipeline's inputs (those that have them)."""
    return [LearnedRow(r.version, r.champion_x, r.y) for r in rows if r.champion_x is not None]


def _arrival_configs(chunk: list[_Row]) -> np.ndarray | None:
    """Each configuration's prediction for each row when it arrived (rows x configurations),
    a row without them NaN; None if no row has them."""
    known = [r.configs for r in chunk if r.configs is not None]
    if not known:
        return None
    missing = np.full(len(known[0]), np.nan)
    return np.array([missing if r.configs is None else r.configs for r in chunk])


class TaskTraining:
    """Prequential learning of one task from its data events, with fixed publish points."""

    def __init__(
        self,
        spec: TaskSpec,
        learner: Learner,
        *,
        pending_limit: int = 200_000,
        challengers: Callable[[], Learner] | None = None,
        quiet: bool = False,
    ) -> None:
        self.spec = spec
        self.learner = learner
        # A quiet core learns and publishes nothing (an incoming pipeline catching up).
        self._quiet = quiet
        self._incoming: TaskTraining | None = None
        self._switch: Switch | None = None
        self._switches = 0  # pipeline switches applied (facts of a later pipeline are keyed apart)
        self._previous: _Previous | None = None
        self._previous_until = 0  # the labelled count past which it ends (at a publish point)
        self._champion_previous = False  # the champion takes the previous pipeline's inputs
        # Makes a fresh learner for the challenger after a drift (None: no challengers).
        self._challengers = challengers
        self._challenger: Learner | None = None
        self._challenger_rows = 0
        self._challenger_from = 0
        self._challenger_version: int | None = None  # its newest published version
        self._line_version: int | None = None  # the newest candidate of the learner's own line
        # Entrants (spec.promotion.canary.shadow_entrants): each published version's config,
        # and the labelled count at which the next is due.
        self.entrants: dict[int, str] = {}
        self._entrant_rows: dict[str, int] = {}  # config -> rows learned at its last version
        self._next_entrant = spec.promotion.canary.entrant_every
        self.fold = OnlineFold(spec)
        self.version = 0  # the data stream version applied so far
        self.last_position = 0
        self.model_version = 0
        self.n_learned_total = 0
        self._since_publish = 0
        self._next_publish = min(FIRST_PUBLISH, spec.learner.publish_every)
        self._first_position: int | None = None
        self._last_learned_position = 0
        self._last_learned_version = 0
        # Rows learned lately, to bring a champion up to the labels after its version.
        self._recent = RecentRows()
        self._pending: OrderedDict[uuid.UUID, _Pending] = OrderedDict()
        self._pending_limit = pending_limit
        self._regression = spec.target.kind == "regression"
        self.served = metrics_for(spec.target.kind, spec.promotion.window, len(spec.target.classes))
        # A regression's interval calibration: the absolute errors of serving's answers given
        # after the task's first label was stored (`_served_errors`).
        self._first_label_position: int | None = None
        self._calibration: deque[float] = deque(maxlen=RESIDUALS)  # serving's answers
        self._learner_errors: deque[float] = deque(maxlen=RESIDUALS)  # the learner's, rounded
        # How far each version published here reaches either side (None: it answers no
        # interval), and whether each of the last RESIDUALS answers serving gave with an
        # interval held its label: the intervals' coverage as callers got it.
        self._reaches: dict[int, float | None] = {}
        self._covered: deque[bool] = deque(maxlen=RESIDUALS)
        # Shadow evaluation: the served champion scored on the same labelled rows as the learner,
        # with the same inputs, so a candidate is compared with the champion like for like.
        self._champion: Scorer | None = None
        self.champion_version: int | None = None
        # (learner's loss, champion's loss, label) of recent rows labelled since the champion.
        self._window: deque[tuple[float, float, float]] = deque(maxlen=spec.promotion.window)
        # The canary and the shadows, scored on the labels for governance's canary analysis.
        self.arms = Arms(self._regression)
        self._arms_labelled = 0
        # The open ServedScored window: (model_version, role) -> [answered, right].
        self._served_window: dict[
            tuple[int, str], list[int | float]
        ] = {}  # [answered, right | abs error]
        self._served_rows = 0  # labelled served rows so far (windows close at multiples)

    def __getstate__(self) -> dict[str, Any]:
        """What a snapshot keeps (services.trainer.snapshots): all that the data stream decided.

        Left out: the live scorers (champion, canary, shadows), which follow governance's
        deployments and are set again from them after a restore, as after a full replay, with
        what was scored against them; and the challenger factory, which is the trainer's."""
        state = self.__dict__.copy()
        state.update(
            _challengers=None,
            _incoming=None,
            _switch=None,
            _champion=None,
            _champion_previous=False,
            champion_version=None,
            _window=deque(maxlen=self.spec.promotion.window),
            arms=Arms(self._regression),
            _arms_labelled=0,
        )
        return state

    def attach(self, challengers: Callable[[], Learner] | None, pending_limit: int) -> None:
        """After a restore: the trainer's challenger factory and pending limit."""
        self._challengers, self._pending_limit = challengers, pending_limit

    def scores(self, pipeline: str) -> bool:
        """Whether a model of this pipeline version can be scored here: this core's, or the
        one it ran before its last switch (still folded)."""
        previous = self._previous
        return pipeline == self.spec.version or (
            previous is not None and previous.spec.version == pipeline
        )

    def set_champion(
        self, version: int, scorer: Scorer | None, pipeline: str | None = None
    ) -> None:
        """The model serving now answers with (of `pipeline`: None, this core's); shadow scores
        restart from here. Like serving, it learns the labels after its version (those already
        learned here, then each one). A champion of a pipeline this core does not score
        (`scores`) is not scored: candidates are then compared with it on each one's own
        recent figures."""
        if version != self.champion_version:
            pipeline = pipeline or self.spec.version
            previous = pipeline != self.spec.version and self._previous is not None
            if not self.scores(pipeline):
                scorer, previous = None, False
            if scorer is not None:
                recent = self._previous.recent if previous and self._previous else self._recent
                scorer.learn(recent.after(scorer.learned_through))
            self._champion, self.champion_version = scorer, version
            self._champion_previous = previous
            self._window.clear()

    def follow_arms(self, canary_version: int | None, shadows: Mapping[int, Scorer]) -> None:
        """The canary and shadows as governance last decided them (shadows run as serving runs
        them: they learn the labels after their version, those already learned here first)."""
        for version, scorer in shadows.items():
            if version not in self.arms.shadows:
                scorer.learn(self._recent.after(scorer.learned_through))
        self.arms.follow(self.champion_version, canary_version, shadows)

    def apply(self, events: Sequence[Envelope | DataEvent]) -> Output:
        """Process data events in stream order; events at or below `version` are skipped. Stops
        after a PipelineChosen that switches pipelines (`Output.switch`; see the module)."""
        out = Output(consumed=len(events))
        segment: list[DataEvent] = []
        kind = None
        for index, item in enumerate(events):
            if isinstance(item, Envelope) and item.type == "PipelineChosen":
                if (item.stream_version or 0) > self.version and not self._quiet:
                    if segment:
                        self._flush(kind, segment, out)
                        segment, kind = [], None
                    out.switch = self._pipeline_chosen(item)
                    if out.switch is not None:
                        out.consumed = index + 1
                        return out
                continue
            if isinstance(item, Envelope) and item.type == "ConfigChosen":
                if (item.stream_version or 0) > self.version:
                    if segment:
                        self._flush(kind, segment, out)
                        segment, kind = [], None
                    self._choose(item, out)
                continue
            event = item if isinstance(item, DataEvent) else data_event(item)
            if event is None or event.version <= self.version:
                continue
            self.version, self.last_position = event.version, event.position
            if self._previous is not None:
                self._previous.see(event)
            if not self.fold.accepts(event):
                out.other_spec += 1  # its features may not fit this spec version
                if self._previous is not None:
                    self._previous.arrived.pop(event.event_id, None)
                continue
            self._start(out)
            this = "label" if event.is_label else "labelled" if event.label is not None else "seen"
            if this != kind and segment:
                self._flush(kind, segment, out)
                segment = []
            kind = this
            segment.append(event)
        if segment:
            self._flush(kind, segment, out)
        return out

    def _pipeline_chosen(self, envelope: Envelope) -> Switch | None:
        """The switch a PipelineChosen calls for (None: this pipeline's already, applied). The
        core's version moves past it only when the switch is done (`switched`) or given up
        (`abandon_switch`): a snapshot taken before then has the event still to apply."""
        assert envelope.stream_version is not None and envelope.position is not None
        chosen = envelope.data()
        assert isinstance(chosen, PipelineChosen)
        if chosen.pipeline_version == self.spec.version:
            self.version, self.last_position = envelope.stream_version, envelope.position
            return None
        from_version = min(chosen.from_version, envelope.stream_version - 1)
        return Switch(
            chosen.pipeline_version, from_version, envelope.stream_version, envelope.position
        )

    def begin_switch(self, switch: Switch, spec: TaskSpec, learner: Learner) -> None:
        """The incoming pipeline (`spec`, a fresh `learner`), before it catches up."""
        if spec.version != switch.pipeline_version or spec.name != self.spec.name:
            raise ValueError(f"spec {spec.name}/{spec.version} is not the one {switch} names")
        incoming = TaskTraining(spec, learner, pending_limit=self._pending_limit, quiet=True)
        incoming.version = switch.from_version
        self._incoming, self._switch = incoming, switch

    def catch_up(self, events: Sequence[Envelope]) -> int:
        """The incoming pipeline learns stored data events (in stream order, after the switch's
        `from_version`, before the switch itself); returns how many it applied."""
        assert self._incoming is not None and self._switch is not None, "begin_switch first"
        after, upto = self._incoming.version, self._switch.to_version
        due = [e for e in events if after < (e.stream_version or 0) < upto]
        self._incoming.apply(due)
        return len(due)

    def abandon_switch(self, switch: Switch) -> None:
        """The switch cannot be made (its spec's learner fails on these rows): this pipeline
        goes on, past the event. Every replay fails the same way and goes on the same way."""
        self._incoming, self._switch = None, None
        self.version, self.last_position = switch.to_version, switch.position

    def switched(self) -> Output:
        """The incoming pipeline takes over: its spec, fold, learner and the rows it awaits
        labels for; the champion and arms are followed again (by the trainer, those of this
        pipeline); its first model, a new line, is published now. Counters and served figures
        go on."""
        incoming, switch, out = self._incoming, self._switch, Output()
        assert incoming is not None and switch is not None, "begin_switch first"
        self._incoming, self._switch = None, None
        self.version, self.last_position = switch.to_version, switch.position
        # The pipeline it leaves is folded on: serving answers with its champion meanwhile. Rows
        # awaiting labels keep their inputs as that pipeline's (its champion learns them).
        self._previous = _Previous(self.spec, self.fold, self._recent)
        self._previous_until = self.n_learned_total + PREVIOUS_ROWS
        for observation, pending in incoming._pending.items():
            left = self._pending.get(observation)
            if left is not None:
                pending.champion_x = left.x
        self.spec, self.fold, self.learner = incoming.spec, incoming.fold, incoming.learner
        self._pending, self._recent = incoming._pending, incoming._recent
        self._first_position = incoming._first_position
        self._last_learned_position = incoming._last_learned_position
        self._last_learned_version = incoming._last_learned_version
        self._challenger, self._line_version = None, None
        self._champion, self.champion_version, self._champion_previous = None, None, False
        self._window = deque(maxlen=self.spec.promotion.window)
        self.arms.follow(None, None, {})
        # Entrants of this pipeline descend from its own; drift and switch facts are its own.
        self.entrants, self._entrant_rows = {}, {}
        self._since_publish = incoming.n_learned_total  # what its first model learned
        self._switches += 1
        out.candidates.append(self._candidate())
        return out

    def start(self) -> Output:
        """Version 1 if there is none yet: the learner as it starts, before any event. The
        same bytes and id whether it is published at start-up or at the first data event."""
        out = Output()
        self._start(out)
        return out

    def _choose(self, envelope: Envelope, out: Output) -> None:
        """Governance promoted an entrant or rolled back: the race runs the configuration of the
        model serving answers with from this row on."""
        assert envelope.stream_version is not None and envelope.position is not None
        self.version, self.last_position = envelope.stream_version, envelope.position
        chosen = envelope.data()
        assert isinstance(chosen, ConfigChosen)
        if chosen.pipeline_version != self.spec.version:
            return
        evidence: dict[str, Any] = {
            "chosen_by": "governance",
            "model_version": chosen.model_version,
        }
        name = f"chosen/{chosen.model_version}"  # schema version 1: entrants, by version
        if chosen.decided_at is not None:
            evidence |= {"decided_at": chosen.decided_at, "rollback": chosen.rollback}
            name = f"decision/{chosen.decided_at}"
        switch = self.learner.choose(chosen.config, evidence)
        if isinstance(switch, list):  # a multiclass learner's: one per class that switched
            for each in switch:
                self._record_switch(each, f"{name}/{each.to_config}", out)
        elif switch is not None:
            self._record_switch(switch, name, out)

    def _start(self, out: Output) -> None:
        """Version 1, before anything is learned: a model serving can answer with at once."""
        if self.model_version == 0 and not self._quiet:
            out.candidates.append(self._candidate())

    def inputs(self, event: DataEvent) -> list[float]:
        """Fold an observation in; return the row's model inputs (features, online features)."""
        assert event.features is not None
        return model_inputs(self.spec, event.features, self.fold.apply(event) or [])

    def _flush(self, kind: str | None, segment: list[DataEvent], out: Output) -> None:
        if kind == "seen":
            rows = [self.inputs(e) for e in segment]
            X = np.array(rows, dtype=float)
            answers, configs = self.learner.predict_on_arrival(X)
            proba = answers.tolist()
            # A copy per row: a view would keep its whole batch's matrix alive while pending.
            per_row = [None] * len(rows) if configs is None else [c.copy() for c in configs]
            theirs = self._previous_inputs(segment)
            champion = self._champion_at_arrival(X, theirs)
            shadows = self.arms.at_arrival(X)
            arrived = zip(segment, rows, proba, champion, shadows, per_row, theirs, strict=True)
            for event, x, p, c, sh, cf, xc in arrived:
                self._remember(
                    event.event_id,
                    _Pending(
                        x,
                        p,
                        event.served,
                        event.position,
                        c,
                        event.served_version,
                        event.served_role,
                        sh,
                        cf,
                        xc,
                    ),
                )
            return
        learned: list[_Row] = []
        if self._first_label_position is None and segment:  # "labelled" or "label"
            self._first_label_position = segment[0].position
        if kind == "labelled":
            previous = self._previous_inputs(segment)
            for e, xc in zip(segment, previous, strict=True):
                assert e.label is not None
                learned.append(
                    _Row(
                        self.inputs(e),
                        e.label,
                        None,
                        None,
                        e.position,
                        e.version,
                        champion_x=xc,
                        observed=e.position,
                    )
                )
        else:
            for e in segment:
                assert e.observation_id is not None and e.label is not None
                self.fold.apply(e)
                pending = self._pending.pop(e.observation_id, None)
                if pending is None:
                    out.unmatched_labels += 1
                    continue
                learned.append(
                    _Row(
                        pending.x,
                        e.label,
                        pending.proba,
                        pending.served,
                        e.position,
                        e.version,
                        pending.champion,
                        pending.served_version,
                        pending.served_role,
                        pending.shadows,
                        pending.configs,
                        pending.champion_x,
                        pending.position,
                    )
                )
        self._learn(learned, out)

    def _end_previous(self) -> None:
        """Stop folding the pipeline left (at a publish point: the same row in every replay); a
        champion of it is no longer scored (candidates are compared on their own figures)."""
        self._previous = None
        if self._champion_previous:
            self._champion, self._champion_previous = None, False
            self._window.clear()

    def _previous_inputs(self, segment: Sequence[DataEvent]) -> list[list[float] | None]:
        """Each observation's inputs as the previous pipeline's (None without one)."""
        if self._previous is None:
            return [None] * len(segment)
        return self._previous.take(segment)

    def _champion_at_arrival(
        self, X: np.ndarray, previous: Sequence[list[float] | None]
    ) -> list[float | None]:
        """The champion's prediction of rows arriving now, with its own pipeline's inputs."""
        out: list[float | None] = [None] * len(X)
        if self._champion is None:
            return out
        if not self._champion_previous:
            return list(self._champion.predict(X).tolist())
        known = [i for i, x in enumerate(previous) if x is not None]
        if known:
            theirs = self._champion.predict(np.array([previous[i] for i in known]))
            for i, p in zip(known, theirs.tolist(), strict=True):
                out[i] = p
        return out

    def _remember(self, observation_id: uuid.UUID, pending: _Pending) -> None:
        self._pending[observation_id] = pending
        while len(self._pending) > self._pending_limit:
            self._pending.popitem(last=False)  # oldest first: its label is the least likely to come

    def _learn(self, rows: list[_Row], out: Output) -> None:
        """Learn rows in chunks ending exactly at publish points, so versions are deterministic.

        Rows labelled on arrival are learned test-then-train (each predicted by the model as it
        was after the rows before it); late-labelled rows are scored on the prediction made when
        they arrived, before their label was known.
        """
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, self._next_publish - self.n_learned_total)
            chunk = rows[start : start + take]
            start += take
            X = np.array([r.x for r in chunk], dtype=float)
            y = np.array([r.y for r in chunk], dtype=float if self._regression else int)
            if chunk[0].proba is None:
                report = self.learner.test_then_train(X, y)
                proba = np.asarray(report.proba, dtype=float)
            else:
                proba = np.array([r.proba for r in chunk], dtype=float)
                configs = _arrival_configs(chunk)
                report = self.learner.learn(X, y, proba, configs)
            served = [(r.y, r.served) for r in chunk if r.served is not None]
            if served:
                self.served.update(
                    np.array([s[0] for s in served]), np.array([s[1] for s in served])
                )
                self._score_served(chunk, out)
            if self._regression:
                self._calibrate(chunk, proba)
            learned = [LearnedRow(r.version, r.x, r.y) for r in chunk]
            self._recent.add(learned)
            if self._previous is not None:
                self._previous.recent.add(_previous_rows(chunk))
            champion = self._shadow(chunk, learned, proba)
            self._score_arms(chunk, champion, out)
            self._challenge(X, y, chunk, out)
            started = self._record(report, out)
            if started is not None:  # a challenger from the row after the alarm, in this chunk
                after = min(max(started - self.n_learned_total, 0), len(chunk))
                self._challenge(X[after:], y[after:], chunk[after:], out)
            if self._first_position is None:
                self._first_position = chunk[0].position
            self._last_learned_position = chunk[-1].position
            self._last_learned_version = chunk[-1].version
            self.n_learned_total += len(chunk)
            self._since_publish += len(chunk)
            if self.n_learned_total == self._next_publish:
                if self._previous is not None and self.n_learned_total >= self._previous_until:
                    self._end_previous()
                if not self._quiet:
                    out.candidates.append(self._candidate())
                    self._entrant(out)
                every = self.spec.learner.publish_every
                total = self.n_learned_total
                self._next_publish = min(2 * total, every) if total < every else total + every

    def _shadow(
        self, chunk: list[_Row], rows: list[LearnedRow], proba: np.ndarray
    ) -> list[Answer | None]:
        """Score the champion as serving runs it on the rows just learned, like the learner:
        each row predicted when it arrived (for rows labelled on arrival: as of the rows before
        it), then its label learned by the champion's online parts too. Returns those
        predictions (None without a champion)."""
        if self._champion is None:
            return [None] * len(chunk)
        prequential: list[float | None] = [None] * len(chunk)
        if not self._champion_previous:
            prequential = list(self._champion.learn(rows))
        else:  # its own pipeline's inputs, on the rows that have them
            known = [i for i, r in enumerate(chunk) if r.champion_x is not None]
            learned = self._champion.learn(_previous_rows([chunk[i] for i in known]))
            for i, p in zip(known, learned, strict=True):
                prequential[i] = p
        out = [
            row.champion if row.champion is not None else at_label
            for row, at_label in zip(chunk, prequential, strict=True)
        ]
        scored = [i for i, theirs in enumerate(out) if theirs is not None]
        if scored:
            y = [chunk[i].y for i in scored]
            mine = row_losses(self._regression, y, proba[scored])
            theirs = row_losses(self._regression, y, [out[i] for i in scored])
            self._window.extend(zip(mine.tolist(), theirs.tolist(), y, strict=True))
        return out

    def _score_arms(self, chunk: list[_Row], champion: list[Answer | None], out: Output) -> None:
        """The canary and shadows on the rows just learned; every ARMS_EVERY labelled rows
        while any is active, an ArmsScored fact with the counts so far."""
        if not self.arms.active:
            return
        self.arms.learn(
            [
                Labelled(
                    r.version, r.x, r.y, r.served, r.served_version, r.served_role, c, r.shadows
                )
                for r, c in zip(chunk, champion, strict=True)
            ]
        )
        self._arms_labelled += len(chunk)
        if self._arms_labelled >= ARMS_EVERY:
            self._arms_labelled = 0
            evidence = self.arms.evidence()
            fact = ArmsScored(
                task=self.spec.name,
                champion_version=evidence["champion_version"],
                canary=evidence["canary"],
                shadows=evidence["shadows"],
                at_labelled=self.n_learned_total + len(chunk),
            )
            key = f"{self.spec.name}/arms/{fact.at_labelled}"
            out.facts.append((uuid.uuid5(_NAMESPACE, key), fact))

    def _score_served(self, chunk: list[_Row], out: Output) -> None:
        """Count each served row for the model (and role) that answered it, and each shadow's
        score of it; every SERVED_WINDOW rows, a ServedScored fact. Windows close at exact row
        counts, so a replay, however its events are batched, makes the same facts."""
        for r in chunk:
            if r.served is None or r.served_version is None:
                continue
            answers = [(r.served_version, r.served_role or "champion", r.served)]
            answers += [(version, "shadow", proba) for version, proba in r.shadows.items()]
            for version, role, answer in answers:
                counts = self._served_window.setdefault((version, role), [0, 0])
                counts[0] += 1
                loss = row_loss(self._regression, r.y, answer)
                counts[1] += loss if self._regression else int(loss == 0)
            self._served_rows += 1
            if self._served_rows % SERVED_WINDOW == 0:
                score = "abs_error" if self._regression else "correct"
                number = self._served_rows // SERVED_WINDOW
                fact = ServedScored(
                    task=self.spec.name,
                    window=SERVED_WINDOW,
                    n_windows=number,
                    to_position=r.position,
                    arms=[
                        {"model_version": v, "role": role, "n": n, score: c}
                        for (v, role), (n, c) in sorted(self._served_window.items())
                    ],
                )
                key = f"{self.spec.name}/{self.spec.version}/served/{number}"
                out.facts.append((uuid.uuid5(_NAMESPACE, key), fact))
                self._served_window = {}

    def _calibrate(self, chunk: list[_Row], answered: np.ndarray) -> None:
        """Keep the absolute errors of the chunk's answers given after the task's first label
        was stored: serving's (exact, from the events) and the learner's own (`answered`,
        `batch_invariant`). An answer given before any label existed (the learner as it
        starts, answering its default) says nothing of a model that has learned: on a new task
        its errors, as large as the target's level, would widen every interval until RESIDUALS
        answers later (TrumpApproval: 75 points wide for a mean error of 9)."""
        first = self._first_label_position
        assert first is not None  # the chunk's labels are stored
        informed = [i for i, r in enumerate(chunk) if r.observed > first]
        self._learner_errors.extend(
            batch_invariant(abs(chunk[i].y - float(answered[i])) for i in informed)
        )
        for i in informed:
            row = chunk[i]
            if row.served is not None:
                error = abs(row.y - cast(float, row.served))
                self._calibration.append(error)
                reach = self._reaches.get(row.served_version or 0)
                if reach is not None:
                    self._covered.append(error <= reach)

    def _served_errors(self) -> list[float] | None:
        """What a regression's prediction intervals are calibrated on: the absolute errors of
        the last RESIDUALS answers serving gave after the task's first label (log and wait;
        asked before each label existed, by the model that answered, so as stale as callers
        get them; exact, from the events, so the same in every replay); before MIN_RESIDUALS
        of them, the learner's own after that label (too few of those: no interval). None for
        a classifier."""
        if not self._regression:
            return None
        if len(self._calibration) >= MIN_RESIDUALS:
            return list(self._calibration)
        return list(self._learner_errors)

    def _published_errors(self, version: int) -> list[float] | None:
        """`_served_errors`, for the file of model `version`, whose interval reach is noted
        (as serving will compute it from that file) to score the intervals it answers."""
        errors = self._served_errors()
        if errors is not None:
            self._reaches[version] = conformal_reach(errors)
            while len(self._reaches) > KEPT_REACHES:
                del self._reaches[next(iter(self._reaches))]
        return errors

    def comparison(self) -> dict[str, float]:
        """The learner's and the champion's accuracy (a regression: mean absolute error) on the
        same recent labelled rows (labelled after the champion was known here, so it learned
        none of them; each predicted with the same inputs), the rows only one of them got right
        (a regression: was the closer on, and the spread of the difference of their errors, what
        its paired test reads), and what a constant would have scored: always answering the
        majority class (a regression: the rows' median)."""
        if self._champion is None or not self._window:
            return {}
        n = len(self._window)
        mine, theirs, labels = np.array(self._window, dtype=float).T
        out = {"window_n": float(n), "champion_version": float(self.champion_version or 0)}
        if self._regression:
            return out | {
                "window_mae": float(mine.mean()),
                "champion_window_mae": float(theirs.mean()),
                # The spread of the row-by-row difference of the two errors: what the policy's
                # paired test of the difference in MAE reads.
                "window_error_difference_sd": float((mine - theirs).std()),
                "window_candidate_closer": float((mine < theirs).sum()),
                "window_champion_closer": float((theirs < mine).sum()),
                "window_constant_mae": float(np.abs(labels - np.median(labels)).mean()),
            }
        majority = float(np.bincount(labels.astype(np.int64)).max())
        return out | {
            "window_accuracy": float((mine == 0).sum()) / n,
            "champion_window_accuracy": float((theirs == 0).sum()) / n,
            "window_only_candidate_right": float(((mine == 0) & (theirs == 1)).sum()),
            "window_only_champion_right": float(((theirs == 0) & (mine == 1)).sum()),
            "window_majority_accuracy": majority / n,
        }

    def metrics(self) -> dict[str, float]:
        """The learner's prequential figures, serving's (on rows it recorded), the comparison."""
        out = {k: float(v) for k, v in self.learner.metrics.items()}
        if self.served.n:
            served = self.served.as_dict()
            figures = {
                "regression": ("mae", "rmse", "r2", "recent_mae"),
                "multiclass": ("accuracy", "log_loss", "macro_f1", "recent_accuracy"),
            }.get(self.spec.target.kind, ("accuracy", "log_loss", "recent_accuracy"))
            out["served_n_labelled"] = served["n_labelled"]
            out.update({f"served_{name}": served[name] for name in figures})
        if self._covered:
            out["served_interval_coverage"] = sum(self._covered) / len(self._covered)
            out["served_interval_n"] = float(len(self._covered))
        return {**out, **self.comparison()}

    def _challenge(self, X: np.ndarray, y: np.ndarray, chunk: list[_Row], out: Output) -> None:
        """Feed the challenger started at the last drift; publish it at exactly 250 learned rows,
        then at twice as many each time (whatever the chunks), until its last version."""
        start = 0
        while self._challenger is not None and start < len(chunk):
            due = CHALLENGER_ROWS
            while due <= self._challenger_rows:
                due *= 2
            end = min(len(chunk), start + due - self._challenger_rows)
            self._challenger.test_then_train(X[start:end], y[start:end])
            self._challenger_rows += end - start
            start = end
            if self._challenger_rows == due:
                self._publish_challenger(
                    chunk[end - 1], due // 2 if due > CHALLENGER_ROWS else due, out
                )

    def _publish_challenger(self, last: _Row, learned: int, out: Output) -> None:
        assert self._challenger is not None
        self.model_version += 1
        version = self.model_version
        out.candidates.append(
            Candidate(
                event_id=uuid.uuid5(
                    _NAMESPACE, f"{self.spec.name}/{self.spec.version}/model/{version}"
                ),
                model_bytes=self._challenger.model_bytes(
                    learned_through=last.version, residuals=self._published_errors(version)
                ),
                model_version=version,
                parent_version=self._challenger_version,
                config=f"restart-after-drift-at-{self._challenger_from}",
                metrics={k: float(v) for k, v in self._challenger.metrics.items()},
                first_position=None,
                last_position=last.position,
                n_learned=learned,
                n_learned_total=self._challenger_rows,
                pipeline_version=self.spec.version,
                params=dict(self.spec.learner.params),
                role="challenger",
            )
        )
        self._challenger_version = version
        if self._challenger_rows >= CHALLENGER_LAST:
            self._challenger = None  # its last version: it learns no more

    def _start_challenger(self, at_labelled: int) -> bool:
        """A fresh challenger after a rise in error, unless the one running has not been
        published yet (the same drift, still being learned): a published one is replaced."""
        if (
            self._challengers is None
            or (self._challenger is not None and self._challenger_rows < CHALLENGER_ROWS)
            or at_labelled < CHALLENGERS_AFTER
        ):
            return False
        self._challenger = self._challengers()
        self._challenger_rows = 0
        self._challenger_from = at_labelled
        self._challenger_version = None
        return True

    @property
    def _period(self) -> str:
        """Keys a learner's own facts apart from those of the learners before a pipeline switch
        (each counts its rows from its own start): nothing before the first switch."""
        return f"/switch-{self._switches}" if self._switches else ""

    def _record(self, report: Any, out: Output) -> int | None:
        """The learner's drifts, switches and the search's drops as facts; returns the labelled
        count at which a new challenger started (a rise in error), if one did."""
        task = self.spec.name
        started = None
        for drift in getattr(report, "drifts", ()):
            if drift.evidence.get("rise") and self._start_challenger(drift.at_labelled):
                started = drift.at_labelled  # a rising error: a fresh learner challenges
            fact = DriftDetected(
                task=task,
                detector=drift.detector,
                at_labelled=drift.at_labelled,
                model_version=self.model_version or None,
                evidence=dict(drift.evidence),
            )
            key = f"{task}/drift/{drift.detector}/{drift.at_labelled}{self._period}"
            out.facts.append((uuid.uuid5(_NAMESPACE, key), fact))
        for switch in getattr(report, "switches", ()):
            self._record_switch(switch, f"{switch.at_labelled}/{switch.to_config}", out)
        for drop in getattr(report, "dropped", ()):
            dropped = ConfigDropped(
                task=task,
                config=drop.config,
                at_labelled=drop.at_labelled,
                evidence=dict(drop.evidence),
            )
            key = f"{task}/{self.spec.version}/drop/{drop.at_labelled}/{drop.config}{self._period}"
            out.facts.append((uuid.uuid5(_NAMESPACE, key), dropped))
        return started

    def _record_switch(self, switch: Any, name: str, out: Output) -> None:
        switched = ConfigSwitched(
            task=self.spec.name,
            from_config=switch.from_config,
            to_config=switch.to_config,
            at_labelled=switch.at_labelled,
            evidence=dict(switch.evidence),
        )
        key = f"{self.spec.name}/switch/{name}{self._period}"
        out.facts.append((uuid.uuid5(_NAMESPACE, key), switched))

    def _entrant(self, out: Output) -> None:
        """At a publish point, once `entrant_every` more rows have been learned: the race's
        runner-up as an entrant, to run as a live shadow (the race judged it on the trainer's
        predictions; the shadow is judged on the rows serving answers), unless it was right and
        wrong on exactly the champion's recent rows. Each is the child of the last entrant of
        the same configuration."""
        policy = self.spec.promotion.canary
        if not policy.shadow_entrants or self.n_learned_total < self._next_entrant:
            return
        every = policy.entrant_every
        self._next_entrant = (self.n_learned_total // every + 1) * every
        runner_up = self.learner.entrant()
        if runner_up is None:
            return  # no configuration differs from the champion on its recent rows
        config, evidence = runner_up
        parent = max((v for v, c in self.entrants.items() if c == config), default=None)
        since = self._entrant_rows.get(config, 0)
        self._entrant_rows[config] = self.n_learned_total
        self.model_version += 1
        version = self.model_version
        self.entrants[version] = config
        # Its own figures only: the learner's prequential ones are its race champion's.
        race = {k: float(v) for k, v in self.learner.metrics.items() if k.startswith("race_")}
        metrics = {
            **race,
            "race_window": float(evidence["window"]),
            "race_wins": float(evidence["wins"]),
            "race_losses": float(evidence["losses"]),
        }
        for figure in ("recent_accuracy", "recent_mae"):  # a classifier's, or a regression's
            if f"race_{figure}.{config}" in race:
                metrics[figure] = race[f"race_{figure}.{config}"]
        out.candidates.append(
            Candidate(
                event_id=uuid.uuid5(
                    _NAMESPACE, f"{self.spec.name}/{self.spec.version}/model/{version}"
                ),
                model_bytes=self.learner.model_bytes(
                    self._last_learned_version, config, self._published_errors(version)
                ),
                model_version=version,
                parent_version=parent,
                config=config,
                metrics=metrics,
                first_position=self._first_position,
                last_position=self._last_learned_position,
                n_learned=self.n_learned_total - since,
                n_learned_total=self.n_learned_total,
                pipeline_version=self.spec.version,
                params=dict(self.spec.learner.params),
                role="entrant",
            )
        )

    def _candidate(self) -> Candidate:
        parent = self._line_version  # not a challenger published in between
        self.model_version += 1
        self._line_version = self.model_version
        learned, self._since_publish = self._since_publish, 0
        version = self.model_version
        return Candidate(
            event_id=uuid.uuid5(
                _NAMESPACE, f"{self.spec.name}/{self.spec.version}/model/{version}"
            ),
            model_bytes=self.learner.model_bytes(
                learned_through=self._last_learned_version,
                residuals=self._published_errors(version),
            ),
            model_version=version,
            parent_version=parent,
            config=self.learner.champion_config(),
            metrics=self.metrics(),
            first_position=self._first_position,
            last_position=self._last_learned_position,
            n_learned=learned,
            n_learned_total=self.n_learned_total,
            pipeline_version=self.spec.version,
            params=dict(self.spec.learner.params),
        )
