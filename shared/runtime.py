"""What every service runs beside its own work: the event store, a Kafka publisher and its relay.

Built in each service's lifespan (never at import time) from its settings.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field

import structlog

from shared import __version__
from shared.artifacts import FileArtifactStore
from shared.bus import KafkaPublisher, ensure_topics
from shared.events.envelope import Producer
from shared.relay import Relay
from shared.settings import CommonSettings
from shared.store.sql import SqlEventStore, open_event_store

log = structlog.get_logger(__name__)


def tune_collector(settings: CommonSettings) -> None:
    """Run the cyclic garbage collector less often than CPython's default, at a service's start.

    A service allocates containers fast (an envelope, its payload and its rows for every event)
    and holds many for a while (a trainer's rows awaiting labels, a serving replica's folds), so
    with the default threshold (a young pass every 700 allocations) it ran about a thousand passes
    in 15 s and a full pass, walking everything held, every second or two: measured with
    `gc.callbacks` in the freshness scenario of bench/served.py, collections took 28-49% of each
    service's CPU time, and a full pass stalls the event loop for 0.1-0.3 s. Reference counting
    frees everything that is not in a cycle either way; what changes is how long cyclic garbage
    waits (a few million allocations at most).
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_threshold, older, oldest)


@dataclass
class Runtime:
    """A service's connections to shared infrastructure, started and stopped together."""

    service: str
    settings: CommonSettings
    store: SqlEventStore
    publisher: KafkaPublisher
    artifacts: FileArtifactStore
    producer: Producer
    relay: Relay
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _relay_task: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, service: str, settings: CommonSettings) -> Runtime:
        store = open_event_store(settings.store_url)
        publisher = KafkaPublisher(
            settings.kafka_bootstrap_servers, idempotence=settings.kafka_idempotence
        )
        return cls(
            service=service,
            settings=settings,
            store=store,
            publisher=publisher,
            artifacts=FileArtifactStore(settings.artifacts_dir),
            producer=Producer(service=service, version=__version__),
            relay=Relay.for_settings(store, publisher, service, settings),
        )

    async def start(self) -> None:
        """Connect to the broker, ensure the topics exist, start relaying this service's events."""
        await ensure_topics(self.settings.kafka_bootstrap_servers)
        await self.publisher.start()
        self._relay_task = asyncio.create_task(
            self.relay.run(self._stop), name=f"relay:{self.service}"
        )
        log.info("runtime.started", store=_redact(self.settings.store_url))

    @property
    def relay_alive(self) -> bool:
        return self._relay_task is not None and not self._relay_task.done()

    async def stop(self) -> None:
        """Stop relaying (waiting up to 10 s for a batch in flight), then close the connections."""
        self._stop.set()
        try:
            if self._relay_task:
                await asyncio.wait_for(self._relay_task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            log.warning("runtime.relay_stop_timeout", service=self.service)
        except Exception:
            log.exception("runtime.relay_failed", service=self.service)
        finally:
            try:
                await self.relay.close()
                await self.publisher.stop()
            finally:
                await self.store.close()


def _redact(url: str) -> str:
    """A database URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
