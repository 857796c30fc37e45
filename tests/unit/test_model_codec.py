"""The shared model codec: deterministic bytes, faithful predictions, explanations."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest

from shared.model_codec import ModelFormatError, decode, encode
from shared.online_models import OnlineLinear

PARAMS = {"objective": "binary", "verbose": -1, "num_threads": 1, "deterministic": True}


def booster(seed: int, n_features: int = 3) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((300, n_features))
    y = (X[:, 0] + 0.3 * X[:, 1] > 0.6).astype(float)
    return lgb.train({**PARAMS, "seed": seed}, lgb.Dataset(X, y), num_boost_round=10), X


def test_encoding_the_same_model_twice_gives_the_same_bytes() -> None:
    model, _ = booster(1)
    first = encode(n_features=3, members=[(1.0, model)])
    second = encode(n_features=3, members=[(1.0, model.model_to_string())])
    assert first == second


def test_a_decoded_blend_predicts_the_weighted_sum_of_its_members_log_odds() -> None:
    (a, X), (b, _) = booster(1), booster(2)
    data = encode(n_features=3, members=[(0.7, a), (0.4, b)], bias=-0.1)
    logit = 0.7 * a.predict(X, raw_score=True) + 0.4 * b.predict(X, raw_score=True) - 0.1
    assert np.allclose(decode(data).predict_proba(X), 1 / (1 + np.exp(-logit)))


def test_contributions_are_weighted_treeshap_with_the_bias_last() -> None:
    (a, X), (b, _) = booster(1), booster(2)
    predictor = decode(encode(n_features=3, members=[(0.7, a), (0.4, b)], bias=0.2))
    contributions = predictor.contributions(X[:5])
    assert contributions.shape == (5, 4)
    assert np.allclose(contributions.sum(axis=1), predictor.logits(X[:5]))
    importance = predictor.feature_importance()
    assert set(importance) == {"f0", "f1", "f2"}
    assert max(importance, key=importance.get) == "f0"


def test_a_linear_member_predicts_and_explains_what_the_online_learner_computed() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 3)) * [1.0, 100.0, 0.01]
    y = (X[:, 0] + X[:, 1] / 100 > 0).astype(int)
    linear = OnlineLinear(3, [0.01])
    for x, label in zip(X.tolist(), y.tolist(), strict=True):
        linear.learn(x, label)
    (snapshot,) = linear.snapshots()
    tree, _ = booster(6)
    predictor = decode(encode(n_features=3, members=[(0.5, tree), (2.0, snapshot)], bias=0.1))
    probe = X[:10]
    expected = 0.5 * tree.predict(probe, raw_score=True) + 2.0 * linear.raws(probe)[:, 0] + 0.1
    assert np.allclose(predictor.logits(probe), expected)
    assert np.allclose(predictor.contributions(probe).sum(axis=1), predictor.logits(probe))
    # The next row's pre-learning score is what the snapshot says for it.
    before = linear.raws(X[:1])[0, 0]
    assert linear.learn(X[0].tolist(), 1)[0] == pytest.approx(before)


def test_a_version_1_model_with_frozen_stream_state_still_predicts_as_it_did() -> None:
    model, _ = booster(3, n_features=4)  # the 4th column was the stream's last label
    doc = {
        "format": "continuo-lgbm/1",
        "n_features": 3,
        "feature_names": ["a", "b", "c"],
        "members": [{"weight": 1.0, "model": model.model_to_string()}],
        "bias": 0.0,
        "clip": None,
        "stream": {
            "inputs": ["last_label"],
            "linear": {"last_label": 2.0},
            "state": {"last_label": 1.0},
        },
    }
    predictor = decode(json.dumps(doc).encode())
    x = np.array([[0.5, 0.5, 0.5]])
    expected = model.predict(np.array([[0.5, 0.5, 0.5, 1.0]]), raw_score=True) + 2.0
    assert np.allclose(predictor.logits(x), expected)
    assert np.allclose(predictor.contributions(x).sum(axis=1), predictor.logits(x))


def test_the_same_bytes_decode_to_the_same_cached_predictor() -> None:
    model, _ = booster(4)
    data = encode(n_features=3, members=[(1.0, model)])
    assert decode(data) is decode(bytes(data))


def test_bytes_that_are_not_a_model_are_refused() -> None:
    with pytest.raises(ModelFormatError):
        decode(b"not json")
    with pytest.raises(ModelFormatError):
        decode(b'{"format": "something-else"}')
