"""Serving's settings: the common infrastructure addresses plus its own knobs (SERVING_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import MIB, CommonSettings


class ServingSettings(CommonSettings):
    """Where serving listens, how it batches recorded predictions, how big a request may be."""

    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore", populate_by_name=True)

    port: int = 8002
    # Served predictions are appended to the store in the background, at least this often...
    record_interval: float = Field(0.2, gt=0)
    # ...or as soon as this many are waiting.
    record_batch: int = Field(500, gt=0)
    # While the store takes appends, a predict request waits once this many predictions wait to
    # be recorded (backpressure: callers slow down, memory stays flat, nothing is dropped)...
    record_high_water: int = Field(10_000, gt=0)
    # ...and while it is unreachable, at most this many wait; older ones are dropped.
    record_backlog: int = Field(100_000, gt=0)
    # Largest batch one predict request may carry...
    max_records: int = Field(1000, gt=0)
    # ...and the largest body: refused (413) before or while it is read.
    max_body_bytes: int = Field(4 * MIB, gt=0)
    # Longest a Kafka fetch waits for data (deployments, and the data the online features fold).
    fetch_max_wait_ms: int = Field(20, ge=1, le=5000)
    # While a task runs a canary, each arm's requests, failures and latencies are reported this
    # often (ArmsServed: the canary's guardrails).
    health_interval: float = Field(5.0, gt=0)
