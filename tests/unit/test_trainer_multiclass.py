"""A multiclass task through the trainer core: served class probabilities scored on the answered
class (accuracy, macro-F1) and the log loss of the row's class, candidates compared with the
champion on the same rows, and the canary and shadows scored as a binary task's are."""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer import core as core_module
from services.trainer.arms import Arms, Labelled
from services.trainer.core import TaskTraining
from services.trainer.metrics import log_loss, row_loss, row_losses
from services.trainer.multiclass import OneVsRest
from services.trainer.service import default_learner
from shared.events.envelope import Envelope, new_event
from shared.events.types import LabelRecorded, ObservationRecorded, Served, ServedScored
from shared.online_models import LiveModel, answered_class
from shared.tasks import TaskSpec
from tests.support import FAST_LEARNER, TEST_PRODUCER
from tests.unit.served_loop import served_one_request_late

CLASSES = ("low", "mid", "high")
SPEC = TaskSpec.model_validate(
    {
        "name": "triage",
        "features": [{"name": "x1"}, {"name": "x2"}],
        "target": {"name": "level", "kind": "multiclass", "classes": list(CLASSES)},
        "learner": {"publish_every": 500, "params": FAST_LEARNER},
        "promotion": {"window": 300},
    }
)


def _rows(n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Three classes by bands of x1 + x2, 10% of labels flipped at random."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    y = np.digitize(X[:, 0] + X[:, 1], [0.75, 1.25])
    noise = rng.random(n) < 0.1
    y[noise] = rng.integers(0, 3, int(noise.sum()))
    return X, y


class Stream:
    def __init__(self) -> None:
        self.position = 0

    def _stored(self, payload) -> Envelope:
        self.position += 1
        event = new_event(payload, stream_id="data-triage", producer=TEST_PRODUCER)
        return event.model_copy(update={"position": self.position, "stream_version": self.position})

    def observe(self, x, label=None, served=None, version=1) -> Envelope:
        return self._stored(
            ObservationRecorded(
                task="triage",
                pipeline_version=SPEC.version,
                entity_id="e",
                features={"x1": float(x[0]), "x2": float(x[1])},
                label=label,
                served=None
                if served is None
                else Served(model_version=version, probabilities=list(served)),
            )
        )

    def label(self, observation: Envelope, label: int) -> Envelope:
        return self._stored(
            LabelRecorded(
                task="triage", observation_id=observation.event_id, entity_id="e", label=label
            )
        )


def _served_run(monkeypatch) -> tuple[TaskTraining, list, np.ndarray, np.ndarray]:
    """1,000 rows labelled on arrival, then 1,200 served by the champion (serving's own copy,
    learning each label as serving does), labelled one 100-row request late."""
    monkeypatch.setattr(core_module, "SERVED_WINDOW", 300)
    X, y = _rows(2200)
    stream = Stream()
    core = TaskTraining(SPEC, default_learner(SPEC))
    out = core.apply([stream.observe(x, int(t)) for x, t in zip(X[:1000], y[:1000], strict=True)])
    newest = out.candidates[-1]
    serving = LiveModel(newest.model_bytes)
    core.set_champion(newest.model_version, LiveModel(newest.model_bytes))
    answers, facts = served_one_request_late(
        core, stream, serving, X, y, 1000, newest.model_version
    )
    return core, facts, np.array(answers), y[1000:]


def test_the_trainer_learns_a_multiclass_task_one_learner_per_class():
    assert isinstance(default_learner(SPEC), OneVsRest)


def test_served_class_probabilities_are_scored_on_the_answered_class(monkeypatch):
    core, facts, answers, labels = _served_run(monkeypatch)
    metrics = core.metrics()
    assert answers.shape == (1200, 3)
    assert np.allclose(answers.sum(axis=1), 1.0)
    right = answers.argmax(axis=1) == labels
    assert metrics["served_n_labelled"] == 1200
    assert metrics["served_accuracy"] == pytest.approx(right.mean())
    truth = np.clip(answers[np.arange(len(labels)), labels], 1e-7, 1.0)
    assert metrics["served_log_loss"] == pytest.approx(-np.log(truth).mean())
    f1 = []
    for k in range(3):
        hits = float(((answers.argmax(axis=1) == k) & (labels == k)).sum())
        f1.append(2 * hits / ((answers.argmax(axis=1) == k).sum() + (labels == k).sum()))
    assert metrics["served_macro_f1"] == pytest.approx(np.mean(f1))
    # Learned: far better than the majority class (about 0.4 of the rows).
    assert metrics["served_accuracy"] > 0.7
    windows = [f for _, f in facts if isinstance(f, ServedScored)]
    assert [w.n_windows for w in windows] == [1, 2, 3, 4]
    arms = [a for w in windows for a in w.arms]
    assert all(set(a) == {"model_version", "role", "n", "correct"} for a in arms)
    assert sum(a["correct"] for a in arms) == int(right.sum())


def test_a_candidate_is_compared_with_the_champion_on_the_same_rows(monkeypatch):
    core, _, _, labels = _served_run(monkeypatch)
    compared = core.comparison()
    assert compared["window_n"] == 300
    recent = labels[-300:]
    assert compared["window_majority_accuracy"] == pytest.approx(np.bincount(recent).max() / 300)
    assert compared["champion_window_accuracy"] > compared["window_majority_accuracy"]
    assert compared["window_accuracy"] > compared["window_majority_accuracy"]
    # The rows only one got right account for the whole difference in accuracy.
    only = compared["window_only_candidate_right"] - compared["window_only_champion_right"]
    difference = compared["window_accuracy"] - compared["champion_window_accuracy"]
    assert only == pytest.approx(300 * difference)


def test_a_multiclass_answer_is_scored_on_its_most_probable_class():
    assert answered_class([0.2, 0.5, 0.3]) == 1
    assert answered_class([0.4, 0.2, 0.4]) == 0  # the first of equals, as numpy's argmax
    assert row_loss(False, 1, [0.2, 0.5, 0.3]) == 0.0
    assert row_loss(False, 2, [0.2, 0.5, 0.3]) == 1.0
    answers = np.array([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4], [0.1, 0.1, 0.8]])
    assert row_losses(False, [1, 2, 2], answers).tolist() == [0.0, 1.0, 0.0]
    assert log_loss([0.2, 0.5, 0.3], 2) == pytest.approx(-np.log(0.3))
    # A confident miss costs a bounded amount, not infinity.
    assert log_loss([1.0, 0.0, 0.0], 1) == pytest.approx(-np.log(1e-7))


def test_shadows_and_the_canary_of_a_multiclass_task_are_counted_as_a_classifiers():
    arms = Arms()
    arms.follow(1, 2, {})
    rows = [
        # (served answer, its role, the champion's answer, label)
        ([0.1, 0.8, 0.1], "canary", [0.6, 0.3, 0.1], 1),  # only the canary right
        ([0.7, 0.2, 0.1], "canary", [0.7, 0.2, 0.1], 0),  # both right
        ([0.1, 0.1, 0.8], "canary", [0.1, 0.1, 0.8], 1),  # both wrong
        ([0.2, 0.2, 0.6], "champion", [0.2, 0.2, 0.6], 2),
    ]
    arms.learn(
        [
            Labelled(i + 1, [0.0], y, served, 2 if role == "canary" else 1, role, champion, {})
            for i, (served, role, champion, y) in enumerate(rows)
        ]
    )
    canary = arms.evidence()["canary"]
    assert canary["canary"]["n"] == 3 and canary["canary"]["correct"] == 2
    assert canary["champion"] == {
        "n": 1,
        "correct": 1,
        "log_loss": pytest.approx(-np.log(0.6), abs=1e-6),
    }
    assert canary["paired"]["challenger_only"] == 1 and canary["paired"]["champion_only"] == 0
    expected = -np.log(0.8) - np.log(0.7) - np.log(0.1)
    assert canary["paired"]["challenger_log_loss"] == pytest.approx(expected, abs=1e-5)


def test_two_classes_drifting_at_the_same_row_are_two_facts_named_by_class():
    """Each class's learner reports its own drifts, switches and drops; named by class, two
    classes' facts at the same row are two facts (ids from the detector and the row)."""
    from services.trainer.drift import Drift
    from services.trainer.multiclass import class_fact
    from services.trainer.racing import ConfigDrop, ConfigSwitch

    drift = Drift("adwin", 3040, {"rise": True})
    named = [class_fact(k, drift) for k in (0, 2)]
    assert [d.detector for d in named] == ["class-0/adwin", "class-2/adwin"]
    assert [d.evidence["class"] for d in named] == [0, 2] and named[0].evidence["rise"]
    switch = class_fact(1, ConfigSwitch("blend-fast", "linear", 500))
    assert (switch.from_config, switch.to_config) == ("class-1/blend-fast", "class-1/linear")
    assert class_fact(1, ConfigDrop("tree-short", 800)).config == "class-1/tree-short"


def test_a_multiclass_config_is_each_classs_champion_and_choosing_it_switches_each_class():
    learner = default_learner(SPEC)
    X, y = _rows(600)
    learner.test_then_train(X, y)
    config = learner.champion_config()
    assert len(config.split(",")) == 3
    other = learner.classes[0]._race.names  # the configurations class 0 races
    target = next(name for name in other if name != learner.classes[0].champion_config())
    parts = config.split(",")
    switches = learner.choose(",".join([target, *parts[1:]]), {"chosen_by": "governance"})
    assert [s.to_config for s in switches] == [f"class-0/{target}"]
    assert learner.classes[0].champion_config() == target
    assert learner.choose("not,a,config,of,three", {}) == []


def test_the_runner_up_model_is_each_classs_runner_up_and_choosing_it_switches_each_class():
    learner = default_learner(SPEC)
    X, y = _rows(1500)
    learner.test_then_train(X, y)
    found = learner.entrant()
    assert found is not None
    config, evidence = found
    parts = config.split(",")
    assert len(parts) == 3 and config != learner.champion_config()
    for k, (part, c) in enumerate(zip(parts, learner.classes, strict=True)):
        own = c.entrant()
        assert part == (c.champion_config() if own is None else own[0])
        assert (str(k) in evidence["classes"]) == (own is not None)
    assert evidence["wins"] == sum(e["wins"] for e in evidence["classes"].values())
    # Its model is each class's part, answering other probabilities than the champion's.
    probe = _rows(50, seed=9)[0]
    entrant = LiveModel(learner.model_bytes(1500, config))
    champion = LiveModel(learner.model_bytes(1500))
    assert entrant.predict_proba(probe).shape == (50, 3)
    assert not np.allclose(entrant.predict_proba(probe), champion.predict_proba(probe))
    with pytest.raises(ValueError, match="one per class"):
        learner.model_bytes(1500, "linear")
    # Governance promoted it: ConfigChosen names it back, and each class runs its part.
    learner.choose(config, {"chosen_by": "governance"})
    assert learner.champion_config() == config


def test_a_multiclass_task_publishes_its_runner_up_as_an_entrant_where_the_policy_runs_them():
    canary = SPEC.promotion.canary.model_copy(
        update={"shadow_entrants": True, "entrant_every": 500}
    )
    spec = SPEC.model_copy(
        update={"promotion": SPEC.promotion.model_copy(update={"canary": canary})}
    )
    core = TaskTraining(spec, default_learner(spec))
    X, y = _rows(1500)
    stream = Stream()
    candidates = core.apply(
        [stream.observe(x, int(t)) for x, t in zip(X, y, strict=True)]
    ).candidates
    entrants = [c for c in candidates if c.role == "entrant"]
    assert entrants, [c.role for c in candidates]
    for made in entrants:
        assert len(made.config.split(",")) == 3
        assert made.metrics["race_wins"] >= 0 and made.metrics["race_window"] > 0
        assert LiveModel(made.model_bytes).predict_proba(X[:5]).shape == (5, 3)


def test_served_answers_hold_exactly_one_kind_of_answer_and_binary_rows_keep_their_shape():
    from shared.events.types import ServedPrediction

    with pytest.raises(ValueError, match="exactly one of"):
        Served(model_version=1, probability=0.3, probabilities=[0.3, 0.3, 0.4])
    assert "probabilities" not in Served(model_version=1, probability=0.3).model_dump()
    row = {"prediction_id": "6f1c0000-0000-4000-8000-000000000000", "model_version": 1}
    row |= {"entity_id": "e", "features": {}, "label": 1}
    binary = ServedPrediction.model_validate(row | {"probability": 0.9}).model_dump()
    assert "probabilities" not in binary
    many = ServedPrediction.model_validate(row | {"probability": None, "probabilities": [0.1] * 3})
    assert many.model_dump()["probabilities"] == [0.1] * 3


def test_a_task_of_many_classes_keeps_whole_names_that_choose_back_and_runs_entrants():
    """Twenty classes name a model in more than 200 characters: the name stays whole, so
    governance choosing it back switches every class, and the runner-up model is published."""
    classes = [f"c{k}" for k in range(20)]
    spec = SPEC.model_copy(
        update={"target": SPEC.target.model_copy(update={"classes": classes})}, deep=True
    )
    learner = default_learner(spec)
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1, (1000, 2))
    y = np.minimum((X[:, 0] * 20).astype(int), 19)
    learner.test_then_train(X, y)
    before = learner.champion_config().split(",")
    chosen = ",".join(["linear-slow"] * 20)
    assert len(chosen) > 200
    switches = learner.choose(chosen, {"chosen_by": "governance"})
    assert learner.champion_config() == chosen
    assert len(switches) == sum(1 for name in before if name != "linear-slow")
    learner.test_then_train(X, y)  # the races judge again after the choice
    found = learner.entrant()
    assert found is not None and len(found[0].split(",")) == 20
    assert LiveModel(learner.model_bytes(2000, found[0])).predict_proba(X[:5]).shape == (5, 20)
