"""Log and wait, and online features, through the real ingest and serving apps on a real store.

A predict call records its rows as observations (with the online-feature values used and the
answer); labels name the prediction id; the trainer learns each row once, with exactly what
serving used. Serving's online features are the trainer's: the same events give the same values,
bit for bit.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.serving.app import create_app as serving_app
from services.serving.settings import ServingSettings
from services.trainer.core import TaskTraining
from services.trainer.service import Trainer
from shared import model_codec
from shared.artifacts import FileArtifactStore
from shared.bus import KafkaPublisher
from shared.events.envelope import new_event
from shared.events.types import (
    FlagChanged,
    ModelPromoted,
    ObservationRecorded,
    data_stream,
    deployment_stream,
)
from shared.features import OnlineFold, data_event
from shared.relay import Relay
from shared.runtime import Runtime
from shared.settings import CommonSettings
from shared.store.sql import SqlEventStore, open_event_store
from shared.tasks import TaskSpec
from tests.support import TEST_PRODUCER, eventually

ONLINE = [
    {"name": "last", "kind": "last_label"},
    {"name": "mean3", "kind": "label_mean", "window": 3},
    {"name": "age", "kind": "label_age"},
    {"name": "count", "kind": "count"},
    {"name": "x_dev5", "kind": "deviation", "source": "x", "window": 5},
    {"name": "rows_seen", "kind": "count", "scope": "task"},
]


def make_spec() -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": f"lw{uuid.uuid4().hex[:8]}",
            "features": [
                {"name": "x"},
                {"name": "c", "type": "category", "categories": ["a", "b"]},
            ],
            "target": {"name": "y"},
            "online_features": ONLINE,
            "learner": {"publish_every": 1000},
        }
    )


def linear_model(spec: TaskSpec) -> bytes:
    """A model that leans on x and on the last label (so online features matter)."""
    n = len(spec.input_names)
    coef = [1.0, 0.2] + [1.5, 0.5, 0.0, 0.0, 0.3, 0.0]
    member = model_codec.LinearMember(tuple(coef), 0.0, (0.0,) * n, (1.0,) * n, 5.0)
    return model_codec.encode(
        n_features=n, members=[(1.0, member)], feature_names=list(spec.input_names)
    )


@dataclass
class Apps:
    spec: TaskSpec
    store: SqlEventStore
    ingest: httpx.AsyncClient
    serving: httpx.AsyncClient
    settings: CommonSettings
    relay: Relay
    positions: list[int] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.spec.name

    async def predict(self, rows: list[tuple[str, float, int]], **extra) -> httpx.Response:
        body = {
            "records": [
                {"features": {"x": x, "c": "ab"[i % 2]}, "entity_id": entity}
                for i, (entity, x, _) in enumerate(rows)
            ],
            **extra,
        }
        return await self.serving.post(f"/v1/tasks/{self.task}/predict", json=body)

    async def label(self, labels: list[dict]) -> httpx.Response:
        response = await self.ingest.post(f"/v1/tasks/{self.task}/labels", json=labels)
        if response.status_code == 202:
            self.positions += response.json()["positions"]
        return response

    async def promote(self, model: bytes) -> None:
        digest = FileArtifactStore(self.settings.artifacts_dir).put(model)
        decision = ModelPromoted(
            task=self.task,
            model_version=1,
            artifact_sha256=digest,
            previous_version=None,
            reason="test",
            decided_by="tests",
        )
        await self.store.append(
            [new_event(decision, stream_id=deployment_stream(self.task), producer=TEST_PRODUCER)]
        )
        while await self.relay.publish_once():
            pass

        async def served() -> bool:
            response = await self.serving.get(f"/v1/tasks/{self.task}/model")
            return response.status_code == 200

        await eventually(served, timeout=15)


@asynccontextmanager
async def apps(store_url: str, kafka: str, tmp_path: Path) -> AsyncIterator[Apps]:
    spec = make_spec()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{spec.name}.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    common = {
        "environment": "test",
        "store_url": store_url,
        "kafka_bootstrap_servers": kafka,
        "artifacts_dir": tmp_path / "artifacts",
        "tasks_dir": tasks,
    }
    ingest, serving = ingest_app(IngestSettings(**common)), serving_app(ServingSettings(**common))
    store = open_event_store(store_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    relay = Relay(store, publisher, producer=TEST_PRODUCER.service)
    async with ingest.router.lifespan_context(ingest):  # registers the task
        async with serving.router.lifespan_context(serving):
            async with (
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=ingest), base_url="http://ingest"
                ) as i,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=serving), base_url="http://serving"
                ) as s,
            ):
                yield Apps(spec, store, i, s, CommonSettings(**common), relay)
    await publisher.stop()
    await store.close()


async def data_events(a: Apps) -> list:
    return await a.store.read_stream(data_stream(a.task))


def refolded(spec: TaskSpec, events: list) -> dict[uuid.UUID, list[float]]:
    """Each observation's online values as the trainer's fold computes them at its place in the
    stream, ignoring any values recorded with it."""
    fold, out = OnlineFold(spec), {}
    for envelope in events:
        event = data_event(envelope)
        assert event is not None
        if not event.is_label:
            event = dataclasses.replace(event, online=None)
        values = fold.apply(event)
        if values is not None:
            out[event.event_id] = values
    return out


class SpyLearner:
    """Records what it learns; predicts 0.5."""

    def __init__(self) -> None:
        self.learned: list[tuple[list[float], int]] = []
        self.n_updates = 0

    def predict_proba(self, X):
        return np.full(len(X), 0.5)

    def predict_on_arrival(self, X):
        return self.predict_proba(X), None

    def learn(self, X, y, proba, configs=None):
        self.learned += list(zip(X.tolist(), y.tolist(), strict=True))

    def test_then_train(self, X, y):
        raise AssertionError("every row here is labelled late")

    def model_bytes(self, learned_through: int = 0, residuals=None) -> bytes:
        return b"{}"

    def champion_config(self) -> str:
        return "spy"

    @property
    def metrics(self) -> dict[str, float]:
        return {}


async def test_a_served_row_is_recorded_labelled_by_prediction_id_and_learned_once_as_served(
    store_url: str, kafka: str, tmp_path: Path
):
    async with apps(store_url, kafka, tmp_path) as a:
        await a.promote(linear_model(a.spec))
        answered = []
        rows = [("ann", 0.2, 1), ("bob", -1.0, 0), ("ann", 0.9, 1), ("bob", 0.4, 0)]
        for start in range(0, len(rows), 2):
            response = await a.predict(
                rows[start : start + 2],
                record=True,
                after_position=max(a.positions, default=0),
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["recorded"] is True and body["model_version"] == 1
            answered += body["predictions"]
            labels = [
                {"prediction_id": p["prediction_id"], "label": y}
                for p, (_, _, y) in zip(body["predictions"], rows[start : start + 2], strict=True)
            ]
            assert (await a.label(labels)).status_code == 202
        # Ann's second row saw her first label (1); Bob's second saw his (0).
        assert [p["online_features"]["last"] for p in answered] == [0.5, 0.5, 1.0, 0.0]

        events = await data_events(a)
        observations = [e for e in events if e.type == "ObservationRecorded"]
        assert [str(e.event_id) for e in observations] == [p["prediction_id"] for p in answered]
        for event, prediction in zip(observations, answered, strict=True):
            data = event.data()
            assert isinstance(data, ObservationRecorded)
            assert data.online == prediction["online_features"]
            assert data.served is not None and data.served.model_version == 1
            assert data.served.probability == prediction["probability"]

        # The trainer learns each row once (Kafka may deliver twice), with the served inputs.
        runtime = Runtime.build("trainer", a.settings)
        spy = SpyLearner()
        trainer = Trainer(runtime, learner_factory=lambda spec: spy)
        await trainer.handle(events)
        await trainer.handle(events)  # redelivered
        await runtime.store.close()
        served_inputs = [
            [x, float(i % 2)] + [p["online_features"][f["name"]] for f in ONLINE]
            for i, ((_, x, _), p) in enumerate(zip(rows, answered, strict=True))
        ]
        assert spy.learned == [(x, y) for x, (_, _, y) in zip(served_inputs, rows, strict=True)]

        # A label for a prediction serving never recorded is refused, naming it.
        ghost = str(uuid.uuid4())
        refused = await a.label([{"prediction_id": ghost, "label": 1}])
        assert refused.status_code == 422 and ghost in refused.text


@pytest.mark.parametrize(
    ("entities", "requests", "largest"),
    [(3, 30, 4), (1_000, 60, 40)],
    ids=["few-entities", "many-interleaved-entities"],
)
async def test_with_read_your_writes_served_values_equal_the_trainers_fold_bit_for_bit(
    sqlite_url: str, kafka: str, tmp_path: Path, entities: int, requests: int, largest: int
):
    rng = np.random.default_rng(4)
    async with apps(sqlite_url, kafka, tmp_path) as a:
        await a.promote(linear_model(a.spec))
        waiting: list[list[dict]] = []
        for _ in range(requests):
            rows = [
                (f"e{rng.integers(entities)}", float(rng.normal()), int(rng.integers(2)))
                for _ in range(int(rng.integers(1, largest + 1)))
            ]
            response = await a.predict(
                rows, record=True, after_position=max(a.positions, default=0)
            )
            assert response.status_code == 200, response.text
            waiting.append(
                [
                    {"prediction_id": p["prediction_id"], "label": y}
                    for p, (_, _, y) in zip(response.json()["predictions"], rows, strict=True)
                ]
            )
            if len(waiting) > 2:  # labels two requests late
                assert (await a.label(waiting.pop(0))).status_code == 202
        events = await data_events(a)
        recorded = {e.event_id: e.data() for e in events if e.type == "ObservationRecorded"}
        trainer_values = refolded(a.spec, events)
        assert len(trainer_values) == len(recorded) > 30
        for event_id, data in recorded.items():
            assert isinstance(data, ObservationRecorded) and data.online is not None
            assert [data.online[f["name"]] for f in ONLINE] == trainer_values[event_id]

        # And serving's live fold, synced to the head, holds the trainer core's state exactly.
        head = await a.store.head()
        core = TaskTraining(a.spec, SpyLearner())
        core.apply(events)
        probe = {"x": 0.123456789, "c": "a"}
        live = await a.serving.post(
            f"/v1/tasks/{a.task}/predict",
            json={
                "records": [{"features": probe, "entity_id": f"e{k}"} for k in range(4)],
                "after_position": head,
            },
        )
        assert live.status_code == 200, live.text
        for k, prediction in enumerate(live.json()["predictions"]):
            expected = core.fold.values(f"e{k}", probe)
            assert [prediction["online_features"][f["name"]] for f in ONLINE] == expected


async def test_before_the_first_model_recorded_rows_are_kept_and_answered_with_nothing(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with apps(sqlite_url, kafka, tmp_path) as a:
        plain = await a.predict([("ann", 0.1, 0)])
        assert plain.status_code == 503  # nothing to answer with, nothing recorded
        cold = await a.predict([("ann", 0.1, 0)], record=True)
        assert cold.status_code == 200, cold.text
        body = cold.json()
        assert body["model_version"] is None and body["recorded"] is True
        [prediction] = body["predictions"]
        assert prediction["probability"] is None and prediction["label"] is None
        [event] = await data_events(a)
        data = event.data()
        assert isinstance(data, ObservationRecorded) and data.served is None
        label = [{"prediction_id": prediction["prediction_id"], "label": 0}]
        assert (await a.label(label)).status_code == 202


async def test_a_row_needs_its_entity_where_online_features_are_per_entity(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with apps(sqlite_url, kafka, tmp_path) as a:
        await a.promote(linear_model(a.spec))
        response = await a.serving.post(
            f"/v1/tasks/{a.task}/predict", json={"features": {"x": 1.0, "c": "a"}}
        )
        assert response.status_code == 422
        assert "entity_id: required" in response.text and "per-entity" in response.text
        assert await data_events(a) == []


async def test_a_flag_turns_one_online_feature_off_for_answers_and_records_alike(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    async with apps(sqlite_url, kafka, tmp_path) as a:
        await a.promote(linear_model(a.spec))
        first = (await a.predict([("ann", 0.2, 1)], record=True)).json()["predictions"][0]
        await a.label([{"prediction_id": first["prediction_id"], "label": 1}])
        before = (await a.predict([("ann", 0.9, 1)], after_position=max(a.positions))).json()
        assert before["predictions"][0]["online_features"]["last"] == 1.0
        flag = FlagChanged(
            task=a.task,
            key="online_features.last",
            flag={"type": "boolean", "value": False},
            reason="is last label leaking?",
            decided_by="tests",
        )
        await a.store.append(
            [new_event(flag, stream_id=deployment_stream(a.task), producer=TEST_PRODUCER)]
        )
        while await a.relay.publish_once():
            pass

        async def off() -> dict | None:
            body = (
                await a.predict([("ann", 0.9, 1)], record=True, after_position=max(a.positions))
            ).json()
            return body if body["predictions"][0]["online_features"]["last"] == 0.5 else None

        after = (await eventually(off))["predictions"][0]
        # Only that feature went back to its default; the rest still follow ann's history.
        assert after["online_features"]["mean3"] == 1.0
        [recorded] = [e for e in await data_events(a) if str(e.event_id) == after["prediction_id"]]
        assert recorded.payload["online"]["last"] == 0.5  # the trainer learns what was served
