"""Prequential metrics: scored on the predictions that were served, before labels were known."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.online_models import answered_class

# Probabilities are clipped before log-loss so one confident miss costs ~16 nats, not infinity.
_EPS = 1e-7


# What a model answers for one row (see below).
Answer = float | list[float]

# An answer is one number (P(class 1) of a binary task, a regression's value) or, for a
# multiclass task, its class probabilities in class order: a classifier's loss is read off
# either shape, so every path that compares classifiers serves both.


def row_losses(regression: bool, y: Any, answers: Any) -> np.ndarray:
    """Each row's loss, what rows are compared on: 1 where a classifier's answer (P(class 1),
    or a multiclass answer's most probable class) named the wrong class, else 0; a regression's
    absolute error (`row_loss`, for many rows)."""
    answers = np.asarray(answers, dtype=float)
    if regression:
        return np.abs(np.asarray(y, dtype=float) - answers)
    if answers.ndim == 2:
        return (answers.argmax(axis=1) != np.asarray(y, dtype=np.int64)).astype(float)
    return ((answers >= 0.5) != (np.asarray(y) == 1)).astype(float)


def row_loss(regression: bool, y: float, answer: Any) -> float:
    """`row_losses` of one row, in plain floats (a row at a time costs numpy ~5 us a call)."""
    if regression:
        return abs(y - answer)
    if isinstance(answer, Sequence | np.ndarray):
        return float(answered_class(answer) != int(y))
    return float((answer >= 0.5) != (y == 1))


def log_loss(p: Any, y: float) -> float:
    """A classifier's log loss on one row: of P(class 1), or of a multiclass answer's P(the
    row's class), clipped so one confident miss costs ~16 nats."""
    if isinstance(p, Sequence | np.ndarray):
        return -math.log(min(1.0, max(_EPS, float(p[int(y)]))))
    p = min(1.0 - _EPS, max(_EPS, p))
    return -math.log(p if y == 1 else 1.0 - p)


def metrics_for(
    kind: str, window: int, n_classes: int = 2
) -> PrequentialMetrics | MulticlassMetrics | RegressionMetrics:
    """The prequential figures of a task's answers, by its kind (`Target.kind`)."""
    if kind == "regression":
        return RegressionMetrics(window)
    if kind == "multiclass":
        return MulticlassMetrics(n_classes, window)
    return PrequentialMetrics(window)


class PrequentialMetrics:
    """Cumulative accuracy and log-loss, and accuracy over a sliding window of recent rows."""

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.n = 0
        self._correct = 0
        self._log_loss_sum = 0.0
        self._recent = np.zeros(window, dtype=np.uint8)
        self._recent_sum = 0

    def update(self, y: np.ndarray, proba: np.ndarray) -> np.ndarray:
        """Score a chunk of rows in stream order; return 1 where the served label was wrong."""
        p = np.clip(np.asarray(proba, dtype=float), _EPS, 1.0 - _EPS)
        y = np.asarray(y, dtype=int)
        correct = ((p >= 0.5).astype(int) == y).astype(np.uint8)
        self._correct += int(correct.sum())
        # Added row by row, in stream order: the sum does not depend on how rows come in chunks.
        total = self._log_loss_sum
        for loss in (-np.where(y == 1, np.log(p), np.log1p(-p))).tolist():
            total += loss
        self._log_loss_sum = total
        self._push_recent(correct)
        self.n += len(y)
        return 1 - correct

    def _push_recent(self, correct: np.ndarray) -> None:
        # A ring indexed by stream position: slot i % window holds row i's outcome.
        for start in range(0, len(correct), self.window):
            part = correct[start : start + self.window]
            slots = (self.n + start + np.arange(len(part))) % self.window
            self._recent_sum += int(part.sum()) - int(self._recent[slots].sum())
            self._recent[slots] = part

    def as_dict(self) -> dict[str, float]:
        n = max(self.n, 1)
        seen = min(self.n, self.window)
        return {
            "n_labelled": float(self.n),
            "accuracy": self._correct / n,
            "log_loss": self._log_loss_sum / n,
            "recent_accuracy": self._recent_sum / seen if seen else 0.0,
            "recent_window": float(self.window),
        }


class RegressionMetrics:
    """Prequential MAE, RMSE and R^2 (1 - the squared error over the labels' variance, both
    summed over every row scored), and MAE over a sliding window of recent rows."""

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.n = 0
        self._abs_sum = 0.0
        self._sq_sum = 0.0
        self._mean = 0.0  # of the labels (Welford), for R^2
        self._m2 = 0.0
        self._recent = np.zeros(window)

    def update(self, y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Score a chunk of rows in stream order; return each row's absolute error."""
        y = np.asarray(y, dtype=float)
        errors = np.abs(y - np.asarray(predicted, dtype=float))
        # Added row by row, in stream order: the sums do not depend on how rows come in chunks.
        abs_sum, sq_sum, mean, m2, k = self._abs_sum, self._sq_sum, self._mean, self._m2, self.n
        for yi, err in zip(y.tolist(), errors.tolist(), strict=True):
            abs_sum += err
            sq_sum += err * err
            k += 1
            d = yi - mean
            mean += d / k
            m2 += d * (yi - mean)
        self._abs_sum, self._sq_sum, self._mean, self._m2 = abs_sum, sq_sum, mean, m2
        for start in range(0, len(errors), self.window):
            part = errors[start : start + self.window]
            self._recent[(self.n + start + np.arange(len(part))) % self.window] = part
        self.n = k
        return errors

    def recent_errors(self, k: int) -> list[float]:
        """The absolute errors of the last `k` rows scored (at most the window), oldest first."""
        k = min(k, self.n, self.window)
        return self._recent[(self.n - k + np.arange(k)) % self.window].tolist()

    def as_dict(self) -> dict[str, float]:
        n = max(self.n, 1)
        seen = min(self.n, self.window)
        return {
            "n_labelled": float(self.n),
            "mae": self._abs_sum / n,
            "rmse": (self._sq_sum / n) ** 0.5,
            "r2": 1.0 - self._sq_sum / self._m2 if self._m2 > 0 else 0.0,
            "recent_mae": float(self._recent[:seen].mean()) if seen else 0.0,
            "recent_window": float(self.window),
        }


class MulticlassMetrics:
    """Prequential accuracy, log-loss and macro-F1 (from the confusion counts of every row
    scored), and accuracy over a sliding window of recent rows."""

    def __init__(self, n_classes: int, window: int = 1000) -> None:
        self.window = window
        self.n = 0
        self._confusion = np.zeros((n_classes, n_classes), dtype=np.int64)  # [true, answered]
        self._log_loss_sum = 0.0
        self._recent = np.zeros(window, dtype=np.uint8)

    def update(self, y: np.ndarray, proba: np.ndarray) -> np.ndarray:
        """Score a chunk of rows in stream order; return 1 where the answered class was wrong."""
        y = np.asarray(y, dtype=np.int64)
        proba = np.asarray(proba, dtype=float).reshape(len(y), len(self._confusion))
        answered = proba.argmax(axis=1)
        np.add.at(self._confusion, (y, answered), 1)
        total = self._log_loss_sum
        for p in np.clip(proba[np.arange(len(y)), y], _EPS, 1.0).tolist():
            total -= float(np.log(p))
        self._log_loss_sum = total
        correct = (answered == y).astype(np.uint8)
        for start in range(0, len(correct), self.window):
            part = correct[start : start + self.window]
            self._recent[(self.n + start + np.arange(len(part))) % self.window] = part
        self.n += len(y)
        return 1 - correct

    def as_dict(self) -> dict[str, float]:
        n = max(self.n, 1)
        seen = min(self.n, self.window)
        hits = np.diag(self._confusion).astype(float)
        truth, answered = self._confusion.sum(axis=1), self._confusion.sum(axis=0)
        # F1 per class that occurred or was answered (2 TP / (2 TP + FP + FN)); their mean.
        present = (truth + answered) > 0
        f1 = 2 * hits[present] / (truth[present] + answered[present])
        return {
            "n_labelled": float(self.n),
            "accuracy": float(hits.sum()) / n,
            "macro_f1": float(f1.mean()) if present.any() else 0.0,
            "log_loss": self._log_loss_sum / n,
            "recent_accuracy": float(self._recent[:seen].mean()) if seen else 0.0,
            "recent_window": float(self.window),
        }
