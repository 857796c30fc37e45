"""The whole loop with the four services as separate processes: ingest -> store -> Kafka ->
trainer -> governance -> serving, on the embedded broker and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx

from continuo.demo import find_elec, read_rows, stream_elec, wait_for_serving, wait_until_learned
from continuo.stack import Stack
from shared.store.sql import open_event_store


async def test_posted_labelled_records_become_a_model_that_serving_answers_with(
    pg_url: str, tmp_path: Path
):
    rows = read_rows(find_elec(), limit=2000)
    stack = Stack(tmp_path, store_url=pg_url)
    await stack.start()
    try:
        streamed = await stream_elec(
            stack.url("ingest"), rows, batch=100, label_delay=1, progress=False
        )
        assert streamed.observations == streamed.labels == 2000
        await wait_until_learned(stack.url("trainer"), "elec", 2000, timeout=60)
        served = await wait_for_serving(stack, "elec", timeout=60)
        async with httpx.AsyncClient(
            base_url=stack.url("governance"), headers=stack.governance_headers()
        ) as client:
            lineage = (await client.get("/v1/tasks/elec/models/1/lineage")).json()
    finally:
        stack.stop()

    models = served["models"]["models"]
    assert [m["model_version"] for m in models] == [1]
    assert served["prediction"]["model_version"] == 1
    assert 0.0 <= served["prediction"]["predictions"][0]["probability"] <= 1.0
    assert lineage["data"]["labelled_events_learned"] == 2000
    assert lineage["decisions"][0]["type"] == "ModelPromoted"

    store = open_event_store(pg_url)
    types = [e.type for e in await store.read_all(limit=10_000)]
    await store.close()
    assert types.count("ObservationRecorded") == types.count("LabelRecorded") == 2000
    assert types.count("ModelTrained") == 1 and types.count("ModelPromoted") == 1
