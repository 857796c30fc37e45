"""The parts of a model that learn from every label, and a published model that keeps learning.

A Continuo model is a blend: LightGBM members, retrained by the trainer on windows of recent rows,
and online linear members, which learn from every labelled row, weighted by an online blend that
also learns from every row. For a binary task the scores are log-odds and the online parts are
logistic (SGD on log-loss); for a regression task they are the target standardised by the model's
`TargetScale`, the linear members are ridge regressions refitted on every row (`OnlineRidge`) and
the blend steps by normalised LMS (each step divided by 1 + the squared norm of its inputs); every
online step takes an error clipped at `ERROR_CLIP` deviations (Huber), so neither an input's scale
nor one wild label can make them diverge. The trainer publishes a
version every so many rows; between versions its online parts move on. `LiveModel` lets serving
(and whoever else predicts) move them on too, from the same labels, with the same code: the
recurrences here are the only ones, used by the trainer's learner and by every `LiveModel`, so the
same labelled rows in the same order give the same state, bit for bit. The tree members stay as
published until the next version.

Pure: numbers in, numbers out (LightGBM boosters are called, never trained, here).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import lightgbm as lgb
import numpy as np

from shared.model_codec import (
    FORMAT_OVR,
    REGRESSION_CLIP,
    LinearMember,
    class_models,
    decode,
    parse,
    target_scale,
)
from shared.tree_rows import RawScorer, raw_scorer

# Clip the blend's inputs and logit: a member's raw score can be large on a pure leaf, and one
# huge input must not blow the SGD step up.
RAW_CLIP = 8.0
LOGIT_CLIP = 30.0
Z_CLIP = 5.0  # standardised inputs beyond 5 sd are taken as 5 sd
# A regression's online steps take at most this error, in the scale's deviations (`_huber`).
ERROR_CLIP = 3.0
_MIN_VARIANCE = 1e-12  # an input constant so far is centred, not divided by ~zero
# A wild input (one row at 1e100 among values near 1) moves an input's running mean and
# deviation as a value MOMENT_CLIP deviations away would, once MOMENT_MIN_ROWS rows have given
# the deviation: taken whole it made the deviation ~1e99 for as long as the statistics
# remember it (for ever in Welford's, ~1e3 rows in a ridge member's), every later value of
# the input standardised to ~0, the members blind to it. Never met by a sane stream: a normal
# value is that far once in 10^23.
MOMENT_CLIP = 10.0
MOMENT_MIN_ROWS = 20
# A regression's ridge members (`OnlineRidge`): the ridge penalty, in rows' weight, and the most
# inputs a learner gives them (beyond, normalised LMS: a ridge keeps d^2 numbers a member and
# solves a d x d system a row in Python floats: two members learn a row in 33 us at 6 inputs,
# 57 us at 10, 116 us at 16, 176 us at 20; normalised LMS in 4-10 us).
RIDGE = 1.0
RIDGE_MAX_INPUTS = 16
# A regression's prediction interval: split conformal on the absolute errors in its model file
# (the last RESIDUALS answers serving gave after the task's first label, or the learner's own
# before serving had given MIN_RESIDUALS of those):
# the value +- the error that INTERVAL_COVERAGE of them did not exceed; none with fewer than
# MIN_RESIDUALS. Fixed for the version (every replica, and the trainer's copy, the same).
RESIDUALS = 500
INTERVAL_COVERAGE = 0.9
MIN_RESIDUALS = 20
# Up to this many rows, trees score row by row through LightGBM's fast single-row path (about
# 2 us a row and tree); more go to `Booster.predict` at once (about 85 us a call, ~1 us a row).
ROW_BY_ROW = 32


def conformal_reach(errors: Sequence[float]) -> float | None:
    """Split conformal prediction: the smallest of `errors` (absolute errors of answers given
    before their labels) that INTERVAL_COVERAGE of them, counted as n + 1, do not exceed; None
    with fewer than MIN_RESIDUALS, or where the coverage asks for more than they can show."""
    n = len(errors)
    rank = math.ceil((n + 1) * INTERVAL_COVERAGE)
    if n < MIN_RESIDUALS or rank > n:
        return None
    return sorted(errors)[rank - 1]


def batch_invariant(errors: Iterable[float]) -> list[float]:
    """Absolute errors of a learner's own answers as a model file keeps them: to 6 significant
    digits. Its answers on arrival differ in the last bits with how rows come in batches
    (`ROW_BY_ROW`); a model's bytes must not, and a difference of a few units in the 16th digit
    changes the 6th about once in 10^10 values."""
    return [float(f"{e:.6g}") for e in errors]


def answered_class(probabilities: Sequence[float] | np.ndarray) -> int:
    """A multiclass answer's class index: the most probable (the first of equals, as numpy's
    argmax). Plain Python: serving calls it once per answered row."""
    best = 0
    for k, p in enumerate(probabilities):
        if p > probabilities[best]:
            best = k
    return best


def clip_raws(raws: np.ndarray, clip: float = RAW_CLIP) -> np.ndarray:
    """Members' raw scores as the blend sees them."""
    return np.asarray(raws).clip(-clip, clip)


def member_clip(regression: bool) -> float:
    """The bound on a member's raw score: log-odds, or standardised target values."""
    return REGRESSION_CLIP if regression else RAW_CLIP


def _huber(error: float) -> float:
    """A regression's error as its online steps use it: clipped to +-ERROR_CLIP (the Huber
    loss's gradient), so one wild label moves the online parts a bounded step, not to it."""
    return ERROR_CLIP if error > ERROR_CLIP else -ERROR_CLIP if error < -ERROR_CLIP else error


@dataclass(frozen=True)
class BlendSpec:
    """One blend configuration: which members it blends and how fast it adapts."""

    name: str
    members: tuple[int, ...]  # indices of the members it uses
    lr: float = 0.02  # SGD step of the logistic blend (0: the weights stay as they start)


class Blend:
    """Online blend: score = sum_m w_m raw_m + b; logistic (binary) or least squares
    (`regression`: normalised LMS, the step divided by 1 + the squared norm of the inputs)."""

    def __init__(
        self,
        spec: BlendSpec,
        n_members: int,
        weights: Sequence[float] | None = None,
        bias: float = 0.0,
        *,
        regression: bool = False,
    ) -> None:
        self.spec = spec
        self.regression = regression
        self.clip = member_clip(regression)
        self.score_clip = REGRESSION_CLIP if regression else LOGIT_CLIP
        self.n_members = n_members
        # Members start equally weighted, summing to one: the blend starts as their average.
        share = 1.0 / max(len(spec.members), 1)
        self.w = (
            [float(v) for v in weights]
            if weights is not None
            else [share if m in spec.members else 0.0 for m in range(n_members)]
        )
        self.bias = bias

    def logits(self, raws: np.ndarray) -> np.ndarray:
        """Logits for rows whose member scores are `raws` (n, n_members), with no learning.

        Only the blend's own members enter the sum: a published model holds only those, and
        the same terms in the same order give the same bits."""
        members = list(self.spec.members)
        raws = clip_raws(np.asarray(raws)[:, members], self.clip)
        z = raws @ np.asarray(self.w)[members] + self.bias
        return z.clip(-self.score_clip, self.score_clip)

    def logit(self, raws: Sequence[float]) -> float:
        """`logits` of one row, in Python floats: for a request of a few rows, numpy's
        per-call cost is most of the time. The same terms in the same order; the sum may differ
        from numpy's in the last bit."""
        w, s, clip = self.w, 0.0, self.clip
        for j in self.spec.members:
            r = raws[j]
            s += (clip if r > clip else -clip if r < -clip else r) * w[j]
        s += self.bias
        top = self.score_clip
        return top if s > top else -top if s < -top else s

    def rescale(self, a: float, b: float) -> None:
        """A regression's scale changed: every input and the output become a + b * old. The
        weights stay; the bias takes the rest (b * bias + a * (1 - the weights' sum))."""
        self.bias = b * self.bias + a * (1.0 - sum(self.w[j] for j in self.spec.members))

    def step(self, zs: Sequence[float], y: float) -> float:
        """Predict one row, then learn it: returns the prediction made before seeing y (P(class
        1), or the standardised value of a regression).

        `zs` are the members' raw scores already clipped by `clip_raws`.
        """
        w = self.w
        s = self.bias
        for j in self.spec.members:
            s += w[j] * zs[j]
        s = min(self.score_clip, max(-self.score_clip, s))
        p = s if self.regression else 1.0 / (1.0 + math.exp(-s))
        if not self.spec.lr:
            return p  # a fixed blend (the learner's "linear-slow"): nothing to learn, per row
        if self.regression:
            norm = 1.0
            for j in self.spec.members:
                norm += zs[j] * zs[j]
            g = self.spec.lr * _huber(y - p) / norm
        else:
            g = self.spec.lr * (y - p)
        for j in self.spec.members:
            w[j] += g * zs[j]
        self.bias += g
        return p


class OnlineLinear:
    """Logistic regressions (or, `regression`, least squares by normalised LMS on the
    standardised target: the linear members of regression model files written before
    2026-11-30, read and moved on as they were; a regression learner's are `OnlineRidge`) learned
    by SGD from every labelled row, one per learning rate, on
    inputs standardised by their running mean and standard deviation (Welford), shared by all.

    Standardising lets one learning rate suit features of any scale; a slow rate settles close
    to the best plane, a fast one follows a boundary that moves. Pure Python floats.
    """

    def __init__(self, n_features: int, lrs: Sequence[float], *, regression: bool = False) -> None:
        self.n = n_features
        self.regression = regression
        self.score_clip = REGRESSION_CLIP if regression else LOGIT_CLIP
        self.lrs = tuple(float(lr) for lr in lrs)
        self.coefs = [[0.0] * n_features for _ in self.lrs]
        self.intercepts = [0.0] * len(self.lrs)
        self._k = 0
        self._mean = [0.0] * n_features
        self._m2 = [0.0] * n_features

    @property
    def count(self) -> int:
        return len(self.lrs)

    def _scales(self) -> list[float]:
        k = max(self._k, 1)
        return [math.sqrt(m2 / k) if m2 / k > _MIN_VARIANCE else 1.0 for m2 in self._m2]

    def raws(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of each model (columns) for rows of X, as of now; nothing is learned. (What
        each of `snapshots()` gives, without building them: serving calls this per request.)"""
        X = np.asarray(X, dtype=float).reshape(-1, self.n)
        if len(X) <= ROW_BY_ROW:  # numpy's per-call cost outweighs a few rows' arithmetic
            return np.array([self.row_raws(x) for x in X.tolist()]).reshape(len(X), -1)
        z = np.clip((X - np.asarray(self._mean)) / np.asarray(self._scales()), -Z_CLIP, Z_CLIP)
        return np.column_stack(
            [z @ np.asarray(c) + b for c, b in zip(self.coefs, self.intercepts, strict=True)]
        )

    def row_raws(self, x: Sequence[float]) -> list[float]:
        """`raws` of one row, as Python floats."""
        return self._scores(self._z(x))

    def _z(self, x: Sequence[float]) -> list[float]:
        """One row standardised by the running mean and deviation, clipped to +-Z_CLIP."""
        mean, m2, k = self._mean, self._m2, self._k
        sqrt, clip = math.sqrt, Z_CLIP
        z = []
        for j in range(self.n):
            d = x[j] - mean[j]
            var = m2[j] / k if k else 0.0
            if var > _MIN_VARIANCE:
                d /= sqrt(var)
            z.append(clip if d > clip else -clip if d < -clip else d)
        return z

    def _scores(self, z: Sequence[float]) -> list[float]:
        """Each model's score of a standardised row (log-odds clipped to +-LOGIT_CLIP)."""
        out, top = [], self.score_clip
        for coef, s in zip(self.coefs, self.intercepts, strict=True):
            for c, zj in zip(coef, z):  # noqa: B905 - equal lengths by construction
                s += c * zj
            out.append(top if s > top else -top if s < -top else s)
        return out

    def learn(self, x: Sequence[float], y: float) -> list[float]:
        """Score one row with every model, then learn it; returns the (clipped) scores each
        model gave before learning (log-odds, or the standardised target)."""
        z = self._z(x)
        out = self._scores(z)
        intercepts = self.intercepts
        norm = 1.0 + sum(zj * zj for zj in z) if self.regression else 1.0
        for m, coef in enumerate(self.coefs):
            if self.regression:
                g = self.lrs[m] * _huber(y - out[m]) / norm
            else:
                g = self.lrs[m] * (y - 1.0 / (1.0 + math.exp(-out[m])))
            coef[:] = [c + g * zj for c, zj in zip(coef, z)]  # noqa: B905
            intercepts[m] += g
        mean, m2, k = self._mean, self._m2, self._k + 1
        self._k = k
        limit = MOMENT_CLIP * MOMENT_CLIP / (k - 1) if k > MOMENT_MIN_ROWS else math.inf
        for j in range(self.n):
            v = x[j]
            d = v - mean[j]
            if d * d > limit * m2[j] and m2[j] > _MIN_VARIANCE * (k - 1):  # a wild value
                d = math.copysign(MOMENT_CLIP * math.sqrt(m2[j] / (k - 1)), d)
                v = mean[j] + d
            mean[j] += d / k
            m2[j] += d * (v - mean[j])
        return out

    def rescale(self, a: float, b: float) -> None:
        """A regression's scale changed: every model's score becomes a + b * old."""
        self.coefs = [[b * c for c in coef] for coef in self.coefs]
        self.intercepts = [a + b * i for i in self.intercepts]

    def snapshots(self) -> list[LinearMember]:
        center, scale = tuple(self._mean), tuple(self._scales())
        return [
            LinearMember(tuple(coef), b, center, scale, Z_CLIP)
            for coef, b in zip(self.coefs, self.intercepts, strict=True)
        ]

    def state(self) -> dict[str, Any]:
        """What it needs, beyond its snapshots, to go on learning (for the model file)."""
        return {"lrs": list(self.lrs), "k": self._k, "m2": list(self._m2)}

    @classmethod
    def resume(
        cls, state: dict[str, Any], members: Sequence[LinearMember], *, regression: bool = False
    ) -> OnlineLinear:
        """The learner as it was when `state` and its snapshots `members` were written."""
        n = len(members[0].coef)
        linear = cls(n, state["lrs"], regression=regression)
        linear.coefs = [list(m.coef) for m in members]
        linear.intercepts = [m.intercept for m in members]
        linear._k = int(state["k"])
        linear._mean = list(members[0].center)
        linear._m2 = [float(v) for v in state["m2"]]
        return linear


def _spd_solve(a: list[list[float]], b: list[float]) -> list[float]:
    """x with a x = b, for a symmetric positive definite `a` (a ridge's normal equations), by
    Gaussian elimination without pivoting (stable for such a matrix) on its upper triangle, in
    Python floats: each operation rounded as IEEE 754 says, the same on every CPU. `a` and `b`
    are overwritten."""
    d = len(b)
    for j in range(d - 1):
        row, pivot, bj = a[j], a[j][j], b[j]
        for i in range(j + 1, d):
            # The rows left stay symmetric: only their upper triangle is kept up to date.
            f = row[i] / pivot
            if f:
                other = a[i]
                for c in range(i, d):
                    other[c] -= f * row[c]
                b[i] -= f * bj
    x = [0.0] * d
    for j in range(d - 1, -1, -1):
        row, s = a[j], b[j]
        for c in range(j + 1, d):
            s -= row[c] * x[c]
        x[j] = s / row[j]
    return x


class OnlineRidge:
    """A regression's online linear members: ridge regressions refitted after every labelled row
    on exponentially weighted moments (recursive least squares with forgetting), one per
    `memory` (rows; each row's weight decays by 1 - 1/memory per row after it).

    Each member keeps the weighted mean and co-moments of its inputs and of the standardised
    target (West's weighted recurrences: centred, so a feature near 736,000 loses no digits) and,
    after each row, solves for the coefficients on inputs standardised by its own weighted mean
    and deviation, with a ridge of RIDGE rows' weight (an input constant so far gets 0). Exact
    least squares from the first rows on: where normalised LMS takes hundreds of rows to settle
    on collinear inputs (TrumpApproval's five polls), this fits them as soon as they are seen.
    The recurrences run row by row with the same element-wise numpy operations whatever the
    batches, and the solve is Python floats (`_spd_solve`), so the same rows give the same bits
    on any CPU (`LiveModel` moves it on in serving with this code; LAPACK's kernels differ by
    CPU, and its answers in the last bits with them).
    Wild labels: each step's error is clipped to +-ERROR_CLIP (`_huber`), as the LMS steps were.
    Costs d^2 numbers a member in the model file and a d x d solve a row (d: the inputs).
    """

    def __init__(self, n_features: int, memories: Sequence[float]) -> None:
        self.n = n_features
        self.score_clip = REGRESSION_CLIP
        self.memories = tuple(float(m) for m in memories)
        if any(not (m >= 1.0 and math.isfinite(m)) for m in self.memories):
            raise ValueError("a linear member's memory is a number of rows, at least 1")
        k, d = len(self.memories), n_features
        self._decay = np.array([1.0 - 1.0 / m for m in self.memories])
        self._weight = np.zeros(k)  # the rows' summed weights
        self._mean = np.zeros((k, d))
        self._ymean = np.zeros(k)
        self._comoment = np.zeros((k, d, d))
        self._xy = np.zeros((k, d))
        self._coef = np.zeros((k, d))
        self._scale = np.ones((k, d))
        self._eye = np.eye(d)

    @property
    def count(self) -> int:
        return len(self.memories)

    def raws(self, X: np.ndarray) -> np.ndarray:
        """Each member's score (columns) for rows of X, as of now; nothing is learned."""
        X = np.asarray(X, dtype=float).reshape(-1, self.n)
        if len(X) <= ROW_BY_ROW:
            return np.array([self.row_raws(x) for x in X.tolist()]).reshape(len(X), -1)
        out = np.empty((len(X), self.count))
        for m in range(self.count):
            z = np.clip((X - self._mean[m]) / self._scale[m], -Z_CLIP, Z_CLIP)
            out[:, m] = z @ self._coef[m] + self._ymean[m]
        return out.clip(-self.score_clip, self.score_clip)

    def row_raws(self, x: Sequence[float]) -> list[float]:
        """`raws` of one row, as Python floats."""
        out, top, clip = [], self.score_clip, Z_CLIP
        for coef, center, scale, s in zip(
            self._coef.tolist(),
            self._mean.tolist(),
            self._scale.tolist(),
            self._ymean.tolist(),
            strict=True,
        ):
            for j in range(self.n):
                z = (x[j] - center[j]) / scale[j]
                s += coef[j] * (clip if z > clip else -clip if z < -clip else z)
            out.append(top if s > top else -top if s < -top else s)
        return out

    def learn(self, x: Sequence[float], y: float) -> list[float]:
        """Score one row with every member, then learn it and refit; returns the scores given
        before learning (the standardised target)."""
        out = self.row_raws(x)
        xv = np.asarray(x, dtype=float)
        # The label as learned: at most ERROR_CLIP deviations from each member's own answer.
        yv = np.array([s + _huber(y - s) for s in out])
        kept = self._decay * self._weight  # the earlier rows' weight, decayed
        weight = kept + 1.0
        dx = xv - self._mean
        # A wild value counts as MOMENT_CLIP deviations away (the row's deviations otherwise
        # exactly as they are); inputs with no deviation yet are taken whole.
        variance = (
            np.diagonal(self._comoment, axis1=1, axis2=2) / np.maximum(self._weight, 1.0)[:, None]
        )
        wild = dx * dx > MOMENT_CLIP * MOMENT_CLIP * variance
        if wild.any():
            wild &= (variance > _MIN_VARIANCE) & (self._weight >= MOMENT_MIN_ROWS)[:, None]
            reach = MOMENT_CLIP * np.sqrt(variance)
            dx = np.where(wild, np.copysign(reach, dx), dx)
        dy = yv - self._ymean
        self._mean = self._mean + dx / weight[:, None]
        self._ymean = self._ymean + dy / weight
        # West's update in its symmetric form: the row's deviation from the new mean is
        # dx * kept / weight, so the co-moments gain (kept / weight) dx dx' (0 for a memory of one
        # row, never a negative variance from rounding).
        share = (kept / weight)[:, None]
        self._comoment = (
            self._decay[:, None, None] * self._comoment + (share * dx)[:, :, None] * dx[:, None, :]
        )
        self._xy = self._decay[:, None] * self._xy + share * dx * dy[:, None]
        self._weight = weight
        self._solve()
        return out

    def _solve(self) -> None:
        """Coefficients on the standardised inputs: (R + RIDGE / weight) beta = r, R the
        weighted correlations of the inputs and r theirs with the target."""
        weight = self._weight[:, None]
        variance = np.diagonal(self._comoment, axis1=1, axis2=2) / weight
        scale = np.where(variance > _MIN_VARIANCE, np.sqrt(np.maximum(variance, 0.0)), 1.0)
        corr = self._comoment / weight[:, :, None] / (scale[:, :, None] * scale[:, None, :])
        ridge = (RIDGE / weight)[:, :, None] * self._eye
        r = self._xy / weight / scale
        self._coef = np.array(
            [_spd_solve(a, b) for a, b in zip((corr + ridge).tolist(), r.tolist(), strict=True)]
        )
        self._scale = scale

    def rescale(self, a: float, b: float) -> None:
        """The target's scale changed: every member's score becomes a + b * old."""
        self._ymean = a + b * self._ymean
        self._xy = b * self._xy
        self._coef = b * self._coef

    def snapshots(self) -> list[LinearMember]:
        return [
            LinearMember(tuple(coef), intercept, tuple(center), tuple(scale), Z_CLIP)
            for coef, intercept, center, scale in zip(
                self._coef.tolist(),
                self._ymean.tolist(),
                self._mean.tolist(),
                self._scale.tolist(),
                strict=True,
            )
        ]

    def state(self) -> dict[str, Any]:
        """What it needs, beyond its snapshots, to go on learning (for the model file)."""
        return {
            "memories": list(self.memories),
            "weights": self._weight.tolist(),
            "comoments": self._comoment.reshape(self.count, -1).tolist(),
            "xy": self._xy.tolist(),
        }

    @classmethod
    def resume(cls, state: dict[str, Any], members: Sequence[LinearMember]) -> OnlineRidge:
        """The members as they were when `state` and their snapshots `members` were written:
        the coefficients as published, refitted only when a row is learned."""
        ridge = cls(len(members[0].coef), state["memories"])
        d = ridge.n
        ridge._weight = np.array(state["weights"], dtype=float)
        ridge._comoment = np.array(state["comoments"], dtype=float).reshape(ridge.count, d, d)
        ridge._xy = np.array(state["xy"], dtype=float).reshape(ridge.count, d)
        ridge._coef = np.array([m.coef for m in members], dtype=float)
        ridge._ymean = np.array([m.intercept for m in members], dtype=float)
        ridge._mean = np.array([m.center for m in members], dtype=float)
        ridge._scale = np.array([m.scale for m in members], dtype=float)
        return ridge


@dataclass(frozen=True, slots=True)
class LearnedRow:
    """A labelled row as it was learned: its place in the data stream, its inputs, its label."""

    version: int
    x: list[float]
    y: float  # the class index (0 or 1), or a regression's target value


class RecentRows:
    """The most recent learned rows of a task, to bring a newly published model up to date.

    A model further behind than `capacity` rows (a trainer lagging far behind the stream) learns
    only the newest ones: its online parts follow the recent stream within far fewer rows than
    that. The cap bounds the work of each promotion; at 50,000, serving spent a third of its CPU
    bringing each new champion up to date while the trainer lagged in the soak (bench/soak.py),
    which starved its audit-trail recorder and grew its memory by half."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._rows: deque[LearnedRow] = deque(maxlen=capacity)

    def add(self, rows: Iterable[LearnedRow]) -> None:
        self._rows.extend(rows)

    def after(self, version: int) -> list[LearnedRow]:
        """The rows learned after stream version `version`, in order."""
        out = []
        for row in reversed(self._rows):
            if row.version <= version:
                break
            out.append(row)
        out.reverse()
        return out

    @property
    def oldest(self) -> int | None:
        return self._rows[0].version if self._rows else None


class LiveModel:
    """A published model that keeps learning from the labels after it: tree members as
    published, online members and blend moved on by every labelled row, exactly as the trainer
    moves them. `learned_through` is the data stream version of the last row it learned.

    A model file without online state (written before it existed) predicts as published and
    learns nothing. A regression model (`target` in the file) answers values: `predict`. A
    multiclass model is one LiveModel per class (`per_class`); it answers each class's P(class)
    divided by their sum, (rows, classes)."""

    n_features: int
    learned_through: int

    def __init__(self, data: bytes) -> None:
        doc = parse(data)
        self.per_class: list[LiveModel] | None = None
        if doc["format"] == FORMAT_OVR:
            self.per_class = [LiveModel(part) for part in class_models(doc)]
            self.target = None
            self.n_features = self.per_class[0].n_features
            self.learned_through = min(m.learned_through for m in self.per_class)
            return
        online = doc.get("online")
        self._frozen = decode(data) if online is None else None
        self.target = target_scale(doc)
        regression = self.target is not None
        self._clip = member_clip(regression)
        self.n_features = int(doc["n_features"])
        self.learned_through = 0 if online is None else int(online["learned_through"])
        # A regression's model before its learner's first tick: the running mean of the labels.
        self._labels: list[float] | None = None
        # How far a regression's prediction interval reaches either side (None: no interval).
        self._reach = conformal_reach([float(e) for e in (online or {}).get("residuals") or ()])
        if online is not None and online.get("labels") is not None:
            self._labels = [float(online["labels"]["sum"]), float(online["labels"]["n"])]
        if online is None:
            return
        self.feature_names = list(doc.get("feature_names") or [])
        trees: list[lgb.Booster] = []
        linear_members: list[LinearMember] = []
        weights: list[float] = []
        for m in doc["members"]:
            if "linear" in m:
                linear_members.append(_linear(m["linear"]))
            else:
                trees.append(lgb.Booster(model_str=m["model"]))
            weights.append(float(m["weight"]))
        # Members in the file: trees first, then linear members (as the trainer writes them).
        self._trees = trees
        # A few rows (serving's one-record requests) go row by row through LightGBM's fast path.
        scorers = [raw_scorer(booster, self.n_features) for booster in trees]
        self._scorers = None if None in scorers else cast(list[RawScorer], scorers)
        self._linear: OnlineLinear | OnlineRidge | None = None
        if linear_members and "memories" in online["linear"]:
            self._linear = OnlineRidge.resume(online["linear"], linear_members)
        elif linear_members:
            self._linear = OnlineLinear.resume(
                online["linear"], linear_members, regression=regression
            )
        self._blend = Blend(
            BlendSpec("live", tuple(range(len(weights))), float(online["blend_lr"])),
            len(weights),
            weights=weights,
            bias=float(doc["bias"]),
            regression=regression,
        )

    def _tree_raws(self, X: np.ndarray) -> np.ndarray:
        raws = np.zeros((len(X), len(self._blend.w)))
        if len(X) <= ROW_BY_ROW and self._scorers is not None:
            for j, scorer in enumerate(self._scorers):
                raws[:, j] = [scorer.raw(x) for x in X]
            return raws
        for j, booster in enumerate(self._trees):
            raws[:, j] = booster.predict(X, raw_score=True, num_threads=1)
        return raws

    def logits(self, X: np.ndarray) -> np.ndarray:
        if self.per_class is not None:
            raise TypeError("a multiclass model has no single score: call predict_proba")
        X = np.asarray(X, dtype=float).reshape(-1, self.n_features)
        if self._frozen is not None:
            return self._frozen.logits(X)
        if self._row_by_row(X):
            return np.array([self._logit(x) for x in X.tolist()])
        raws = self._tree_raws(X)
        if self._linear is not None and len(X):
            raws[:, len(self._trees) :] = self._linear.raws(X)
        return self._blend.logits(raws)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The answer for each row of X, as of the rows learned so far: P(class 1) of a binary
        model, the value of a regression."""
        if self.target is None:
            return self.predict_proba(X)
        if self._labels is not None:
            total, n = self._labels
            rows = np.asarray(X, dtype=float).reshape(-1, self.n_features)
            return np.full(len(rows), total / n if n else 0.0)
        return np.asarray(self.target.value(self.logits(X)), dtype=float)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) for each row of X, as of the rows learned so far."""
        if self.target is not None:
            raise TypeError("a regression model answers values: call predict")
        if self.per_class is not None:  # (rows, classes)
            own = np.column_stack([m.predict_proba(X) for m in self.per_class])
            return own / own.sum(axis=1, keepdims=True)
        X = np.asarray(X, dtype=float).reshape(-1, self.n_features)
        if self._frozen is None and self._row_by_row(X):
            return np.array([1.0 / (1.0 + math.exp(-self._logit(x))) for x in X.tolist()])
        return 1.0 / (1.0 + np.exp(-self.logits(X)))

    def _row_by_row(self, X: np.ndarray) -> bool:
        """Serving's requests of a few rows: scored a row at a time in Python floats (about a
        third of the numpy path's time for one row, which is most of a predict call's CPU)."""
        return len(X) <= ROW_BY_ROW and self._scorers is not None

    def _logit(self, x: list[float]) -> float:
        assert self._scorers is not None
        raws = [scorer.raw(x) for scorer in self._scorers]
        if self._linear is not None:
            raws += self._linear.row_raws(x)
        return self._blend.logit(raws)

    def learn(self, rows: Sequence[LearnedRow]) -> list[float]:
        """Predict each row as of the rows before it, then learn it, in order; return those
        predictions (as `predict`). Rows at or before `learned_through` are predicted, not
        learned again."""
        if not rows:
            return []
        if self.per_class is not None:
            return self._learn_per_class(rows)
        X = np.array([r.x for r in rows], dtype=float).reshape(-1, self.n_features)
        if self._frozen is not None:
            return self._frozen.predict(X).tolist()
        if self._labels is not None:
            return self._learn_mean(rows)
        clip, target = self._clip, self.target
        raws = clip_raws(self._tree_raws(X), clip).tolist()
        first_linear = len(self._trees)
        out = []
        for i, (row, raw) in enumerate(zip(rows, raws, strict=True)):
            if row.version <= self.learned_through:
                out.append(float(self.predict(X[i : i + 1])[0]))
                continue
            y = row.y if target is None else float(target.standardise(row.y))
            if self._linear is not None:
                raw[first_linear:] = [
                    min(clip, max(-clip, r)) for r in self._linear.learn(row.x, y)
                ]
            answer = self._blend.step(raw, y)
            out.append(answer if target is None else float(target.value(answer)))
            self.learned_through = row.version
        return out

    def interval_half_width(self) -> float | None:
        """How far either side of a regression's answer its prediction interval reaches
        (`conformal_reach` of the errors in its file); None for a classifier."""
        return None if self.per_class is not None else self._reach

    def _learn_mean(self, rows: Sequence[LearnedRow]) -> list[float]:
        """`learn` of a running-mean model: each row answered with the mean of the labels
        before it, then counted in (as the learner does before its first tick)."""
        assert self._labels is not None
        total, n = self._labels
        out = []
        for row in rows:
            out.append(total / n if n else 0.0)
            if row.version > self.learned_through:
                total, n = total + float(row.y), n + 1
                self.learned_through = row.version
        self._labels = [total, n]
        return out

    def _learn_per_class(self, rows: Sequence[LearnedRow]) -> Any:
        """`learn` of a multiclass model: each class learns whether each row is of it; the
        predictions made before, normalised, one list of class probabilities per row."""
        assert self.per_class is not None
        own = np.column_stack(
            [
                m.learn([LearnedRow(r.version, r.x, int(r.y == k)) for r in rows])
                for k, m in enumerate(self.per_class)
            ]
        )
        self.learned_through = min(m.learned_through for m in self.per_class)
        return (own / own.sum(axis=1, keepdims=True)).tolist()


def _linear(doc: dict[str, Any]) -> LinearMember:
    return LinearMember(
        tuple(doc["coef"]),
        float(doc["intercept"]),
        tuple(doc["center"]),
        tuple(doc["scale"]),
        float(doc["z_clip"]),
    )


def online_state(
    blend_lr: float, linear: OnlineLinear | OnlineRidge | None, learned_through: int
) -> dict:
    """The model file's `online` section (see shared.model_codec)."""
    return {
        "learned_through": int(learned_through),
        "blend_lr": float(blend_lr),
        "linear": None if linear is None else linear.state(),
    }
