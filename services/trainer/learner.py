"""Continuo's online learner: LightGBM window members, online linear members, a blend race.

How it learns (every figure is a default, see `LEARNER_DEFAULTS`):

* Inputs are the task's model features followed by its online features (label history, counts,
  deviations from recent means: `shared.features`), computed as of the moment each row was
  predicted, so the learner sees exactly what serving saw.
* Two LightGBM members retrain from scratch on sliding windows of the most recent labelled rows:
  `short` (last 1,000 rows, 20 trees, every 250) and `long` (last 10,000 rows, 40 trees, every
  2,000). While a window fills, its member also retrains each time the rows have doubled (from
  the 50th row on), so a new task gets trees within its first hundred rows. The `linear` members
  are logistic regressions that learn from every labelled row (SGD on standardised inputs): they
  follow a moving boundary between retrains, and draw the oblique boundaries that axis-aligned
  trees only approximate.
* A racing population of online logistic blends (`racing.py`) combines the members' log-odds,
  learning weights row by row; one entrant is the slow linear member alone, unblended. A paired
  sign test on recent prequential correctness picks the champion; the champion's prediction is
  the learner's prediction and the served model. A row labelled late is judged on what each
  configuration answered when it arrived, where the caller kept it (`predict_on_arrival`,
  passed back to `learn`: the trainer core does), as serving answered it, not on a prediction
  made while the batch's earlier labels were being learned (which flatters the fastest
  configurations when labels come in batches).
* The race also searches the short member's settings (`short_search`: by default windows of 250
  and 4,000 rows, a quarter and four times the default 1,000; a LightGBM learning rate, the
  number of trees and their size can be searched too): each alternative is one more tree
  member, raced in a fast blend of its own ("blend-fast/short-250"). Successive halving over
  the arms (an alternative's member and the configurations over it; the default's are all the
  blends of the short member): after `search_rows` rows the arm whose best configuration has
  the lowest recent accuracy is dropped (never the champion's; on a tie the later alternative;
  its member stops training and its configurations stop predicting), then the next after
  twice as many rows, until one is left; a drop waits until the race's record holds
  `search_rows` rows (it starts again when governance chooses a configuration). The cost is
  paid early (a window that holds no more rows than the default's yet shares its trees), and
  a shorter window that wins costs less than the default it replaces. Each drop is a
  `ConfigDropped` fact per configuration, with its evidence; each win a `ConfigSwitched`.
* ADWIN and Page-Hinkley watch the error. A rise cuts the short member's window to the rows of the
  new concept (ADWIN's estimate) and retrains it at the next tick; the long member is cut too once
  the re-learned short member beats it (a confirmed change). A rise also starts a challenger (a
  fresh learner on the new concept, judged live as a shadow: `services.trainer.core`).
  `drift_response: false` keeps the windows (tried as the default: in process it gained a point
  under late labels on elec with label history, but in the running system it gained nothing there
  and cost Agrawal 4 points of served accuracy with 100-row requests, the learner recovering from
  an abrupt drift only through challengers: docs/benchmarks.md).

Other kinds of target: a regression runs the same parts on its standardised target (ridge
regressions refitted on every row for the linear members, `OnlineRidge`, one per
`linear_memory`; least squares for the blends; absolute errors for the race and the detectors:
see `OnlineLearner`); a
multiclass task is one of these learners per class (`services/trainer/multiclass.py`).

Determinism: everything that changes the tree members happens on ticks (after 50, 100 and 200
labelled rows, then every `tick` rows), and everything else is a per-row recurrence, so the
state depends only on the sequence of (x, y, proba, each configuration's prediction at
arrival) learned, not on how it was split into calls. LightGBM runs deterministic and
single-threaded with the learner's seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from services.trainer.drift import Drift, DriftMonitor
from services.trainer.members import (
    MemberSpec,
    RowBuffer,
    SharedWindows,
    lightgbm_params,
    train_member,
)
from services.trainer.metrics import PrequentialMetrics, RegressionMetrics
from services.trainer.racing import ConfigDrop, ConfigSwitch, Race
from shared import model_codec
from shared.model_codec import TargetScale
from shared.online_models import (
    RESIDUALS,
    RIDGE_MAX_INPUTS,
    ROW_BY_ROW,
    Blend,
    BlendSpec,
    OnlineLinear,
    OnlineRidge,
    batch_invariant,
    clip_raws,
    member_clip,
    online_state,
)
from shared.tasks import MAX_ABS_FLOAT, SearchChange, TaskSpec, categorical_indices
from shared.tree_rows import RawScorer, raw_scorer

__all__ = [
    "LEARNER_DEFAULTS",
    "ConfigDrop",
    "ConfigSwitch",
    "Drift",
    "LearnReport",
    "OnlineLearner",
]

# Learner settings read from `spec.learner.params`; every other key there goes to LightGBM.
LEARNER_DEFAULTS: dict[str, Any] = {
    "tick": 250,  # rows between scheduled actions (retrains, race decisions, drift responses)
    "short_window": 1000,
    "short_every": 250,
    "short_rounds": 20,  # boosting rounds per retrain of the short member
    "window": 10000,
    "update_every": 2000,
    "rounds": 40,  # boosting rounds per retrain of the long member
    "min_train_rows": 50,
    "linear": True,  # the online linear members
    "linear_lrs": (0.003, 0.03),  # one linear member per learning rate: slow and fast
    # A regression's linear members: ridge refitted on every row, one per memory (rows), when
    # it has at most RIDGE_MAX_INPUTS inputs (`OnlineRidge`).
    "linear_memory": (1000, 100),
    "racing": True,  # False: one blend configuration ("blend-fast"), no race
    "race_window": 2000,
    "race_z": 2.5,
    "recent_window": 1000,
    "adwin_delta": 0.002,
    "ph_threshold": 50.0,
    "drift_min_keep": 300,  # rows kept at least when a drift cuts the windows
    # After a drift the short member re-learns at once; the long one is cut too only if, over
    # this many rows, the re-learned short member beats it (a confirmed change, not an alarm).
    "drift_confirm_rows": 250,
    "drift_response": True,  # False: a rising error starts a challenger, no windows are cut
    # The search (successive halving): other settings of the short member, each an extra tree
    # member raced in a fast blend of its own. After `search_rows` rows the worst is dropped,
    # then after twice as many more, and so on: the survivors get a growing budget. Each is a
    # mapping of `window` (rows), `learning_rate` (LightGBM's), `rounds` and/or `num_leaves` to
    # change. (Arms of learning rate 0.3, 40 rounds or 31 leaves never won on the bench's
    # streams and cost more: docs/benchmarks.md, "Tuning that searches".)
    "short_search": ({"window": 250}, {"window": 4000}),
    "search_rows": 2000,
}

# A regression of more than RIDGE_MAX_INPUTS inputs keeps normalised LMS linear members (a
# ridge's d x d solve a row and d^2 numbers a model file grow past what they gain: 116 us a
# row at 16 inputs), whose usual rates are larger than logistic SGD's.
REGRESSION_DEFAULTS: dict[str, Any] = {"linear_lrs": (0.05, 0.5)}
# A regression's trees learn its labels (standardised) within +-TREE_TARGET_CLIP of the scale's
# centre: least squares on one wild label (1e100, a units typo) made the trees of every window
# holding it answer ~1e6 deviations (the members' clip) on the rows of its leaves. Generous,
# so that spikes a feature predicts (demand 20-50 deviations above the median) are learned:
# with 10 a wild label cost a little less, and no benchmark stream reaches either bound.
TREE_TARGET_CLIP = 100.0
# The blends' rates, fast and slow, by kind (logistic SGD; normalised LMS).
_BLEND_LRS = {False: (0.05, 0.01), True: (0.5, 0.05)}

SHORT, LONG = 0, 1  # member indices; then the short member's alternatives, then the linear ones


@dataclass(frozen=True)
class LearnReport:
    """What one `learn` call did. `model_changed`: a member retrained or the champion changed."""

    n_learned: int
    model_changed: bool
    drifts: list[Drift] = field(default_factory=list)
    switches: list[ConfigSwitch] = field(default_factory=list)
    dropped: list[ConfigDrop] = field(default_factory=list)  # by the search
    # The prediction each row was scored on: the one given to `learn`, or the prequential one.
    proba: np.ndarray | None = None


def _blend_specs(
    racing: bool, members: tuple[int, ...], linear_at: int, regression: bool
) -> list[BlendSpec]:
    """The racing population: every member at two adaptation speeds, and the slow linear member
    alone, as it is (where the boundary is a plane, the trees' steps only add noise to it, and a
    blend's learned weights and bias wander with the label noise: on SEA's first 5,000 rows the
    member alone scored 0.885, every blend over it 0.873-0.879)."""
    fast_lr, slow_lr = _BLEND_LRS[regression]
    fast = BlendSpec("blend-fast", members, lr=fast_lr)
    if not racing:
        return [fast]
    specs = [fast, BlendSpec("blend-slow", members, lr=slow_lr)]
    linear = tuple(m for m in members if m >= linear_at)
    if linear:
        specs.append(BlendSpec("linear", linear, lr=slow_lr))
        specs.append(BlendSpec("linear-slow", (linear_at,), lr=0.0))  # weight 1, bias 0, as it is
    return specs


def _alternatives(short: MemberSpec, search: Any, trees: Mapping[str, Any]) -> list[MemberSpec]:
    """The short member's alternatives the search races (`short_search`, validated by
    `shared.tasks.SearchChange`), named by what they change ("short-250", "short-lr0.3",
    "short-r40", "short-l31"); one that changes nothing (every value the default member's,
    `trees` being its LightGBM parameters), or repeats another, is left out."""
    out: list[MemberSpec] = []
    for change in SearchChange.parse_all(search):
        window = change.window if change.window is not None else short.window
        rounds = change.rounds if change.rounds is not None else short.rounds
        # None: the default member's value, so equal trees are shared, not trained twice.
        rate = None if change.learning_rate == trees.get("learning_rate") else change.learning_rate
        leaves = None if change.num_leaves == trees.get("num_leaves") else change.num_leaves
        parts = [str(window)] if window != short.window else []
        parts += [f"lr{rate:g}"] if rate is not None else []
        parts += [f"r{rounds}"] if rounds != short.rounds else []
        parts += [f"l{leaves}"] if leaves is not None else []
        name = "-".join(["short", *parts])
        if parts and name not in {m.name for m in out}:
            out.append(MemberSpec(name, window, short.every, rounds, rate, leaves))
    return out


def _tick_after(n: int, tick: int) -> int:
    """The tick after row `n`: doubling up to the first `tick` rows, then every `tick` rows."""
    return min(2 * n, tick) if n < tick else n + tick


class OnlineLearner:
    """Prequential learner of a binary target, or (`regression`) of a numeric one; see the
    module docstring for how it works.

    A regression learns in the target standardised by a `TargetScale` (the median and median
    absolute deviation of the labels) fixed at the first tick (until then it answers the running
    mean of the labels) and moved, exactly, when the labels' scale changes (`_rescale`): every
    member and blend scores in those units, the blends and the linear members learn least
    squares, and the race and drift detection judge absolute errors."""

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> OnlineLearner:
        if spec.target.kind == "multiclass":
            raise ValueError("a multiclass task learns with services.trainer.multiclass.OneVsRest")
        return cls(
            len(spec.input_names),
            seed=spec.learner.seed,
            params=spec.learner.params,
            categorical=categorical_indices(spec),
            feature_names=list(spec.input_names),
            regression=spec.target.kind == "regression",
        )

    def __init__(
        self,
        n_features: int,
        *,
        seed: int = 7,
        params: Mapping[str, Any] | None = None,
        categorical: Sequence[int] = (),
        feature_names: Sequence[str] | None = None,
        regression: bool = False,
    ) -> None:
        user = dict(params or {})
        defaults = {**LEARNER_DEFAULTS, **(REGRESSION_DEFAULTS if regression else {})}
        self.settings = {k: user.pop(k, v) for k, v in defaults.items()}
        s = self.settings
        self.regression = regression
        self._clip = member_clip(regression)
        # A regression's scale, fixed at the first tick; the labels' sum until then.
        self._target: TargetScale | None = None
        self._label_sum = 0.0
        self.n_features = n_features
        self.feature_names = list(feature_names) if feature_names else None
        self.categorical = list(categorical)
        self._lgb_params = lightgbm_params(user, seed, regression=regression)
        short = MemberSpec(
            "short", int(s["short_window"]), int(s["short_every"]), int(s["short_rounds"])
        )
        search = s["short_search"] if s["racing"] else ()
        alternatives = _alternatives(short, search, self._lgb_params)
        self._members = [
            short,
            MemberSpec("long", int(s["window"]), int(s["update_every"]), int(s["rounds"])),
            *alternatives,
        ]
        trees = len(self._members)
        self._linear_at = trees
        self._boosters: list[lgb.Booster | None] = [None] * trees
        self._model_strings: list[str | None] = [None] * trees
        self._linear: OnlineLinear | OnlineRidge
        if regression and n_features <= RIDGE_MAX_INPUTS:
            self._linear = OnlineRidge(n_features, s["linear_memory"] if s["linear"] else ())
        else:
            rates = s["linear_lrs"] if s["linear"] else ()
            self._linear = OnlineLinear(n_features, rates, regression=regression)
        lrs = range(self._linear.count)
        capacity = max(m.window for m in self._members)
        self._buffer = RowBuffer(n_features, capacity, regression=regression)
        linear = tuple(range(trees, trees + len(lrs)))
        blended = (SHORT, LONG, *linear)
        specs = _blend_specs(bool(s["racing"]), blended, trees, regression)
        fast_lr = _BLEND_LRS[regression][0]
        for j, member in enumerate(alternatives, start=2):
            # Members in index order, as a published model holds them (the same sums, bits).
            specs.append(BlendSpec(f"blend-fast/{member.name}", (LONG, j, *linear), lr=fast_lr))
        self._blends = [Blend(b, trees + len(lrs), regression=regression) for b in specs]
        # The search's arms: each short window's tree member, with the race's configurations
        # over it. The default window's arm is every blend of the short member.
        self._arms: dict[int, list[str]] = {}
        if alternatives:
            self._arms[SHORT] = [b.name for b in specs if SHORT in b.members]
            for j, member in enumerate(alternatives, start=2):
                self._arms[j] = [f"blend-fast/{member.name}"]
        self._dropped: set[int] = set()  # tree members the search dropped
        # Where a multiclass task's classes share their windows' binned rows (OneVsRest).
        self.shared_windows: SharedWindows | None = None
        self._scorers: dict[int, tuple[lgb.Booster, RawScorer | None]] = {}
        self._short = SHORT  # the short member a drift's confirmation compares with the long
        self._search_budget = int(s["search_rows"])
        self._next_search = self._search_budget
        self._race = Race(
            [b.spec.name for b in self._blends],
            window=int(s["race_window"]),
            z=s["race_z"],
            regression=regression,
        )
        self._metrics: PrequentialMetrics | RegressionMetrics = (
            RegressionMetrics(int(s["recent_window"]))
            if regression
            else PrequentialMetrics(int(s["recent_window"]))
        )
        self._monitor = DriftMonitor(adwin_delta=s["adwin_delta"], ph_threshold=s["ph_threshold"])
        self._tick = int(s["tick"])
        self._next_tick = min(int(s["min_train_rows"]), self._tick)
        self._trained_rows = [0] * trees  # rows each tree member last trained on
        self._floor = 0  # the short member trains on no row before this (set by drifts)
        self._long_floor = 0  # the same for the long member, once a drift is confirmed
        self._drift_pending = False
        # After a drift: [rows only the short member got right, only the long one, all rows]
        # since the short member re-learned.
        self._confirming: list[int] | None = None
        self.n_updates = 0
        self.n_drifts = 0

    # ---------------------------------------------------------------- predicting

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The champion's answer for each row as of now: P(class 1), or a regression's value."""
        if not self.regression:
            return self.predict_proba(X)
        return self.predict_on_arrival(X)[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) for each row, from the champion blend as of now."""
        if self.regression:
            raise TypeError("a regression learner answers values: call predict")
        X = np.asarray(X, dtype=float).reshape(-1, self.n_features)
        logits = self._blends[self._race.champion].logits(self._member_raws(X))
        return 1.0 / (1.0 + np.exp(-logits))

    def predict_on_arrival(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the champion and every configuration of the race would answer for these rows
        now, as serving answers before their labels exist: P(class 1) of the champion (as
        `predict_proba`) and of each configuration (rows x configurations; one the search
        dropped: 0.5). Pass the latter to `learn` with the rows' labels and the race judges
        each configuration on what it would have served, not on predictions that had already
        learned the labels of the same batch (which flatter the fast ones)."""
        X = np.asarray(X, dtype=float).reshape(-1, self.n_features)
        if self.regression:
            return self._values_on_arrival(X)
        raws = self._member_raws(X)
        configs = np.full((len(X), len(self._blends)), 0.5)
        for c in self._race.live:
            configs[:, c] = 1.0 / (1.0 + np.exp(-self._blends[c].logits(raws)))
        return configs[:, self._race.champion].copy(), configs

    def _values_on_arrival(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`predict_on_arrival` of a regression: values (a dropped configuration: NaN)."""
        target = self._target
        if target is None:  # before the first tick: the running mean of the labels
            mean = self._label_sum / self._metrics.n if self._metrics.n else 0.0
            return np.full(len(X), mean), np.full((len(X), len(self._blends)), mean)
        raws = self._member_raws(X)
        configs = np.full((len(X), len(self._blends)), np.nan)
        for c in self._race.live:
            configs[:, c] = target.value(self._blends[c].logits(raws))
        return configs[:, self._race.champion].copy(), configs

    def _member_raws(self, X: np.ndarray) -> np.ndarray:
        raws = self._tree_raws(X)
        if self._linear.count and len(X):
            raws[:, self._linear_at :] = self._linear.raws(X)
        return raws

    # ---------------------------------------------------------------- learning

    def learn(
        self,
        X: np.ndarray,
        y: np.ndarray,
        proba: np.ndarray,
        configs: np.ndarray | None = None,
    ) -> LearnReport:
        """Score `proba` (the prediction made before the labels were known), then learn the
        rows. `configs`: each configuration's prediction made then (`predict_on_arrival`),
        on which the race judges them; None (or a row of NaN): on their predictions as the
        rows are learned."""
        given = np.asarray(proba, dtype=float).reshape(-1)
        if configs is not None:
            configs = np.asarray(configs, dtype=float)
            if configs.shape != (len(given), len(self._blends)):
                raise ValueError(
                    f"configs must be rows x configurations, {(len(given), len(self._blends))};"
                    f" got {configs.shape}"
                )
        return self._consume(X, y, given, configs)

    def test_then_train(self, X: np.ndarray, y: np.ndarray) -> LearnReport:
        """Prequential: each row is predicted by the learner as it was after the rows before it."""
        return self._consume(X, y, None, None)

    def _consume(
        self, X: np.ndarray, y: np.ndarray, given: np.ndarray | None, configs: np.ndarray | None
    ) -> LearnReport:
        X = np.asarray(X, dtype=float).reshape(-1, self.n_features)
        if self.regression:
            y = np.asarray(y, dtype=float).reshape(-1)
            if not (np.abs(y) <= MAX_ABS_FLOAT).all():  # NaN fails too
                raise ValueError(f"labels must be finite numbers, |y| <= {MAX_ABS_FLOAT:g}")
        else:
            y = np.asarray(y).astype(np.int64).reshape(-1)
            if len(y) and not np.isin(y, (0, 1)).all():
                raise ValueError("labels must be 0 or 1")
        if len(X) != len(y) or (given is not None and len(given) != len(y)):
            raise ValueError("X, y and proba must have the same number of rows")
        drifts: list[Drift] = []
        switches: list[ConfigSwitch] = []
        dropped: list[ConfigDrop] = []
        changed = False
        start = 0
        scored: list[np.ndarray] = []
        while start < len(y):
            # Segments end on ticks: the tree members are fixed inside a segment.
            stop = min(len(y), start + self._next_tick - self._metrics.n)
            part = None if given is None else given[start:stop]
            judged = None if configs is None else configs[start:stop]
            scored.append(self._segment(X[start:stop], y[start:stop], part, judged, drifts))
            start = stop
            if self._metrics.n == self._next_tick:
                changed = self._on_tick(switches, dropped) or changed
                self._next_tick = _tick_after(self._metrics.n, self._tick)
        proba = np.concatenate(scored) if scored else np.empty(0)
        return LearnReport(len(y), changed, drifts, switches, dropped, proba)

    def _segment(
        self,
        X: np.ndarray,
        y: np.ndarray,
        given: np.ndarray | None,
        judged: np.ndarray | None,
        drifts: list[Drift],
    ) -> np.ndarray:
        """Score and learn rows between two ticks (the tree members fixed): each row scored by
        every member and configuration, then learned by the online parts. A regression does
        it on the target standardised by its scale; its race records absolute errors (the
        paired test counts the rows where a challenger was closer than the champion, and where
        it was further), a classifier's its 0/1 errors."""
        target = self._target
        if self.regression and target is None:
            return self._segment_before_scale(X, y, given)
        taught = y if target is None else np.asarray(target.standardise(y), dtype=float)
        raws = self._tree_raws(X)  # the linear member's column is filled row by row below
        if self._confirming is not None:
            self._count_confirming(raws[:, [self._short, LONG]], taught)
        clip = self._clip
        rows = clip_raws(raws, clip).tolist()
        ys = taught.tolist()
        linear = self._linear if self._linear.count else None
        xs = X.tolist() if linear is not None else []
        at = self._linear_at
        # A configuration the search dropped predicts nothing (and is no longer reported).
        scores = np.full((len(self._blends), len(ys)), np.nan if self.regression else 0.5)
        racing = [(c, self._blends[c]) for c in self._race.live]
        for i, (row, yi) in enumerate(zip(rows, ys, strict=True)):
            if linear is not None:
                # Scored before they learn the row, like every member.
                row[at:] = [min(clip, max(-clip, r)) for r in linear.learn(xs[i], yi)]
            for c, blend in racing:
                scores[c, i] = blend.step(row, yi)
        answers = scores if target is None else np.asarray(target.value(scores), dtype=float)
        answer = answers[self._race.champion] if given is None else given
        start_n = self._metrics.n
        errors = self._metrics.update(y, answer)
        # The race judges what each configuration answered when the rows arrived, if known.
        answered = answers if judged is None else np.where(np.isnan(judged.T), answers, judged.T)
        if target is None:
            self._race.record(((answered >= 0.5) != (y == 1)).astype(np.int8))
        else:  # a dropped configuration's NaN is never compared (it no longer races)
            self._race.record(np.nan_to_num(np.abs(answered - y), nan=0.0))
            # The detectors see the error in the scale's deviations, capped at 3, in [0, 1].
            errors = np.minimum(errors / target.scale, 3.0) / 3.0
        for i, err in enumerate(errors.tolist()):
            drift = self._monitor.update(err, start_n + i + 1)
            if drift is not None:
                self._note_drift(drift, drifts)
        self._buffer.append(X, y)
        return np.asarray(answer, dtype=float)

    def _count_confirming(self, scores: np.ndarray, y: np.ndarray) -> None:
        """After a drift: the rows only the short member (column 0) got right, only the long
        one did (a regression: the rows each was the closer on), and all rows."""
        assert self._confirming is not None
        if self.regression:
            err = np.abs(scores - y[:, None])
            short, long = err[:, 0] < err[:, 1], err[:, 1] < err[:, 0]
        else:
            right = (scores >= 0.0) == (y == 1)[:, None]
            short, long = right[:, 0] & ~right[:, 1], right[:, 1] & ~right[:, 0]
        self._confirming[0] += int(short.sum())
        self._confirming[1] += int(long.sum())
        self._confirming[2] += len(y)

    def _segment_before_scale(
        self, X: np.ndarray, y: np.ndarray, given: np.ndarray | None
    ) -> np.ndarray:
        """A regression's rows before its first tick: answered with the running mean of the
        labels before them, kept for the trees; the online parts start at the first tick."""
        means = []
        total, k = self._label_sum, self._metrics.n
        for yi in y.tolist():
            means.append(total / k if k else 0.0)
            total += yi
            k += 1
        self._label_sum = total
        answer = np.asarray(means) if given is None else given
        self._metrics.update(y, answer)
        # Every configuration answered the same mean: the same losses, no evidence either way.
        self._race.record(np.tile(np.abs(y - np.asarray(means)), (len(self._blends), 1)))
        self._buffer.append(X, y)
        return np.asarray(answer, dtype=float)

    def _tree_raws(self, X: np.ndarray) -> np.ndarray:
        raws = np.zeros((len(X), len(self._blends[0].w)))
        for j, booster in enumerate(self._boosters):
            if booster is None or not len(X):
                continue
            scorer = self._scorer(j, booster) if len(X) <= ROW_BY_ROW else None
            if scorer is not None:  # the same scores, without predict's set-up per call
                raws[:, j] = [scorer.raw(x) for x in X]
            else:
                raws[:, j] = booster.predict(X, raw_score=True, num_threads=1)
        return raws

    def _scorer(self, j: int, booster: lgb.Booster) -> RawScorer | None:
        """Tree member j's single-row scorer (`shared.tree_rows`), made once per booster: a few
        rows at a time (a request, one labelled row) cost `Booster.predict` about 85 us a call
        in set-up alone, which made a multiclass task of 10 classes learn 90 rows a second
        when its rows came one by one."""
        found = self._scorers.get(j)
        if found is None or found[0] is not booster:
            found = self._scorers[j] = (booster, raw_scorer(booster, self.n_features))
        return found[1]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_scorers"] = {}  # C-side configurations: made again after a snapshot is loaded
        return state

    def _note_drift(self, drift: Drift, drifts: list[Drift]) -> None:
        rise = bool(drift.evidence.get("rise"))
        act = rise and bool(self.settings["drift_response"])
        action = "cut-windows-and-retrain" if act else "none"
        drift = Drift(drift.detector, drift.at_labelled, {**drift.evidence, "action": action})
        drifts.append(drift)
        self.n_drifts += 1
        if act:
            keep = max(
                int(drift.evidence.get("new_concept_rows", 0)),
                int(self.settings["drift_min_keep"]),
            )
            self._floor = max(self._floor, drift.at_labelled - keep)
            self._drift_pending = True

    def _on_tick(self, switches: list[ConfigSwitch], dropped: list[ConfigDrop]) -> bool:
        n = self._metrics.n
        changed = False
        rescaled = self.regression and self._rescale(n)
        switch = self._race.decide(n)
        if switch is not None:
            switches.append(switch)
            changed = True
        confirmed = self._confirmed()
        # A drop waits until the race has judged enough rows (its record starts again when
        # governance chooses a configuration).
        evidence = min(self._race.window, int(self.settings["search_rows"]))
        if len(self._arms) > 1 and n >= self._next_search and self._race.seen >= evidence:
            self._search_budget *= 2
            self._next_search = n + self._search_budget
            dropped.extend(self._drop_worst(n))
        trained: dict[tuple[Any, ...], lgb.Booster | None] = {}
        for j, member in enumerate(self._members):
            if j in self._dropped:
                continue
            due = n % member.every == 0 or self._boosters[j] is None
            # While its window fills, a member retrains each time the rows it could learn from
            # have doubled: trees from the 50th row on, not only from the first `every`.
            due = due or self._trained_rows[j] * 2 <= self._available(j, n)
            due = due or (confirmed if j == LONG else self._drift_pending) or rescaled
            if due and self._retrain(j, n, trained):
                changed = True
            elif rescaled and self._boosters[j] is not None:
                # Trees of the old scale answer nothing in the new one: none until it retrains.
                self._boosters[j] = None
                self._model_strings[j] = None
                changed = True
        if self._drift_pending:
            self._confirming = [0, 0, 0]  # the short member has just re-learned: compare now
            self._short = self._champion_short()
        self._drift_pending = False
        return changed

    def _rescale(self, n: int) -> bool:
        """A regression's scale, at a tick: fixed from the labels so far at the first, then
        moved when the labels of the short window have a scale twice or half as wide, or a
        center two deviations away (a target that grows, a level shift). Every online part is
        carried over exactly (its scores are linear in the target) and every tree member
        retrains on the new scale now. True when the scale changed."""
        window = self._buffer.tail(min(n, int(self.settings["short_window"])))[1]
        new = TargetScale.of(window)
        old = self._target
        if old is None:
            self._target = new
            return True
        if not old.moved(new):
            return False
        a, b = (old.center - new.center) / new.scale, old.scale / new.scale
        for blend in self._blends:
            blend.rescale(a, b)
        self._linear.rescale(a, b)
        self._target = new
        return True

    def _champion_short(self) -> int:
        """The short member a drift's confirmation compares with the long one: the one the
        race's champion blends, else the first the search left."""
        champion = self._race.names[self._race.champion]
        arms = self._arms or {SHORT: []}
        return next((j for j, configs in arms.items() if champion in configs), min(arms))

    def _drop_worst(self, n: int) -> list[ConfigDrop]:
        """Successive halving of the short member's windows: drop the arm whose best
        configuration has the worst recent figure (accuracy, MAE), unless it holds the race's
        champion."""
        champion = self._race.names[self._race.champion]
        scores = [
            (self._race.best_live(configs), -j)  # on a tie, the later alternative goes
            for j, configs in self._arms.items()
            if champion not in configs
        ]
        worst = -min(scores)[1]
        configs = self._arms.pop(worst)
        left = self._search_budget if len(self._arms) > 1 else 0
        drops = self._race.drop(configs, n, {"next_budget_rows": left})
        self._dropped.add(worst)
        self._boosters[worst] = None  # no longer trained, predicted or published
        self._model_strings[worst] = None
        return drops

    def _confirmed(self) -> bool:
        """Has the re-learned short member beaten the long one since the last drift?

        A sign test on the rows where they disagree (z > race_z, as the race decides), so noise
        (late labels make alarms common) does not throw the long member's history away."""
        if self._confirming is None or self._confirming[2] < int(
            self.settings["drift_confirm_rows"]
        ):
            return False
        short, long, _ = self._confirming
        self._confirming = None
        if short - long > self.settings["race_z"] * max(1.0, (short + long) ** 0.5):
            self._long_floor = self._floor
            return True
        return False

    def _available(self, j: int, n: int) -> int:
        """The rows member `j` may train on at labelled row `n`."""
        # A drift cuts the short member's window at once; the long member's only once the
        # change is confirmed (cutting both at every alarm cost 3-4 points under late labels).
        floor = self._long_floor if j == LONG else self._floor
        return min(self._members[j].window, n - floor)

    def _retrain(self, j: int, n: int, trained: dict[tuple[Any, ...], lgb.Booster | None]) -> bool:
        """Retrain member `j` on its window. `trained`: the members retrained at this tick, by
        what decides their trees (rows, rounds, learning rate, tree size): a searched window
        that holds no more rows than the default's yet (a new task, after a drift, a
        challenger) gets the same trees, so they are trained once."""
        rows = self._available(j, n)
        if rows < int(self.settings["min_train_rows"]):
            return False
        member = self._members[j]
        key = (rows, member.rounds, member.learning_rate, member.num_leaves)
        if key in trained:
            booster = trained[key]
        else:
            Xw, yw = self._buffer.tail(rows)
            if self._target is not None:
                yw = np.clip(self._target.standardise(yw), -TREE_TARGET_CLIP, TREE_TARGET_CLIP)
            params = member.tree_params(self._lgb_params)
            booster = trained[key] = train_member(
                Xw,
                yw,
                params,
                member.rounds,
                self.categorical,
                regression=self.regression,
                windows=self.shared_windows,
                key=(n, rows),
            )
        if booster is None:
            return False
        self._boosters[j] = booster
        self._trained_rows[j] = rows
        self._model_strings[j] = None  # encoded lazily, once per retrain
        self.n_updates += 1
        return True

    # ---------------------------------------------------------------- reporting

    @property
    def metrics(self) -> dict[str, float]:
        out = self._metrics.as_dict()
        out["n_updates"] = float(self.n_updates)
        out["n_drifts"] = float(self.n_drifts)
        for name, figure in self._race.live_figures().items():
            out[f"race_{self._race.recent_metric}.{name}"] = figure
        return out

    def champion_config(self) -> str:
        return self._race.names[self._race.champion]

    def entrant(self) -> tuple[str, dict[str, Any]] | None:
        """The race's configuration closest to beating its champion (the runner-up), with the
        paired evidence; None before any row or without a race."""
        return self._race.runner_up()

    def choose(self, config: str, evidence: Mapping[str, Any]) -> ConfigSwitch | None:
        """Make `config` the race's champion (governance promoted a model of it); None if it
        already is one or the race has no such configuration."""
        return self._race.choose(config, self._metrics.n, dict(evidence))

    def model_bytes(
        self,
        learned_through: int = 0,
        config: str | None = None,
        residuals: Sequence[float] | None = None,
    ) -> bytes:
        """The champion blend (or the race's configuration `config`) and its members, encoded by
        shared.model_codec, with the state its online parts need to go on learning
        (`learned_through`: the data stream version of the last labelled row learned, for
        whoever continues it). A regression's file also holds `residuals`, the absolute errors
        its prediction intervals are calibrated on (None: the learner's own, `_online_state`)."""
        if self.regression and self._target is None:
            return self._mean_model_bytes(learned_through, residuals)
        index = self._race.champion if config is None else self._race.names.index(config)
        blend = self._blends[index]
        members: list[tuple[float, model_codec.Member]] = []
        for j, booster in enumerate(self._boosters):
            if booster is None or j not in blend.spec.members:
                continue  # an untrained tree scores 0: leaving it out changes no prediction
            text = self._model_strings[j]
            if text is None:
                text = self._model_strings[j] = booster.model_to_string()
            members.append((blend.w[j], text))
        linear = self._linear if any(j >= self._linear_at for j in blend.spec.members) else None
        if linear is not None:
            # All of them (they learn together: a classifier's share one standardisation, and a
            # LiveModel resumes them as one); one the blend does not use has weight 0, and a
            # blend that uses one member alone ("linear-slow") never moves it.
            for j, snapshot in enumerate(linear.snapshots(), start=self._linear_at):
                members.append((blend.w[j], snapshot))
        return model_codec.encode(
            n_features=self.n_features,
            members=members,
            bias=blend.bias,
            feature_names=self.feature_names,
            clip=self._clip,
            online=self._online_state(blend.spec.lr, linear, learned_through, residuals),
            target=self._target,
        )

    def _online_state(
        self,
        blend_lr: float,
        linear: OnlineLinear | OnlineRidge | None,
        learned_through: int,
        residuals: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """The model file's `online` section; a regression's adds the absolute errors a
        LiveModel's prediction intervals are calibrated on: those given to `model_bytes` (the
        trainer's core gives them), else the learner's own last ones (`batch_invariant`)."""
        online = online_state(blend_lr, linear, learned_through)
        if isinstance(self._metrics, RegressionMetrics):
            online["residuals"] = (
                [float(e) for e in residuals]
                if residuals is not None
                else batch_invariant(self._metrics.recent_errors(RESIDUALS))
            )
        return online

    def _mean_model_bytes(
        self, learned_through: int, residuals: Sequence[float] | None = None
    ) -> bytes:
        """A regression's model before its first tick: the running mean of the labels, which a
        LiveModel goes on updating with the labels after it, as the learner does."""
        n = self._metrics.n
        online = self._online_state(0.0, None, learned_through, residuals)
        online["labels"] = {"sum": self._label_sum, "n": n}
        return model_codec.encode(
            n_features=self.n_features,
            members=[],
            feature_names=self.feature_names,
            online=online,
            target=TargetScale(self._label_sum / n if n else 0.0, 1.0),
        )
