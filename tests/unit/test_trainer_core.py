"""The trainer core: prequential order, late-label joins, online features as served, fixed
publish points, replay safety."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import numpy as np

from services.trainer import core as core_module
from services.trainer.core import TaskTraining, config_choice
from services.trainer.drift import Drift
from services.trainer.racing import ConfigDrop, ConfigSwitch
from shared.events.envelope import Envelope, new_event
from shared.events.types import (
    ConfigChosen,
    ConfigDropped,
    ConfigSwitched,
    DriftDetected,
    LabelRecorded,
    ModelTrained,
    ObservationRecorded,
    Served,
    ServedScored,
)
from shared.tasks import TaskSpec
from tests.support import TEST_PRODUCER


@dataclass
class Report:
    proba: np.ndarray
    drifts: list = field(default_factory=list)
    switches: list = field(default_factory=list)


@dataclass
class FakeLearner:
    """Predicts the share of 1s learned so far; its "history" is that count. Records calls."""

    ones: int = 0
    seen: int = 0
    n_updates: int = 0
    calls: list[tuple] = field(default_factory=list)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.ones / self.seen if self.seen else 0.5)

    def predict_on_arrival(self, X: np.ndarray) -> tuple[np.ndarray, None]:
        return self.predict_proba(X), None

    def learn(self, X, y, proba, configs=None) -> Report:
        self.calls.append(("learn", y.tolist(), proba.tolist(), X.tolist()))
        self._absorb(y)
        return Report(proba)

    def test_then_train(self, X: np.ndarray, y: np.ndarray) -> Report:
        proba = []
        for label in y.tolist():  # row by row: each sees the rows before it
            proba.append(self.predict_proba(X[:1])[0])
            self._absorb(np.array([label]))
        self.calls.append(("test_then_train", y.tolist(), proba))
        return Report(np.array(proba))

    def _absorb(self, y: np.ndarray) -> None:
        self.ones += int(y.sum())
        self.seen += len(y)
        self.n_updates += 1

    def model_bytes(self, learned_through: int = 0, residuals=None) -> bytes:
        return json.dumps({"ones": self.ones, "seen": self.seen}).encode()

    def champion_config(self) -> str:
        return "fake"

    @property
    def metrics(self) -> dict[str, float]:
        return {"n_labelled": float(self.seen)}


SPEC = TaskSpec.model_validate(
    {
        "name": "t",
        "features": [{"name": "x"}],
        "target": {"name": "y"},
        "online_features": [{"name": "last", "kind": "last_label"}],
        "learner": {"publish_every": 4},
    }
)


class Stream:
    """Stored-looking data events with increasing positions and stream versions."""

    def __init__(self) -> None:
        self.position = 0

    def _stored(self, payload, event_id=None) -> Envelope:
        self.position += 1
        event = new_event(payload, stream_id="data-t", producer=TEST_PRODUCER, event_id=event_id)
        return event.model_copy(update={"position": self.position, "stream_version": self.position})

    def observe(
        self,
        x: float,
        label: int | None = None,
        *,
        online: dict[str, float] | None = None,
        served: float | None = None,
        spec: TaskSpec = SPEC,
    ) -> Envelope:
        payload = ObservationRecorded(
            task="t",
            pipeline_version=spec.version,
            entity_id="e",
            features={"x": x},
            label=label,
            online=online,
            served=None if served is None else Served(model_version=1, probability=served),
        )
        return self._stored(payload)

    def label(self, observation: Envelope, label: int) -> Envelope:
        payload = LabelRecorded(
            task="t", observation_id=observation.event_id, entity_id="e", label=label
        )
        return self._stored(payload)


def test_a_late_label_is_scored_on_the_prediction_made_before_it_was_known():
    learner, stream = FakeLearner(), Stream()
    core = TaskTraining(SPEC, learner)
    first = stream.observe(0.1, label=1)
    core.apply([first])  # learned: the learner now predicts 1.0
    pending = stream.observe(0.2)
    core.apply([pending])
    core.apply([stream.observe(0.3, label=0)])  # the learner moves on meanwhile
    core.apply([stream.label(pending, 0)])
    # Scored on the prediction made when it arrived, learned with the inputs it had then: x and
    # the last label known at the time (1), not the one known when its label came (0).
    assert learner.calls[-1] == ("learn", [0], [1.0], [[0.2, 1.0]])


@dataclass
class RaceLearner(FakeLearner):
    """Answers for two configurations at arrival: (the share of 1s, the rows seen so far)."""

    judged: list[list[list[float]] | None] = field(default_factory=list)

    def predict_on_arrival(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        proba = self.predict_proba(X)
        return proba, np.column_stack([proba, np.full(len(X), float(self.seen))])

    def learn(self, X, y, proba, configs=None) -> Report:
        self.judged.append(None if configs is None else np.asarray(configs).tolist())
        return super().learn(X, y, proba)


def test_the_race_is_judged_on_what_each_configuration_answered_when_the_row_arrived():
    learner, stream = RaceLearner(), Stream()
    core = TaskTraining(SPEC, learner)
    core.apply([stream.observe(0.1, label=1)])  # one row learned on arrival
    waiting = [stream.observe(0.2), stream.observe(0.3)]
    core.apply(waiting)  # answered with one row learned
    kept = [core._pending[w.event_id].configs for w in waiting]
    assert all(c is not None and c.base is None for c in kept)  # not views of the batch
    core.apply([stream.observe(0.4, label=0)])  # two learned now
    core.apply([stream.label(waiting[0], 0), stream.label(waiting[1], 1)])
    # The late rows come with what each configuration answered on arrival, not as they learn.
    assert learner.judged[-1] == [[1.0, 1.0], [1.0, 1.0]]
    assert learner.calls[-1][2] == [1.0, 1.0]  # and the champion's answer is the served one


def test_a_served_row_is_learned_with_the_online_values_it_was_served_with():
    learner, stream = FakeLearner(), Stream()
    core = TaskTraining(SPEC, learner)
    core.apply([stream.observe(0.1, label=1)])  # the fold now says last = 1
    served = stream.observe(0.2, online={"last": 0.0}, served=0.9)  # serving knew less
    core.apply([served, stream.label(served, 1)])
    assert learner.calls[-1][3] == [[0.2, 0.0]]
    # The headline figure is what serving answered (0.9 for a 1: right), kept apart from the
    # learner's own prediction.
    assert core.metrics()["served_accuracy"] == 1.0 and core.metrics()["served_n_labelled"] == 1


def test_a_label_recorded_after_a_prediction_never_changes_that_predictions_inputs():
    learner, stream = FakeLearner(), Stream()
    core = TaskTraining(SPEC, learner)
    first, second = stream.observe(0.1), stream.observe(0.2)
    core.apply([first, second, stream.label(first, 1), stream.label(second, 0)])
    # Both rows were predicted before any label: both saw "no label yet" (0.5).
    assert [call[3] for call in learner.calls] == [[[0.1, 0.5], [0.2, 0.5]]]


def test_observations_of_another_spec_version_are_learned_if_they_fit_else_counted():
    fits = SPEC.model_copy(update={"description": "another version"})
    wider = TaskSpec.model_validate(
        {**SPEC.model_dump(mode="json"), "features": [{"name": "x"}, {"name": "z"}]}
    )
    learner, stream = FakeLearner(), Stream()
    out = TaskTraining(wider, learner).apply(
        [stream.observe(0.1, label=1, spec=fits), stream.observe(0.2, label=0)]
    )
    assert out.other_spec == 2 and learner.seen == 0  # neither carries z
    learner = FakeLearner()
    out = TaskTraining(SPEC, learner).apply([stream.observe(0.3, label=1, spec=fits)])
    assert out.other_spec == 0 and learner.seen == 1


def test_labelled_observations_are_each_predicted_before_they_are_learned():
    learner, stream = FakeLearner(), Stream()
    core = TaskTraining(SPEC, learner)
    core.apply([stream.observe(0.1, label=1), stream.observe(0.2, label=1)])
    # Test-then-train row by row: the second row is predicted after the first was learned.
    assert learner.calls == [("test_then_train", [1, 1], [0.5, 1.0])]


def test_models_are_published_at_fixed_counts_whatever_the_batching():
    def run(batch: int) -> list[tuple[int, bytes, int]]:
        stream, core = Stream(), TaskTraining(SPEC, FakeLearner())
        events = [stream.observe(i / 10, label=i % 2) for i in range(10)]
        out = []
        for start in range(0, len(events), batch):
            out += core.apply(events[start : start + batch]).candidates
        return [(c.model_version, c.model_bytes, c.last_position) for c in out]

    assert run(1) == run(3) == run(10)
    # Version 1 at the first event, nothing learned yet; then every 4 labelled rows.
    assert [v for v, _, _ in run(10)] == [1, 2, 3]
    assert [p for _, _, p in run(10)] == [0, 4, 8]


def test_the_first_versions_come_early_then_every_publish_every_rows():
    spec = SPEC.model_copy(
        update={"learner": SPEC.learner.model_copy(update={"publish_every": 300})}
    )
    stream, core = Stream(), TaskTraining(spec, FakeLearner())
    events = [stream.observe(0.1, label=i % 2, spec=spec) for i in range(1000)]
    published = [c.n_learned_total for c in core.apply(events).candidates]
    assert published == [0, 50, 100, 200, 300, 600, 900]


def test_events_already_applied_are_skipped_by_stream_version():
    learner, stream = FakeLearner(), Stream()
    core = TaskTraining(SPEC, learner)
    events = [stream.observe(0.1, label=1), stream.observe(0.2, label=0)]
    core.apply(events)
    core.apply(events)  # redelivered by the broker after a restart
    assert learner.seen == 2


def test_a_replayed_core_emits_the_same_ids_and_bytes():
    stream = Stream()
    events = [stream.observe(i / 10, label=i % 2) for i in range(8)]
    a = TaskTraining(SPEC, FakeLearner()).apply(events).candidates
    b = TaskTraining(SPEC, FakeLearner()).apply(events).candidates
    assert [(c.event_id, c.model_bytes) for c in a] == [(c.event_id, c.model_bytes) for c in b]


def test_a_label_for_an_unknown_observation_is_counted_not_learned():
    learner, stream = FakeLearner(), Stream()
    core = TaskTraining(SPEC, learner)
    ghost = stream.observe(0.3).model_copy(update={"event_id": uuid.uuid4()})
    out = core.apply([stream.label(ghost, 1)])
    assert out.unmatched_labels == 1 and learner.seen == 0


class DriftingLearner(FakeLearner):
    """Reports one drift, one config switch and one drop on its first learned row."""

    def test_then_train(self, X: np.ndarray, y: np.ndarray):
        report = super().test_then_train(X, y)
        if self.seen == len(y):
            report.drifts = [Drift("adwin", 1, {"rise": True, "action": "cut"})]
            report.switches = [ConfigSwitch("fast", "slow", 1, {"fast": 0.7, "slow": 0.8})]
            report.dropped = [ConfigDrop("fast/short-4000", 1, {"next_budget_rows": 0})]
        return report


def test_a_learner_drift_switch_and_drop_become_facts_with_ids_that_survive_a_replay():
    stream = Stream()
    events = [stream.observe(0.1, label=1), stream.observe(0.2, label=0)]
    first = TaskTraining(SPEC, DriftingLearner()).apply(events).facts
    again = TaskTraining(SPEC, DriftingLearner()).apply(events).facts
    assert [type(f) for _, f in first] == [DriftDetected, ConfigSwitched, ConfigDropped]
    drift, switch, drop = (f for _, f in first)
    assert drift.detector == "adwin" and drift.evidence["rise"] is True
    assert switch.to_config == "slow" and switch.evidence == {"fast": 0.7, "slow": 0.8}
    assert isinstance(drop, ConfigDropped) and (drop.config, drop.at_labelled) == (
        "fast/short-4000",
        1,
    )
    assert [i for i, _ in first] == [i for i, _ in again]


def test_version_1_is_the_same_whether_published_at_start_up_or_at_the_first_event():
    at_start = TaskTraining(SPEC, FakeLearner()).start().candidates
    at_event = TaskTraining(SPEC, FakeLearner()).apply([Stream().observe(0.1)]).candidates
    assert [(c.event_id, c.model_bytes, c.n_learned_total) for c in at_start] == [
        (c.event_id, c.model_bytes, c.n_learned_total) for c in at_event
    ]
    core = TaskTraining(SPEC, FakeLearner())
    core.start()
    assert core.start().candidates == []  # once


def _served_facts(batches: list[list[Envelope]]) -> list[tuple[uuid.UUID, dict]]:
    core = TaskTraining(SPEC, FakeLearner())
    facts = []
    for batch in batches:
        out = core.apply(batch)
        facts += [(i, f.model_dump()) for i, f in out.facts if isinstance(f, ServedScored)]
    return facts


def test_served_accuracy_is_counted_per_window_of_served_rows_whatever_the_batching(monkeypatch):
    monkeypatch.setattr(core_module, "SERVED_WINDOW", 4)
    stream = Stream()
    events = []
    for i, label in enumerate([1, 1, 0, 1, 0, 0, 1, 1, 1, 0]):
        served = stream.observe(0.5, served=0.9)  # answered "1" by version 1, labelled later
        events += [served, stream.label(served, label)]
        if i == 1:
            events.append(stream.observe(0.7, label=1))  # not served: not counted
    together = _served_facts([events])
    one_by_one = _served_facts([[e] for e in events])
    assert together == one_by_one
    assert [f["n_windows"] for _, f in together] == [1, 2]  # rows 9 and 10 wait for a third
    assert [f["arms"] for _, f in together] == [
        [{"model_version": 1, "role": "champion", "n": 4, "correct": 3}],
        [{"model_version": 1, "role": "champion", "n": 4, "correct": 2}],
    ]
    assert together[1][1]["to_position"] == events[16].position  # the 8th served row's label
    assert len({i for i, _ in together}) == 2


class RisingLearner(FakeLearner):
    """Reports a rise in error when its labelled count passes each of `at`."""

    def __init__(self, at: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.at = at

    def test_then_train(self, X: np.ndarray, y: np.ndarray):
        before = self.seen
        report = super().test_then_train(X, y)
        report.drifts = [
            Drift("adwin", n, {"rise": True}) for n in self.at if before < n <= self.seen
        ]
        return report


def _challengers(drifts: tuple[int, ...], rows: int, batch: int) -> list:
    spec = SPEC.model_copy(
        update={"learner": SPEC.learner.model_copy(update={"publish_every": 1000})}
    )
    core = TaskTraining(spec, RisingLearner(drifts), challengers=FakeLearner)
    stream = Stream()
    events = [stream.observe(0.1, label=i % 3 == 0, spec=spec) for i in range(rows)]
    out = []
    for start in range(0, len(events), batch):
        out += core.apply(events[start : start + batch]).candidates
    return out


def test_a_challenger_goes_on_learning_and_is_published_at_doubling_counts():
    made = _challengers((1200,), 7000, 97)
    line = [c for c in made if c.role == "challenger"]
    # 250 rows after the drift, then at twice the rows each time, up to its last version.
    assert [c.n_learned_total for c in line] == [250, 500, 1000]
    assert [c.n_learned for c in line] == [250, 250, 500]
    assert [c.last_position for c in line] == [1200 + n for n in (250, 500, 1000)]
    assert [c.parent_version for c in line] == [None] + [c.model_version for c in line[:-1]]
    assert {c.config for c in line} == {"restart-after-drift-at-1200"}
    # The learner's own line names its own parents, never a challenger published in between.
    own = [c for c in made if c.role == "candidate"]
    assert [c.parent_version for c in own] == [None] + [c.model_version for c in own[:-1]]
    # Exact counts whatever the batching: the same versions, bytes and positions.
    same = _challengers((1200,), 7000, 1000)
    assert [(c.model_version, c.model_bytes, c.last_position) for c in same] == [
        (c.model_version, c.model_bytes, c.last_position) for c in made
    ]


def test_a_later_drift_starts_a_new_challenger_once_the_running_one_is_published():
    made = [c for c in _challengers((1200, 1300, 2000), 3000, 50) if c.role == "challenger"]
    # The rise at 1300 is the first drift still being learned; the one at 2000 starts anew.
    assert [(c.config, c.n_learned_total, c.parent_version is None) for c in made] == [
        ("restart-after-drift-at-1200", 250, True),
        ("restart-after-drift-at-1200", 500, False),
        ("restart-after-drift-at-2000", 250, True),
        ("restart-after-drift-at-2000", 500, False),
        ("restart-after-drift-at-2000", 1000, False),
    ]


@dataclass
class RacingLearner(FakeLearner):
    """A FakeLearner whose race has two configurations: `a` (champion) and `b`. Its bytes say
    which configuration they encode; `choose` is recorded between the rows learned."""

    champion: str = "a"

    def model_bytes(
        self, learned_through: int = 0, config: str | None = None, residuals=None
    ) -> bytes:
        return json.dumps({"config": config or self.champion, "seen": self.seen}).encode()

    def champion_config(self) -> str:
        return self.champion

    def entrant(self):
        other = "b" if self.champion == "a" else "a"
        return other, {"window": self.seen, "wins": 3, "losses": 2}

    def choose(self, config, evidence):
        self.calls.append(("choose", config, self.seen))
        if config == self.champion:
            return None
        switch = ConfigSwitch(self.champion, config, self.seen, dict(evidence))
        self.champion = config
        return switch


ENTRANTS = SPEC.model_copy(
    update={
        "learner": SPEC.learner.model_copy(update={"publish_every": 250}),
        "promotion": SPEC.promotion.model_copy(
            update={
                "canary": SPEC.promotion.canary.model_copy(
                    update={"shadow_entrants": True, "entrant_every": 500}
                )
            }
        ),
    }
)


def _chosen(stream: Stream, version: int, config: str, spec: TaskSpec = ENTRANTS) -> Envelope:
    return stream._stored(
        ConfigChosen(
            task="t",
            pipeline_version=spec.version,
            config=config,
            model_version=version,
            reason="promoted",
        )
    )


def _race_run(batch: int, choose_after: int | None = None) -> tuple[TaskTraining, list, list]:
    """1,600 labelled rows; after `choose_after` of them, governance's choice of the first
    entrant's configuration. Returns the core, its candidates and its facts."""
    core = TaskTraining(ENTRANTS, RacingLearner())
    stream = Stream()
    events = []
    for i in range(1600):
        if i == choose_after:
            # Versions: 1 at the start, 2-6 after 50, 100, 200, 250 and 500 rows, then the
            # entrant.
            events.append(_chosen(stream, 7, "b"))
        events.append(stream.observe(0.1, label=i % 3 == 0, spec=ENTRANTS))
    candidates, facts = [], []
    for start in range(0, len(events), batch):
        out = core.apply(events[start : start + batch])
        candidates += out.candidates
        facts += out.facts
    return core, candidates, facts


def test_the_race_runner_up_is_published_as_an_entrant_every_entrant_every_rows():
    core, made, _ = _race_run(batch=97)
    entrants = [c for c in made if c.role == "entrant"]
    assert [(c.n_learned_total, c.config) for c in entrants] == [
        (500, "b"),
        (1000, "b"),
        (1500, "b"),
    ]
    assert [c.parent_version for c in entrants] == [None] + [c.model_version for c in entrants[:-1]]
    assert [json.loads(c.model_bytes)["config"] for c in entrants] == ["b", "b", "b"]
    assert entrants[0].metrics["race_wins"] == 3.0 and entrants[0].n_learned == 500
    # The learner's own line is unchanged by them: its parents are its own versions.
    own = [c for c in made if c.role == "candidate"]
    assert {c.config for c in own} == {"a"}
    assert [c.parent_version for c in own] == [None] + [c.model_version for c in own[:-1]]
    assert core.entrants == {c.model_version: "b" for c in entrants}
    # Exact counts whatever the batching.
    _, same, _ = _race_run(batch=1000)
    assert [(c.model_version, c.model_bytes, c.role) for c in same] == [
        (c.model_version, c.model_bytes, c.role) for c in made
    ]
    # Off by default.
    plain = TaskTraining(SPEC, RacingLearner())
    stream = Stream()
    out = plain.apply([stream.observe(0.1, label=1) for _ in range(1200)])
    assert {c.role for c in out.candidates} == {"candidate"}


def test_a_promoted_entrant_switches_the_race_at_its_place_in_the_stream():
    core, made, facts = _race_run(batch=97, choose_after=1200)
    first = next(c for c in made if c.role == "entrant")
    assert first.model_version == 7
    # The choice is applied between the rows: the 1,200 before it were learned under `a`.
    assert ("choose", "b", 1200) in core.learner.calls
    switched = [f for _, f in facts if isinstance(f, ConfigSwitched)]
    assert [(s.from_config, s.to_config, s.at_labelled) for s in switched] == [("a", "b", 1200)]
    assert switched[0].evidence == {"chosen_by": "governance", "model_version": 7}
    own = [c for c in made if c.role == "candidate"]
    assert [c.config for c in own if c.n_learned_total > 1200] == ["b", "b"]
    assert {c.config for c in own if c.n_learned_total <= 1200} == {"a"}
    # After the switch the runner-up (the next entrant) is the old champion's configuration.
    assert [c.config for c in made if c.role == "entrant"] == ["b", "b", "a"]
    # A replay, batched otherwise, makes the same models and the same facts.
    _, again, facts_again = _race_run(batch=1000, choose_after=1200)
    assert [(c.model_version, c.model_bytes) for c in again] == [
        (c.model_version, c.model_bytes) for c in made
    ]
    assert [key for key, _ in facts_again] == [key for key, _ in facts]


def test_the_choice_event_names_entrants_and_rollbacks_and_another_spec_versions_is_ignored():
    core, made, _ = _race_run(batch=500)
    entrant = next(c for c in made if c.role == "entrant")
    line = next(c for c in made if c.role == "candidate")

    def trained(candidate) -> ModelTrained:
        return candidate.fact("t", "sha")

    event_id, chosen = config_choice(trained(entrant), decided_at=4, rollback=False)
    assert (chosen.config, chosen.model_version, chosen.pipeline_version) == (
        "b",
        entrant.model_version,
        ENTRANTS.version,
    )
    assert (chosen.decided_at, chosen.rollback) == (4, False)
    # One event per decision, however often made; the race's own candidate needs none.
    assert config_choice(trained(entrant), decided_at=4, rollback=False)[0] == event_id
    assert config_choice(trained(line), decided_at=4, rollback=False) is None
    # A rollback chooses the configuration of the version it went back to, whatever its role;
    # each decision is its own event, even about the same version.
    back_id, back = config_choice(trained(line), decided_at=5, rollback=True)
    assert (back.config, back.model_version, back.decided_at, back.rollback) == (
        "a",
        line.model_version,
        5,
        True,
    )
    again, _ = config_choice(trained(entrant), decided_at=9, rollback=False)
    assert len({event_id, back_id, again}) == 3
    other = ENTRANTS.model_copy(update={"description": "another version"})
    stream = Stream()
    stream.position = core.version
    core.apply([_chosen(stream, entrant.model_version, "b", spec=other)])
    assert core.learner.champion == "a" and core.version == stream.position


def test_a_stored_row_that_no_longer_decodes_is_skipped_not_a_wedge():
    # Written before a bound was enforced: an online value that overflowed was stored as null.
    # Every replay of the task used to stop there for good; it is skipped (logged), its label
    # counted as unmatched, and the rows after it learned.
    core = TaskTraining(SPEC, FakeLearner())
    stream = Stream()
    first = stream.observe(0.1, label=1)
    poisoned = stream.observe(0.2, online={"last": 1.0}, served=0.5)
    poisoned = poisoned.model_copy(
        update={"payload": {**poisoned.payload, "online": {"last": None}}}
    )
    its_label = stream.label(poisoned, 1)
    after = stream.observe(0.3)
    out = core.apply([first, poisoned, its_label, after, stream.label(after, 0)])
    assert core.version == stream.position
    assert out.unmatched_labels == 1
    assert core.n_learned_total == 2
