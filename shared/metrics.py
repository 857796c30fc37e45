"""Prometheus metrics: the `GET /metrics` route of every service, and what its instruments share.

Each service declares its instruments in its own `instruments.py` and updates them where the
counted thing happens; `docs/metrics.md` lists every family. The instruments are module-level
objects on prometheus_client's default registry, as its documentation has them: a service is one
process, so the registry is the process's, and an instrument is a number in memory (no
connection, nothing configured, so the rule against module-level clients is not broken). An
in-process test that builds several apps sees their counts add up: it asserts on differences.

Figures that an object keeps anyway (the relay's published events, the recorder's backlog, a
consumer's dead letters) are read when /metrics is scraped (`Refresh` callbacks), not copied on
every change; a counter follows such a total with `FollowedTotal`.

/metrics takes no API key on any service, governance included (as /healthz and /readyz): it holds
counts, durations, task names and model versions, no record, feature or key. Scrape it on the
internal network; do not route it from outside.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Protocol

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.exposition import choose_encoder

from shared.runtime import Runtime
from shared.store.port import EventStore
from shared.store.sql import STORE_FAILURES

log = structlog.get_logger(__name__)

# Brings a scrape's read-on-demand figures up to date (called before each exposition).
Refresh = Callable[[], Awaitable[None]]
# A store read at scrape time waits no longer than this: a scrape must answer while the store is
# away (that is when it matters), and Prometheus gives up after 10 s by default.
STORE_READ_TIMEOUT = 2.0

RELAY_PUBLISHED = Counter(
    "continuo_relay_events_published_total",
    "Events this service's relay published to Kafka (again after a broker lost its data)",
)
RELAY_LAG = Gauge(
    "continuo_relay_lag_events",
    "Store positions between the relay's cursor and the store's head while any of this "
    "service's events waits to be published, else 0; NaN when the store could not be read",
)


@cache
def dead_letters() -> Counter:
    """Records consumed from Kafka that are not envelopes, sent to the dead-letter topic. Made by
    the services that dead-letter (trainer, governance) when they start, so the others show none."""
    return Counter(
        "continuo_dead_letters_total",
        "Records consumed from Kafka that are not envelopes, sent to the dead-letter topic",
    )


class Incrementable(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class FollowedTotal:
    """A counter that follows a total kept elsewhere (a relay's published events, a task's labels
    learned): each `follow` adds what the total grew by past the highest value seen. A total
    that falls back (a core rebuilt by replay) adds nothing until it passes that value again."""

    def __init__(self, counter: Incrementable) -> None:
        self._counter = counter
        self._seen = 0.0

    def follow(self, total: float) -> None:
        if total > self._seen:
            self._counter.inc(total - self._seen)
            self._seen = total


async def exposition(accept: str | None, refreshers: Sequence[Refresh]) -> tuple[bytes, str]:
    """The registry in the format the scraper accepts (Prometheus text, or OpenMetrics), after
    the read-on-demand figures are brought up to date; and its content type."""
    for refresh in refreshers:
        await refresh()
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


def metrics_router(*refreshers: Refresh) -> APIRouter:
    """`GET /metrics` for a FastAPI service. Not in its OpenAPI document: the body is
    Prometheus' exposition format, described in docs/metrics.md."""
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        body, content_type = await exposition(request.headers.get("accept"), refreshers)
        return Response(body, headers={"Content-Type": content_type})

    return router


def relay_metrics(runtime: Callable[[], Runtime | None]) -> Refresh:
    """The relay's published events and lag, read at each scrape (every service runs a relay)."""
    published = FollowedTotal(RELAY_PUBLISHED)

    async def refresh() -> None:
        rt = runtime()
        if rt is None:
            return
        published.follow(rt.relay.published)
        try:
            lag: float = await asyncio.wait_for(
                relay_lag(rt.store, rt.relay.cursor_name, rt.service), STORE_READ_TIMEOUT
            )
        except (TimeoutError, *STORE_FAILURES) as exc:
            log.warning("metrics.relay_lag_unread", error=f"{exc.__class__.__name__}: {exc}")
            lag = math.nan
        RELAY_LAG.set(lag)

    return refresh


async def relay_lag(store: EventStore, cursor_name: str, producer: str) -> int:
    """0 when none of `producer`'s events waits after the relay's cursor; else the store positions
    from the cursor to the head, an upper bound on them (other producers' events count too).
    Small reads: the head, the cursor and, past the cursor, at most one event (on an index)."""
    head, cursor = await store.head(), await store.load_cursor(cursor_name)
    if head <= cursor:
        return 0
    waiting = await store.read_all(after=cursor, limit=1, producer=producer)
    return head - cursor if waiting else 0
