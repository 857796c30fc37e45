"""A regression task through the trainer core: served values scored on their absolute errors,
candidates compared with the champion on the same rows, the canary and shadows scored on pairs,
and the promotion policy reading mean absolute errors."""

from __future__ import annotations

import numpy as np
import pytest

from services.governance.canary import Paired, shadow_analysis
from services.governance.policy import decide, metric_check
from services.trainer import core as core_module
from services.trainer.arms import Arms, Labelled
from services.trainer.core import TaskTraining
from services.trainer.learner import OnlineLearner
from shared.events.envelope import Envelope, new_event
from shared.events.types import LabelRecorded, ObservationRecorded, Served, ServedScored
from shared.online_models import LearnedRow, LiveModel
from shared.tasks import CanaryPolicy, PromotionPolicy, TaskSpec
from tests.support import FAST_LEARNER, TEST_PRODUCER
from tests.unit.served_loop import served_one_request_late

SPEC = TaskSpec.model_validate(
    {
        "name": "demand",
        "features": [{"name": "x1"}, {"name": "x2"}],
        "target": {"name": "units", "kind": "regression"},
        "learner": {"publish_every": 500, "params": FAST_LEARNER},
        "promotion": {"window": 300},
    }
)


def _rows(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    y = 40.0 + 30.0 * X[:, 0] - 20.0 * X[:, 1] ** 2 + rng.normal(0, 1.0, n)
    return X, y


class Stream:
    def __init__(self) -> None:
        self.position = 0

    def _stored(self, payload, event_id=None) -> Envelope:
        self.position += 1
        event = new_event(payload, stream_id="data-demand", producer=TEST_PRODUCER)
        return event.model_copy(update={"position": self.position, "stream_version": self.position})

    def observe(self, x, label=None, served=None, version=1) -> Envelope:
        return self._stored(
            ObservationRecorded(
                task="demand",
                pipeline_version=SPEC.version,
                entity_id="e",
                features={"x1": float(x[0]), "x2": float(x[1])},
                label=label,
                served=None if served is None else Served(model_version=version, value=served),
            )
        )

    def label(self, observation: Envelope, label: float) -> Envelope:
        return self._stored(
            LabelRecorded(
                task="demand", observation_id=observation.event_id, entity_id="e", label=label
            )
        )


def _served_run(monkeypatch) -> tuple[TaskTraining, list, np.ndarray, np.ndarray, list]:
    """1,000 rows labelled on arrival, then 1,200 served by the champion (serving's own copy,
    learning each label as serving does), labelled one 100-row request late."""
    monkeypatch.setattr(core_module, "SERVED_WINDOW", 300)
    X, y = _rows(2200)
    stream = Stream()
    core = TaskTraining(SPEC, OnlineLearner.from_spec(SPEC))
    out = core.apply([stream.observe(x, float(t)) for x, t in zip(X[:1000], y[:1000], strict=True)])
    newest = out.candidates[-1]
    serving = LiveModel(newest.model_bytes)
    core.set_champion(newest.model_version, LiveModel(newest.model_bytes))
    answers, facts = served_one_request_late(
        core, stream, serving, X, y, 1000, newest.model_version
    )
    return core, facts, np.array(answers), y[1000:], out.candidates


def test_served_values_are_scored_on_their_absolute_errors(monkeypatch):
    core, facts, answers, labels, _ = _served_run(monkeypatch)
    metrics = core.metrics()
    errors = np.abs(answers - labels)
    assert metrics["served_n_labelled"] == 1200
    assert metrics["served_mae"] == pytest.approx(errors.mean())
    assert metrics["served_rmse"] == pytest.approx(np.sqrt((errors**2).mean()))
    # Far better than always answering the labels' mean (their spread is about 10).
    assert metrics["served_mae"] < 0.3 * np.abs(labels - labels.mean()).mean()
    assert not any(k.startswith("served_accuracy") for k in metrics)
    windows = [f for _, f in facts if isinstance(f, ServedScored)]
    assert [w.n_windows for w in windows] == [1, 2, 3, 4]
    arms = [a for w in windows for a in w.arms]
    assert all(set(a) == {"model_version", "role", "n", "abs_error"} for a in arms)
    assert sum(a["abs_error"] for a in arms) == pytest.approx(errors.sum())


def test_a_candidate_is_compared_with_the_champion_on_the_same_rows_by_mae(monkeypatch):
    core, _, _, labels, _ = _served_run(monkeypatch)
    compared = core.comparison()
    assert compared["window_n"] == 300
    assert {"window_mae", "champion_window_mae", "window_constant_mae"} <= set(compared)
    assert "window_accuracy" not in compared
    closer = compared["window_candidate_closer"] + compared["window_champion_closer"]
    assert 0 < closer <= 300
    # Both are far better than a constant on those rows.
    assert compared["window_mae"] < 0.5 * compared["window_constant_mae"]
    assert compared["champion_window_mae"] < 0.5 * compared["window_constant_mae"]


def test_the_policy_reads_mean_absolute_errors_lower_is_better():
    policy = PromotionPolicy()
    base = {"champion_version": 3.0, "window_n": 300.0, "window_constant_mae": 9.0}
    better = base | {
        "window_mae": 1.0,
        "champion_window_mae": 1.2,
        "window_candidate_closer": 180.0,
        "window_champion_closer": 120.0,
    }
    ok, reason = metric_check(policy, better, {"recent_mae": 1.3}, 3)
    assert ok and reason.startswith("MAE 1 <= champion 1.2")
    worse = base | {
        "window_mae": 1.5,
        "champion_window_mae": 1.0,
        "window_error_difference_sd": 1.0,
        "window_candidate_closer": 60.0,
        "window_champion_closer": 240.0,
    }
    ok, reason = metric_check(policy, worse, {"recent_mae": 1.0}, 3)
    assert not ok and "paired t-test p = " in reason
    noise = worse | {"window_mae": 1.01}
    ok, reason = metric_check(policy, noise, {"recent_mae": 1.0}, 3)
    assert ok and "within noise" in reason
    # Closer on two rows in three, and far off on the rest: 2.6 times the champion's error is
    # no noise, however many rows it was closer on.
    far_off = worse | {
        "window_mae": 2.6,
        "window_error_difference_sd": 3.0,
        "window_candidate_closer": 200.0,
        "window_champion_closer": 100.0,
    }
    ok, reason = metric_check(policy, far_off, {"recent_mae": 1.0}, 3)
    assert not ok and "MAE 2.6 > champion 1" in reason
    constant = base | {
        "window_mae": 9.5,
        # Better than a constant: a candidate no better than one never replaces it (one no
        # better than a constant itself is replaced by one at least as good).
        "champion_window_mae": 8.0,
        "window_candidate_closer": 160.0,
        "window_champion_closer": 140.0,
    }
    ok, reason = metric_check(policy, constant, {"recent_mae": 9.0}, 3)
    assert not ok and "no better than a constant" in reason
    # Each one's own figures where the trainer did not score the champion; a first model's
    # 0 (nothing measured yet) is no bar.
    assert (
        metric_check(policy, {"recent_mae": 2.0}, {"recent_mae": 1.0, "n_labelled": 500})[0]
        is False
    )
    assert metric_check(policy, {"recent_mae": 2.0}, {"recent_mae": 0.0, "n_labelled": 0})[0]
    assert decide(policy, better, {"recent_mae": 1.3}, champion_version=3).promote


class Constant:
    learned_through = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)

    def learn(self, rows):
        return [self.value] * len(rows)


def test_a_shadow_of_a_regression_is_judged_on_the_difference_of_its_errors():
    arms = Arms(regression=True)
    arms.follow(1, None, {2: Constant(10.0)})
    X = np.zeros((400, 1))
    shadow = arms.at_arrival(X)
    rows = [
        # The champion answered 12.0; the labels are 10.5: the shadow (10.0) is closer.
        Labelled(i + 1, [0.0], 10.5, None, None, None, 12.0, shadow[i])
        for i in range(400)
    ]
    arms.learn(rows)
    evidence = arms.evidence()["shadows"][0]
    assert evidence == {
        "model_version": 2,
        "n": 400,
        "challenger_only": 400,
        "champion_only": 0,
        "challenger_abs_error": pytest.approx(200.0),
        "champion_abs_error": pytest.approx(600.0),
        "abs_error_difference_sq": pytest.approx(400.0),
    }
    analysis = shadow_analysis(Paired.from_counts(evidence), CanaryPolicy())
    assert analysis.verdict == "promote"
    assert "better than the champion by 66.67% of the champion's MAE" in analysis.reasons[0]
    assert analysis.evidence["mae_challenger"] == pytest.approx(0.5)


def test_a_challenger_closer_on_most_rows_but_far_off_on_the_rest_is_not_better():
    # Closer by 0.1 on 300 rows of 400, off by 3 more on the other 100: MAE 0.8 worse per row.
    n, closer, far = 400, 300, 100
    counts = {
        "n": n,
        "challenger_only": closer,
        "champion_only": far,
        "challenger_abs_error": closer * 0.9 + far * 4.0,
        "champion_abs_error": closer * 1.0 + far * 1.0,
        "abs_error_difference_sq": closer * 0.1**2 + far * 3.0**2,
    }
    analysis = shadow_analysis(Paired.from_counts(counts), CanaryPolicy())
    assert analysis.effect < 0
    assert analysis.verdict == "roll_back", analysis


def test_a_published_regression_answers_a_prediction_interval_that_covers_about_90_percent():
    """Split conformal on the absolute errors in the model file (here the learner's own, before
    serving answered any): on a stationary stream about 90% of labels fall inside, and the
    interval stays as published while the model learns on."""
    from shared.online_models import INTERVAL_COVERAGE, RESIDUALS

    X, y = _rows(5000, seed=8)
    learner = OnlineLearner.from_spec(SPEC)
    learner.test_then_train(X[:2000], y[:2000])
    serving = LiveModel(learner.model_bytes(learned_through=2000))
    residuals = [float(f"{e:.6g}") for e in learner._metrics.recent_errors(RESIDUALS)]
    assert len(residuals) == RESIDUALS
    rank = int(np.ceil((RESIDUALS + 1) * INTERVAL_COVERAGE))  # 451st of 500
    reach = serving.interval_half_width()
    assert rank == 451 and reach == sorted(residuals)[450]
    inside = []
    for i in range(2000, 5000):
        value = float(serving.predict(X[i : i + 1])[0])
        inside.append(value - reach <= y[i] <= value + reach)
        serving.learn([LearnedRow(i + 1, list(X[i]), float(y[i]))])
    assert 0.85 <= np.mean(inside) <= 0.95, np.mean(inside)
    assert serving.interval_half_width() == reach


def test_a_regressions_bytes_do_not_depend_on_how_its_events_come_in_batches():
    """The learner's answers differ in the last bits with the batch (the linear members' Python
    path for a few rows, numpy's for many): the errors a file keeps are rounded, so the same
    events give the same bytes (what a replay and a takeover rely on)."""
    X, y = _rows(3000, seed=4)
    events, waiting = [], []
    stream = Stream()
    for start in range(0, 3000, 100):  # 100-row requests, labelled one request late
        observed = [stream.observe(X[i]) for i in range(start, start + 100)]
        events += observed
        waiting.append((observed, range(start, start + 100)))
        if len(waiting) > 1:
            labelled, rows = waiting.pop(0)
            events += [stream.label(o, float(y[i])) for o, i in zip(labelled, rows, strict=True)]

    def published(batch: int) -> list[bytes]:
        core = TaskTraining(SPEC, OnlineLearner.from_spec(SPEC))
        out = []
        for start in range(0, len(events), batch):
            out += [c.model_bytes for c in core.apply(events[start : start + batch]).candidates]
        return out

    whole, small = published(1000), published(7)
    assert len(whole) >= 5 and whole == small


def test_a_served_regressions_intervals_are_calibrated_on_what_serving_answered(monkeypatch):
    """With log and wait, the file keeps the errors of serving's own answers (as stale as the
    callers got them), exactly as recorded."""
    core, _, answers, labels, _ = _served_run(monkeypatch)
    from shared.model_codec import parse
    from shared.online_models import RESIDUALS

    newest = core._candidate()
    kept = parse(newest.model_bytes)["online"]["residuals"]
    served_errors = np.abs(answers - labels)
    assert kept == served_errors[-RESIDUALS:].tolist()


def test_the_intervals_coverage_as_callers_got_them_is_a_served_figure(monkeypatch):
    """Each served answer is scored against the interval its version's file gives (the reach
    serving computes from it): the share of the last RESIDUALS labels inside is in the models'
    metrics, beside serving's MAE, so a user sees whether 90% intervals hold 90%."""
    from shared.online_models import RESIDUALS

    core, _, answers, labels, candidates = _served_run(monkeypatch)
    reach = LiveModel(candidates[-1].model_bytes).interval_half_width()
    assert reach is not None
    held = (np.abs(answers - labels) <= reach)[-RESIDUALS:]
    metrics = core.metrics()
    assert metrics["served_interval_n"] == RESIDUALS
    assert metrics["served_interval_coverage"] == held.mean()
    assert 0.75 < metrics["served_interval_coverage"] < 1.0


def test_answers_given_before_the_tasks_first_label_do_not_widen_its_intervals(monkeypatch):
    """A new task: serving answers with version 1 (the learner as it starts) from the first
    row, labels one 100-row request late, so rows 0-199 were answered before any label existed.
    Their errors (the target's whole level) are left out of the interval's calibration, from
    the first published version on (before serving's informed answers are labelled, the
    learner's own informed ones); every answer given after the first label is in."""
    from shared.model_codec import parse

    published = []
    candidate = TaskTraining._candidate

    def keep(self):
        made = candidate(self)
        published.append(made)
        return made

    monkeypatch.setattr(TaskTraining, "_candidate", keep)
    X, y = _rows(600, seed=5)
    core = TaskTraining(SPEC, OnlineLearner.from_spec(SPEC))
    serving = LiveModel(OnlineLearner.from_spec(SPEC).model_bytes(0))
    answers, _ = served_one_request_late(core, Stream(), serving, X, y, 0, 1)
    errors = np.abs(np.array(answers) - y)
    blind, informed = errors[:200], errors[200:]
    assert blind.mean() > 3 * informed.mean()  # answering 0 for a level of about 40
    newest = core._candidate()
    assert parse(newest.model_bytes)["online"]["residuals"] == informed.tolist()
    # The early versions, published before 20 answers given after the first label had their
    # labels, answer no interval (none to go by); none reaches anywhere near a blind error.
    reaches = [LiveModel(c.model_bytes).interval_half_width() for c in published]
    assert len(reaches) >= 4 and reaches[:2] == [None, None], reaches
    assert all(r is None or r < 0.5 * blind.mean() for r in reaches), reaches
    assert reaches[-1] is not None


def test_a_binary_model_and_a_young_regression_have_no_interval():
    from services.trainer.learner import OnlineLearner as Learner

    binary = Learner(2, seed=7)
    X = np.random.default_rng(1).uniform(0, 1, (300, 2))
    binary.test_then_train(X, (X[:, 0] > 0.5).astype(int))
    assert LiveModel(binary.model_bytes(300)).interval_half_width() is None
    young = OnlineLearner.from_spec(SPEC)
    young.test_then_train(*(a[:10] for a in _rows(10)))
    assert LiveModel(young.model_bytes(10)).interval_half_width() is None  # 10 < MIN_RESIDUALS


def test_a_refusal_never_shows_two_unequal_errors_as_equal():
    """Governance printed "MAE 0.3437 > champion 0.3437 x (1 + tolerance 0.0)": figures a
    reason compares get the digits it takes to tell them apart."""
    close = {
        "champion_version": 3.0,
        "window_n": 300.0,
        "window_constant_mae": 9.0,
        "window_mae": 0.343712,
        "champion_window_mae": 0.343681,
        "window_error_difference_sd": 0.0001,
        "window_candidate_closer": 100.0,
        "window_champion_closer": 200.0,
    }
    ok, reason = metric_check(PromotionPolicy(), close, {"recent_mae": 0.34}, 3)
    assert not ok and reason.startswith("MAE 0.34371 > champion 0.34368 x"), reason
    ok, reason = metric_check(PromotionPolicy(), close | {"window_mae": 0.343681}, {}, 3)
    assert ok and reason.startswith("MAE 0.3437 <= champion 0.3437 on"), reason
