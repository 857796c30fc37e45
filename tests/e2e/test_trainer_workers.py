"""Two trainer workers in one consumer group share streaming tasks (each owns the tasks on its
partitions of the data topic); when one is SIGKILLed mid-stream, the other takes its partitions
over: every stored label learned once, and every model byte-equal to a fault-free replay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from continuo.loop import loop_spec
from continuo.stack import Stack, write_task_specs
from services.trainer.service import replay_models
from shared.artifacts import sha256
from shared.events.types import ModelTrained, data_stream, model_stream
from shared.store.sql import open_event_store
from tests.support import (
    PARTITIONS,
    labelled_streams,
    owned_partitions,
    partition_of,
    partitions_split,
    tasks_on_every_partition,
)

ROWS = 1200  # per task
REQUEST = 50


async def _post(client: httpx.AsyncClient, ingest: str, task: str, rows: list[dict]) -> None:
    response = await client.post(f"{ingest}/v1/tasks/{task}/observations", json=rows)
    assert response.status_code == 202, response.text[:300]


async def test_two_workers_share_tasks_and_a_killed_ones_tasks_move_without_loss(
    sqlite_url: str, tmp_path: Path
):
    tasks = tasks_on_every_partition()
    specs = [loop_spec(task, publish_every=300) for task in tasks]
    stack = Stack(
        tmp_path, store_url=sqlite_url, env_overrides=write_task_specs(tmp_path / "tasks", specs)
    )
    await stack.start()
    try:
        second = await stack.add_replica("trainer")
        workers = {"trainer": stack.url("trainer"), second: stack.url(second)}
        streams = labelled_streams(tasks, ROWS)
        async with httpx.AsyncClient(timeout=30) as client:
            # Both workers in the group, the partitions split between them.
            split = await partitions_split(client, list(workers.values()), timeout=60)
            owned = dict(zip(workers, split, strict=True))
            ingest = stack.url("ingest")
            for start in range(0, ROWS // 2, REQUEST):
                for task in tasks:
                    await _post(client, ingest, task, streams[task][start : start + REQUEST])
            shares = {
                name: sorted(t for t in tasks if partition_of(t) in parts)
                for name, parts in owned.items()
            }
            assert all(shares.values()), shares  # each worker trains some of the tasks
            victim, survivor = "trainer", second
            stack.kill(victim)
            killed = time.monotonic()
            for start in range(ROWS // 2, ROWS, REQUEST):
                for task in tasks:
                    await _post(client, ingest, task, streams[task][start : start + REQUEST])
            taken_over = None
            deadline = time.monotonic() + 120
            while True:
                if taken_over is None and await owned_partitions(client, workers[survivor]) == set(
                    PARTITIONS
                ):
                    taken_over = time.monotonic() - killed
                status = (await client.get(f"{workers[survivor]}/v1/status")).json()["tasks"]
                if all(
                    status.get(t, {}).get("learned", 0) >= ROWS and status[t].get("settled")
                    for t in tasks
                ):
                    break
                assert time.monotonic() < deadline, f"not all learned: {status}"
                await asyncio.sleep(0.2)
        print(f"shares {shares}; {victim} killed, its partitions taken over in {taken_over:.1f} s")
        assert all(status[t]["learned"] == ROWS for t in tasks), status  # none learned twice
        store = open_event_store(sqlite_url)
        try:
            for task in tasks:
                rows = [
                    e
                    for e in await store.read_stream(data_stream(task))
                    if e.type == "ObservationRecorded" and e.payload.get("label") is not None
                ]
                assert len(rows) == ROWS  # every accepted row stored once
                stored = [e.data() for e in await store.read_stream(model_stream(task))]
                models = [
                    (m.model_version, m.artifact_sha256)
                    for m in stored
                    if isinstance(m, ModelTrained)
                ]
                _, made = await replay_models(store, task)
                assert models, task
                assert models == [(c.model_version, sha256(c.model_bytes)) for c in made], task
        finally:
            await store.close()
    finally:
        stack.stop()
