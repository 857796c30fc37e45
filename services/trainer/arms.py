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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shared.online_models import LearnedRow

_EPS = 1e-7


class LiveScorer(Protocol):
    learned_through: int

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...
    def learn(self, rows: Sequence[LearnedRow]) -> list[float]: ...


def _log_loss(p: float, y: int) -> float:
    p = min(1.0 - _EPS, max(_EPS, p))
    return -math.log(p if y == 1 else 1.0 - p)


@dataclass
class _ArmCounts:
    n: int = 0
    correct: int = 0
    log_loss: float = 0.0

    def add(self, p: float, y: int) -> None:
        self.n += 1
        self.correct += int((p >= 0.5) == (y == 1))
        self.log_loss += _log_loss(p, y)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "correct": self.correct, "log_loss": round(self.log_loss, 6)}


@dataclass
class _Paired:
    n: int = 0
    challenger_only: int = 0
    champion_only: int = 0
    challenger_log_loss: float = 0.0
    champion_log_loss: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "challenger_only": self.challenger_only,
            "champion_only": self.champion_only,
            "challenger_log_loss": round(self.challenger_log_loss, 6),
            "champion_log_loss": round(self.champion_log_loss, 6),
        }

    def add(self, challenger: float, champion: float, y: int) -> None:
        mine, theirs = (challenger >= 0.5) == (y == 1), (champion >= 0.5) == (y == 1)
        self.n += 1
        self.challenger_only += int(mine and not theirs)
        self.champion_only += int(theirs and not mine)
        self.challenger_log_loss += _log_loss(challenger, y)
        self.champion_log_loss += _log_loss(champion, y)


@dataclass
class Labelled:
    """A labelled row as the arms need it."""

    version: int  # data stream version of the label
    x: list[float]
    y: int
    served: float | None  # the probability serving answered, for rows it recorded
    served_version: int | None
    served_role: str | None
    champion: float | None  # the champion's prediction when the row arrived (trainer's copy)
    shadows: Mapping[int, float]  # each shadow's prediction when the row arrived


@dataclass
class Arms:
    """The canary and shadows of one task, and what they scored since each started."""

    champion_version: int | None = None
    canary_version: int | None = None
    shadows: dict[int, LiveScorer] = field(default_factory=dict)
    _canary: _ArmCounts = field(default_factory=_ArmCounts)
    _canary_champion: _ArmCounts = field(default_factory=_ArmCounts)
    # The canary's rows, against the champion as the trainer runs it on the same rows.
    _canary_paired: _Paired = field(default_factory=_Paired)
    _paired: dict[int, _Paired] = field(default_factory=dict)

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
            self._canary, self._canary_champion = _ArmCounts(), _ArmCounts()
            self._canary_paired = _Paired()
        self.champion_version, self.canary_version = champion_version, canary_version
        self.shadows = {v: s for v, s in self.shadows.items() if v in shadows}
        for version, scorer in shadows.items():
            self.shadows.setdefault(version, scorer)
        self._paired = {v: p for v, p in self._paired.items() if v in self.shadows}

    def at_arrival(self, X: np.ndarray) -> list[dict[int, float]]:
        """Each shadow's prediction of rows arriving now (one dict per row)."""
        out: list[dict[int, float]] = [{} for _ in range(len(X))]
        for version, shadow in self.shadows.items():
            for row, p in zip(out, shadow.predict_proba(X).tolist(), strict=True):
                row[version] = p
        return out

    def learn(self, rows: Sequence[Labelled]) -> None:
        """Score the rows just labelled, then let each shadow learn them (as serving's do)."""
        learned = [LearnedRow(r.version, r.x, r.y) for r in rows]
        for version, shadow in self.shadows.items():
            # Rows that arrived before the shadow did: its prediction as of its learning.
            late = shadow.learn(learned)
            paired = self._paired.setdefault(version, _Paired())
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
