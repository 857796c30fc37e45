"""The fast path for routing decisions: Redis pub/sub to every serving replica, and a cache of
each task's newest decision, beside Kafka. The event store stays the source of truth.

Governance publishes each deployment-stream event it appends (champion, canary, shadows, flags)
on one channel and records the task's newest stream version under a key. A serving replica
applies what it receives in stream order (a gap is read from the store), exactly as it applies
the same events from Kafka; one that starts, reconnects or missed a message compares the cached
versions with its own and catches up from the store. When Redis is away, decisions still reach
replicas through Kafka, and replicas keep answering with what they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.events.envelope import Envelope

log = structlog.get_logger(__name__)

CHANNEL = "continuo.deployments"
_HEAD = "continuo:deployments:{task}"


class Fanout:
    """Publishing side (governance) and subscribing side (serving) of the fast path."""

    def __init__(self, url: str, *, pause: float = 5.0) -> None:
        self._redis = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self._pause = pause
        self._paused_until = 0.0
        self.published = 0
        self.failures = 0
        self.skipped = 0
        self._sending: set[asyncio.Task[bool]] = set()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    def send(self, envelope: Envelope) -> None:
        """Publish in the background: a decision never waits on Redis."""
        sending = asyncio.create_task(self.publish(envelope))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def publish(self, envelope: Envelope) -> bool:
        """Best effort: False when Redis is away (then it is not tried again for a few
        seconds); Kafka brings the event anyway."""
        task = str(envelope.payload.get("task"))
        if time.monotonic() < self._paused_until:
            self.skipped += 1
            return False
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(_HEAD.format(task=task), envelope.stream_version or 0)
                pipe.publish(CHANNEL, envelope.to_json())
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.failures += 1
            self._paused_until = time.monotonic() + self._pause
            log.warning("fanout.publish_failed", task=task, error=str(exc), pause_s=self._pause)
            return False
        self.published += 1
        return True

    async def heads(self, tasks: list[str]) -> dict[str, int]:
        """The newest decision's stream version of each task, as last published."""
        if not tasks:
            return {}
        values = await self._redis.mget([_HEAD.format(task=t) for t in tasks])
        return {t: int(v) for t, v in zip(tasks, values, strict=True) if v is not None}

    async def follow(
        self,
        apply: Callable[[Envelope], Awaitable[object]],
        catch_up: Callable[[dict[str, int]], Awaitable[object]],
        tasks: Callable[[], list[str]],
        *,
        retry: float = 2.0,
    ) -> None:
        """Apply every event published on the channel, until cancelled. On every (re)connect,
        `catch_up` gets the cached heads, so what was missed while away is read from the store."""
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                try:
                    await catch_up(await self.heads(tasks()))
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        try:
                            envelope = Envelope.from_json(message["data"])
                        except ValueError as exc:
                            log.warning("fanout.bad_message", error=str(exc)[:200])
                            continue
                        await apply(envelope)
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not self.failures:
                    log.warning("fanout.disconnected", error=str(exc), retry_in=retry)
                self.failures += 1
                await asyncio.sleep(retry)
