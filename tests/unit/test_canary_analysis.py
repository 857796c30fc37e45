"""The canary and shadow analysis: an always-valid test, checked at every batch of labels."""

from __future__ import annotations

import numpy as np
import pytest

from services.governance.canary import (
    Arm,
    CanaryPolicy,
    Paired,
    Verdict,
    canary_analysis,
    guardrails,
    mixture_p_value,
    shadow_analysis,
)

POLICY = CanaryPolicy(alpha=0.05, tau=0.05, min_labels=100, max_labels=4000)


def run_canary(p_champion: float, p_canary: float, seed: int, batch: int = 50) -> Verdict:
    """Look after every batch of labels, as governance does, until a decision or the maximum."""
    rng = np.random.default_rng(seed)
    a = b = na = nb = 0
    p = 1.0
    while True:
        a += int(rng.binomial(batch, p_champion))
        b += int(rng.binomial(batch, p_canary))
        na += batch
        nb += batch
        result = canary_analysis(Arm(na, a), Arm(nb, b), POLICY, previous_p=p)
        p = result.p_value
        if result.verdict is not Verdict.CONTINUE:
            return result.verdict


def test_equal_models_are_almost_never_decided_however_often_the_test_is_looked_at():
    runs = 400
    verdicts = [run_canary(0.8, 0.8, seed) for seed in range(runs)]
    wrong = sum(v in (Verdict.PROMOTE, Verdict.ROLL_BACK) for v in verdicts)
    # At most alpha, allowing for the sampling error of 400 runs (2 standard errors).
    assert wrong / runs <= POLICY.alpha + 2 * (0.05 * 0.95 / runs) ** 0.5, wrong
    assert verdicts.count(Verdict.INCONCLUSIVE) == runs - wrong


def test_a_better_canary_is_promoted_and_a_worse_one_rolled_back():
    better = [run_canary(0.80, 0.86, seed) for seed in range(100)]
    worse = [run_canary(0.80, 0.74, seed) for seed in range(100)]
    assert better.count(Verdict.PROMOTE) >= 90
    assert worse.count(Verdict.ROLL_BACK) >= 90


def test_a_fixed_horizon_look_would_not_be_valid_if_peeked_at():
    # A plain z-test checked at every batch decides on equal models far more often than alpha:
    # the reason for the always-valid test.
    rng = np.random.default_rng(0)
    wrong = 0
    for _ in range(200):
        a = b = n = 0
        for _ in range(80):
            a += rng.binomial(50, 0.8)
            b += rng.binomial(50, 0.8)
            n += 50
            pa, pb = a / n, b / n
            z = (pb - pa) / np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n)
            if abs(z) > 1.96:
                wrong += 1
                break
    assert wrong / 200 > 0.15


def test_a_guardrail_rolls_a_canary_back_whatever_its_accuracy():
    result = canary_analysis(
        Arm(1000, 800, requests=1000, errors=0, p99_ms=3.0),
        Arm(1000, 900, requests=1000, errors=50, p99_ms=3.0),
        POLICY,
    )
    assert result.verdict is Verdict.ROLL_BACK
    assert result.reasons == ["guardrail: canary error rate 0.0500 > champion 0.0000 + 0.01"]
    slow = canary_analysis(
        Arm(1000, 800, requests=500, p99_ms=3.0), Arm(1000, 800, requests=500, p99_ms=9.0), POLICY
    )
    assert slow.verdict is Verdict.ROLL_BACK and "p99 latency 9.0 ms" in slow.reasons[0]
    # Three times as slow, but by 2 ms: below the smallest increase worth a rollback.
    fast = canary_analysis(
        Arm(1000, 800, requests=500, p99_ms=1.0), Arm(1000, 800, requests=500, p99_ms=3.0), POLICY
    )
    assert fast.verdict is Verdict.CONTINUE and fast.evidence["p99_ms_canary"] == 3.0


def test_guardrails_wait_until_both_arms_answered_enough_requests():
    few = POLICY.min_requests - 1
    evidence: dict[str, object] = {}
    early = guardrails(
        Arm(0, 0, requests=few, p99_ms=1.0),
        Arm(0, 0, requests=few, errors=few, p99_ms=90.0),
        POLICY,
        evidence,
    )
    assert early == [] and evidence["requests_canary"] == few
    enough = POLICY.min_requests
    late = guardrails(
        Arm(0, 0, requests=enough, p99_ms=1.0),
        Arm(0, 0, requests=enough, errors=enough, p99_ms=90.0),
        POLICY,
        {},
    )
    assert len(late) == 2


def test_a_shadow_is_judged_on_the_same_rows_and_names_its_evidence():
    result = shadow_analysis(Paired(n=2000, challenger_only=160, champion_only=60), POLICY)
    assert result.verdict is Verdict.PROMOTE
    assert result.evidence["challenger_only_right"] == 160 and result.effect == pytest.approx(0.05)
    assert "better than the champion by 5.00 points" in result.reasons[0]
    even = shadow_analysis(Paired(n=4000, challenger_only=100, champion_only=100), POLICY)
    assert even.verdict is Verdict.INCONCLUSIVE


def test_the_p_value_is_one_without_evidence_and_falls_with_a_clear_difference():
    assert mixture_p_value(0.0, 0.001, 0.05) == 1.0
    assert mixture_p_value(0.1, 0.0001, 0.05) < 1e-6


def test_the_canary_rows_are_paired_with_the_champion_and_used_when_its_own_traffic_cannot_judge():
    from services.governance.canary import own_traffic_cannot_judge
    from services.trainer.arms import Arms, Labelled
    from shared.tasks import CanaryPolicy

    arms = Arms()
    arms.follow(champion_version=1, canary_version=2, shadows={})
    rows = [
        # served by the canary (right on the first, wrong on the second); the champion's copy
        # answered the opposite
        Labelled(1, [0.0], 1, 0.9, 2, "canary", 0.2, {}),
        Labelled(2, [0.0], 0, 0.8, 2, "canary", 0.3, {}),
        Labelled(3, [0.0], 1, 0.7, 1, "champion", 0.7, {}),
    ]
    arms.learn(rows)
    canary = arms.evidence()["canary"]
    assert canary["paired"]["n"] == 2
    assert canary["paired"]["challenger_only"] == 1 and canary["paired"]["champion_only"] == 1
    assert canary["champion"]["n"] == 1 and canary["canary"]["n"] == 2
    policy = CanaryPolicy(min_labels=200)
    assert not own_traffic_cannot_judge(0, 199, 20, policy)  # too few labels to judge at all
    # A 50% canary reaching min_labels first is the ordinary split: the two-sample test waits.
    assert not own_traffic_cannot_judge(150, 200, 50, policy)
    # At a 20% share the champion should answer about 4 rows per canary row: at least half of
    # that, the two-sample test judges; below it (one entity routed to the canary), the pairs.
    assert not own_traffic_cannot_judge(12_000, 6_000, 20, policy)
    assert own_traffic_cannot_judge(2_900, 6_000, 20, policy)
    assert own_traffic_cannot_judge(10_000, 6_000, 100, policy)  # no champion traffic expected
    assert own_traffic_cannot_judge(30_000, 1_000, 50, policy)  # the champion's entities won
