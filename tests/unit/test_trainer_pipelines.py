"""Pipeline switches in the trainer core: a PipelineChosen in the data stream hands training to
another spec version, caught up on the stored events it names, at the same place in any replay."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field

import numpy as np
import pytest

from services.trainer import core as core_module
from services.trainer.core import TaskTraining
from shared.events.types import PipelineChosen
from shared.tasks import TaskSpec
from tests.unit.test_trainer_core import SPEC, FakeLearner, Stream

# Another pipeline of the same task: other online features, other publish cadence.
NEXT = TaskSpec.model_validate(
    {
        **SPEC.model_dump(mode="json"),
        "online_features": [{"name": "mean", "kind": "label_mean", "window": 3}],
        "learner": {"publish_every": 6},
    }
)
SPECS = {SPEC.version: SPEC, NEXT.version: NEXT}


def _chosen(stream: Stream, spec: TaskSpec, from_version: int, at: int = 1):
    return stream._stored(
        PipelineChosen(
            task="t",
            pipeline_version=spec.version,
            from_version=from_version,
            reason="test",
            decided_at=at,
        )
    )


def _stream() -> list:
    """40 rows labelled on arrival and 10 late-labelled, a switch to NEXT from the 11th event
    after the 30th, and back to SPEC (from the start) after the 46th."""
    stream, events = Stream(), []
    for i in range(30):
        events.append(stream.observe(i / 30, label=i % 3 == 0))
    events.append(_chosen(stream, NEXT, from_version=10))
    waiting = [stream.observe(0.5) for _ in range(10)]
    events += waiting
    events += [stream.label(w, 1) for w in waiting[:5]]
    events.append(_chosen(stream, SPEC, from_version=0, at=2))
    events += [stream.label(w, 0) for w in waiting[5:]]
    events += [stream.observe(0.1, label=1) for _ in range(10)]
    return events


def _run(events: list, batch: int) -> tuple[TaskTraining, list, list[int]]:
    """The trainer's loop (services.trainer.service.learn) over an in-memory stream."""
    core, made, replayed = TaskTraining(SPEC, FakeLearner()), [], []
    for start in range(0, len(events), batch):
        rest = events[start : start + batch]
        while rest:
            out = core.apply(rest)
            made += out.candidates
            if out.switch is None:
                break
            rest = rest[out.consumed :]
            spec = SPECS[out.switch.pipeline_version]
            core.begin_switch(out.switch, spec, FakeLearner())
            replayed.append(core.catch_up(events))
            made += core.switched().candidates
    return core, made, replayed


def test_a_switch_hands_training_to_the_other_pipeline_caught_up_on_the_events_it_names():
    events = _stream()
    core = TaskTraining(SPEC, FakeLearner())
    out = core.apply(events)
    assert out.switch is not None and out.consumed == 31  # stopped at the choice
    assert (out.switch.from_version, out.switch.to_version) == (10, 31)
    before = core.model_version
    core.begin_switch(out.switch, NEXT, FakeLearner())
    assert core.catch_up(events) == 20  # events 11-30 (1-10 and those after it left aside)
    first = core.switched().candidates
    assert core.spec.version == NEXT.version
    # Its first model at once, numbered on, trained under NEXT, learned from 20 rows only.
    [model] = first
    assert model.model_version == before + 1 and model.pipeline_version == NEXT.version
    assert json.loads(model.model_bytes) == {"ones": 6, "seen": 20}
    assert model.parent_version is None  # a new line
    # The rows awaiting labels at the switch are the incoming pipeline's to learn.
    rest = core.apply(events[out.consumed :])
    assert rest.switch is not None and rest.switch.pipeline_version == SPEC.version
    assert rest.other_spec == 0


def test_switches_make_the_same_models_whatever_the_batching():
    events = _stream()
    runs = [_run(events, batch) for batch in (1, 7, 16, len(events))]
    first_core, first, replayed = runs[0]
    assert replayed == [20, 46]
    assert first_core.spec.version == SPEC.version
    assert {c.pipeline_version for c in first} == {SPEC.version, NEXT.version}
    for core, made, again in runs[1:]:
        assert again == replayed
        assert [(c.event_id, c.model_version, c.model_bytes, c.pipeline_version) for c in made] == [
            (c.event_id, c.model_version, c.model_bytes, c.pipeline_version) for c in first
        ]
        assert core.version == first_core.version


def test_choosing_the_pipeline_already_running_changes_nothing():
    stream = Stream()
    events = [stream.observe(0.1, label=1), _chosen(stream, SPEC, 0), stream.observe(0.2, label=0)]
    learner = FakeLearner()
    out = TaskTraining(SPEC, learner).apply(events)
    assert out.switch is None and out.consumed == 3 and learner.seen == 2


def test_a_spec_that_is_not_the_one_chosen_is_refused():
    stream = Stream()
    core = TaskTraining(SPEC, FakeLearner())
    out = core.apply([stream.observe(0.1, label=1), _chosen(stream, NEXT, 0)])
    assert out.switch is not None
    with pytest.raises(ValueError, match="is not the one"):
        core.begin_switch(out.switch, SPEC, FakeLearner())


def test_a_switch_whose_learner_fails_is_given_up_the_same_way_in_every_replay():
    events = _stream()
    core = TaskTraining(SPEC, FakeLearner())
    out = core.apply(events)
    assert out.switch is not None
    core.abandon_switch(out.switch)  # what the trainer does when the learner raises
    assert core.spec.version == SPEC.version and core.version == out.switch.to_version
    rest = core.apply(events[out.consumed :])
    assert rest.switch is None  # the next choice names the pipeline it runs: nothing to do
    assert core.spec.version == SPEC.version


def test_a_snapshot_taken_during_a_switch_has_the_switch_still_to_apply():
    events = _stream()
    core = TaskTraining(SPEC, FakeLearner())
    out = core.apply(events)
    assert out.switch is not None
    core.begin_switch(out.switch, NEXT, FakeLearner())
    core.catch_up(events)
    restored = pickle.loads(pickle.dumps(core))  # e.g. at a shutdown during the catch-up
    assert restored.version == out.switch.to_version - 1
    again = restored.apply(events)
    assert again.switch == out.switch  # applied again after the restore


@dataclass
class WidthScorer:
    """A served model that takes rows of one width only (a live model of one pipeline)."""

    width: int
    learned_through: int = 0
    rows: list = field(default_factory=list)

    def predict(self, X):
        assert X.shape[1] == self.width, X.shape
        return np.full(len(X), 0.9)

    def learn(self, rows):
        assert all(len(r.x) == self.width for r in rows)
        self.rows += rows
        return [0.9] * len(rows)


def test_a_champion_of_the_pipeline_left_is_scored_with_its_own_inputs_like_for_like():
    wider = NEXT.model_copy(
        update={
            "online_features": (
                *NEXT.online_features,
                *SPEC.online_features,
            )
        }
    )
    stream, events = Stream(), []
    for i in range(30):
        events.append(stream.observe(i / 30, label=i % 3 == 0))
    events.append(_chosen(stream, wider, from_version=0))
    waiting = [stream.observe(0.5) for _ in range(20)]
    events += waiting + [stream.label(w, 1) for w in waiting]
    core = TaskTraining(SPEC, FakeLearner())
    out = core.apply(events)
    core.begin_switch(out.switch, wider, FakeLearner())
    core.catch_up(events)
    core.switched()
    assert core.scores(SPEC.version) and core.scores(wider.version)
    assert not core.scores("another")
    champion = WidthScorer(len(SPEC.input_names))  # 2 inputs; the core's own rows have 3
    core.set_champion(1, champion, SPEC.version)
    assert len(champion.rows) == 30  # caught up on the rows before the switch, as serving does
    core.apply(events[out.consumed :])
    assert len(champion.rows) == 50  # then every labelled row, with its own pipeline's inputs
    figures = core.comparison()
    assert figures["window_n"] == 20 and figures["champion_version"] == 1
    # A champion of a pipeline the core does not fold is not scored.
    other = TaskTraining(SPEC, FakeLearner())
    other.set_champion(2, WidthScorer(9), "another")
    assert other.comparison() == {}


def test_rows_waiting_at_a_switch_are_learned_by_the_old_champion_and_the_old_fold_ends(
    monkeypatch,
):
    monkeypatch.setattr(core_module, "PREVIOUS_ROWS", 8)
    wider = NEXT.model_copy(
        update={"online_features": (*NEXT.online_features, *SPEC.online_features)}
    )
    stream, events = Stream(), []
    for i in range(10):
        events.append(stream.observe(i / 10, label=i % 2))
    early = [stream.observe(0.5) for _ in range(5)]  # arrive before the switch
    events += early
    events.append(_chosen(stream, wider, from_version=0))
    events += [stream.label(e, 1) for e in early]  # labelled after it
    core = TaskTraining(SPEC, FakeLearner())
    out = core.apply(events)
    core.begin_switch(out.switch, wider, FakeLearner())
    core.catch_up(events)
    core.switched()
    champion = WidthScorer(len(SPEC.input_names))
    core.set_champion(1, champion, SPEC.version)
    caught_up = len(champion.rows)
    core.apply(events[out.consumed :])
    assert len(champion.rows) == caught_up + 5  # with their inputs as the old pipeline's
    assert core.scores(SPEC.version)
    core.apply([stream.observe(0.2, label=1) for _ in range(20)])  # past 8 rows, to a publish
    assert not core.scores(SPEC.version) and core.comparison() == {}
