"""The promotion policy, pure: may a model version replace the champion, now?

Three checks, each from the task's `promotion` policy, every failure kept as a reason:

1. metric: the candidate's recent prequential metric is at least the champion's minus the
   tolerance (the first model of a task passes), or, on the same rows, below it by no more than
   noise (McNemar's exact test on the rows only one of them got right, at the policy's
   `significance`);
2. audit (where `require_audit`): the candidate's bias audit passed (its reasons are quoted,
   figures included);
3. approvals (where `require_approval`): `approvals_required` distinct people approved and nobody
   rejected. Lacking approvals is not a refusal: the model waits (`AWAIT`).

A model that fails 1 or 2 is refused; one that passes them waits for approvals or is promoted.

A regression is compared on its mean absolute error (lower is better) the same way: on the same
rows where the trainer scored both (a paired t-test of the row-by-row difference of the two
absolute errors takes McNemar's place, so a shortfall is judged on its size, not only on how many
rows each was closer on; "no better than a constant" is the MAE of answering the rows' median),
else on each one's recent MAE. Its `tolerance` is relative: the candidate's MAE may exceed the
champion's by that fraction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from scipy.stats import binomtest
from scipy.stats import t as student_t

from shared.tasks import PromotionPolicy

# Which ModelTrained metric each policy metric reads: the accuracy over the recent window.
_METRIC_KEYS = {"accuracy": ("recent_accuracy", "accuracy")}


class Verdict(StrEnum):
    PROMOTE = "promote"
    REFUSE = "refuse"
    AWAIT = "await_approval"


@dataclass(frozen=True)
class AuditResult:
    """What the gate needs of a candidate's audit."""

    passed: bool
    reasons: Sequence[str] = ()


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.verdict is Verdict.PROMOTE


def _apart(a: float, b: float, style: str) -> tuple[str, str]:
    """Two figures a reason compares, to 4 places (`style` "f": decimals, "g": significant
    digits), or to as many more as they need to read differently: "MAE 0.3437 > champion
    0.3437" told the reader nothing."""
    for places in range(4, 18):
        shown = f"{a:.{places}{style}}", f"{b:.{places}{style}}"
        if a == b or shown[0] != shown[1]:
            break
    return shown


def _metric(policy: PromotionPolicy, metrics: Mapping[str, float]) -> float | None:
    for key in _METRIC_KEYS[policy.metric]:
        if (value := metrics.get(key)) is not None:
            return float(value)
    return None


def metric_check(
    policy: PromotionPolicy,
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    champion_version: int | None = None,
) -> tuple[bool, str]:
    """The candidate's recent metric against the champion's (passed, reason with the figures).

    When the trainer scored the serving champion on the same recent rows as the candidate
    (`champion_version` in the candidate's metrics: the current champion, or the one before it
    when the trainer had not heard of the newest yet; the same inputs, online features
    included; rows labelled after the champion was known, so it learned none of them), that
    like-for-like comparison decides, and a candidate no better than always answering the
    majority class on those rows is refused unless the champion did no better; otherwise each
    model's own recent metric at its training time.
    """
    if champion is None:
        return True, "first model of the task"
    if "recent_mae" in candidate or "window_mae" in candidate:
        return _error_check(policy, candidate, champion, champion_version)
    compared = candidate.get("champion_version")
    rows = int(candidate.get("window_n", 0))
    if champion_version is not None and compared is not None and rows > 0:
        mine, best = candidate["window_accuracy"], candidate["champion_window_accuracy"]
        # The trainer may not know the newest champion yet (a task promotes every few hundred
        # rows; the news takes a second to reach it): the champion it compared with is the
        # same line a version or more back, on the same rows. Comparing instead each model's
        # accuracy at its own training time put a candidate measured after a drift against a
        # champion measured before it, and refused every candidate until the drift left the
        # window (Agrawal, 100-row requests: 2,500 rows served at 0.67 after its first drift).
        which = "champion" if int(compared) == champion_version else f"champion v{int(compared)}"
        majority = candidate.get("window_majority_accuracy")
        # A candidate no better than a constant never replaces a champion that is better than
        # one. Where the champion did no better either (a task's first models, before either
        # has learned enough), the candidate, at least as good, replaces it: refusing it would
        # keep callers on the worse of two such models. Where the policy asks for an audit, the
        # audit still judges it.
        if (
            majority is not None
            and mine <= majority
            and rows >= 30
            and (best > majority or mine < best)
        ):
            return False, (
                f"accuracy {mine:.4f} <= {majority:.4f}, what always answering the majority "
                f"class scores on the same {rows} rows: no better than a constant"
            )
        a, b = _apart(mine, best, "f")
        if mine >= best - policy.tolerance:
            return True, f"accuracy {a} >= {which} {b} on the same {rows} rows"
        # A candidate is the champion's own line with more rows learned: one a few rows behind
        # on a past window is refused only if the rows where they differ show it. Refusing on
        # any shortfall kept callers on a model from before a drift while the fresher ones
        # lost by two or three rows in a thousand (Agrawal, 100-row requests, 2026-11-28).
        p = noise_p_value(candidate)
        if p is not None and p > policy.significance:
            return True, (
                f"accuracy {a} < {which} {b} on the same {rows} rows, within "
                f"noise: McNemar p = {p:.3g} > {policy.significance:g}"
            )
        shown = "" if p is None else f" (McNemar p = {p:.3g} <= {policy.significance:g})"
        return False, (
            f"accuracy {a} < {which} {b} - tolerance {policy.tolerance} "
            f"on the same {rows} rows{shown}"
        )
    ours, theirs = _metric(policy, candidate), _metric(policy, champion)
    if ours is None:
        return False, f"candidate reports no {policy.metric}"
    a, b = _apart(ours, theirs or 0.0, "f")
    if theirs is None or ours >= theirs - policy.tolerance:
        return True, f"recent {policy.metric} {a} >= champion {b} - tolerance {policy.tolerance}"
    return False, f"recent {policy.metric} {a} < champion {b} - tolerance {policy.tolerance}"


def noise_p_value(candidate: Mapping[str, float]) -> float | None:
    """How likely a shortfall at least this large is when the two are equally good: the exact
    one-sided McNemar test on the window's rows that only one of them got right (a regression:
    the one-sided paired t-test of the difference of the two absolute errors, row by row; None
    where the trainer did not count them)."""
    if "window_mae" in candidate:
        sd, n = candidate.get("window_error_difference_sd"), int(candidate.get("window_n", 0))
        if sd is None or n < 2:
            return None
        shortfall = candidate["window_mae"] - candidate["champion_window_mae"]
        if sd == 0:
            return 1.0 if shortfall <= 0 else 0.0
        return float(student_t.sf(shortfall / (sd / math.sqrt(n - 1)), n - 1))
    ours = candidate.get("window_only_candidate_right")
    theirs = candidate.get("window_only_champion_right")
    if ours is None or theirs is None:
        return None
    differ = int(ours) + int(theirs)
    if differ == 0:
        return 1.0
    return float(binomtest(int(theirs), differ, 0.5, alternative="greater").pvalue)


def decide(
    policy: PromotionPolicy,
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    audit: AuditResult | None = None,
    approvals: Sequence[str] = (),
    rejections: Sequence[str] = (),
    champion_version: int | None = None,
) -> Decision:
    """The gate. `approvals` and `rejections` name who approved or rejected (with the reason)."""
    ok, metric_reason = metric_check(policy, candidate, champion, champion_version)
    refusals = [] if ok else [metric_reason]
    passed = [metric_reason] if ok else []
    if policy.require_audit:
        if audit is None:
            refusals.append("no bias audit of this version (the policy requires one)")
        elif not audit.passed:
            refusals.extend(f"bias audit failed: {r}" for r in audit.reasons or ["no reason"])
        else:
            passed.append("bias audit passed")
    # A rejection blocks a version whatever the policy: a person said no.
    refusals.extend(f"rejected by {r}" for r in rejections)
    if refusals:
        return Decision(Verdict.REFUSE, refusals)
    if policy.require_approval:
        distinct = sorted(set(approvals))
        have, need = len(distinct), policy.approvals_required
        if have < need:
            return Decision(Verdict.AWAIT, [*passed, f"awaiting approval: {have} of {need}"])
        passed.append(f"approved by {', '.join(distinct)}")
    return Decision(Verdict.PROMOTE, passed)


def _error_check(
    policy: PromotionPolicy,
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    champion_version: int | None,
) -> tuple[bool, str]:
    """`metric_check` of a regression: mean absolute errors, lower is better (see the module)."""
    compared = candidate.get("champion_version")
    rows = int(candidate.get("window_n", 0))
    if champion_version is not None and compared is not None and rows > 0:
        mine, best = candidate["window_mae"], candidate["champion_window_mae"]
        which = "champion" if int(compared) == champion_version else f"champion v{int(compared)}"
        constant = candidate.get("window_constant_mae")
        if (
            constant is not None
            and mine >= constant
            and rows >= 30
            and (best < constant or mine > best)
        ):
            return False, (
                f"MAE {mine:.4g} >= {constant:.4g}, what always answering the rows' median "
                f"scores on the same {rows} rows: no better than a constant"
            )
        allowed = best * (1.0 + policy.tolerance)
        a, b = _apart(mine, best, "g")
        if mine <= allowed:
            return True, f"MAE {a} <= {which} {b} on the same {rows} rows"
        p = noise_p_value(candidate)
        if p is not None and p > policy.significance:
            return True, (
                f"MAE {a} > {which} {b} on the same {rows} rows, within noise: "
                f"paired t-test of the errors' difference, p = {p:.3g} > "
                f"{policy.significance:g}"
            )
        shown = "" if p is None else f" (paired t-test p = {p:.3g} <= {policy.significance:g})"
        return False, (
            f"MAE {a} > {which} {b} x (1 + tolerance {policy.tolerance}) on the "
            f"same {rows} rows{shown}"
        )
    ours = candidate.get("recent_mae", candidate.get("mae"))
    theirs = champion.get("recent_mae", champion.get("mae"))
    if not champion.get("n_labelled"):
        theirs = None  # a task's first model, before any label: its 0 is no error measured
    if ours is None:
        return False, "candidate reports no MAE"
    a, b = _apart(ours, theirs if theirs is not None else ours, "g")
    if theirs is None or ours <= theirs * (1.0 + policy.tolerance):
        shown = "none" if theirs is None else b
        return True, f"recent MAE {a} <= champion {shown} x (1 + {policy.tolerance})"
    return False, f"recent MAE {a} > champion {b} x (1 + tolerance {policy.tolerance})"
