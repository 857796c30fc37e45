"""The latency histogram serving reports per arm: quantiles within a bucket's width, merges by
adding, survives its own serialisation, and takes degenerate latencies."""

from __future__ import annotations

import numpy as np
import pytest

from shared.arm_health import ArmHealth, bucket_upper_ms


def test_a_quantile_is_the_upper_edge_of_its_bucket_at_most_19_percent_above_the_truth():
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=0.5, sigma=1.0, size=20_000)
    health = ArmHealth()
    for ms in samples:
        health.observe(float(ms))
    for q in (0.5, 0.9, 0.99):
        true = float(np.quantile(samples, q))
        read = health.quantile_ms(q)
        assert read is not None and true <= read * 1.0001 and read <= true * 2**0.25 * 1.0001


def test_reports_add_up_across_replicas_and_round_trip_as_json():
    a, b = ArmHealth(), ArmHealth()
    for ms in (1.0, 2.0, 3.0):
        a.observe(ms)
    b.observe(100.0, failed=True)
    total = ArmHealth.from_dict(a.as_dict())
    total.add(ArmHealth.from_dict(b.as_dict()))
    assert (total.requests, total.errors) == (4, 1)
    assert total.error_rate == pytest.approx(0.25)
    assert total.quantile_ms(0.99) == pytest.approx(bucket_upper_ms(max(total.latency)), rel=1e-3)
    assert total.quantile_ms(0.5) is not None and total.quantile_ms(0.5) < 3.0 * 2**0.25


@pytest.mark.parametrize("ms", [0.0, -1.0, float("nan"), float("inf"), 1e12])
def test_degenerate_latencies_land_in_the_first_or_last_bucket(ms: float):
    health = ArmHealth()
    health.observe(ms)
    assert health.requests == 1 and health.quantile_ms(0.99) is not None
    assert ArmHealth().quantile_ms(0.99) is None
