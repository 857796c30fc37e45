"""The rule that picks the champion among a racing population of blend configurations.

Every configuration is an online blend (shared.online_models.Blend) over some of the same
members: it sees their scores (log-odds, or a regression's standardised values) and learns its
weights row by row with its own learning rate. All of them predict every labelled row
(prequentially), so the race compares them on exactly the same rows. Sharing the members keeps
the population cheap: a configuration costs a few microseconds per row, not a LightGBM model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ConfigSwitch:
    """The race chose another configuration; `evidence` has the recent figures of all."""

    from_config: str
    to_config: str
    at_labelled: int
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigDrop:
    """The search took a configuration out of the race; `evidence` has the recent figures
    (accuracy, or a regression's MAE) of all those racing until then and the rows the survivors
    get next."""

    config: str
    at_labelled: int
    evidence: dict[str, Any] = field(default_factory=dict)


# A regression's errors as the race compares them: to 20 significant bits (about 6 digits).
# Two configurations that are the same sum in another order (a blend over a shared tree member)
# differ in the last bits, and in which way with how the rows came in batches (numpy's path or
# Python's): compared exactly, that noise won rows and decided races differently on a replay.
SIGNIFICANT_BITS = 20


def coarse(values: np.ndarray) -> np.ndarray:
    """`values` rounded to SIGNIFICANT_BITS significant bits."""
    mantissa, exponent = np.frexp(values)
    return np.ldexp(np.round(mantissa * 2.0**SIGNIFICANT_BITS) / 2.0**SIGNIFICANT_BITS, exponent)


class Race:
    """Keeps each configuration's recent losses and switches champion on paired evidence.

    A loss is a classifier's 0/1 error, or a regression's absolute error (`regression`). Rule (a
    sign test on paired outcomes): over the last `window` rows, count the rows where a
    challenger's loss was below the champion's (wins) and above it (losses); the challenger wins
    when `wins - losses > z * sqrt(wins + losses)`. Paired counting cancels the rows that every
    configuration finds easy or hard, so few rows decide a real difference while noise rarely
    triggers a switch. A classifier's recent figure is its accuracy, a regression's its MAE
    (`recent_metric` names it).
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        window: int = 2000,
        z: float = 2.5,
        regression: bool = False,
    ) -> None:
        self.names = list(names)
        self.window = window
        self.z = z
        self.regression = regression
        self.recent_metric = "recent_mae" if regression else "recent_accuracy"
        self.champion = 0
        self._loss = np.zeros((len(names), window))
        self._n = 0
        self.live = list(range(len(self.names)))  # the configurations still racing

    def drop(
        self, names: Sequence[str], at_labelled: int, evidence: dict[str, Any]
    ) -> list[ConfigDrop]:
        """Take configurations out of the race: they can no longer win or run up, and their
        figures are no longer reported (the learner stops predicting with them)."""
        indices = [self.names.index(name) for name in names]
        if self.champion in indices:
            name = self.names[self.champion]
            raise ValueError(f"{name!r} is the race's champion: it cannot be dropped")
        evidence = {**evidence, self.recent_metric: self.live_figures()}
        for index in indices:
            self.live.remove(index)
        return [ConfigDrop(name, at_labelled, evidence) for name in names]

    def live_figures(self) -> dict[str, float]:
        """The recent figure (accuracy, or MAE) of each configuration still racing, by name."""
        figures = self.recent_figures()
        return {self.names[c]: figures[c] for c in self.live}

    def best_live(self, names: Sequence[str]) -> float:
        """The best recent figure among these configurations, as a score (higher is better)."""
        figures = self.live_figures()
        scores = [-figures[n] if self.regression else figures[n] for n in names]
        return max(scores)

    def record(self, losses: np.ndarray) -> None:
        """Append a chunk of losses, shape (n_configs, n_rows): 0/1 errors, or absolute ones,
        kept to `SIGNIFICANT_BITS` (`coarse`)."""
        if self.regression:
            losses = coarse(losses)
        for start in range(0, losses.shape[1], self.window):
            part = losses[:, start : start + self.window]
            slots = (self._n + start + np.arange(part.shape[1])) % self.window
            self._loss[:, slots] = part
        self._n += losses.shape[1]

    @property
    def seen(self) -> int:
        """Rows the race's record holds (up to `window`; 0 again after a choice)."""
        return min(self._n, self.window)

    def recent_figures(self) -> list[float]:
        """Each configuration's recent accuracy (a classifier) or MAE (a regression)."""
        seen = min(self._n, self.window)
        if not seen:
            return [0.0] * len(self.names)
        total = self._loss[:, :seen].sum(axis=1)
        # A classifier's losses are whole numbers: (seen - errors) / seen is its exact accuracy.
        figures = total / seen if self.regression else (seen - total) / seen
        return [round(float(v), 6) for v in figures]

    def _best_challenger(self) -> tuple[int, float, dict[str, Any]] | None:
        """The challenger with the largest paired margin over the champion, that margin, and the
        evidence; None before any row or without a challenger that differs from the champion."""
        seen = min(self._n, self.window)
        if seen == 0 or len(self.names) < 2:
            return None
        block = self._loss[:, :seen]
        champ = block[self.champion]
        wins = (block < champ).sum(axis=1)
        losses = (block > champ).sum(axis=1)
        margin = wins - losses - self.z * np.sqrt(wins + losses)
        margin[self.champion] = -np.inf
        margin[[c for c in range(len(self.names)) if c not in self.live]] = -np.inf
        # Right and wrong on exactly the champion's rows: nothing tells them apart (nor would a
        # live shadow of it), so it is nobody's runner-up.
        margin[wins + losses == 0] = -np.inf
        best = int(np.argmax(margin))
        if not np.isfinite(margin[best]):
            return None  # every challenger was dropped, or ties the champion on every row
        evidence = {
            self.recent_metric: self.live_figures(),
            "window": int(seen),
            "wins": int(wins[best]),
            "losses": int(losses[best]),
            "z": self.z,
        }
        return best, float(margin[best]), evidence

    def decide(self, at_labelled: int) -> ConfigSwitch | None:
        """Switch champion if some challenger beats it by the paired test; else None."""
        found = self._best_challenger()
        if found is None or found[1] <= 0:
            return None
        best, _, evidence = found
        switch = ConfigSwitch(self.names[self.champion], self.names[best], at_labelled, evidence)
        self.champion = best
        return switch

    def runner_up(self) -> tuple[str, dict[str, Any]] | None:
        """The challenger closest to switching (the largest paired margin over the champion),
        with the evidence; None before any row or without challengers."""
        found = self._best_challenger()
        return None if found is None else (self.names[found[0]], found[2])

    def choose(self, name: str, at_labelled: int, evidence: dict[str, Any]) -> ConfigSwitch | None:
        """Make `name` the champion because someone else decided it (governance promoted a
        model of it on live evidence); None if it already is, or no configuration has that
        name. The paired record starts again from here: the rows before the choice are the
        ones the live test overruled, and left in they would switch the race straight back."""
        if name not in self.names or self.names.index(name) == self.champion:
            return None
        chosen = self.names.index(name)
        if chosen not in self.live:
            return None  # the search dropped it since
        evidence = {**evidence, self.recent_metric: self.live_figures()}
        switch = ConfigSwitch(self.names[self.champion], name, at_labelled, evidence)
        self.champion = chosen
        self._loss[:] = 0
        self._n = 0
        return switch
