"""Serving against a real event store, the embedded broker and an artifact store on disk."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
from fastapi import FastAPI

from services.serving.app import create_app
from services.serving.direct import ServingApp
from services.serving.settings import ServingSettings
from shared import model_codec
from shared.artifacts import FileArtifactStore, sha256
from shared.bus import KafkaPublisher, ensure_topics
from shared.events.envelope import Payload, new_event
from shared.events.types import (
    ModelPromoted,
    ModelRolledBack,
    PredictionServed,
    deployment_stream,
    prediction_stream,
)
from shared.registry import register_tasks
from shared.relay import Relay
from shared.store.sql import SqlEventStore, open_event_store
from shared.tasks import Feature, Target, TaskSpec
from tests.support import TEST_PRODUCER, eventually


def make_spec() -> TaskSpec:
    return TaskSpec(
        name=f"t{uuid.uuid4().hex[:10]}",
        features=(
            Feature(name="income"),
            Feature(name="colour", type="category", categories=("red", "blue")),
        ),
        target=Target(name="default", classes=("no", "yes")),
    )


def tiny_model(spec: TaskSpec, flip: bool = False) -> bytes:
    rng = np.random.default_rng(11)
    X = np.column_stack([rng.normal(size=300), rng.integers(0, 2, size=300)]).astype(np.float64)
    y = (X[:, 0] > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1},
        lgb.Dataset(X, 1 - y if flip else y),
        num_boost_round=8,
    )
    return model_codec.encode(
        n_features=2,
        members=[(1.0, booster.model_to_string())],
        bias=0.0,
        feature_names=[f.name for f in spec.model_features],
    )


RECORD = {"income": 1.5, "colour": "blue"}


@dataclass
class World:
    """The infrastructure one test shares with the app under test."""

    spec: TaskSpec
    store: SqlEventStore
    artifacts: FileArtifactStore
    relay: Relay
    settings: ServingSettings

    @property
    def task(self) -> str:
        return self.spec.name

    async def decide(self, payload: Payload, *, publish: bool = True) -> None:
        """Append a deployment decision; with `publish`, relay it as another service would."""
        event = new_event(payload, stream_id=deployment_stream(self.task), producer=TEST_PRODUCER)
        await self.store.append([event])
        if publish:
            while await self.relay.publish_once():
                pass

    async def promote(self, version: int, model: bytes, *, publish: bool = True) -> str:
        digest = self.artifacts.put(model)
        await self.decide(
            ModelPromoted(
                task=self.task,
                model_version=version,
                artifact_sha256=digest,
                previous_version=version - 1 or None,
                reason="test",
                decided_by="tests",
            ),
            publish=publish,
        )
        return digest


@asynccontextmanager
async def world(store_url: str, kafka: str, tmp_path: Path) -> AsyncIterator[World]:
    await ensure_topics(kafka)
    store = open_event_store(store_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    spec = make_spec()
    await register_tasks(store, [spec], TEST_PRODUCER)
    settings = ServingSettings(
        environment="test",
        store_url=store_url,
        kafka_bootstrap_servers=kafka,
        artifacts_dir=tmp_path / "artifacts",
        record_interval=0.05,
    )
    artifacts = FileArtifactStore(settings.artifacts_dir)
    try:
        yield World(spec, store, artifacts, Relay(store, publisher, producer="tests"), settings)
    finally:
        await publisher.stop()
        await store.close()


@asynccontextmanager
async def serving(settings: ServingSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            yield client


def version_becomes(client: httpx.AsyncClient, task: str, version: int):
    async def probe() -> bool:
        response = await client.post(f"/v1/tasks/{task}/predict", json={"features": RECORD})
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200 and response.json()["model_version"] == version

    return probe


async def test_serving_loads_the_champion_from_the_store_and_follows_decisions_on_kafka(
    store_url: str, kafka: str, tmp_path: Path
):
    async with world(store_url, kafka, tmp_path) as w:
        first = await w.promote(1, tiny_model(w.spec), publish=False)
        async with serving(w.settings) as client:
            model = (await client.get(f"/v1/tasks/{w.task}/model")).json()
            assert (model["model_version"], model["artifact_sha256"]) == (1, first)
            response = await client.post(f"/v1/tasks/{w.task}/predict", json={"features": RECORD})
            assert response.status_code == 200
            body = response.json()
            assert body["model_version"] == 1
            [prediction] = body["predictions"]
            assert prediction["label"] == "yes" and prediction["probability"] > 0.5
            uuid.UUID(prediction["prediction_id"])

            # A newer promotion, stored and relayed by "another service", reaches serving.
            second = await w.promote(2, tiny_model(w.spec, flip=True))
            await eventually(version_becomes(client, w.task, 2), timeout=15)
            model = (await client.get(f"/v1/tasks/{w.task}/model")).json()
            assert (model["model_version"], model["artifact_sha256"]) == (2, second)

            await w.decide(
                ModelRolledBack(
                    task=w.task,
                    model_version=1,
                    artifact_sha256=first,
                    from_version=2,
                    reason="test",
                    decided_by="tests",
                )
            )
            await eventually(version_becomes(client, w.task, 1), timeout=15)
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text


async def test_bad_requests_are_answered_4xx_and_a_task_without_a_model_503(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with world(sqlite_url, kafka, tmp_path) as w:
        async with serving(w.settings) as client:
            url = f"/v1/tasks/{w.task}/predict"
            response = await client.post(url, json={"features": RECORD})
            assert response.status_code == 503
            assert response.json() == {"detail": f"task '{w.task}' has no promoted model yet"}
            assert (await client.get(f"/v1/tasks/{w.task}/model")).status_code == 404

            await w.promote(1, tiny_model(w.spec))
            await eventually(version_becomes(client, w.task, 1), timeout=15)

            missing = await client.post("/v1/tasks/nope/predict", json={"features": RECORD})
            assert missing.status_code == 404 and "nope" in missing.json()["detail"]

            batch = {
                "records": [
                    {"features": RECORD},
                    {"features": {"income": "x", "colour": "red"}},
                    {"features": {"income": 1.0, "colour": "green"}, "entity_id": "e3"},
                ]
            }
            invalid = await client.post(url, json=batch)
            assert invalid.status_code == 422
            assert [e["index"] for e in invalid.json()["detail"]] == [1, 2]
            assert "income" in invalid.json()["detail"][0]["msg"]

            for body in (
                {},
                {"features": RECORD, "records": [{"features": RECORD}]},
                {"records": []},
                {"features": [1, 2]},
                {"features": {"income": 1.0}},
                {"features": RECORD, "entity_id": 7},
                {"features": RECORD, "record": "yes"},  # strict: text is not a boolean
                {"features": RECORD, "after_position": "5"},
                {"features": {**RECORD, "income": 1.7e308}},  # finite, but beyond +-1e100
                {"records": [{"features": RECORD}] * (w.settings.max_records + 1)},
                # Beyond any float, and text the store cannot hold: refused, never a 500.
                {"features": {**RECORD, "income": 10**309}},
                {"features": RECORD, "entity_id": "a\u0000b"},
                {"features": RECORD, "entity_id": "\ud800"},
                {"records": [{"features": RECORD, "entity_id": "\u0000"}]},
                '{"features": {"income": 1.0, "colour": ' + "1" * 5000 + "}}",
            ):
                raw = body if isinstance(body, str) else json.dumps(body)  # \ud800 escaped
                response = await client.post(
                    url, content=raw, headers={"content-type": "application/json"}
                )
                # (A 5,000-digit number is not even JSON Python will parse: 400.)
                assert response.status_code in (400, 422), (raw[:200], response.text)
                assert len(response.text) < 2000
            # A body past the limit is refused before it is read in full (413), declared or not.
            huge = b'{"features": {"income": 1.0, "colour": "' + b"r" * 5_000_000 + b'"}}'
            too_large = await client.post(
                url, content=huge, headers={"content-type": "application/json"}
            )
            assert too_large.status_code == 413, too_large.text[:200]
            not_json = await client.post(
                url, content=b"{", headers={"content-type": "application/json"}
            )
            assert not_json.status_code == 400  # as ingest answers
            as_text = await client.post(
                url,
                content=json.dumps({"features": RECORD}),
                headers={"content-type": "text/plain"},
            )
            assert as_text.status_code == 415, as_text.text

            ok = await client.post(
                url, json={"records": [{"features": RECORD, "entity_id": "a"}] * 3}
            )
            assert ok.status_code == 200 and len(ok.json()["predictions"]) == 3
            assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_swapping_models_under_concurrent_requests_drops_none(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with world(sqlite_url, kafka, tmp_path) as w:
        await w.promote(1, tiny_model(w.spec), publish=False)
        async with serving(w.settings) as client:
            url = f"/v1/tasks/{w.task}/predict"
            swapped = asyncio.Event()
            failures: list[str] = []
            seen: list[tuple[int, bool]] = []  # (version, request started after a 2 was seen)

            async def caller(batch: int) -> None:
                body = (
                    {"features": RECORD}
                    if batch == 1
                    else {"records": [{"features": RECORD}] * batch}  # predicted in a thread
                )
                after = 0
                while after < 20:
                    started_after_swap = swapped.is_set()
                    response = await client.post(url, json=body)
                    # In-process ASGI calls may never suspend: let the other tasks (the swap) run.
                    await asyncio.sleep(0)
                    if response.status_code != 200:
                        failures.append(response.text)
                        return
                    version = response.json()["model_version"]
                    assert len(response.json()["predictions"]) == batch
                    seen.append((version, started_after_swap))
                    if version == 2:
                        swapped.set()
                    if started_after_swap:
                        after += 1

            callers = [asyncio.create_task(caller(1 if i % 2 else 100)) for i in range(16)]

            async def warmed_up() -> bool:
                return len(seen) >= 50

            await eventually(warmed_up, timeout=15)
            await w.promote(2, tiny_model(w.spec, flip=True))
            await asyncio.wait_for(asyncio.gather(*callers), timeout=30)

        assert failures == []
        assert {version for version, _ in seen} == {1, 2}
        assert {version for version, after in seen if after} == {2}


async def test_every_served_prediction_is_recorded_in_the_store(
    store_url: str, kafka: str, tmp_path: Path
):
    async with world(store_url, kafka, tmp_path) as w:
        await w.promote(1, tiny_model(w.spec), publish=False)
        served: dict[str, tuple[str | None, str]] = {}
        async with serving(w.settings) as client:
            url = f"/v1/tasks/{w.task}/predict"
            for i in range(20):
                body = {"features": RECORD, "entity_id": f"e{i}"}
                [p] = (await client.post(url, json=body)).json()["predictions"]
                served[p["prediction_id"]] = (f"e{i}", p["label"])
            records = [{"features": RECORD} for _ in range(120)]
            for p in (await client.post(url, json={"records": records})).json()["predictions"]:
                served[p["prediction_id"]] = (None, p["label"])

            async def all_recorded() -> bool:
                events = await w.store.read_stream(prediction_stream(w.task))
                return sum(len(e.payload["predictions"]) for e in events) == len(served)

            await eventually(all_recorded, timeout=10)  # recorded while serving, not only on exit

        events = await w.store.read_stream(prediction_stream(w.task))
        # Many predictions to an event: the 120-record request's rows share one at least.
        assert len(events) < len(served) == 140
        seen = set()
        for event in events:
            data = event.data()
            assert isinstance(data, PredictionServed) and data.task == w.task
            assert event.producer.service == "serving"
            for p in data.predictions:
                assert (p.entity_id, p.label) == served[str(p.prediction_id)]
                assert p.model_version == 1 and p.features == RECORD
                assert p.probability > 0.5 and p.role == "champion"
                assert p.served_at is not None and p.served_at <= event.occurred_at
                seen.add(str(p.prediction_id))
        assert seen == set(served)


async def test_a_model_that_cannot_load_yet_keeps_the_old_champion_and_is_retried(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with world(sqlite_url, kafka, tmp_path) as w:
        await w.promote(1, tiny_model(w.spec), publish=False)
        async with serving(w.settings) as client:
            # Version 2's artifact is not in the store yet (a copy still on its way).
            late = tiny_model(w.spec, flip=True)
            await w.decide(
                ModelPromoted(
                    task=w.task,
                    model_version=2,
                    artifact_sha256=sha256(late),
                    previous_version=1,
                    reason="test",
                    decided_by="tests",
                )
            )

            async def behind() -> bool:
                ready = await client.get("/readyz")
                return ready.status_code == 503 and "could not load" in ready.text

            await eventually(behind, timeout=15)
            answered = await client.post(f"/v1/tasks/{w.task}/predict", json={"features": RECORD})
            assert answered.json()["model_version"] == 1  # the old champion keeps serving

            w.artifacts.put(late)  # the file arrives
            await eventually(version_becomes(client, w.task, 2), timeout=15)
            assert (await client.get("/readyz")).status_code == 200


async def test_the_direct_predict_lane_answers_exactly_as_the_fastapi_route(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    """`ServingApp` answers predicts past FastAPI's machinery; the same requests sent through
    FastAPI's own route get the same status and body (prediction ids aside), errors included."""
    async with world(sqlite_url, kafka, tmp_path) as w:
        app = create_app(w.settings)
        assert isinstance(app, ServingApp)

        async def through_fastapi(scope, receive, send):  # the route, as if no direct lane
            await FastAPI.__call__(app, scope, receive, send)

        async with app.router.lifespan_context(app):
            clients = [
                httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://serving")
                for a in (app, through_fastapi)
            ]
            direct, routed = clients
            url = f"/v1/tasks/{w.task}/predict"
            json_type = {"content-type": "application/json"}
            cases: list[tuple[str, bytes | str, dict[str, str]]] = [
                (url, json.dumps({"features": RECORD}), json_type),  # 503: no model yet
            ]
            for _, body, headers in cases:
                answers = [await c.post(url, content=body, headers=headers) for c in clients]
                assert [a.status_code for a in answers] == [503, 503]
                assert answers[0].json() == answers[1].json()
            await w.promote(1, tiny_model(w.spec))
            await eventually(version_becomes(direct, w.task, 1), timeout=15)
            cases = [
                (url, json.dumps({"features": RECORD, "entity_id": "e1"}), json_type),
                (url, json.dumps({"records": [{"features": RECORD}] * 3}), json_type),
                (url, json.dumps({"features": RECORD}), {"content-type": "text/plain"}),
                (url, json.dumps({"features": RECORD}), {}),
                (url, json.dumps({"features": {"income": "x", "colour": "red"}}), json_type),
                (url, json.dumps({"features": RECORD, "entity_id": 7}), json_type),
                (url, json.dumps({"features": RECORD, "extra": 1}), json_type),
                (url, json.dumps({"records": []}), json_type),
                (url, json.dumps({"features": RECORD, "record": True}), json_type),
                (url, b"{", json_type),
                (url, b"", json_type),
                (url, b'{"features": {"income": NaN, "colour": "red"}}', json_type),
                (url, json.dumps({"features": RECORD, "entity_id": "\ud800"}), json_type),
                (
                    url,
                    b'{"features": {"income": 1.0, "colour": "' + b"r" * 5_000_000 + b'"}}',
                    json_type,
                ),
                ("/v1/tasks/nope/predict", json.dumps({"features": RECORD}), json_type),
                (url + "/", json.dumps({"features": RECORD}), json_type),
            ]
            for path, body, headers in cases:
                answers = [await c.post(path, content=body, headers=headers) for c in clients]
                first, second = answers
                assert first.status_code == second.status_code, (body[:100], first.text[:300])
                assert first.headers.get("content-type") == second.headers.get("content-type"), (
                    body[:100],
                    first.status_code,
                    first.headers,
                    second.headers,
                )
                if first.status_code == 200:
                    a, b = first.json(), second.json()
                    for p in a["predictions"] + b["predictions"]:
                        uuid.UUID(p.pop("prediction_id"))
                    assert a == b
                else:
                    assert first.content == second.content, (body[:100], first.text[:300])
            for c in clients:
                await c.aclose()
