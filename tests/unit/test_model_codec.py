"""The shared model codec: deterministic bytes, faithful predictions, explanations."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from shared.model_codec import ModelFormatError, decode, encode

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


def test_stream_state_is_part_of_the_model_and_can_be_refreshed() -> None:
    model, _ = booster(3, n_features=4)  # the 4th column plays the stream's last label
    data = encode(
        n_features=3,
        members=[(1.0, model)],
        feature_names=["a", "b", "c"],
        stream={
            "inputs": ["last_label"],
            "linear": {"last_label": 2.0},
            "state": {"last_label": 0},
        },
    )
    predictor = decode(data)
    x = np.array([[0.5, 0.5, 0.5]])
    expected = model.predict(np.array([[0.5, 0.5, 0.5, 1.0]]), raw_score=True) + 2.0
    refreshed = predictor.with_state({"last_label": 1.0})
    assert np.allclose(refreshed.logits(x), expected)
    assert predictor.feature_names == ["a", "b", "c", "stream:last_label"]
    assert predictor.contributions(x).shape == (1, 5)


def test_the_same_bytes_decode_to_the_same_cached_predictor() -> None:
    model, _ = booster(4)
    data = encode(n_features=3, members=[(1.0, model)])
    assert decode(data) is decode(bytes(data))


def test_bytes_that_are_not_a_model_are_refused() -> None:
    with pytest.raises(ModelFormatError):
        decode(b"not json")
    with pytest.raises(ModelFormatError):
        decode(b'{"format": "something-else"}')
