"""A multiclass target, one class against the rest: it learns, it is deterministic, a published
model answers (and moves on) as the learner does, and bad labels are refused."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from services.trainer.multiclass import OneVsRest
from shared.model_codec import ModelFormatError, decode, decode_any
from shared.online_models import LearnedRow, LiveModel
from shared.tasks import RecordError, TaskSpec, validate_label
from tests.support import FAST_LEARNER

FAST = {**FAST_LEARNER, "search_rows": 300}  # the search drops within these rows too


def sectors(n: int, seed: int, turn_at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Four classes by the angle of (x0, x1) around the centre, 5% of labels noise; after
    `turn_at` every class moves one sector on (an abrupt change of concept)."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, 3))
    angle = np.arctan2(X[:, 1] - 0.5, X[:, 0] - 0.5)
    y = ((angle + np.pi) / (np.pi / 2)).astype(int) % 4
    noisy = rng.random(n) < 0.05
    y[noisy] = rng.integers(0, 4, noisy.sum())
    if turn_at is not None:
        y[turn_at:] = (y[turn_at:] + 1) % 4
    return X, y


def test_it_learns_four_classes_and_reports_accuracy_macro_f1_and_log_loss() -> None:
    X, y = sectors(3000, seed=1)
    learner = OneVsRest(3, 4, params=FAST)
    report = learner.test_then_train(X, y)
    assert report.proba is not None and report.proba.shape == (3000, 4)
    np.testing.assert_allclose(report.proba.sum(axis=1), 1.0)
    tail = slice(1500, None)
    assert (report.proba[tail].argmax(axis=1) == y[tail]).mean() > 0.85
    metrics = learner.metrics
    assert metrics["accuracy"] == pytest.approx((report.proba.argmax(axis=1) == y).mean())
    assert 0.8 < metrics["macro_f1"] <= 1.0 and 0 < metrics["log_loss"] < 1.0


def test_it_follows_an_abrupt_change_of_every_class() -> None:
    X, y = sectors(4000, seed=2, turn_at=2000)
    learner = OneVsRest(3, 4, params=FAST)
    report = learner.test_then_train(X, y)
    assert report.proba is not None and report.drifts
    after = slice(2500, None)
    assert (report.proba[after].argmax(axis=1) == y[after]).mean() > 0.8


def test_how_rows_are_split_into_calls_does_not_change_the_model() -> None:
    X, y = sectors(1200, seed=3, turn_at=700)
    whole = OneVsRest(3, 4, params=FAST)
    whole.test_then_train(X, y)
    pieces = OneVsRest(3, 4, params=FAST)
    for start, stop in [(0, 1), (1, 99), (99, 100), (100, 537), (537, 1200)]:
        pieces.test_then_train(X[start:stop], y[start:stop])
    digest = [hashlib.sha256(m.model_bytes()).hexdigest() for m in (whole, pieces)]
    assert digest[0] == digest[1]
    assert whole.metrics == pieces.metrics


def test_late_labels_are_scored_on_what_was_answered_when_the_rows_arrived() -> None:
    X, y = sectors(600, seed=4)
    learner = OneVsRest(3, 4, params=FAST)
    learner.test_then_train(X[:400], y[:400])
    answered, configs = learner.predict_on_arrival(X[400:500])
    assert answered.shape == (100, 4) and configs.shape[:2] == (100, 4)
    learner.test_then_train(X[500:600], y[500:600])  # later rows are learned first
    before = learner.metrics["n_labelled"]
    report = learner.learn(X[400:500], y[400:500], answered, configs)
    assert np.array_equal(report.proba, answered)
    assert learner.metrics["n_labelled"] == before + 100


def test_a_published_model_answers_and_moves_on_exactly_as_the_learner() -> None:
    X, y = sectors(800, seed=5)
    learner = OneVsRest(3, 4, params=FAST)
    learner.test_then_train(X[:700], y[:700])  # 700: a tick, so no retrain in the next 99 rows
    published = learner.model_bytes(learned_through=700)
    live = LiveModel(published)
    probe = np.random.default_rng(6).random((40, 3))
    assert np.array_equal(live.predict_proba(probe), learner.predict_proba(probe))
    np.testing.assert_allclose(
        decode_any(published).predict_proba(probe), live.predict_proba(probe)
    )
    with pytest.raises(ModelFormatError, match="multiclass"):
        decode(published)
    mine = learner.test_then_train(X[700:790], y[700:790]).proba
    rows = [
        LearnedRow(701 + i, x, int(t))
        for i, (x, t) in enumerate(zip(X[700:790].tolist(), y[700:790].tolist(), strict=True))
    ]
    assert np.array_equal(np.asarray(live.learn(rows)), mine)
    assert np.array_equal(live.predict_proba(probe), learner.predict_proba(probe))
    assert live.learned_through == 790


def test_labels_outside_the_classes_are_refused() -> None:
    learner = OneVsRest(2, 3, params=FAST)
    for bad in ([0, 3], [-1]):
        with pytest.raises(ValueError, match="0..2"):
            learner.test_then_train(np.zeros((len(bad), 2)), np.array(bad))
    assert learner.metrics["n_labelled"] == 0.0
    with pytest.raises(ValueError, match="at least 3"):
        OneVsRest(2, 2)


def test_a_multiclass_target_lists_three_or_more_distinct_classes() -> None:
    def spec(target: dict) -> TaskSpec:
        return TaskSpec.model_validate(
            {"name": "triage", "features": [{"name": "x"}], "target": target}
        )

    triage = spec({"name": "queue", "kind": "multiclass", "classes": ["a", "b", "c"]})
    assert [validate_label(triage, c) for c in ("a", "b", "c")] == [0, 1, 2]
    with pytest.raises(RecordError, match="not one of"):
        validate_label(triage, "d")
    for target, message in [
        ({"name": "q", "kind": "multiclass"}, "three or more"),
        ({"name": "q", "kind": "multiclass", "classes": ["a", "b"]}, "three or more"),
        ({"name": "q", "kind": "multiclass", "classes": ["a", "b", "a"]}, "distinct"),
        ({"name": "q", "classes": ["a", "b", "c"]}, "kind multiclass"),
    ]:
        with pytest.raises(ValueError, match=message):
            spec(target)


def test_empty_chunks_learn_nothing_and_fractional_labels_are_refused() -> None:
    learner = OneVsRest(2, 3, params=FAST)
    report = learner.test_then_train(np.zeros((0, 2)), np.zeros(0, dtype=int))
    assert report.n_learned == 0 and learner.metrics["n_labelled"] == 0.0
    with pytest.raises(ValueError, match="0..2"):
        learner.test_then_train(np.zeros((2, 2)), np.array([1.0, 1.7]))


def test_a_multiclass_file_without_its_class_models_is_refused_as_malformed() -> None:
    for models in ([], "x", [{}] * 2):
        data = json.dumps({"format": "continuo-ovr/1", "models": models}).encode()
        with pytest.raises(ModelFormatError, match="malformed"):
            decode_any(data)
        with pytest.raises(ModelFormatError, match="malformed"):
            LiveModel(data)


def test_a_target_has_at_most_a_hundred_classes() -> None:
    with pytest.raises(ValueError, match="at most 100 classes"):
        TaskSpec.model_validate(
            {
                "name": "many",
                "features": [{"name": "x"}],
                "target": {"name": "q", "kind": "multiclass", "classes": list(range(101))},
            }
        )


def test_classes_sharing_their_binned_windows_make_the_same_models_as_alone() -> None:
    """Each tick's windows are binned once for every class (SharedWindows): a booster trained
    on the shared Dataset, its labels set for its class, is the one trained on its own."""
    rng = np.random.default_rng(12)
    X = rng.normal(size=(1500, 4))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.7, 0.0, 0.7])  # 4 classes
    shared, alone = OneVsRest(4, 4, params=FAST_LEARNER), OneVsRest(4, 4, params=FAST_LEARNER)
    for learner in alone.classes:
        learner.shared_windows = None
    for start in range(0, 1500, 500):
        rows = slice(start, start + 500)
        assert np.array_equal(
            shared.test_then_train(X[rows], y[rows]).proba,
            alone.test_then_train(X[rows], y[rows]).proba,
        )
    assert shared.n_updates == alone.n_updates > 4
    assert shared.model_bytes(learned_through=1500) == alone.model_bytes(learned_through=1500)
