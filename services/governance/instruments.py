"""Governance's Prometheus instruments (docs/metrics.md): events projected, decisions by type,
audits by outcome, and dead letters.

Decisions are counted where they are appended (`Governance.decide_all`, the one way onto a task's
deployment stream), by event type (ModelPromoted, PromotionRefused, ModelRolledBack,
ApprovalRequested, CanaryStarted, FlagChanged, ...); a decision that was already stored (a retry
under a derived id) is not counted twice. Audits likewise, by scope (candidate, live) and result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import Counter

from shared.bus import EnvelopeConsumer
from shared.events.envelope import Envelope
from shared.metrics import FollowedTotal, Refresh, dead_letters
from shared.store.port import Appended

EVENTS_PROJECTED = Counter(
    "continuo_governance_events_projected_total",
    "Events newly applied to governance's projections (redeliveries are not counted)",
    ["task", "type"],
)
DECISIONS = Counter(
    "continuo_governance_decisions_total",
    "Decisions appended to a task's deployment stream, by event type",
    ["task", "decision"],
)
AUDITS = Counter(
    "continuo_governance_audits_total",
    "Audits recorded (AuditCompleted), by scope (candidate, live) and result (pass, fail)",
    ["task", "scope", "result"],
)


def projected(events: Sequence[Envelope]) -> None:
    for envelope in events:
        EVENTS_PROJECTED.labels(str(envelope.payload.get("task", "")), envelope.type).inc()


def decided(task: str, events: Sequence[Envelope], appended: Sequence[Appended]) -> None:
    for event, stored in zip(events, appended, strict=True):
        if not stored.duplicate:
            DECISIONS.labels(task, event.type).inc()


def audited(task: str, scope: str, passed: bool, stored: Appended) -> None:
    if not stored.duplicate:
        AUDITS.labels(task, scope, "pass" if passed else "fail").inc()


def consumer_metrics(consumer: Callable[[], EnvelopeConsumer | None]) -> Refresh:
    """The event consumer's dead letters, read at each scrape."""
    followed = FollowedTotal(dead_letters())

    async def refresh() -> None:
        current = consumer()
        if current is not None:
            followed.follow(current.dead_lettered)

    return refresh
