"""The learner's members: LightGBM models retrained on sliding windows of the most recent labelled
rows, and an online linear model that learns from every row."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from shared.model_codec import LinearMember

_MIN_VARIANCE = 1e-12  # an input constant so far is centred, not divided by ~zero
_Z_CLIP = 5.0  # standardised inputs beyond 5 sd are taken as 5 sd
_RAW_CLIP = 30.0

# Forced on every member: the learner's bytes must depend only on the rows it saw.
DETERMINISM = {
    "deterministic": True,
    "num_threads": 1,
    "force_col_wise": True,
    "verbose": -1,
}


@dataclass(frozen=True)
class MemberSpec:
    """A member retrains from scratch on the last `window` rows every `every` labelled rows."""

    name: str
    window: int
    every: int
    rounds: int


class RowBuffer:
    """The most recent labelled rows (model inputs and labels), at most `capacity` of them.

    Stored in an array twice the capacity and compacted when full, so appending is amortised O(1)
    and the tail is always one contiguous slice (LightGBM gets a view, not a copy).
    """

    def __init__(self, n_columns: int, capacity: int) -> None:
        self.capacity = capacity
        self._X = np.zeros((2 * capacity, n_columns))
        self._y = np.zeros(2 * capacity, dtype=np.int8)
        self._end = 0

    def append(self, X: np.ndarray, y: np.ndarray) -> None:
        X, y = X[-self.capacity :], y[-self.capacity :]
        if self._end + len(y) > len(self._y):
            keep = self.capacity - len(y)
            self._X[:keep] = self._X[self._end - keep : self._end]
            self._y[:keep] = self._y[self._end - keep : self._end]
            self._end = keep
        self._X[self._end : self._end + len(y)] = X
        self._y[self._end : self._end + len(y)] = y
        self._end += len(y)

    def tail(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._end, self.capacity)
        return self._X[self._end - k : self._end], self._y[self._end - k : self._end]


def lightgbm_params(user: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """LightGBM parameters: small fast trees, then the user's overrides, determinism forced."""
    params: dict[str, Any] = {
        "objective": "binary",
        "num_leaves": 15,
        "learning_rate": 0.1,
        "min_data_in_leaf": 10,
        "max_bin": 63,
    }
    params.update(user)
    params.update(DETERMINISM)
    params["seed"] = seed
    return params


def train_member(
    X: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, Any],
    rounds: int,
    categorical: Sequence[int],
) -> lgb.Booster | None:
    """Fit a fresh booster on a window; None when the window holds one class only."""
    if len(y) == 0 or y.min() == y.max():
        return None
    data = lgb.Dataset(
        X,
        y.astype(float),
        categorical_feature=list(categorical) or "auto",
        params=dict(params),
        free_raw_data=True,
    )
    # keep_training_booster: skips a model-to-string round trip per retrain (the booster is
    # written out once, when a model version is published).
    return lgb.train(dict(params), data, num_boost_round=rounds, keep_training_booster=True)


class OnlineLinear:
    """Logistic regressions learned by SGD from every labelled row, one per learning rate, on
    inputs standardised by their running mean and standard deviation (Welford), shared by all.

    Standardising lets one learning rate suit features of any scale; a slow rate settles close
    to the best plane, a fast one follows a boundary that moves. Pure Python floats: the same
    rows in the same order give the same weights, bit for bit.
    """

    def __init__(self, n_features: int, lrs: Sequence[float]) -> None:
        self.n = n_features
        self.lrs = tuple(float(lr) for lr in lrs)
        self.coefs = [[0.0] * n_features for _ in self.lrs]
        self.intercepts = [0.0] * len(self.lrs)
        self._k = 0
        self._mean = [0.0] * n_features
        self._m2 = [0.0] * n_features

    def _scales(self) -> list[float]:
        k = max(self._k, 1)
        return [math.sqrt(m2 / k) if m2 / k > _MIN_VARIANCE else 1.0 for m2 in self._m2]

    def raws(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of each model (columns) for rows of X, as of now; nothing is learned."""
        X = np.asarray(X, dtype=float).reshape(-1, self.n)
        return np.column_stack([m.raw(X) for m in self.snapshots()])

    def learn(self, x: Sequence[float], y: int) -> list[float]:
        """Score one row with every model, then learn it; returns the (clipped) log-odds each
        model gave before learning."""
        mean, m2, k = self._mean, self._m2, self._k
        sqrt, clip = math.sqrt, _Z_CLIP
        z = []
        for j in range(self.n):
            d = x[j] - mean[j]
            var = m2[j] / k if k else 0.0
            if var > _MIN_VARIANCE:
                d /= sqrt(var)
            z.append(clip if d > clip else -clip if d < -clip else d)
        out = []
        intercepts = self.intercepts
        for m, coef in enumerate(self.coefs):
            s = intercepts[m]
            for c, zj in zip(coef, z):  # noqa: B905 - equal lengths by construction
                s += c * zj
            s = _RAW_CLIP if s > _RAW_CLIP else -_RAW_CLIP if s < -_RAW_CLIP else s
            out.append(s)
            g = self.lrs[m] * (y - 1.0 / (1.0 + math.exp(-s)))
            coef[:] = [c + g * zj for c, zj in zip(coef, z)]  # noqa: B905
            intercepts[m] += g
        k += 1
        self._k = k
        for j in range(self.n):
            v = x[j]
            d = v - mean[j]
            mean[j] += d / k
            m2[j] += d * (v - mean[j])
        return out

    def snapshots(self) -> list[LinearMember]:
        center, scale = tuple(self._mean), tuple(self._scales())
        return [
            LinearMember(tuple(coef), b, center, scale, _Z_CLIP)
            for coef, b in zip(self.coefs, self.intercepts, strict=True)
        ]
