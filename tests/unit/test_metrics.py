"""The pure parts of the Prometheus metrics: followed totals, relay lag, freshness, served accuracy
series, and the exposition's format negotiation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from prometheus_client import REGISTRY

from services.serving.instruments import Freshness
from services.trainer.instruments import served_scored
from shared.events.types import ServedScored
from shared.metrics import FollowedTotal, exposition, relay_lag


@dataclass
class Tally:
    value: float = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


def test_a_followed_total_adds_only_growth_past_the_highest_value_seen():
    tally = Tally()
    followed = FollowedTotal(tally)
    for total in (3, 3, 10, 4, 8, 12):  # 4 and 8: a core rebuilt by replay, counting again
        followed.follow(total)
    assert tally.value == 12


@dataclass
class StoreAt:
    """The few reads relay_lag makes, over events given as (position, producer)."""

    events: list[tuple[int, str]]
    cursor: int
    reads: list[str] = field(default_factory=list)

    async def head(self) -> int:
        self.reads.append("head")
        return max((p for p, _ in self.events), default=0)

    async def load_cursor(self, name: str) -> int:
        self.reads.append("cursor")
        return self.cursor

    async def read_all(self, after: int = 0, limit: int = 1000, **kw: object) -> list[int]:
        self.reads.append("events")
        mine = [p for p, who in self.events if p > after and who == kw["producer"]]
        return mine[:limit]


async def test_relay_lag_is_zero_unless_this_services_events_wait_then_positions_to_the_head():
    caught_up = StoreAt([(1, "ingest"), (2, "ingest")], cursor=2)
    assert await relay_lag(caught_up, "relay:ingest", "ingest") == 0
    assert caught_up.reads == ["head", "cursor"]
    others_only = StoreAt([(1, "ingest"), (2, "serving"), (3, "trainer")], cursor=1)
    assert await relay_lag(others_only, "relay:ingest", "ingest") == 0
    behind = StoreAt([(1, "ingest"), (2, "serving"), (3, "ingest"), (4, "serving")], cursor=1)
    assert await relay_lag(behind, "relay:ingest", "ingest") == 3


def _freshness(now: float, limit: int = 100) -> tuple[Freshness, list[tuple[str, float]]]:
    seen: list[tuple[str, float]] = []
    return Freshness(lambda task, s: seen.append((task, s)), clock=lambda: now, limit=limit), seen


def test_freshness_observes_each_label_once_when_a_model_that_learned_it_answers():
    freshness, seen = _freshness(now=100.0)
    freshness.learned("elec", [(5, 90.0), (7, 95.0), (9, 99.0)])
    freshness.answered("elec", 4)  # the model had learned none of them
    assert seen == []
    freshness.answered("elec", 7)
    assert seen == [("elec", 10.0), ("elec", 5.0)]
    freshness.answered("elec", 7)  # observed once
    freshness.answered("other", 100)
    freshness.answered("elec", None)  # a model that does not learn online
    assert len(seen) == 2
    freshness.answered("elec", 9)
    assert seen[-1] == ("elec", 1.0)


def test_freshness_keeps_a_bounded_queue_per_task_dropping_the_oldest_labels():
    freshness, seen = _freshness(now=10.0, limit=2)
    freshness.learned("elec", [(1, 1.0), (2, 2.0), (3, 3.0)])
    freshness.answered("elec", 3)
    assert seen == [("elec", 8.0), ("elec", 7.0)]


def _sample(name: str, task: str, version: int, role: str) -> float | None:
    return REGISTRY.get_sample_value(
        name, {"task": task, "model_version": str(version), "role": role}
    )


def test_served_accuracy_shows_the_newest_window_and_drops_arms_that_left_it():
    task = f"t-{uuid.uuid4().hex[:8]}"

    def window(n: int, arms: list[dict[str, object]]) -> ServedScored:
        return ServedScored(task=task, window=200, n_windows=n, to_position=n * 400, arms=arms)

    served_scored(
        window(
            1,
            [
                {"model_version": 3, "role": "champion", "n": 150, "correct": 120},
                {"model_version": 4, "role": "canary", "n": 50, "correct": 45},
            ],
        )
    )
    assert _sample("continuo_served_accuracy", task, 3, "champion") == 0.8
    assert _sample("continuo_served_accuracy", task, 4, "canary") == 0.9
    assert _sample("continuo_served_scored_rows", task, 4, "canary") == 50
    served_scored(window(2, [{"model_version": 4, "role": "champion", "n": 200, "correct": 170}]))
    assert _sample("continuo_served_accuracy", task, 4, "champion") == 0.85
    assert _sample("continuo_served_accuracy", task, 3, "champion") is None
    assert _sample("continuo_served_accuracy", task, 4, "canary") is None


async def test_the_exposition_is_prometheus_text_unless_the_scraper_asks_for_openmetrics():
    refreshed: list[bool] = []

    async def refresh() -> None:
        refreshed.append(True)

    body, content_type = await exposition(None, [refresh])
    assert refreshed == [True]
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE continuo_relay_lag_events gauge" in body
    _, openmetrics = await exposition("application/openmetrics-text; version=1.0.0", [])
    assert openmetrics.startswith("application/openmetrics-text")
