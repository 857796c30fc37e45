"""Prequential metrics: scored on the predictions that were served, before labels were known."""

from __future__ import annotations

import numpy as np

# Probabilities are clipped before log-loss so one confident miss costs ~16 nats, not infinity.
_EPS = 1e-7


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
