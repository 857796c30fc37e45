"""Baseline learners for benchmarks and demos: what Continuo's learner has to beat.

All are pure functions of (X, y) in stream order. "Prequential" ones predict each row before
learning it, as the learner does; `legacy_batch_accuracy` is the old batch practice instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np

from services.trainer.members import DETERMINISM

# LightGBM's own defaults (31 leaves, 100 rounds): what a batch team would ship unchanged.
BATCH_ROUNDS = 100


def _batch_params(seed: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"objective": "binary", **(extra or {}), **DETERMINISM, "seed": seed}


def _fit(X: np.ndarray, y: np.ndarray, seed: int, rounds: int = BATCH_ROUNDS) -> lgb.Booster:
    return lgb.train(_batch_params(seed), lgb.Dataset(X, y.astype(float)), num_boost_round=rounds)


def previous_label_predictions(y: np.ndarray, first: int = 0) -> np.ndarray:
    """Predict each row's label as the previous row's label (`first` for row 0)."""
    y = np.asarray(y).astype(int)
    return np.concatenate([[first], y[:-1]]).astype(int) if len(y) else y


def previous_label_accuracy(y: np.ndarray) -> float:
    """Prequential accuracy of predicting the previous label, over all rows."""
    y = np.asarray(y).astype(int)
    return float((previous_label_predictions(y) == y).mean()) if len(y) else 0.0


def legacy_batch_accuracy(
    X: np.ndarray, y: np.ndarray, fraction: float = 0.1, seed: int = 7
) -> float:
    """Train LightGBM once on the first `fraction` of the rows, freeze it, and score it on the
    remaining rows only (the training rows are not counted: the batch model has seen them)."""
    X, y = np.asarray(X, dtype=float), np.asarray(y).astype(int)
    cut = max(1, int(len(y) * fraction))
    if cut >= len(y):
        raise ValueError("no rows left to evaluate on")
    booster = _fit(X[:cut], y[:cut], seed)
    proba = np.asarray(booster.predict(X[cut:], num_threads=1))
    return float(((proba >= 0.5).astype(int) == y[cut:]).mean())


def retrain_every_predictions(
    X: np.ndarray,
    y: np.ndarray,
    every: int = 5000,
    window: int | None = None,
    seed: int = 7,
    rounds: int = BATCH_ROUNDS,
) -> np.ndarray:
    """Prequential P(class 1) of LightGBM retrained from scratch every `every` rows, on all rows
    seen so far (or the last `window`). Rows before the first model get the base rate so far."""
    X, y = np.asarray(X, dtype=float), np.asarray(y).astype(int)
    proba = np.empty(len(y))
    booster: lgb.Booster | None = None
    for start in range(0, len(y), every):
        stop = min(len(y), start + every)
        if booster is None:
            seen = y[:start]
            proba[start:stop] = seen.mean() if len(seen) else 0.5
        else:
            proba[start:stop] = booster.predict(X[start:stop], num_threads=1)
        lo = 0 if window is None else max(0, stop - window)
        if y[lo:stop].min() != y[lo:stop].max():
            booster = _fit(X[lo:stop], y[lo:stop], seed, rounds)
    return proba


def retrain_every_accuracy(X: np.ndarray, y: np.ndarray, every: int = 5000, **kwargs: Any) -> float:
    """Prequential accuracy of `retrain_every_predictions`, scored from the first model on
    (rows after the first `every`), as the batch-retraining practice is usually reported."""
    proba = retrain_every_predictions(X, y, every=every, **kwargs)
    hits = (proba >= 0.5).astype(int) == np.asarray(y).astype(int)
    return float(hits[every:].mean()) if len(hits) > every else float(hits.mean())


class FrozenBatch:
    """The legacy practice as a row-by-row learner: LightGBM trained once, on the first `rows`
    labelled rows it is given, then frozen. Before that it answers nothing (None)."""

    def __init__(self, rows: int, seed: int = 7) -> None:
        self.rows = rows
        self.seed = seed
        self._X: list[list[float]] = []
        self._y: list[int] = []
        self._booster: lgb.Booster | None = None

    def predict_one(self, x: Mapping[int, float]) -> int | None:
        if self._booster is None:
            return None
        row = np.array([[x[i] for i in range(len(x))]], dtype=float)
        return int(self._booster.predict(row, num_threads=1)[0] >= 0.5)

    def learn_one(self, x: Mapping[int, float], y: int) -> None:
        if self._booster is not None:
            return
        self._X.append([x[i] for i in range(len(x))])
        self._y.append(int(y))
        if len(self._y) >= self.rows and len(set(self._y)) > 1:
            self._booster = _fit(np.array(self._X), np.array(self._y), self.seed)
            self._X, self._y = [], []
