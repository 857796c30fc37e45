"""How one arm of a task's routing (the champion, the canary) answered its requests: how many, how
many failed, and a latency histogram. Pure.

Serving counts each arm per replica and reports the counts of each interval (`ArmsServed`);
governance adds the reports of every replica since a canary started and reads the guardrails from
the sum (the canary analysis in `services/governance/canary.py`). The histogram merges by adding
counts: its buckets are fixed and log-spaced, each 2^(1/4) wider than the one before, from 50 us
to about an hour, so a quantile read from it is the upper edge of the right bucket, at most 19%
above the true value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_FIRST_MS = 0.05
_GROWTH = 2.0**0.25
_LAST = 97  # 0.05 ms * 2^(97/4): about 1.0e6 ms; slower requests count in the last bucket


def _bucket(ms: float) -> int:
    if not ms > _FIRST_MS:  # also NaN
        return 0
    if ms >= bucket_upper_ms(_LAST):
        return _LAST
    return min(_LAST, math.ceil(math.log(ms / _FIRST_MS) / math.log(_GROWTH) - 1e-9))


def bucket_upper_ms(index: int) -> float:
    """The upper edge of a latency bucket, in milliseconds."""
    return _FIRST_MS * _GROWTH**index


@dataclass
class ArmHealth:
    """Requests an arm answered, requests it failed, and their latencies (bucket -> count)."""

    requests: int = 0
    errors: int = 0
    latency: dict[int, int] = field(default_factory=dict)

    def observe(self, ms: float, *, failed: bool = False) -> None:
        self.requests += 1
        self.errors += int(failed)
        index = _bucket(ms)
        self.latency[index] = self.latency.get(index, 0) + 1

    def add(self, other: ArmHealth) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for index, count in other.latency.items():
            self.latency[index] = self.latency.get(index, 0) + count

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float | None:
        """The latency below which a share `q` of the requests fell (a bucket's upper edge)."""
        total = sum(self.latency.values())
        if not total:
            return None
        rank = math.ceil(q * total)
        seen = 0
        for index in sorted(self.latency):
            seen += self.latency[index]
            if seen >= rank:
                return round(bucket_upper_ms(index), 4)
        return round(bucket_upper_ms(max(self.latency)), 4)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency": {str(i): c for i, c in sorted(self.latency.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmHealth:
        return cls(
            int(data.get("requests", 0)),
            int(data.get("errors", 0)),
            {int(i): int(c) for i, c in dict(data.get("latency", {})).items()},
        )
