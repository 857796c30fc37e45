"""A new pipeline version through the running system, no service restarted: registered and started
in governance, it catches up by replay in the trainer; one of its models runs as a canary beside
the first pipeline's champion, each answering with its own pipeline's inputs; it is promoted and
serving answers with its inputs; a rollback to the first pipeline's champion switches the trainer
back, a rollback to the new one's switches it forward again; no request to serving fails."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from continuo.caller import Timing, stream_through_serving, wait_until_learned
from continuo.loop import drift_stream, loop_spec
from continuo.stack import Stack, write_task_specs
from shared.tasks import LearnerSpec, OnlineFeature, PromotionPolicy

TASK = "pipelines"
ROW = {"x1": 0.31, "x2": 0.72, "x3": 0.15, "x4": 0.93}

# The policy promotes every model here: this test is about switching pipelines, not judging them.
FIRST = loop_spec(TASK, publish_every=300).model_copy(
    update={"sensitive": (), "promotion": PromotionPolicy(tolerance=1.0)}
)
# Another version: the entity's last label as an online feature, another cadence, and a
# person approves its models (so one runs as a canary first).
SECOND = FIRST.model_copy(
    update={
        "online_features": (OnlineFeature(name="last", kind="last_label", scope="entity"),),
        "learner": LearnerSpec(publish_every=200),
        "promotion": PromotionPolicy(tolerance=1.0, require_approval=True, approvals_required=1),
    }
)


async def _until(probe, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := await probe():
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError(what)


async def test_a_pipeline_is_started_promoted_rolled_back_and_forward_live(
    sqlite_url: str, tmp_path: Path
):
    stack = Stack(
        tmp_path, store_url=sqlite_url, env_overrides=write_task_specs(tmp_path / "tasks", [FIRST])
    )
    await stack.start()
    features, labels, entities = drift_stream(3000, drift_at=3000, groups=False)
    urls = {name: stack.url(name) for name in ("serving", "ingest")}
    learned = 0
    statuses: list[int] = []
    stop = asyncio.Event()

    async def stream(start: int, stop_at: int) -> None:
        nonlocal learned
        await stream_through_serving(
            urls,
            TASK,
            features[start:stop_at],
            labels[start:stop_at],
            Timing(50, 0),
            entities=entities[start:stop_at],
            progress=False,
        )
        learned += stop_at - start
        await wait_until_learned(stack.url("trainer"), TASK, learned, timeout=120)

    async def load() -> None:
        async with httpx.AsyncClient(base_url=stack.url("serving"), timeout=10) as client:
            i = 0
            while not stop.is_set():
                i += 1
                body = {"features": ROW, "entity_id": f"entity-{i % 50}", "record": False}
                statuses.append(
                    (await client.post(f"/v1/tasks/{TASK}/predict", json=body)).status_code
                )
                await asyncio.sleep(0.01)

    try:
        await stream(0, 900)
        worker = asyncio.create_task(load())
        async with (
            httpx.AsyncClient(
                base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
            ) as gov,
            httpx.AsyncClient(base_url=stack.url("serving"), timeout=10) as serving,
        ):
            base = f"/v1/tasks/{TASK}"

            async def pipelines() -> dict[str, Any]:
                return (await gov.get(f"{base}/pipelines")).json()

            async def models() -> list[dict[str, Any]]:
                return (await gov.get(f"{base}/models")).json()["models"]

            async def champion_pipeline(wanted: str) -> bool:
                return (await pipelines())["champion"] == wanted

            async def champion_of(pipeline: str) -> dict[str, Any] | None:
                found = [m for m in await models() if m["status"] == "champion"]
                return found[0] if found and found[0]["pipeline_version"] == pipeline else None

            async def serving_folds(version: str) -> bool:
                status = (await serving.get(f"{base}/online")).json()
                return version in status.get("spec_versions", [])

            async def serving_canary(version: int) -> bool:
                routing = (await serving.get(f"{base}/routing")).json()
                return (routing["canary"] or {}).get("model_version") == version

            async def serving_answers_with(version: int) -> bool:
                routing = (await serving.get(f"{base}/routing")).json()
                return (routing["champion"] or {}).get("model_version") == version

            listing = await pipelines()
            assert listing["running"] == listing["champion"] == FIRST.version
            first_champion = next(m for m in await models() if m["status"] == "champion")

            registered = await gov.post(
                f"{base}/pipelines",
                json={"spec": SECOND.model_dump(mode="json"), "reason": "the entity's last label"},
            )
            assert registered.status_code == 200, registered.text
            started = await gov.post(
                f"{base}/pipelines/{SECOND.version}/start",
                json={"from_version": 0, "reason": "try the entity's last label"},
            )
            assert started.status_code == 200, started.text

            # The trainer records the choice at its next batch, switches at the one after.
            await stream(900, 1200)
            await stream(1200, 1500)
            assert (await pipelines())["running"] == SECOND.version
            newer = [m for m in await models() if m["pipeline_version"] == SECOND.version]
            assert newer and all(
                m["model_version"] > first_champion["model_version"] for m in newer
            )
            assert (await pipelines())["champion"] == FIRST.version  # they await approval

            # The newest runs as a canary on half the entities, beside the first's champion.
            candidate = max(m["model_version"] for m in newer if m["role"] == "candidate")
            canary = await gov.post(
                f"{base}/canary",
                json={"model_version": candidate, "weight": 50, "reason": "try it on half"},
            )
            assert canary.status_code == 200, canary.text
            await _until(lambda: serving_canary(candidate), "serving routes half to it")
            # Its pipeline's online features are built in the background (the champion answers
            # its rows meanwhile).
            await _until(lambda: serving_folds(SECOND.version), "serving folds its pipeline")
            body = {
                "records": [{"features": ROW, "entity_id": f"entity-{i}"} for i in range(60)],
                "record": False,
            }
            answered = (await serving.post(f"{base}/predict", json=body)).json()["predictions"]
            roles = {p["role"]: p["model_version"] for p in answered}
            routing = (await serving.get(f"{base}/routing")).json()
            assert roles == {"champion": routing["champion"]["model_version"], "canary": candidate}
            assert roles["champion"] < candidate
            # Each with its own pipeline's online features.
            by_role = {p["role"]: p for p in answered}
            assert set(by_role["canary"]["online_features"]) == {"last"}
            assert set(by_role["champion"]["online_features"]) == set(FIRST.online_names)

            approved = await gov.post(
                f"{base}/models/{candidate}/approve", json={"reason": "the canary looks right"}
            )
            assert approved.status_code == 200 and approved.json()["promoted"], approved.text
            await _until(lambda: champion_pipeline(SECOND.version), "a model of it promoted")
            # The models' read model follows the decisions a moment later.
            second_champion = await _until(
                lambda: champion_of(SECOND.version), "the projection shows it"
            )
            await _until(
                lambda: serving_answers_with(second_champion["model_version"]), "serving swapped"
            )

            # Back to the first pipeline: one decision.
            back = await gov.post(
                f"{base}/rollback",
                json={"model_version": first_champion["model_version"], "reason": "compare back"},
            )
            assert back.status_code == 200, back.text
            await _until(
                lambda: serving_answers_with(first_champion["model_version"]), "rolled back"
            )
            await stream(1500, 1800)
            await stream(1800, 2100)
            assert (await pipelines())["running"] == FIRST.version
            await _until(lambda: champion_pipeline(FIRST.version), "the first pipeline answers")

            # And forward again: a rollback to the new pipeline's champion.
            forward = await gov.post(
                f"{base}/rollback",
                json={"model_version": second_champion["model_version"], "reason": "forward"},
            )
            assert forward.status_code == 200, forward.text
            await stream(2100, 2400)
            await stream(2400, 2700)
            assert (await pipelines())["running"] == SECOND.version
            await _until(lambda: champion_pipeline(SECOND.version), "forward again")
            trail = (
                await gov.get(
                    f"{base}/trail",
                    params=[
                        ("type", "PipelineStarted"),
                        ("type", "PipelineChosen"),
                        ("include", "data"),
                    ],
                )
            ).json()
            stop.set()
            await worker
    finally:
        stop.set()
        stack.stop()

    kinds = [e["type"] for e in trail["events"]]
    assert kinds.count("PipelineStarted") == 1 and kinds.count("PipelineChosen") == 3
    assert len(statuses) > 100 and set(statuses) == {200}, {
        s: statuses.count(s) for s in set(statuses)
    }
