"""The promotion policy, pure: should a newly trained model replace the champion?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.tasks import PromotionPolicy

# Which ModelTrained metric each policy metric reads: the accuracy over the recent window.
_METRIC_KEYS = {"accuracy": ("recent_accuracy", "accuracy")}


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def _metric(policy: PromotionPolicy, metrics: Mapping[str, float]) -> float | None:
    for key in _METRIC_KEYS[policy.metric]:
        if (value := metrics.get(key)) is not None:
            return float(value)
    return None


def decide(
    policy: PromotionPolicy,
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
) -> Decision:
    """First model: promoted. Later ones: promoted if their recent prequential metric is at least
    the champion's minus the policy's tolerance; otherwise refused with the figures."""
    if champion is None:
        return Decision(True, ["first model of the task"])
    ours, theirs = _metric(policy, candidate), _metric(policy, champion)
    if ours is None:
        return Decision(False, [f"candidate reports no {policy.metric}"])
    if theirs is None or ours >= theirs - policy.tolerance:
        return Decision(
            True,
            [
                f"recent {policy.metric} {ours:.4f} >= champion {theirs or 0:.4f} "
                f"- tolerance {policy.tolerance}"
            ],
        )
    return Decision(
        False,
        [
            f"recent {policy.metric} {ours:.4f} < champion {theirs:.4f} "
            f"- tolerance {policy.tolerance}"
        ],
    )
