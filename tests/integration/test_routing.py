"""Serving's routing on a real store, broker and Redis: two replicas agree on who answers each
entity, shadows are recorded and never returned, flags evaluate alike everywhere (through the
OpenFeature SDK too), and a Redis outage changes nothing but speed."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pytest
import uvicorn

from services.serving.app import create_app
from services.serving.settings import ServingSettings
from shared import model_codec
from shared.arm_health import ArmHealth
from shared.artifacts import FileArtifactStore
from shared.bus import KafkaPublisher, ensure_topics
from shared.events.envelope import Envelope, Payload, new_event
from shared.events.types import (
    ArmsServed,
    CanaryStarted,
    FlagChanged,
    ModelPromoted,
    PredictionServed,
    ServedPrediction,
    ShadowStarted,
    deployment_stream,
    governance_stream,
    prediction_stream,
)
from shared.fanout import Fanout
from shared.registry import register_tasks
from shared.relay import Relay
from shared.store.sql import SqlEventStore, open_event_store
from shared.tasks import Feature, Target, TaskSpec
from tests.support import TEST_PRODUCER, eventually

REDIS = "redis://127.0.0.1:6379/0"
RECORD = {"x": 1.0}


def make_spec() -> TaskSpec:
    return TaskSpec(
        name=f"r{uuid.uuid4().hex[:10]}", features=(Feature(name="x"),), target=Target(name="y")
    )


def model(sign: float, width: int = 1) -> bytes:
    """A model of x's sign (or its opposite). Of another width than the task's one feature, it
    loads and fails on every prediction."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, width))
    y = ((sign * X[:, 0]) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "verbose": -1, "seed": 1},
        lgb.Dataset(X, y),
        num_boost_round=5,
    )
    names = ["x", *(f"z{i}" for i in range(1, width))]
    return model_codec.encode(n_features=width, members=[(1.0, booster)], feature_names=names)


@dataclass
class World:
    spec: TaskSpec
    store: SqlEventStore
    relay: Relay
    artifacts: FileArtifactStore
    fanout: Fanout
    store_url: str
    kafka: str
    tmp: Path

    @property
    def task(self) -> str:
        return self.spec.name

    def settings(self, redis_url: str = REDIS) -> ServingSettings:
        return ServingSettings(
            environment="test",
            store_url=self.store_url,
            kafka_bootstrap_servers=self.kafka,
            artifacts_dir=self.tmp / "artifacts",
            redis_url=redis_url,
            record_interval=0.05,
        )

    async def decide(self, payload: Payload, *, fast: bool = True, kafka: bool = True) -> Envelope:
        """Append a decision as governance does: store, then Redis (fast) and Kafka (relay)."""
        event = new_event(payload, stream_id=deployment_stream(self.task), producer=TEST_PRODUCER)
        [appended] = await self.store.append([event])
        stored = event.model_copy(
            update={"position": appended.position, "stream_version": appended.stream_version}
        )
        if fast:
            await self.fanout.publish(stored)
        if kafka:
            while await self.relay.publish_once():
                pass
        return stored

    def promoted(self, version: int, data: bytes) -> ModelPromoted:
        return ModelPromoted(
            task=self.task,
            model_version=version,
            artifact_sha256=self.artifacts.put(data),
            previous_version=None,
            reason="test",
            decided_by="tests",
        )


@asynccontextmanager
async def world(sqlite_url: str, kafka: str, tmp_path: Path) -> AsyncIterator[World]:
    await ensure_topics(kafka)
    store = open_event_store(sqlite_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    spec = make_spec()
    await register_tasks(store, [spec], TEST_PRODUCER)
    fanout = Fanout(REDIS)
    try:
        yield World(
            spec,
            store,
            Relay(store, publisher, producer="tests"),
            FileArtifactStore(tmp_path / "artifacts"),
            fanout,
            sqlite_url,
            kafka,
            tmp_path,
        )
    finally:
        await fanout.close()
        await publisher.stop()
        await store.close()


@asynccontextmanager
async def replica(settings: ServingSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            yield client


def routing_at(client: httpx.AsyncClient, task: str, version: int):
    async def probe() -> bool:
        response = await client.get(f"/v1/tasks/{task}/routing")
        return response.status_code == 200 and response.json()["stream_version"] >= version

    return probe


async def arms(client: httpx.AsyncClient, task: str, entities: list[str]) -> list[str]:
    body = {"records": [{"features": RECORD, "entity_id": e} for e in entities]}
    response = await client.post(f"/v1/tasks/{task}/predict", json=body)
    assert response.status_code == 200, response.text
    return [p["role"] for p in response.json()["predictions"]]


async def test_two_replicas_send_each_entity_to_the_same_arm_before_and_after_a_restart(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    entities = [f"customer-{i}" for i in range(400)]
    async with world(sqlite_url, kafka, tmp_path) as w:
        await w.decide(w.promoted(1, model(1.0)))
        canary = await w.decide(
            CanaryStarted(
                task=w.task,
                model_version=2,
                artifact_sha256=w.artifacts.put(model(-1.0)),
                weight=30.0,
                reason="try it",
                decided_by="tests",
            )
        )
        async with replica(w.settings()) as a, replica(w.settings()) as b:
            await eventually(routing_at(a, w.task, canary.stream_version or 0))
            await eventually(routing_at(b, w.task, canary.stream_version or 0))
            first, second = await arms(a, w.task, entities), await arms(b, w.task, entities)
        assert first == second
        # 30% of entities, give or take: the buckets hash the (random) task name too, so the
        # bounds sit about 4 standard deviations out (n = 400).
        assert 0.2 < first.count("canary") / len(entities) < 0.4
        async with replica(w.settings()) as restarted:
            assert await arms(restarted, w.task, entities) == first


async def test_a_shadow_is_recorded_for_every_row_and_never_returned(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with world(sqlite_url, kafka, tmp_path) as w:
        await w.decide(w.promoted(1, model(1.0)))
        shadow = await w.decide(
            ShadowStarted(
                task=w.task,
                model_version=2,
                artifact_sha256=w.artifacts.put(model(-1.0)),
                sample_rate=1.0,
                reason="watch it",
                decided_by="tests",
            )
        )
        async with replica(w.settings()) as client:
            await eventually(routing_at(client, w.task, shadow.stream_version or 0))
            body = {"records": [{"features": {"x": float(i)}} for i in range(-10, 10)]}
            response = await client.post(f"/v1/tasks/{w.task}/predict", json=body)
            answered = response.json()["predictions"]
            assert {p["role"] for p in answered} == {"champion"}
            assert {p["model_version"] for p in answered} == {1}

            async def recorded() -> list[ServedPrediction] | None:
                events = await w.store.read_stream(prediction_stream(w.task))
                data = [e.data() for e in events]
                served = [p for d in data if isinstance(d, PredictionServed) for p in d.predictions]
                return served if len(served) == 2 * len(answered) else None

            served = await eventually(recorded, timeout=10)
        by_role: dict[str, dict[str, float]] = {"champion": {}, "shadow": {}}
        for event in served:
            by_role[event.role][str(event.prediction_id)] = event.probability
        ids = {p["prediction_id"] for p in answered}
        assert set(by_role["champion"]) == set(by_role["shadow"]) == ids
        # The shadow learned the opposite: on every row it disagrees with the answer.
        for pid in ids:
            assert (by_role["champion"][pid] >= 0.5) != (by_role["shadow"][pid] >= 0.5)


async def test_a_failing_canary_is_answered_for_by_the_champion_and_reported_for_its_guardrail(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with world(sqlite_url, kafka, tmp_path) as w:
        await w.decide(w.promoted(1, model(1.0)))
        canary = await w.decide(
            CanaryStarted(
                task=w.task,
                model_version=2,
                artifact_sha256=w.artifacts.put(model(1.0, width=2)),
                weight=100.0,
                reason="try it",
                decided_by="tests",
            )
        )
        settings = w.settings().model_copy(update={"health_interval": 0.2})
        async with replica(settings) as client:
            await eventually(routing_at(client, w.task, canary.stream_version or 0))
            entities = [f"e{i}" for i in range(30)]
            assert set(await arms(client, w.task, entities)) == {"champion"}
            for entity in entities[:20]:
                assert await arms(client, w.task, [entity]) == ["champion"]

            async def reported() -> dict[tuple[str, int], ArmHealth] | None:
                events = await w.store.read_stream(governance_stream(w.task))
                totals: dict[tuple[str, int], ArmHealth] = {}
                for event in events:
                    report = event.data()
                    assert isinstance(report, ArmsServed)
                    for arm in report.arms:
                        key = (arm["role"], arm["model_version"])
                        totals.setdefault(key, ArmHealth()).add(ArmHealth.from_dict(arm))
                done = totals.get(("canary", 2), ArmHealth()).requests == 21
                return totals if done else None

            totals = await eventually(reported, timeout=10)
        canary_arm, champion_arm = totals[("canary", 2)], totals[("champion", 1)]
        assert canary_arm.errors == canary_arm.requests == 21  # every request it was given
        assert champion_arm.requests == 21 and champion_arm.errors == 0
        latency = champion_arm.quantile_ms(0.99)
        assert latency is not None and 0 < latency < 5_000


async def test_flags_evaluate_alike_on_every_replica_and_through_openfeature(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode

    async with world(sqlite_url, kafka, tmp_path) as w:
        await w.decide(w.promoted(1, model(1.0)))
        flag = await w.decide(
            FlagChanged(
                task=w.task,
                key="checkout",
                flag={
                    "type": "string",
                    "value": "old",
                    "variants": {"old": "old", "new": "new"},
                    "weights": {"old": 70.0, "new": 30.0},
                },
                reason="roll out the new checkout",
                decided_by="tests",
            )
        )
        entities = [f"user-{i}" for i in range(200)]
        url = f"/v1/tasks/{w.task}/ofrep/v1/evaluate/flags/checkout"
        seen = []
        for _ in range(2):
            async with replica(w.settings()) as client:
                await eventually(routing_at(client, w.task, flag.stream_version or 0))
                values = []
                for entity in entities:
                    got = await client.post(url, json={"context": {"targetingKey": entity}})
                    assert got.status_code == 200, got.text
                    values.append(got.json()["value"])
                seen.append(values)
                missing = await client.post(
                    f"/v1/tasks/{w.task}/ofrep/v1/evaluate/flags/nope", json={"context": {}}
                )
                assert missing.status_code == 404
                assert missing.json()["errorCode"] == "FLAG_NOT_FOUND"
                # An entity id is text the store can hold (a lone surrogate crashed the process).
                for key in (7, True, ["user-1"], "", "u" * 201, "\ud800", "a\u0000b"):
                    bad = await client.post(  # \ud800 sent escaped, as JSON allows
                        url,
                        content=json.dumps({"context": {"targetingKey": key}}),
                        headers={"content-type": "application/json"},
                    )
                    # OFREP's shape: the OpenFeature provider raises its InvalidContextError.
                    assert bad.status_code == 400, (key, bad.text)
                    assert bad.json()["key"] == "checkout"
                    assert bad.json()["errorCode"] == "INVALID_CONTEXT"
                    assert "targetingKey" in bad.json()["errorDetails"]
                unparsed = await client.post(
                    url, content=b"{", headers={"content-type": "application/json"}
                )
                assert (unparsed.status_code, unparsed.json()["errorCode"]) == (400, "PARSE_ERROR")
                elsewise = await client.post(
                    url, content=b"{}", headers={"content-type": "text/plain"}
                )
                assert elsewise.status_code == 415
        assert seen[0] == seen[1]
        assert 0.15 < seen[0].count("new") / len(entities) < 0.45  # 30%, ~4.5 sd either side

        # Client code reads the same values with the OpenFeature SDK and its OFREP provider.
        with served_over_http(w.settings()) as base:
            await _await_http(f"{base}/v1/tasks/{w.task}/routing", flag.stream_version or 0)
            api.set_provider(OFREPProvider(f"{base}/v1/tasks/{w.task}/"))
            client = api.get_client()
            sdk = [
                client.get_string_value("checkout", "fallback", EvaluationContext(e))
                for e in entities
            ]
            refused = client.get_string_details(
                "checkout", "fallback", EvaluationContext("u" * 201)
            )
        assert sdk == seen[0]
        assert (refused.value, refused.error_code) == ("fallback", ErrorCode.INVALID_CONTEXT)


@contextmanager
def served_over_http(settings: ServingSettings) -> Iterator[str]:
    """A replica on a real port (for clients that speak plain HTTP, like the OFREP provider)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def _await_http(url: str, version: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get(url)
                if response.status_code == 200 and response.json()["stream_version"] >= version:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not reach stream version {version}")


@contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes], int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0", process, port
    finally:
        process.kill()
        process.wait()


def start_redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    raise AssertionError("redis-server did not start")


async def test_without_redis_a_replica_keeps_serving_and_converges_when_it_returns(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    with private_redis() as (url, process, port):
        async with world(sqlite_url, kafka, tmp_path) as w:
            w.fanout = Fanout(url, pause=0.0)
            await w.decide(w.promoted(1, model(1.0)))
            async with replica(w.settings(url)) as client:
                await eventually(routing_at(client, w.task, 1))
                process.kill()
                process.wait()
                # Redis is gone: answers go on, and a decision still arrives through Kafka.
                for _ in range(20):
                    response = await client.post(
                        f"/v1/tasks/{w.task}/predict", json={"features": RECORD}
                    )
                    assert response.status_code == 200
                second = await w.decide(w.promoted(2, model(-1.0)), fast=False)
                await eventually(routing_at(client, w.task, second.stream_version or 0))
                # A decision that only Redis carries (Kafka held back) arrives once it returns:
                # the replica reconnects, reads the cached head and catches up from the store.
                third = await w.decide(w.promoted(3, model(1.0)), fast=False, kafka=False)
                restarted = start_redis(port)
                try:
                    await eventually(lambda: w.fanout.publish(third), timeout=10)
                    await eventually(
                        routing_at(client, w.task, third.stream_version or 0), timeout=20
                    )
                    model_now = (await client.get(f"/v1/tasks/{w.task}/model")).json()
                    assert model_now["model_version"] == 3
                finally:
                    restarted.kill()
                    restarted.wait()
