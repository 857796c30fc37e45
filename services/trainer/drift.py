"""Drift detection on the prequential error stream (River's ADWIN and Page-Hinkley)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from river import drift as river_drift


@dataclass(frozen=True)
class Drift:
    """A detector saw the served error rate change at `at_labelled` (rows labelled so far)."""

    detector: str
    at_labelled: int
    evidence: dict[str, Any] = field(default_factory=dict)


class DriftMonitor:
    """Feeds each row's 0/1 error to ADWIN and Page-Hinkley and reports what they detect.

    ADWIN reports changes in both directions; only a rise in error asks the learner to adapt
    (`rise` in the evidence). ADWIN's window after a detection is its estimate of how many rows
    belong to the new concept, which the learner uses to cut its training windows.
    """

    def __init__(self, *, adwin_delta: float = 0.002, ph_threshold: float = 50.0) -> None:
        self._adwin_delta = adwin_delta
        self._ph_threshold = ph_threshold
        self._adwin = river_drift.ADWIN(delta=adwin_delta)
        self._ph = river_drift.PageHinkley(threshold=ph_threshold, mode="up")

    def update(self, error: int, at_labelled: int) -> Drift | None:
        """Feed one row's error (1 = wrong); return a Drift when a detector fires on this row."""
        before = self._adwin.estimation
        self._adwin.update(error)
        if self._adwin.drift_detected:
            after = self._adwin.estimation
            return Drift(
                "adwin",
                at_labelled,
                {
                    "error_before": round(float(before), 6),
                    "error_after": round(float(after), 6),
                    "new_concept_rows": int(self._adwin.width),
                    "rise": bool(after > before),
                    "delta": self._adwin_delta,
                },
            )
        self._ph.update(error)
        if self._ph.drift_detected:
            # Page-Hinkley restarts itself; ADWIN keeps its own view of the error.
            return Drift(
                "page-hinkley",
                at_labelled,
                {
                    "error_before": round(float(before), 6),
                    "threshold": self._ph_threshold,
                    "rise": True,
                },
            )
        return None
