"""Pipeline versions through the trainer on a real store: a started pipeline catches up by replay
and publishes its models numbered on; a rollback to a model of the first pipeline switches back;
a restarted trainer, and a replay from scratch, make the same models."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from services.trainer.service import Trainer, replay_models, replay_pipeline
from shared.events.envelope import new_event
from shared.events.types import (
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    ObservationRecorded,
    PipelineStarted,
    data_stream,
    deployment_stream,
    model_stream,
)
from shared.registry import register_tasks
from shared.runtime import Runtime
from shared.settings import CommonSettings
from shared.store.sql import SqlEventStore
from shared.tasks import TaskSpec
from tests.support import TEST_PRODUCER

CONTINUO = str(Path(sys.executable).parent / "continuo")
FIRST = TaskSpec.model_validate(
    {
        "name": "pipes",
        "features": [{"name": "x"}, {"name": "z"}],
        "target": {"name": "y"},
        "online_features": [{"name": "last", "kind": "last_label"}],
        "learner": {"publish_every": 100},
    }
)
# Another version: one feature fewer, another online feature, another cadence.
SECOND = TaskSpec.model_validate(
    {
        **FIRST.model_dump(mode="json"),
        "features": [{"name": "x"}],
        "online_features": [{"name": "mean", "kind": "label_mean", "window": 20}],
        "learner": {"publish_every": 50},
    }
)


def _runtime(url: str, artifacts: Path) -> Runtime:
    return Runtime.build("trainer", CommonSettings(store_url=url, artifacts_dir=artifacts))


async def _rows(store: SqlEventStore, start: int, n: int) -> None:
    await store.append(
        [
            new_event(
                ObservationRecorded(
                    task="pipes",
                    pipeline_version=FIRST.version,
                    entity_id="e",
                    features={"x": (i % 10) / 10, "z": (i % 7) / 7},
                    label=int(i % 10 < 4),
                ),
                stream_id=data_stream("pipes"),
                producer=TEST_PRODUCER,
            )
            for i in range(start, start + n)
        ]
    )


async def _decide(store: SqlEventStore, *payloads) -> None:
    for payload in payloads:
        await store.append(
            [new_event(payload, stream_id=deployment_stream("pipes"), producer=TEST_PRODUCER)]
        )


async def _models(store: SqlEventStore) -> list[ModelTrained]:
    found = [e.data() for e in await store.read_stream(model_stream("pipes"))]
    return [m for m in found if isinstance(m, ModelTrained)]


async def _chosen(store: SqlEventStore) -> list[str]:
    """The pipeline versions the data stream's PipelineChosen events name, in order."""
    return [
        e.payload["pipeline_version"]
        for e in await store.read_stream(data_stream("pipes"))
        if e.type == "PipelineChosen"
    ]


async def _feed(trainer: Trainer, store: SqlEventStore, after: int) -> int:
    """What the data topic would deliver: the stream after `after`; returns its last version."""
    events = await store.read_stream(data_stream("pipes"), after_version=after)
    await trainer.handle(events)
    return events[-1].stream_version if events else after


def _promoted(model: ModelTrained, previous: int | None) -> ModelPromoted:
    return ModelPromoted(
        task="pipes",
        model_version=model.model_version,
        artifact_sha256=model.artifact_sha256,
        previous_version=previous,
        reason="test",
        decided_by="tester",
        pipeline_version=model.pipeline_version,
    )


def _started(version: str, from_version: int, reason: str) -> PipelineStarted:
    """A tester's decision to start `version` (after the first pipeline) from `from_version`."""
    return PipelineStarted(
        task="pipes",
        pipeline_version=version,
        previous_version=FIRST.version,
        from_version=from_version,
        reason=reason,
        decided_by="tester",
    )


async def test_a_pipeline_is_started_rolled_back_and_forward_without_a_restart(
    sqlite_url: str, tmp_path: Path
):
    runtime = _runtime(sqlite_url, tmp_path / "a")
    store = runtime.store
    await register_tasks(store, [FIRST], TEST_PRODUCER)
    trainer = Trainer(runtime)
    await _rows(store, 0, 300)
    seen = await _feed(trainer, store, 0)
    first_models = await _models(store)
    assert {m.pipeline_version for m in first_models} == {FIRST.version}
    champion = first_models[-1]

    # A new version is registered (nothing changes) and started, replaying from version 100.
    await register_tasks(store, [SECOND], TEST_PRODUCER)
    await _decide(
        store,
        _promoted(champion, None),
        _started(SECOND.version, 100, "fewer features"),
    )
    await _rows(store, 300, 20)
    trainer._deployments.clear()  # the next batch looks at the decisions (not 0.2 s later)
    seen = await _feed(trainer, store, seen)  # follows the decision: records the choice
    assert await _chosen(store) == [SECOND.version]
    [chosen] = [
        e for e in await store.read_stream(data_stream("pipes")) if e.type == "PipelineChosen"
    ]
    assert chosen.payload["from_version"] == 100
    await _rows(store, 320, 200)
    seen = await _feed(trainer, store, seen)  # switches, catches up, learns on
    after = (await _models(store))[len(first_models) :]
    assert after and {m.pipeline_version for m in after} == {SECOND.version}
    assert [m.model_version for m in after] == list(
        range(champion.model_version + 1, champion.model_version + 1 + len(after))
    )
    # Its first model learned the 200 stored rows after version 100 and the 20 after them.
    assert after[0].n_learned_total == 300 + 20 and after[0].parent_version is None
    assert trainer.status()["pipes"]["learned"] == 520
    # The first pipeline's champion, still answering, was scored with its own inputs on the
    # rows after the switch: the new pipeline's candidates are compared with it like for like.
    compared = [m.metrics for m in after[1:] if m.metrics.get("window_n")]
    assert compared and all(c["champion_version"] == champion.model_version for c in compared)

    # Promoted, then rolled back to the first pipeline's champion: the trainer switches back.
    await _decide(store, _promoted(after[-1], champion.model_version))
    await _decide(
        store,
        ModelRolledBack(
            task="pipes",
            model_version=champion.model_version,
            artifact_sha256=champion.artifact_sha256,
            from_version=after[-1].model_version,
            reason="the new features do worse",
            decided_by="tester",
            pipeline_version=FIRST.version,
        ),
    )
    trainer._deployments.clear()  # the next batch looks at the decisions (not 0.2 s later)
    await _rows(store, 520, 10)
    seen = await _feed(trainer, store, seen)
    await _rows(store, 530, 200)
    seen = await _feed(trainer, store, seen)
    assert await _chosen(store) == [SECOND.version, FIRST.version]
    made = await _models(store)
    assert made[-1].pipeline_version == FIRST.version
    assert all(m.model_version == i + 1 for i, m in enumerate(made))

    # A trainer started afresh on the same store, and a replay in process, make the same models.
    restarted = Trainer(_runtime(sqlite_url, tmp_path / "a"))
    await _feed(restarted, restarted.runtime.store, 0)
    assert restarted.models_emitted == 0
    _, replayed = await replay_models(store, "pipes")
    assert [(c.model_version, c.pipeline_version) for c in replayed] == [
        (m.model_version, m.pipeline_version) for m in made
    ]
    for candidate, model in zip(replayed, made, strict=True):
        assert runtime.artifacts.put(candidate.model_bytes) == model.artifact_sha256
    await restarted.runtime.store.close()
    await store.close()


async def test_a_start_and_a_rollback_read_together_are_both_recorded_in_order(
    sqlite_url: str, tmp_path: Path
):
    # The trainer reads both decisions in one pass, before its core applied the first switch:
    # the choices follow from the deployment stream alone, not from where the core is.
    runtime = _runtime(sqlite_url, tmp_path / "a")
    store = runtime.store
    await register_tasks(store, [FIRST, SECOND], TEST_PRODUCER)
    trainer = Trainer(runtime)
    await _rows(store, 0, 300)
    seen = await _feed(trainer, store, 0)
    champion = (await _models(store))[-1]
    started = _started(SECOND.version, 0, "try it")
    back = ModelRolledBack(
        task="pipes",
        model_version=champion.model_version - 1,
        artifact_sha256=champion.artifact_sha256,
        from_version=champion.model_version,
        reason="no after all",
        decided_by="tester",
        pipeline_version=FIRST.version,
    )
    await _decide(store, _promoted(champion, None), started, back)
    await _rows(store, 300, 10)
    trainer._deployments.clear()
    seen = await _feed(trainer, store, seen)
    await _rows(store, 310, 100)
    await _feed(trainer, store, seen)
    assert await _chosen(store) == [SECOND.version, FIRST.version]
    assert trainer.status()["pipes"]["pipeline_version"] == FIRST.version
    await store.close()


async def test_each_version_replayed_alone_learns_the_same_rows_and_compare_prints_them(
    sqlite_url: str, tmp_path: Path
):
    runtime = _runtime(sqlite_url, tmp_path / "a")
    store = runtime.store
    await register_tasks(store, [FIRST, SECOND], TEST_PRODUCER)
    await _rows(store, 0, 400)
    first = await replay_pipeline(store, FIRST)
    second = await replay_pipeline(store, SECOND, after_version=100)
    again = await replay_pipeline(store, FIRST)
    assert first.learner.metrics["n_labelled"] == 400
    assert second.learner.metrics["n_labelled"] == 300  # the rows after version 100 only
    assert first.learner.metrics == again.learner.metrics  # deterministic
    assert first.model_version == 0  # it publishes nothing
    await store.close()

    # The command, as a process (it configures logging for itself).
    def compare(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONTINUO, "compare", "pipes", *args],
            env={**os.environ, "CONTINUO_STORE_URL": sqlite_url},
            capture_output=True,
            text=True,
            timeout=120,
        )

    shown = await asyncio.to_thread(compare, "--json")
    assert shown.returncode == 0, shown.stderr
    figures = json.loads(shown.stdout)["pipelines"]
    assert [p["pipeline_version"] for p in figures] == [FIRST.version, SECOND.version]
    assert figures[0]["accuracy"] == first.learner.metrics["accuracy"]
    assert (await asyncio.to_thread(compare, "nope")).returncode == 2


async def test_a_pipeline_whose_learner_fails_is_given_up_and_training_goes_on(
    sqlite_url: str, tmp_path: Path
):
    # A setting LightGBM refuses: the switch is given up (the same way in every replay) and the
    # first pipeline goes on publishing, instead of every batch failing from then on.
    broken = FIRST.model_copy(
        update={"learner": FIRST.learner.model_copy(update={"params": {"num_leaves": -3}})}
    )
    runtime = _runtime(sqlite_url, tmp_path / "a")
    store = runtime.store
    await register_tasks(store, [FIRST, broken], TEST_PRODUCER)
    trainer = Trainer(runtime)
    await _rows(store, 0, 200)
    seen = await _feed(trainer, store, 0)
    started = _started(broken.version, 0, "a bad setting")
    await _decide(store, started)
    await _rows(store, 200, 10)
    trainer._deployments.clear()
    seen = await _feed(trainer, store, seen)
    before = len(await _models(store))
    await _rows(store, 210, 300)
    await _feed(trainer, store, seen)
    assert await _chosen(store) == [broken.version]
    made = await _models(store)
    assert len(made) > before and {m.pipeline_version for m in made} == {FIRST.version}
    assert trainer.status()["pipes"]["pipeline_version"] == FIRST.version
    _, replayed = await replay_models(store, "pipes")
    assert [c.model_version for c in replayed] == [m.model_version for m in made]
    await store.close()
