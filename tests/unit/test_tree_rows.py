"""LightGBM's fast single-row path gives the scores `Booster.predict` gives, for any input."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from shared.tree_rows import raw_scorer


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(2000, 5))
    X[rng.random(X.shape) < 0.05] = np.nan  # trained with missing values
    y = ((np.nan_to_num(X[:, 0]) + X[:, 1] ** 2 - 0.5) > 0).astype(int)
    return lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 1},
        lgb.Dataset(X, y),
        num_boost_round=60,
    )


def test_each_row_scores_exactly_as_a_batch_prediction(booster: lgb.Booster):
    scorer = raw_scorer(booster, 5)
    assert scorer is not None
    rng = np.random.default_rng(12)
    X = rng.normal(size=(500, 5)) * rng.choice([1.0, 1e6], size=(500, 5))
    X[:, 2] = np.nan  # a missing column
    X[0] = np.inf
    X[1] = -np.inf
    X[2] = 0.0
    batch = booster.predict(X, raw_score=True)
    one_by_one = np.array([scorer.raw(x) for x in X])
    assert np.array_equal(one_by_one, batch)


def test_a_scorer_keeps_its_booster_alive_and_frees_its_configuration():
    rng = np.random.default_rng(13)
    X = rng.normal(size=(200, 2))
    scorer = raw_scorer(
        lgb.train(
            {"objective": "binary", "verbose": -1},
            lgb.Dataset(X, (X[:, 0] > 0).astype(int)),
            num_boost_round=3,
        ),
        2,
    )
    assert scorer is not None
    import gc

    gc.collect()  # the booster is referenced by the scorer alone
    assert np.isfinite(scorer.raw([0.5, -0.5]))
    del scorer
    gc.collect()
