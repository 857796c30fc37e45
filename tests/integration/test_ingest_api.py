"""The ingest service over HTTP, on the real event store (SQLite and PostgreSQL) and broker."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.ingest.app import create_app
from services.ingest.records import resolve_id
from services.ingest.settings import IngestSettings
from shared.bus import decode
from shared.events.types import TOPIC_DATA, LabelRecorded, ObservationRecorded, data_stream
from shared.settings import REPO_ROOT
from shared.store.sql import SqlEventStore, open_event_store
from shared.tasks import load_spec
from tests.support import eventually

MAX_RECORDS = 200
MAX_BODY = 64 * 1024
FEATURES = {
    "period": 0.5,
    "nswprice": 0.06,
    "nswdemand": 0.4,
    "vicprice": 0.003,
    "vicdemand": 0.42,
    "transfer": 0.41,
}
NDJSON = {"content-type": "application/x-ndjson"}


@dataclass
class Ingest:
    http: httpx.AsyncClient
    store: SqlEventStore
    store_url: str

    async def data_events(self) -> list:
        return await self.store.read_stream(data_stream("elec"))


@pytest.fixture
async def ingest(store_url: str, kafka: str, tmp_path: Path) -> AsyncIterator[Ingest]:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(REPO_ROOT / "tasks" / "elec.yaml", tasks)
    settings = IngestSettings(
        environment="test",
        store_url=store_url,
        kafka_bootstrap_servers=kafka,
        tasks_dir=tasks,
        artifacts_dir=tmp_path / "artifacts",
        max_records=MAX_RECORDS,
        max_body_bytes=MAX_BODY,
    )
    app = create_app(settings)
    store = open_event_store(store_url)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            yield Ingest(http, store, store_url)
    await store.close()


def record(entity: str = "nsw", **overrides) -> dict:
    return {"entity_id": entity, "features": dict(FEATURES), **overrides}


async def post(ingest: Ingest, rows: list[dict], kind: str = "observations") -> httpx.Response:
    return await ingest.http.post(f"/v1/tasks/elec/{kind}", json=rows)


# -- accepted --------------------------------------------------------------------------------------


async def test_observations_are_accepted_with_their_ids_and_stored_as_events(ingest: Ingest):
    rows = [record(label=1), record(event_time="2024-01-01T00:30:00Z"), record(event_id="r-3")]
    response = await post(ingest, rows)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 3 and body["duplicates"] == 0
    ids = [uuid.UUID(i) for i in body["ids"]]
    assert ids[2] == resolve_id("elec", "r-3")
    stored = await ingest.data_events()
    assert [e.event_id for e in stored] == ids
    assert [e.position for e in stored] == body["positions"]
    version = load_spec(REPO_ROOT / "tasks" / "elec.yaml").version
    first = stored[0].data()
    assert isinstance(first, ObservationRecorded)
    assert first.label == 1 and first.pipeline_version == version and first.features == FEATURES
    assert stored[1].occurred_at.isoformat() == "2024-01-01T00:30:00+00:00"
    assert all(e.producer.service == "ingest" for e in stored)
    assert len({e.correlation_id for e in stored}) == 1


async def test_re_posting_the_same_records_reports_duplicates_and_stores_nothing_new(
    ingest: Ingest,
):
    body = b"\n".join(orjson.dumps(record(event_id=f"row-{i}")) for i in range(5))
    first = await ingest.http.post("/v1/tasks/elec/observations", content=body, headers=NDJSON)
    again = await ingest.http.post("/v1/tasks/elec/observations", content=body, headers=NDJSON)
    assert first.status_code == again.status_code == 202
    assert first.json()["accepted"] == 5
    assert again.json() == {**first.json(), "accepted": 0, "duplicates": 5}
    assert len(await ingest.data_events()) == 5


async def test_late_labels_are_accepted_and_refer_to_their_observations(ingest: Ingest):
    posted = await post(ingest, [record("e1", event_id="o-1"), record("e2")])
    observation_ids = posted.json()["ids"]
    labels = [
        {"observation_id": "o-1", "label": 0},
        {"observation_id": observation_ids[1], "label": 1},
    ]
    response = await post(ingest, labels, "labels")
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    again = await post(ingest, labels, "labels")
    assert again.json()["duplicates"] == 2 and again.json()["ids"] == response.json()["ids"]
    stored = await ingest.store.get(uuid.UUID(i) for i in response.json()["ids"])
    by_observation = {}
    for event in stored.values():
        data = event.data()
        assert isinstance(data, LabelRecorded)
        by_observation[str(data.observation_id)] = (data.entity_id, data.label)
    assert by_observation == {observation_ids[0]: ("e1", 0), observation_ids[1]: ("e2", 1)}
    assert len(await ingest.data_events()) == 4


async def test_stored_observations_reach_the_data_topic(ingest: Ingest, kafka: str):
    response = await post(ingest, [record(), record()])
    ids = set(response.json()["ids"])
    consumer = AIOKafkaConsumer(
        TOPIC_DATA, bootstrap_servers=kafka, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: set[str] = set()

    async def arrived() -> bool:
        for batch in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
            seen.update(str(e.event_id) for r in batch for e in decode(r.value))
        return ids <= seen

    try:
        await eventually(arrived, timeout=20)
    finally:
        await consumer.stop()


async def test_the_catalogue_lists_tasks_with_their_versions(ingest: Ingest):
    version = load_spec(REPO_ROOT / "tasks" / "elec.yaml").version
    listed = (await ingest.http.get("/v1/tasks")).json()["tasks"]
    assert [(t["name"], t["version"]) for t in listed] == [("elec", version)]
    one = (await ingest.http.get("/v1/tasks/elec")).json()
    assert one["version"] == version and one["spec"]["target"]["name"] == "class"
    assert (await ingest.http.get("/readyz")).status_code == 200


# -- refused ---------------------------------------------------------------------------------------


async def test_an_unknown_task_is_not_found(ingest: Ingest):
    response = await ingest.http.post("/v1/tasks/nope/observations", json=[record()])
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown task 'nope'; known: elec"}
    assert (await ingest.http.get("/v1/tasks/nope")).status_code == 404


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'[{"entity_id": "a",\n "features": {]', "line 2"),
        (b'{"entity_id": "a"}\n{oops}', "line 2"),
        (b"", "empty"),
        (b"[]", "no records"),
        (b"[1, 2]", "expected a JSON object"),
    ],
)
async def test_a_malformed_body_is_a_bad_request(ingest: Ingest, content: bytes, message: str):
    response = await ingest.http.post("/v1/tasks/elec/observations", content=content)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert await ingest.data_events() == []


async def test_invalid_records_are_listed_by_index_and_nothing_is_stored(ingest: Ingest):
    rows = [record(), record(features={"period": "x"}), record(), record(label=7)]
    response = await post(ingest, rows)
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "2 of 4 records are invalid; nothing was stored"
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert "label: 7" in body["errors"][1]["error"]
    assert await ingest.data_events() == []


async def test_a_422_lists_at_most_a_hundred_errors_and_counts_the_rest(ingest: Ingest):
    rows = [record(), *({"entity_id": ""} for _ in range(150))]
    body = (await post(ingest, rows)).json()
    assert body["detail"] == "150 of 151 records are invalid; nothing was stored"
    assert body["invalid"] == 150 and body["total"] == 151 and body["errors_omitted"] == 50
    assert [e["index"] for e in body["errors"]] == list(range(1, 101))


async def test_a_body_too_large_is_refused_whether_declared_or_streamed(ingest: Ingest):
    big = orjson.dumps([record(entity="x" * (MAX_BODY // 2)), record(entity="y" * (MAX_BODY // 2))])
    declared = await ingest.http.post("/v1/tasks/elec/observations", content=big)
    assert declared.status_code == 413 and "larger than" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: enforced while reading
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = await ingest.http.post(
        "/v1/tasks/elec/observations",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    assert await ingest.data_events() == []


async def test_too_many_records_are_refused(ingest: Ingest):
    response = await post(ingest, [record() for _ in range(MAX_RECORDS + 1)])
    assert response.status_code == 413 and f"limit is {MAX_RECORDS}" in response.json()["detail"]
    assert await ingest.data_events() == []


async def test_a_body_that_is_not_json_is_an_unsupported_media_type(ingest: Ingest):
    response = await ingest.http.post(
        "/v1/tasks/elec/observations", content=b"a,b\n1,2", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 415 and "text/csv" in response.json()["detail"]


async def test_labels_for_unknown_observations_are_refused_and_nothing_is_stored(ingest: Ingest):
    posted = await post(ingest, [record(event_id="known")])
    labels = [
        {"observation_id": "known", "label": 1},
        {"observation_id": "unknown", "label": 1},
        {"observation_id": str(uuid.uuid4()), "label": 0},
    ]
    response = await post(ingest, labels, "labels")
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [1, 2]
    assert errors[0]["error"].startswith("unknown observation 'unknown'")
    # A label is not an observation: labelling a label is refused too.
    first_label = await post(ingest, labels[:1], "labels")
    label_id = first_label.json()["ids"][0]
    refused = await post(ingest, [{"observation_id": label_id, "label": 0}], "labels")
    assert refused.status_code == 422
    assert [e.event_id for e in await ingest.data_events()] == [
        uuid.UUID(posted.json()["ids"][0]),
        uuid.UUID(label_id),
    ]


async def test_a_store_outage_is_unavailable_and_the_retry_is_stored(ingest: Ingest):
    engine = create_async_engine(ingest.store_url)
    rows = [record(event_id="during-outage")]
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events RENAME TO events_away"))
        response = await post(ingest, rows)
        assert response.status_code == 503
        assert "nothing was stored" in response.json()["detail"]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events_away RENAME TO events"))
        await engine.dispose()
    retry = await post(ingest, rows)
    assert retry.status_code == 202 and retry.json()["accepted"] == 1


async def test_a_client_uuid_already_used_by_another_task_is_refused_not_dropped(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    elec = (REPO_ROOT / "tasks" / "elec.yaml").read_text()
    (tasks / "elec.yaml").write_text(elec)
    (tasks / "elec2.yaml").write_text(elec.replace("name: elec", "name: elec2"))
    settings = IngestSettings(
        environment="test",
        store_url=sqlite_url,
        kafka_bootstrap_servers=kafka,
        tasks_dir=tasks,
        artifacts_dir=tmp_path / "artifacts",
    )
    app = create_app(settings)
    key = str(uuid.uuid4())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            first = await http.post("/v1/tasks/elec/observations", json=[record(event_id=key)])
            assert first.status_code == 202
            again = await http.post("/v1/tasks/elec/observations", json=[record(event_id=key)])
            assert again.status_code == 202 and again.json()["duplicates"] == 1  # a retry
            other = await http.post("/v1/tasks/elec2/observations", json=[record(event_id=key)])
    assert other.status_code == 422
    assert "already names an event of another stream" in other.json()["errors"][0]["error"]


# -- hostile input: every refusal is a 4xx naming the record, and nothing is stored ---------------


async def test_an_event_id_re_posted_with_other_content_is_a_conflict_that_names_it(
    ingest: Ingest,
):
    first = await post(ingest, [record(event_id="r-1"), record(event_id="r-2", label=0)])
    assert first.status_code == 202
    # The same ids, the same content: retries, reported as duplicates.
    same = await post(ingest, [record(event_id="r-1"), record(event_id="r-2", label=0)])
    assert same.status_code == 202 and same.json()["duplicates"] == 2
    # Another label under r-2 is not a retry: 409 naming it, and nothing of the request stored.
    changed = await post(ingest, [record(event_id="r-3"), record(event_id="r-2", label=1)])
    assert changed.status_code == 409, changed.text
    [error] = changed.json()["errors"]
    assert error["index"] == 1 and "recorded before with other content" in error["error"]
    assert len(await ingest.data_events()) == 2
    [stored] = [e for e in await ingest.data_events() if e.event_id == resolve_id("elec", "r-2")]
    assert stored.payload["label"] == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"event_time": "0001-01-01T00:00:00+01:00"}, "out of range in UTC"),
        ({"event_time": "9999-12-31T23:59:59-05:00"}, "out of range in UTC"),
        ({"entity_id": "a\u0000b"}, "NUL character"),
        ({"event_id": "key\u0000"}, "NUL character"),
        ({"features": {**FEATURES, "x" * 10_000: 1.0}}, "unknown feature"),
    ],
)
async def test_extreme_values_and_unstorable_text_are_refused_by_record(
    ingest: Ingest, overrides: dict, message: str
):
    response = await post(ingest, [record(), record(**overrides)])
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["index"] == 1 and message in error["error"], error
    assert len(error["error"]) < 500  # a huge value is not echoed back
    assert await ingest.data_events() == []
