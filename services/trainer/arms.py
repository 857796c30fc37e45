"""Scoring the canary and the shadows on the labels, for governance's canary analysis. Pure.

The canary is measured on its own live traffic: the rows serving answered with it (log and wait
records which model answered each row, in which role) against the rows the champion answered, each
since the canary started, whichever champion version answered them. A shadow is measured on the
same rows as the champion (paired): the trainer runs each shadow as serving does (a `LiveModel`,
learning the labels after it), predicts each row when it arrives, and counts the rows only the
shadow got right and only the champion did. The canary's own rows are paired too, against the
champion as the trainer runs it on them: when the canary takes (nearly) all of a task's traffic
(few entities, sticky by entity), the champion's own traffic cannot judge it, and governance
judges it on those pairs instead.

A regression's answers are values: "right" becomes "the closer of the two" in the paired counts
(rows each was strictly closer on), and the sums are of absolute errors, not log losses; its
canary is judged on the pairs (governance). A multiclass task's answers are its class
probabilities: scored as a binary task's are, on the answered class and the log loss of the row's
class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from services.trainer.metrics import Answer, log_loss, row_loss
from shared.online_models import LearnedRow


class LiveScorer(Protocol):
    learned_through: int

    def predict(self, X: np.ndarray) -> np.ndarray: ...
    def learn(self, rows: Sequence[LearnedRow]) -> list[float]: ...


@dataclass
class _ArmCounts:
    regression: bool = False
    n: int = 0
    correct: int = 0
    loss: float = 0.0  # summed log loss, or a regression's summed absolute error

    def add(self, p: Answer, y: float) -> None:
        self.n += 1
        if self.regression:
            self.loss += row_loss(True, y, cast(float, p))
        else:
            self.correct += int(row_loss(False, y, p) == 0)
            self.loss += log_loss(p, y)

    def as_dict(self) -> dict[str, Any]:
        if self.regression:
            return {"n": self.n, "abs_error": round(self.loss, 6)}
        return {"n": self.n, "correct": self.correct, "log_loss": round(self.loss, 6)}


@dataclass
class _Paired:
    regression: bool = False
    n: int = 0
    challenger_only: int = 0  # rows only the challenger got right (a regression: was closer on)
    champion_only: int = 0
    challenger_loss: float = 0.0  # summed log loss, or absolute error
    champion_loss: float = 0.0
    # A regression's summed squared difference of the two absolute errors, row by row: the
    # variance of the paired difference that governance's test reads.
    difference_sq: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        loss = "abs_error" if self.regression else "log_loss"
        out = {
            "n": self.n,
            "challenger_only": self.challenger_only,
            "champion_only": self.champion_only,
            f"challenger_{loss}": round(self.challenger_loss, 6),
            f"champion_{loss}": round(self.champion_loss, 6),
        }
        if self.regression:
            out["abs_error_difference_sq"] = round(self.difference_sq, 6)
        return out

    def add(self, challenger: Answer, champion: Answer, y: float) -> None:
        self.n += 1
        mine, theirs = (
            row_loss(self.regression, y, challenger),
            row_loss(self.regression, y, champion),
        )
        self.challenger_only += int(mine < theirs)
        self.champion_only += int(theirs < mine)
        if self.regression:
            self.challenger_loss += mine
            self.champion_loss += theirs
            self.difference_sq += (theirs - mine) ** 2
        else:
            self.challenger_loss += log_loss(challenger, y)
            self.champion_loss += log_loss(champion, y)


@dataclass
class Labelled:
    """A labelled row as the arms need it."""

    version: int  # data stream version of the label
    x: list[float]
    y: float  # the class index, or a regression's value
    served: Answer | None  # what serving answered (`Answer`), for rows it recorded
    served_version: int | None
    served_role: str | None
    champion: Answer | None  # the champion's prediction when the row arrived (trainer's copy)
    shadows: Mapping[int, Answer]  # each shadow's prediction when the row arrived


@dataclass
class Arms:
    """The canary and shadows of one task, and what they scored since each started."""

    regression: bool = False  # answers are values: scored on absolute errors
    champion_version: int | None = None
    canary_version: int | None = None
    shadows: dict[int, LiveScorer] = field(default_factory=dict)
    _canary: _ArmCounts = field(default_factory=_ArmCounts)
    _canary_champion: _ArmCounts = field(default_factory=_ArmCounts)
    # The canary's rows, against the champion as the trainer runs it on the same rows.
    _canary_paired: _Paired = field(default_factory=_Paired)
    _paired: dict[int, _Paired] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._restart_canary()

    def _restart_canary(self) -> None:
        self._canary, self._canary_champion = (_ArmCounts(self.regression) for _ in range(2))
        self._canary_paired = _Paired(self.regression)

    @property
    def active(self) -> bool:
        return self.canary_version is not None or bool(self.shadows)

    def follow(
        self,
        champion_version: int | None,
        canary_version: int | None,
        shadows: Mapping[int, LiveScorer],
    ) -> None:
        """The arms as governance last decided them; an arm's counts start when it does. The
        other side of every comparison is the champion line: whichever version answered as the
        champion at the time (a task publishes a new champion every few hundred rows; a
        comparison that restarted with each would never gather enough labels to decide)."""
        if canary_version != self.canary_version:
            self._restart_canary()
        self.champion_version, self.canary_version = champion_version, canary_version
        self.shadows = {v: s for v, s in self.shadows.items() if v in shadows}
        for version, scorer in shadows.items():
            self.shadows.setdefault(version, scorer)
        self._paired = {v: p for v, p in self._paired.items() if v in self.shadows}

    def at_arrival(self, X: np.ndarray) -> list[dict[int, Answer]]:
        """Each shadow's prediction of rows arriving now (one dict per row)."""
        out: list[dict[int, Answer]] = [{} for _ in range(len(X))]
        for version, shadow in self.shadows.items():
            for row, p in zip(out, shadow.predict(X).tolist(), strict=True):
                row[version] = p
        return out

    def learn(self, rows: Sequence[Labelled]) -> None:
        """Score the rows just labelled, then let each shadow learn them (as serving's do)."""
        learned = [LearnedRow(r.version, r.x, r.y) for r in rows]
        for version, shadow in self.shadows.items():
            # Rows that arrived before the shadow did: its prediction as of its learning.
            late = shadow.learn(learned)
            paired = self._paired.setdefault(version, _Paired(self.regression))
            for row, at_label in zip(rows, late, strict=True):
                if row.champion is None:
                    continue
                paired.add(row.shadows.get(version, at_label), row.champion, row.y)
        for row in rows:
            if row.served is None or row.served_version is None:
                continue
            if row.served_role == "canary" and row.served_version == self.canary_version:
                self._canary.add(row.served, row.y)
                if row.champion is not None:
                    self._canary_paired.add(row.served, row.champion, row.y)
            elif self.canary_version is not None and row.served_role == "champion":
                self._canary_champion.add(row.served, row.y)

    def evidence(self) -> dict[str, Any]:
        """What governance decides on: the canary's counts and the champion's on their own
        traffic, and each shadow's paired counts against the champion."""
        canary = None
        if self.canary_version is not None:
            canary = {
                "model_version": self.canary_version,
                "canary": self._canary.as_dict(),
                "champion": self._canary_champion.as_dict(),
                "paired": self._canary_paired.as_dict(),
            }
        shadows = [
            {"model_version": version, **p.as_dict()} for version, p in sorted(self._paired.items())
        ]
        return {"champion_version": self.champion_version, "canary": canary, "shadows": shadows}
