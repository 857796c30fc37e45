"""The learner's tree members: LightGBM models retrained on sliding windows of the most recent
labelled rows (the online members, which learn from every row, are in shared.online_models)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

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
    learning_rate: float | None = None  # None: the learner's LightGBM learning rate
    num_leaves: int | None = None  # None: the learner's LightGBM tree size

    def tree_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The LightGBM parameters of this member: the learner's, with its own overrides."""
        own = {"learning_rate": self.learning_rate, "num_leaves": self.num_leaves}
        return {**params, **{k: v for k, v in own.items() if v is not None}}


class RowBuffer:
    """The most recent labelled rows (model inputs and labels), at most `capacity` of them.

    Stored in an array twice the capacity and compacted when full, so appending is amortised O(1)
    and the tail is always one contiguous slice (LightGBM gets a view, not a copy).
    """

    def __init__(self, n_columns: int, capacity: int, *, regression: bool = False) -> None:
        self.capacity = capacity
        self._X = np.zeros((2 * capacity, n_columns))
        # Class indices, or a regression's target values as labelled.
        self._y = np.zeros(2 * capacity, dtype=np.float64 if regression else np.int8)
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


def lightgbm_params(
    user: Mapping[str, Any], seed: int, *, regression: bool = False
) -> dict[str, Any]:
    """LightGBM parameters: small fast trees, then the user's overrides, determinism forced."""
    params: dict[str, Any] = {
        "objective": "regression" if regression else "binary",
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
    *,
    regression: bool = False,
    windows: SharedWindows | None = None,
    key: Hashable = None,
) -> lgb.Booster | None:
    """Fit a fresh booster on a window; None when the window holds one class only (a
    regression's constant window trains: its trees answer the constant). `windows`: where
    learners of the same rows share the window's binned Dataset, under `key` (which names the
    rows: see SharedWindows)."""
    if len(y) == 0 or (not regression and y.min() == y.max()):
        return None
    if windows is None:
        data = lgb.Dataset(
            X,
            y.astype(float),
            categorical_feature=list(categorical) or "auto",
            params=dict(params),
            free_raw_data=True,
        )
    else:
        shared = (key, repr(sorted(params.items())), tuple(categorical))
        data = windows.dataset(shared, X, params, categorical)
        data.set_label(y.astype(float))
    # keep_training_booster: skips a model-to-string round trip per retrain (the booster is
    # written out once, when a model version is published).
    return lgb.train(dict(params), data, num_boost_round=rounds, keep_training_booster=True)


class SharedWindows:
    """Binned windows that several learners train on alike: a multiclass task's classes learn
    the same rows, so each tick's windows are binned once for every class, not once per class
    (the trees differ only in their labels, and a booster trained on a shared Dataset is the
    same, byte for byte, as on its own: a unit test checks it). The caller names the rows
    (`key`: how many rows the learner had learned and how many the window takes) and empties
    it when the learners have all passed those rows (`clear`): nothing is kept between calls,
    so nothing of it is in a snapshot. At most `limit` are kept (the oldest go first: a class
    that needs one again bins it again), so a long batch of rows (a replay) holds a bounded
    number."""

    def __init__(self, limit: int = 64) -> None:
        self._binned: dict[Hashable, lgb.Dataset] = {}
        self._limit = limit

    def dataset(
        self, key: Hashable, X: np.ndarray, params: Mapping[str, Any], categorical: Sequence[int]
    ) -> lgb.Dataset:
        found = self._binned.get(key)
        if found is None:
            found = lgb.Dataset(
                X,
                categorical_feature=list(categorical) or "auto",
                params=dict(params),
                free_raw_data=True,
            ).construct()
            self._binned[key] = found
            while len(self._binned) > self._limit:
                del self._binned[next(iter(self._binned))]
        return found

    def clear(self) -> None:
        self._binned.clear()
