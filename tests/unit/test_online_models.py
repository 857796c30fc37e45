"""A published model that keeps learning answers as the trainer's learner does, bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.trainer.learner import OnlineLearner
from shared.model_codec import decode, encode
from shared.online_models import (
    LearnedRow,
    LiveModel,
    OnlineLinear,
    OnlineRidge,
    RecentRows,
    _linear,
)

FAST = {"tick": 100, "short_window": 300, "short_every": 100, "window": 800, "update_every": 400}


def stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 3))
    return X, ((X[:, 0] + X[:, 1] > 1.0) ^ (rng.random(n) < 0.05)).astype(int)


def rows(X: np.ndarray, y: np.ndarray, first_version: int) -> list[LearnedRow]:
    return [
        LearnedRow(first_version + i, x, int(label))
        for i, (x, label) in enumerate(zip(X.tolist(), y.tolist(), strict=True))
    ]


@pytest.mark.parametrize(
    "config",
    [
        "blend-fast",
        "blend-slow",
        "linear",
        "linear-slow",
        "blend-fast/short-250",  # the window search's configurations
        "blend-fast/short-4000",
    ],
)
def test_a_live_model_learning_the_next_rows_answers_exactly_as_the_learner(config: str):
    X, y = stream(700, seed=1)
    learner = OnlineLearner(3, params=FAST)
    learner.test_then_train(X[:600], y[:600])  # 600: a tick, so no retrain in the next 99 rows
    learner._race.champion = learner._race.names.index(config)  # each racing entrant in turn
    published = learner.model_bytes(learned_through=600)
    live = LiveModel(published)
    probe = np.random.default_rng(2).random((50, 3))
    assert np.array_equal(live.predict_proba(probe), learner.predict_proba(probe))
    # One row at a time (serving's one-record requests: LightGBM's fast single-row path and
    # the linear members in plain Python) answers as the batch does, to the last bits.
    single = np.concatenate([live.predict_proba(probe[i : i + 1]) for i in range(len(probe))])
    np.testing.assert_allclose(single, learner.predict_proba(probe), rtol=0, atol=1e-12)
    # Both learn the next rows, each predicting a row before learning it.
    mine = learner.test_then_train(X[600:690], y[600:690]).proba
    theirs = live.learn(rows(X[600:690], y[600:690], first_version=601))
    assert np.array_equal(np.asarray(theirs), mine)
    assert np.array_equal(live.predict_proba(probe), learner.predict_proba(probe))
    assert live.learned_through == 690
    # What was published and what moved on differ: the live one learned 90 rows more.
    assert not np.array_equal(decode(published).predict_proba(probe), live.predict_proba(probe))


def test_rows_a_live_model_already_learned_are_not_learned_twice():
    X, y = stream(400, seed=3)
    learner = OnlineLearner(3, params=FAST)
    learner.test_then_train(X[:300], y[:300])
    once = LiveModel(learner.model_bytes(learned_through=300))
    twice = LiveModel(learner.model_bytes(learned_through=300))
    later = rows(X[300:350], y[300:350], first_version=301)
    once.learn(later)
    twice.learn(later)
    twice.learn(later[:30])  # redelivered
    probe = X[350:]
    assert np.array_equal(once.predict_proba(probe), twice.predict_proba(probe))


def test_a_model_without_online_state_predicts_as_published_and_learns_nothing():
    X, y = stream(300, seed=4)
    learner = OnlineLearner(3, params=FAST)
    learner.test_then_train(X, y)
    doc = decode(learner.model_bytes())
    frozen_bytes = encode(n_features=3, members=[(1.0, learner._boosters[1])])  # no `online`
    live = LiveModel(frozen_bytes)
    before = live.predict_proba(X[:20])
    live.learn(rows(X[:20], 1 - y[:20], first_version=1))
    assert np.array_equal(live.predict_proba(X[:20]), before)
    assert live.learned_through == 0 and doc.n_features == 3


def test_recent_rows_hands_back_what_came_after_a_version():
    recent = RecentRows(capacity=5)
    recent.add(LearnedRow(v, [0.0], 0) for v in range(1, 9))
    assert [r.version for r in recent.after(5)] == [6, 7, 8]
    assert [r.version for r in recent.after(0)] == [4, 5, 6, 7, 8]  # only 5 kept
    assert recent.oldest == 4


def test_row_by_row_and_batch_agree_on_extreme_inputs_and_an_unlearned_model():
    """Serving's few-row path (Python floats) and the batch path (numpy), on what a caller can
    send: huge and tiny values, and the model published before anything was learned."""
    extreme = np.array([[0.0, 0.0, 0.0], [1e300, -1e300, 5.0], [-1e308, 1e308, 0.0]])
    batch = np.vstack([extreme] * 12)  # over 32 rows: the numpy path
    X, y = stream(3000, seed=4)
    learner = OnlineLearner(3, params=FAST)
    learner.test_then_train(X, y)
    unlearned = LiveModel(OnlineLearner(3, params=FAST).model_bytes(learned_through=0))
    for live in (LiveModel(learner.model_bytes(learned_through=3000)), unlearned):
        with np.errstate(over="ignore"):  # the numpy path's standardising overflows to +-inf
            expected = live.predict_proba(batch)[:3]
        single = [live.predict_proba(extreme[i : i + 1])[0] for i in range(3)]
        assert np.all(np.isfinite(single))
        np.testing.assert_allclose(single, expected, rtol=0, atol=1e-12)
    assert unlearned.predict_proba(extreme[:1])[0] == 0.5


def _polls(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """TrumpApproval's shape: a day number near 736,000 and five polls that each track the
    target with noise; the target is their mean."""
    rng = np.random.default_rng(seed)
    level = 40 + np.cumsum(rng.normal(0, 0.3, n))
    polls = level[:, None] + rng.normal(0, 1.0, (n, 5))
    X = np.column_stack([736_000 + np.arange(n), polls])
    return X, polls.mean(axis=1)


def test_ridge_members_fit_collinear_inputs_with_a_large_offset_within_tens_of_rows():
    X, y = _polls(400, seed=3)
    y = (y - 40.0) / 2.0  # standardised, as the learner teaches it
    ridge = OnlineRidge(6, (1000, 100))
    errors = [
        abs(ridge.learn(x, float(t))[0] - t) for x, t in zip(X.tolist(), y.tolist(), strict=True)
    ]
    assert np.mean(errors[50:]) < 0.05 * np.mean(np.abs(y - y.mean()))
    assert np.all(np.isfinite(ridge.raws(X)))


def test_ridge_members_resumed_from_their_file_go_on_bit_for_bit():
    """What serving holds: the snapshots and state written into a model file, read back."""
    X, y = _polls(600, seed=5)
    ridge = OnlineRidge(6, (1000, 100))
    for x, t in zip(X[:300].tolist(), y[:300].tolist(), strict=True):
        ridge.learn(x, t)
    members = [_linear(json.loads(json.dumps(m.as_doc()))) for m in ridge.snapshots()]
    state = json.loads(json.dumps(ridge.state()))
    resumed = OnlineRidge.resume(state, members)
    assert resumed.raws(X[300:]).tolist() == ridge.raws(X[300:]).tolist()
    for x, t in zip(X[300:].tolist(), y[300:].tolist(), strict=True):
        assert resumed.learn(x, t) == ridge.learn(x, t)
    assert resumed.snapshots() == ridge.snapshots()


@pytest.mark.parametrize(
    "name, column",
    [
        ("constant", lambda i: 3.0),
        ("a copy of the first", None),
        ("huge", lambda i: 1e100 if i == 50 else float(i % 7)),
        ("zero", lambda i: 0.0),
    ],
)
def test_ridge_members_stay_finite_on_degenerate_inputs(name, column):
    rng = np.random.default_rng(1)
    ridge = OnlineRidge(2, (1000, 100))
    for i in range(300):
        first = float(rng.random())
        x = [first, first if column is None else column(i)]
        scores = ridge.learn(x, 2.0 * first)
        assert np.all(np.isfinite(scores)), (name, i, scores)
    assert np.all(np.isfinite(ridge.raws(np.array([[0.5, 0.5]] * 40))))
    assert all(np.isfinite(s.intercept) and np.all(np.isfinite(s.coef)) for s in ridge.snapshots())


def test_ridge_members_rescaled_answer_in_the_new_units():
    X, y = _polls(200, seed=7)
    ridge = OnlineRidge(6, (1000, 100))
    for x, t in zip(X.tolist(), y.tolist(), strict=True):
        ridge.learn(x, t)
    before = ridge.raws(X[:50])
    ridge.rescale(-2.0, 0.5)
    np.testing.assert_allclose(ridge.raws(X[:50]), -2.0 + 0.5 * before, rtol=1e-12, atol=1e-12)


def test_a_ridge_member_refuses_a_memory_shorter_than_a_row():
    with pytest.raises(ValueError, match="memory"):
        OnlineRidge(2, (0.5,))


_RIDGE_BITS = """
import hashlib, numpy as np
from shared.online_models import OnlineRidge
rng = np.random.default_rng(11)
ridge = OnlineRidge(12, (1000, 100))
for x, y in zip(rng.normal(size=(600, 12)).tolist(), rng.normal(size=600).tolist(), strict=True):
    ridge.learn(x, y)
print(hashlib.sha256(repr(ridge.state()).encode() + repr(ridge.snapshots()).encode()).hexdigest())
"""


def test_ridge_members_make_the_same_bits_whatever_blas_kernel_the_cpu_picks():
    """A trainer and a serving replica on different CPUs move a model on bit for bit: OpenBLAS
    picks its kernels by CPU (forced here), and its solve differed in the last bits with them."""
    cores = ["Prescott"] + (["Haswell"] if "avx2" in Path("/proc/cpuinfo").read_text() else [])
    digests = set()
    for core in [None, *cores]:
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        env |= {} if core is None else {"OPENBLAS_CORETYPE": core}
        done = subprocess.run(
            [sys.executable, "-c", _RIDGE_BITS], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1, digests


def test_ridge_members_of_a_one_row_memory_and_huge_inputs_stay_finite():
    rng = np.random.default_rng(2)
    for memories in ((1,), (1000, 100)):
        ridge = OnlineRidge(4, memories)
        for scale in (1e20, 1e100):
            for _ in range(30):
                scores = ridge.learn((rng.normal(size=4) * scale).tolist(), float(rng.normal()))
                assert np.all(np.isfinite(scores)), (memories, scale)
        assert all(np.all(np.isfinite(s.coef)) for s in ridge.snapshots())


@pytest.mark.parametrize(
    "make",
    [
        lambda: OnlineRidge(2, (1000, 100)),
        lambda: OnlineLinear(2, (0.003, 0.03)),  # a classifier's (Welford: it never forgets)
    ],
    ids=["ridge", "logistic"],
)
def test_one_wild_input_row_leaves_the_linear_members_seeing_their_inputs(make):
    """A row at +-1e100 (accepted: within the features' bound) made an input's deviation ~1e99
    for as long as the members' statistics remember it, every later value of it standardised
    to ~0. Against a twin that never saw the row, the members answer the rows after it alike."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(1600, 2))
    y = 3 * X[:, 0] + X[:, 1] + rng.normal(0, 0.3, 1600)
    if isinstance(make(), OnlineLinear):
        y = (y > 0).astype(float)
    clean, hit = make(), make()
    for x, t in zip(X[:1000].tolist(), y[:1000].tolist(), strict=True):
        clean.learn(x, t)
        hit.learn(x, t)
    hit.learn([1e100, -1e100], float(y[0]))
    hit.learn([-1e100, 1e100], float(y[1]))
    gaps = [
        np.abs(np.subtract(hit.learn(x, t), clean.learn(x, t))).max()
        for x, t in zip(X[1000:].tolist(), y[1000:].tolist(), strict=True)
    ]
    spread = np.abs(clean.raws(X[1000:])).mean()
    assert np.mean(gaps[100:]) < 0.2 * spread, (np.mean(gaps[100:]), spread)
    assert np.all(np.isfinite(hit.raws(X[1000:])))


@pytest.mark.parametrize(
    "make", [lambda: OnlineRidge(1, (1000,)), lambda: OnlineLinear(1, (0.01,))]
)
def test_a_value_50_deviations_away_counts_as_10_in_the_statistics(make):
    rng = np.random.default_rng(9)
    members = make()
    for v in rng.normal(size=1000).tolist():
        members.learn([v], float(v > 0))
    before = members.snapshots()[0].scale[0]
    members.learn([50.0 * before], 1.0)
    after = members.snapshots()[0].scale[0]
    # Taken whole it would add 2,500 / the rows' weight to the variance (the deviation x 1.87
    # or more); 10 deviations add 100 / it (x 1.05 over 1,000 rows, x 1.08 over a ridge
    # member's weight of 632 after 1,000 rows of a 1,000-row memory).
    assert after < 1.1 * before, (before, after)
