"""Two serving replicas behind the same governance: a rollback under load reaches both within a
second and no request fails; both answer the same request identically (arm, model, probability)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from continuo.loop import loop_spec, with_every_arm
from continuo.stack import Stack, write_task_specs
from shared.tasks import PromotionPolicy

TASK = "replicas"
ROW = {"x1": 0.31, "x2": 0.72, "x3": 0.15, "x4": 0.93}


async def test_rollback_under_load_reaches_both_replicas_with_no_failed_request(
    sqlite_url: str, tmp_path: Path
):
    spec = loop_spec(TASK, publish_every=400).model_copy(
        update={"sensitive": (), "promotion": PromotionPolicy()}
    )
    stack = Stack(
        tmp_path, store_url=sqlite_url, env_overrides=write_task_specs(tmp_path / "tasks", [spec])
    )
    await stack.start()
    try:
        await with_every_arm(stack, TASK, rows=2000, groups=False)
        second = await stack.add_replica("serving")
        replicas = [stack.url("serving"), stack.url(second)]
        statuses: list[int] = []
        stop = asyncio.Event()

        async def load(url: str, worker: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                i = 0
                while not stop.is_set():
                    i += 1
                    body = {"features": ROW, "entity_id": f"e-{worker}-{i % 50}", "record": False}
                    response = await client.post(f"/v1/tasks/{TASK}/predict", json=body)
                    statuses.append(response.status_code)

        async def routing(client: httpx.AsyncClient, url: str) -> dict:
            return (await client.get(f"{url}/v1/tasks/{TASK}/routing")).json()

        workers = [asyncio.create_task(load(u, w)) for w in range(3) for u in replicas]
        async with (
            httpx.AsyncClient(
                base_url=stack.url("governance"), headers=stack.governance_headers()
            ) as gov,
            httpx.AsyncClient() as client,
        ):
            await asyncio.sleep(1.0)
            models = (await gov.get(f"/v1/tasks/{TASK}/models")).json()["models"]
            # An earlier champion that is neither the canary nor the shadow.
            earlier = max(m["model_version"] for m in models if m["status"] == "retired")
            started = time.perf_counter()
            back = await gov.post(
                f"/v1/tasks/{TASK}/rollback",
                json={"model_version": earlier, "reason": "rollback under load"},
            )
            assert back.status_code == 200, back.text
            pending = set(replicas)
            while pending and time.perf_counter() - started < 10:
                for url in list(pending):
                    if ((await routing(client, url))["champion"] or {}).get(
                        "model_version"
                    ) == earlier:
                        pending.discard(url)
                await asyncio.sleep(0.005)
            reached = time.perf_counter() - started
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*workers)
            views = [await routing(client, url) for url in replicas]
            answers = []
            for url in replicas:
                body = {"records": [{"features": ROW, "entity_id": f"e-{i}"} for i in range(40)]}
                response = await client.post(
                    f"{url}/v1/tasks/{TASK}/predict", json={**body, "record": False}
                )
                answers.append(
                    [
                        (p["role"], p["model_version"], p["probability"])
                        for p in response.json()["predictions"]
                    ]
                )
    finally:
        stack.stop()

    assert not pending, f"a replica did not apply the rollback within 10 s: {pending}"
    # The goal is 1 s (bench/serving.py measures it, about 0.2 s here); the margin keeps a busy
    # CI machine from failing the build on scheduling noise.
    assert reached <= 2.0, reached
    assert len(statuses) > 200 and set(statuses) == {200}, {
        s: statuses.count(s) for s in set(statuses)
    }
    for view in views:
        view.pop("stream_version")
    assert views[0] == views[1] and views[0]["champion"]["model_version"] == earlier
    assert answers[0] == answers[1]
    assert {role for role, _, _ in answers[0]} == {"champion", "canary"}
