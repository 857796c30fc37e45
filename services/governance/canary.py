"""Judging a canary or a shadow against the champion on live labels, pure: an always-valid test.

The statistic is the mixture sequential probability ratio test of Johari, Pekelis and Walsh
("Always Valid Inference", 2015; "Peeking at A/B Tests", KDD 2017) for a difference of means with a
normal mixing distribution N(0, tau^2) over the effect under the alternative:

    Lambda_n = sqrt(V / (V + tau^2)) * exp(tau^2 * d^2 / (2 V (V + tau^2)))

where d is the estimated difference (challenger minus champion, in accuracy) and V its estimated
variance. The always-valid p-value is the running minimum of min(1, 1 / Lambda_n): however often
it is looked at, the chance that it ever falls below alpha when the two are equal is at most
alpha (up to the normal approximation), so a canary can be checked at every batch of labels.

A canary is compared on its own live traffic against the champion's (two independent samples:
the entities it was assigned); a shadow on the same rows as the champion (paired: the difference
per row). Guardrails stop a canary whatever the test says: its error rate or its p99 latency
beyond the champion's by a margin, read from serving's reports of each arm's requests
(`shared.arm_health`) once both arms have answered `min_requests`; they are read as each report
arrives, without waiting for labels.

A regression's canary or shadow is judged on pairs only (`Paired.regression`), on the row-by-row
difference of the two absolute errors: the effect is the champion's MAE minus the challenger's,
as a share of the champion's MAE (so `tau` reads as it does for accuracy: 0.05 is a 5% better
MAE), its variance from the differences' sum of squares. Counting only the rows each was closer
on would call a challenger better that is closer on most rows and far off on the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.tasks import CanaryPolicy


class Verdict(StrEnum):
    CONTINUE = "continue"
    PROMOTE = "promote"  # the challenger is better, with confidence
    ROLL_BACK = "roll_back"  # worse with confidence, or a guardrail tripped
    INCONCLUSIVE = "inconclusive"  # no difference shown within the maximum sample or time


@dataclass(frozen=True)
class Arm:
    """One arm's labelled outcomes: how many, how many right, summed log loss; and operations."""

    n: int
    correct: int
    log_loss: float = 0.0
    errors: int = 0  # requests the arm failed to answer
    requests: int = 0
    p99_ms: float | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


@dataclass(frozen=True)
class Paired:
    """Paired outcomes on the same rows: rows only the challenger got right, only the champion
    (a regression: rows each was the closer on); each one's summed loss (log loss, or a
    regression's absolute error)."""

    n: int
    challenger_only: int
    champion_only: int
    challenger_loss: float = 0.0
    champion_loss: float = 0.0
    regression: bool = False
    # A regression's summed squared difference of the two absolute errors, row by row.
    difference_sq: float = 0.0

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> Paired:
        """From the trainer's counts (services.trainer.arms), a binary task's or a regression's."""
        regression = "challenger_abs_error" in counts
        loss = "abs_error" if regression else "log_loss"
        return cls(
            counts["n"],
            counts["challenger_only"],
            counts["champion_only"],
            counts[f"challenger_{loss}"],
            counts[f"champion_{loss}"],
            regression,
            counts["abs_error_difference_sq"] if regression else 0.0,
        )


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    p_value: float  # always valid: the running minimum
    effect: float  # challenger minus champion accuracy
    evidence: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def mixture_p_value(difference: float, variance: float, tau: float) -> float:
    """min(1, 1 / Lambda) for an estimated difference and its variance (mSPRT, normal mixture)."""
    if variance <= 0:
        return 1.0 if difference == 0 else 0.0
    t2 = tau * tau
    log_lambda = 0.5 * math.log(variance / (variance + t2)) + t2 * difference * difference / (
        2.0 * variance * (variance + t2)
    )
    return 1.0 if log_lambda <= 0 else min(1.0, math.exp(-log_lambda))


def _bernoulli_variance(p: float, n: int) -> float:
    # Shrunk towards 1/2 a little, so 0 or n successes out of n still have a variance.
    p = (p * n + 0.5) / (n + 1.0)
    return p * (1.0 - p) / n


def canary_analysis(
    champion: Arm,
    canary: Arm,
    policy: CanaryPolicy,
    *,
    previous_p: float = 1.0,
    seconds: float = 0.0,
) -> Analysis:
    """The canary on its own traffic against the champion on its own (two samples)."""
    effect = canary.accuracy - champion.accuracy
    evidence: dict[str, Any] = {
        "n_champion": champion.n,
        "n_canary": canary.n,
        "accuracy_champion": round(champion.accuracy, 6),
        "accuracy_canary": round(canary.accuracy, 6),
        "log_loss_champion": round(champion.log_loss / max(champion.n, 1), 6),
        "log_loss_canary": round(canary.log_loss / max(canary.n, 1), 6),
        "effect": round(effect, 6),
        "alpha": policy.alpha,
        "tau": policy.tau,
    }
    tripped = guardrails(champion, canary, policy, evidence)
    if champion.n and canary.n:
        variance = _bernoulli_variance(champion.accuracy, champion.n) + _bernoulli_variance(
            canary.accuracy, canary.n
        )
        p = min(previous_p, mixture_p_value(effect, variance, policy.tau))
    else:
        p = previous_p
    evidence["p_value"] = p
    if tripped:
        return Analysis(Verdict.ROLL_BACK, p, effect, evidence, tripped)
    return _verdict(p, effect, min(champion.n, canary.n), seconds, policy, evidence)


def own_traffic_cannot_judge(
    n_champion: int, n_canary: int, share: float, policy: CanaryPolicy
) -> bool:
    """Whether the champion's own traffic cannot stand beside the canary's in a two-sample
    test, once the canary has enough labels to decide: the champion answered under half or
    over twice what the canary's `share` (percent) leads one to expect. Routing is sticky by
    entity: with few entities the split departs from the share, and the arms' rows then differ
    by entity and by time (with one entity, the champion's rows are those answered before the
    canary reached serving), so each arm's own accuracy no longer compares like with like."""
    if n_canary < policy.min_labels:
        return False
    expected = n_canary * (100.0 - share) / max(share, 1e-9)
    return not 0.5 * expected <= n_champion <= 2 * expected


def shadow_analysis(
    paired: Paired, policy: CanaryPolicy, *, previous_p: float = 1.0, seconds: float = 0.0
) -> Analysis:
    """A shadow against the champion on the same rows (paired differences)."""
    if paired.regression:
        return _error_analysis(paired, policy, previous_p, seconds)
    n = paired.n
    effect = (paired.challenger_only - paired.champion_only) / n if n else 0.0
    evidence: dict[str, Any] = {
        "n": n,
        "challenger_only_right": paired.challenger_only,
        "champion_only_right": paired.champion_only,
        "log_loss_challenger": round(paired.challenger_loss / max(n, 1), 6),
        "log_loss_champion": round(paired.champion_loss / max(n, 1), 6),
        "effect": round(effect, 6),
        "alpha": policy.alpha,
        "tau": policy.tau,
    }
    if n:
        # The per-row difference is +1, -1 or 0: its variance from the discordant shares, with
        # one discordant pair of each kind added so that a clean sweep has a variance too.
        plus, minus = (
            (paired.challenger_only + 0.5) / (n + 1),
            (paired.champion_only + 0.5) / (n + 1),
        )
        variance = (plus + minus - (plus - minus) ** 2) / n
        p = min(previous_p, mixture_p_value(effect, variance, policy.tau))
    else:
        p = previous_p
    evidence["p_value"] = p
    return _verdict(p, effect, n, seconds, policy, evidence)


def _error_analysis(
    paired: Paired, policy: CanaryPolicy, previous_p: float, seconds: float
) -> Analysis:
    """`shadow_analysis` of a regression: the paired difference of absolute errors, relative to
    the champion's MAE (see the module)."""
    n = paired.n
    mae = paired.champion_loss / n if n else 0.0
    mean = (paired.champion_loss - paired.challenger_loss) / n if n else 0.0
    effect = mean / mae if mae > 0 else 0.0
    evidence: dict[str, Any] = {
        "n": n,
        "challenger_only_closer": paired.challenger_only,
        "champion_only_closer": paired.champion_only,
        "mae_challenger": round(paired.challenger_loss / max(n, 1), 6),
        "mae_champion": round(mae, 6),
        "effect": round(effect, 6),
        "alpha": policy.alpha,
        "tau": policy.tau,
    }
    if n and mae > 0:
        spread = max(paired.difference_sq / n - mean * mean, 0.0)
        variance = spread / (n * mae * mae)
        p = min(previous_p, mixture_p_value(effect, variance, policy.tau))
    else:
        p = previous_p
    evidence["p_value"] = p
    return _verdict(p, effect, n, seconds, policy, evidence, "{:.2f}% of the champion's MAE")


def guardrails(
    champion: Arm, canary: Arm, policy: CanaryPolicy, evidence: dict[str, Any]
) -> list[str]:
    """Why the canary must stop on operational grounds (empty: it may go on); the figures read
    are added to `evidence`. Nothing is read before both arms answered `policy.min_requests`."""
    reasons: list[str] = []
    evidence.update(requests_champion=champion.requests, requests_canary=canary.requests)
    if min(champion.requests, canary.requests) < policy.min_requests:
        return reasons
    if canary.requests:
        mine = canary.errors / canary.requests
        theirs = champion.errors / champion.requests if champion.requests else 0.0
        evidence.update(error_rate_canary=round(mine, 6), error_rate_champion=round(theirs, 6))
        if mine > theirs + policy.max_error_rate_increase:
            reasons.append(
                f"guardrail: canary error rate {mine:.4f} > champion {theirs:.4f} + "
                f"{policy.max_error_rate_increase:g}"
            )
    if canary.p99_ms is not None and champion.p99_ms:
        evidence.update(p99_ms_canary=canary.p99_ms, p99_ms_champion=champion.p99_ms)
        slower = canary.p99_ms - champion.p99_ms >= policy.min_p99_latency_increase_ms
        if slower and canary.p99_ms > champion.p99_ms * policy.max_p99_latency_ratio:
            reasons.append(
                f"guardrail: canary p99 latency {canary.p99_ms:.1f} ms > "
                f"{policy.max_p99_latency_ratio:g} x champion {champion.p99_ms:.1f} ms"
            )
    return reasons


def _verdict(
    p: float,
    effect: float,
    n: int,
    seconds: float,
    policy: CanaryPolicy,
    evidence: dict[str, Any],
    measure: str = "{:.2f} points of accuracy",
) -> Analysis:
    if n >= policy.min_labels and p <= policy.alpha and effect != 0:
        better = effect > 0
        reason = (
            f"{'better' if better else 'worse'} than the champion by "
            f"{measure.format(100 * abs(effect))} over {n} labelled rows each, always-valid "
            f"p = {p:.4g} <= "
            f"{policy.alpha:g}"
        )
        return Analysis(
            Verdict.PROMOTE if better else Verdict.ROLL_BACK, p, effect, evidence, [reason]
        )
    if n >= policy.max_labels or seconds >= policy.max_seconds:
        reason = (
            f"no difference shown after {n} labelled rows ({seconds:.0f} s): always-valid "
            f"p = {p:.4g} > {policy.alpha:g}"
        )
        return Analysis(Verdict.INCONCLUSIVE, p, effect, evidence, [reason])
    return Analysis(Verdict.CONTINUE, p, effect, evidence, [])
