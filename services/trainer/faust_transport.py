"""Faust's aiokafka transport, with two consumer settings taken from the trainer's settings.

Faust fixes the consumer's `fetch_max_wait_ms` at 1,500. Apache Kafka answers a waiting fetch as
soon as data arrives, so there it costs nothing; a broker that answers only when the wait runs out
(the embedded one does) turns it into up to 1.5 s of latency on every quiet moment. The wait is a
setting (TRAINER_FETCH_MAX_WAIT_MS) so each deployment picks what suits its broker.

Faust has no static group membership (KIP-345); with TRAINER_GROUP_INSTANCE_ID set, a worker that
restarts under the same id takes its partitions back at once instead of waiting for its old
session to expire. Each worker needs its own id (its host name, say).

Registered as the `continuo` transport in the `faust.transports` entry-point group (pyproject.toml),
Faust's own way to add a transport; the app's broker URL is `continuo://host:port`.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver

DEFAULT_FETCH_MAX_WAIT_MS = 1500


class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(transport.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        # aiokafka reads these when the consumer starts, which happens after this returns.
        consumer._fetch_max_wait_ms = int(wait)
        consumer._group_instance_id = getattr(transport.app, "group_instance_id", None) or None
        return consumer


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = Consumer
