"""The trainer adapter on a real store: recovery by replay after a failed write, restarts, and
restarts from snapshots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from services.trainer import snapshots
from services.trainer.service import Trainer, replay_models
from shared.artifacts import FileArtifactStore
from shared.deployments import POLICY
from shared.events.envelope import new_event
from shared.events.types import (
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    ObservationRecorded,
    data_stream,
    deployment_stream,
    governance_stream,
    model_stream,
    snapshot_stream,
)
from shared.registry import register_tasks
from shared.runtime import Runtime
from shared.settings import CommonSettings
from shared.store.migrate import upgrade_async
from shared.store.sql import SqlEventStore
from shared.tasks import TaskSpec
from tests.support import TEST_PRODUCER

SPEC = TaskSpec.model_validate(
    {
        "name": "flaky",
        "features": [{"name": "x"}],
        "target": {"name": "y"},
        "learner": {"publish_every": 100},
    }
)


class FailsOnce(FileArtifactStore):
    """An artifact store whose first write fails (a full disk, a network volume gone)."""

    failed = False

    def put(self, data: bytes) -> str:
        if not self.failed:
            self.failed = True
            raise OSError("disk full")
        return super().put(data)


async def _stored_data(store: SqlEventStore, rows: int, *, stored: int | None = None) -> list:
    """`rows` data events of the task, of which the first `stored` (all) are appended; returns
    the stored ones as read back (with their positions), then the others."""
    await register_tasks(store, [SPEC], TEST_PRODUCER)
    events = [
        new_event(
            ObservationRecorded(
                task="flaky",
                pipeline_version=SPEC.version,
                entity_id="e",
                features={"x": i / rows},
                label=int(i % 7 < 3),
            ),
            stream_id=data_stream("flaky"),
            producer=TEST_PRODUCER,
        )
        for i in range(rows)
    ]
    await store.append(events[:stored])
    return await store.read_stream(data_stream("flaky")) + events[len(events[:stored]) :]


def _runtime(sqlite_url: str, artifacts: Path) -> Runtime:
    settings = CommonSettings(store_url=sqlite_url, artifacts_dir=artifacts)
    return Runtime.build("trainer", settings)


async def _model_versions(store: SqlEventStore) -> list[int]:
    models = [e.data() for e in await store.read_stream(model_stream("flaky"))]
    return [m.model_version for m in models if isinstance(m, ModelTrained)]


async def test_a_failed_write_is_recovered_by_replay_and_no_version_is_missing(
    sqlite_url: str, tmp_path: Path
):
    runtime = _runtime(sqlite_url, tmp_path / "a")
    runtime.artifacts = FailsOnce(tmp_path / "a")
    events = await _stored_data(runtime.store, 300)
    trainer = Trainer(runtime)
    trainer.retry_delay = 0
    await trainer.handle(events[:150])  # model 1's artifact write fails here
    assert await _model_versions(runtime.store) == []
    await trainer.handle(events[150:])  # the core is rebuilt from the store, then goes on
    # Version 1 at the first event, then at 50, 100, 200 and 300 labelled rows.
    assert await _model_versions(runtime.store) == [1, 2, 3, 4, 5]
    await runtime.store.close()


async def test_a_restarted_trainer_replays_the_store_and_emits_nothing_twice(
    sqlite_url: str, tmp_path: Path
):
    first = _runtime(sqlite_url, tmp_path / "a")
    events = await _stored_data(first.store, 300)
    await Trainer(first).handle(events)
    stored = [e.event_id for e in await first.store.read_stream(model_stream("flaky"))]
    await first.store.close()

    second = _runtime(sqlite_url, tmp_path / "a")
    restarted = Trainer(second)
    await restarted.handle(events)  # the broker redelivers everything after the restart
    again = [e.event_id for e in await second.store.read_stream(model_stream("flaky"))]
    assert again == stored and len(stored) == 5
    assert restarted.models_emitted == 0
    await second.store.close()


async def _models(store: SqlEventStore) -> list[tuple[int, str]]:
    return [
        (m.model_version, m.artifact_sha256)
        for m in (e.data() for e in await store.read_stream(model_stream("flaky")))
        if isinstance(m, ModelTrained)
    ]


async def test_a_restart_loads_the_newest_snapshot_and_replays_only_what_follows(
    sqlite_url: str, tmp_path: Path
):
    first = _runtime(sqlite_url, tmp_path / "a")
    events = await _stored_data(first.store, 300, stored=250)
    trainer = Trainer(first, snapshot_every=120)
    await trainer.handle(events[:250])  # replayed from the store, then a snapshot at 250
    [snapshot] = await first.store.read_stream(snapshot_stream("flaky"))
    assert snapshot.payload["data_version"] == 250
    assert trainer.status()["flaky"]["snapshot_version"] == 250
    await first.store.append(events[250:])
    await first.store.close()

    second = _runtime(sqlite_url, tmp_path / "a")
    restarted = Trainer(second, snapshot_every=120)
    await restarted.handle((await second.store.read_stream(data_stream("flaky")))[250:])
    figures = restarted.status()["flaky"]
    assert figures["restored_from"] == 250 and figures["learned"] == 300
    assert restarted.models_emitted == 1  # version 5 (at 300); 1..4 were stored before
    made = await _models(second.store)
    await second.store.close()

    # The same stored events through a trainer that never snapshotted or stopped.
    other_url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    await upgrade_async(other_url)
    other = _runtime(other_url, tmp_path / "b")
    await Trainer(other).handle(await _stored_data(other.store, 300))
    assert made == await _models(other.store) and len(made) == 5
    await other.store.close()


async def test_a_snapshot_that_cannot_be_read_costs_a_full_replay_and_nothing_else(
    sqlite_url: str, tmp_path: Path
):
    first = _runtime(sqlite_url, tmp_path / "a")
    events = await _stored_data(first.store, 300, stored=250)
    await Trainer(first, snapshot_every=100).handle(events[:250])
    await first.store.append(events[250:])
    [*_, newest] = await first.store.read_stream(snapshot_stream("flaky"))
    digest = newest.payload["artifact_sha256"]
    (tmp_path / "a" / digest[:2] / digest).write_bytes(b"not a snapshot")
    await first.store.close()

    second = _runtime(sqlite_url, tmp_path / "a")
    restarted = Trainer(second, snapshot_every=100)
    await restarted.handle((await second.store.read_stream(data_stream("flaky")))[250:])
    assert restarted.status()["flaky"]["restored_from"] == 0  # replayed from the start
    assert restarted.status()["flaky"]["learned"] == 300
    assert [v for v, _ in await _models(second.store)] == [1, 2, 3, 4, 5]
    await second.store.close()


async def test_a_snapshot_from_another_trainer_build_is_not_loaded(
    sqlite_url: str, tmp_path: Path, monkeypatch
):
    first = _runtime(sqlite_url, tmp_path / "a")
    events = await _stored_data(first.store, 300, stored=250)
    await Trainer(first, snapshot_every=100).handle(events[:250])
    await first.store.append(events[250:])
    await first.store.close()

    monkeypatch.setattr(snapshots, "build_id", lambda: "another-build")
    second = _runtime(sqlite_url, tmp_path / "a")
    restarted = Trainer(second)
    await restarted.handle((await second.store.read_stream(data_stream("flaky")))[250:])
    assert restarted.status()["flaky"]["restored_from"] == 0
    assert restarted.status()["flaky"]["learned"] == 300
    await second.store.close()


async def test_only_the_two_newest_snapshots_keep_their_artifacts(sqlite_url: str, tmp_path: Path):
    runtime = _runtime(sqlite_url, tmp_path / "a")
    events = await _stored_data(runtime.store, 300, stored=100)
    trainer = Trainer(runtime, snapshot_every=50)
    await trainer.handle(events[:100])
    for start in (100, 200):  # two more snapshots, as the stream goes on
        await runtime.store.append(events[start : start + 100])
        await trainer.handle((await runtime.store.read_stream(data_stream("flaky")))[start:])
    taken = await runtime.store.read_stream(snapshot_stream("flaky"))
    assert [s.payload["data_version"] for s in taken] == [100, 200, 300]
    kept = [
        (tmp_path / "a" / d[:2] / d).exists() for d in (s.payload["artifact_sha256"] for s in taken)
    ]
    assert kept == [False, True, True]
    await runtime.store.close()


class RefusesSnapshots(FileArtifactStore):
    """An artifact store that takes models but, until told otherwise, no snapshot (a pickle)."""

    refuse = True

    def put(self, data: bytes) -> str:
        if self.refuse and data.startswith(b"\x80"):
            raise OSError("disk full")
        return super().put(data)


async def test_a_snapshot_that_cannot_be_written_costs_nothing_but_the_snapshot(
    sqlite_url: str, tmp_path: Path
):
    runtime = _runtime(sqlite_url, tmp_path / "a")
    artifacts = runtime.artifacts = RefusesSnapshots(tmp_path / "a")
    events = await _stored_data(runtime.store, 300, stored=150)
    trainer = Trainer(runtime, snapshot_every=100)
    await trainer.handle(events[:150])  # the snapshot at 150 fails
    assert await runtime.store.read_stream(snapshot_stream("flaky")) == []
    assert trainer.status()["flaky"]["learned"] == 150  # the core went on, its models stored
    assert [v for v, _ in await _models(runtime.store)] == [1, 2, 3]  # at 0, 50 and 100
    artifacts.refuse = False
    await runtime.store.append(events[150:])
    await trainer.handle((await runtime.store.read_stream(data_stream("flaky")))[150:])
    [taken] = await runtime.store.read_stream(snapshot_stream("flaky"))
    assert taken.payload["data_version"] == 300
    await runtime.store.close()


async def test_a_promoted_entrant_switches_the_race_in_the_stream_and_a_replay_agrees(
    sqlite_url: str, tmp_path: Path
):
    # The race's runner-up runs as an entrant; when governance promotes it, the trainer records
    # the choice in the data stream, learns on with that configuration from there, and a
    # fault-free replay of the stream makes the same models, byte for byte.
    spec = SPEC.model_copy(
        update={
            "name": "racing",
            "promotion": SPEC.promotion.model_copy(
                update={
                    "canary": SPEC.promotion.canary.model_copy(
                        update={"shadow_entrants": True, "entrant_every": 250}
                    )
                }
            ),
        }
    )
    runtime = _runtime(sqlite_url, tmp_path / "a")
    store = runtime.store
    await register_tasks(store, [spec], TEST_PRODUCER)
    rng = np.random.default_rng(3)

    async def rows(n: int) -> list:
        events = []
        for _ in range(n):
            x = float(rng.random())
            label = int(x > 0.5) ^ int(rng.random() < 0.2)
            observed = ObservationRecorded(
                task="racing",
                pipeline_version=spec.version,
                entity_id="e",
                features={"x": x},
                label=label,
            )
            events.append(
                new_event(observed, stream_id=data_stream("racing"), producer=TEST_PRODUCER)
            )
        await store.append(events)
        return (await store.read_stream(data_stream("racing")))[-n:]

    async def models() -> list[ModelTrained]:
        stored = [e.data() for e in await store.read_stream(model_stream("racing"))]
        return [m for m in stored if isinstance(m, ModelTrained)]

    trainer = Trainer(runtime)
    await trainer.handle(await rows(600))
    entrant = next(m for m in await models() if m.role == "entrant")
    assert entrant.config != (await models())[0].config
    promoted = ModelPromoted(
        task="racing",
        model_version=entrant.model_version,
        artifact_sha256=entrant.artifact_sha256,
        previous_version=None,
        reason="canary: better",
        decided_by=POLICY,
    )
    [promotion] = await store.append(
        [new_event(promoted, stream_id=deployment_stream("racing"), producer=TEST_PRODUCER)]
    )
    # The trainer restarts between the promotion and the next rows: the choice is made from
    # the promoted version's own record, whatever the new trainer has replayed.
    trainer = Trainer(_runtime(sqlite_url, tmp_path / "a"))
    await trainer.handle(await rows(300))  # sees the promotion: the choice follows these rows
    await asyncio.sleep(0.25)  # the trainer reads deployments at most every 0.2 s
    await trainer.handle(await rows(300))  # applies it, then these rows

    stream = await store.read_stream(data_stream("racing"))
    [chosen] = [e for e in stream if e.type == "ConfigChosen"]
    assert chosen.stream_version == 901
    assert chosen.payload["config"] == entrant.config
    assert chosen.payload["model_version"] == entrant.model_version
    assert (chosen.payload["decided_at"], chosen.payload["rollback"]) == (
        promotion.stream_version,
        False,
    )
    switched = [
        e.payload
        for e in await store.read_stream(governance_stream("racing"))
        if e.type == "ConfigSwitched" and e.payload["evidence"].get("chosen_by") == "governance"
    ]
    assert [(s["to_config"], s["at_labelled"]) for s in switched] == [(entrant.config, 900)]
    line = [m for m in await models() if m.role == "candidate"]
    assert {m.config for m in line if m.n_learned_total > 900} == {entrant.config}

    # An operator rolls back to the first model: the race goes back to that model's
    # configuration, at the next rows, with the rollback's evidence; a restarted trainer that
    # reads the same decision again adds nothing.
    first = (await models())[0]
    rolled_back = ModelRolledBack(
        task="racing",
        model_version=first.model_version,
        artifact_sha256=first.artifact_sha256,
        from_version=entrant.model_version,
        reason="the entrant's answers look wrong to the operator",
        decided_by="ops@example.com",
    )
    [decision] = await store.append(
        [new_event(rolled_back, stream_id=deployment_stream("racing"), producer=TEST_PRODUCER)]
    )
    await asyncio.sleep(0.25)
    await trainer.handle(await rows(300))  # sees the rollback: the choice follows these rows
    trainer = Trainer(_runtime(sqlite_url, tmp_path / "a"))
    await trainer.handle(await rows(300))
    stream = await store.read_stream(data_stream("racing"))
    chosen_events = [e for e in stream if e.type == "ConfigChosen"]
    assert [(e.stream_version, e.payload["config"]) for e in chosen_events] == [
        (901, entrant.config),
        (1502, first.config),
    ]
    assert chosen_events[1].payload["decided_at"] == decision.stream_version
    assert chosen_events[1].payload["rollback"] is True
    assert chosen_events[1].payload["model_version"] == first.model_version
    switched = [
        e.payload
        for e in await store.read_stream(governance_stream("racing"))
        if e.type == "ConfigSwitched" and e.payload["evidence"].get("chosen_by") == "governance"
    ]
    assert [(s["to_config"], s["at_labelled"]) for s in switched] == [
        (entrant.config, 900),
        (first.config, 1500),
    ]
    assert switched[1]["evidence"]["decided_at"] == decision.stream_version
    line = [m for m in await models() if m.role == "candidate"]
    assert {m.config for m in line if m.n_learned_total > 1500} == {first.config}

    # Governance promotes the entrant again: a new decision about the same version is a new
    # choice (keyed by the decision, not by the version), and the race follows it once more.
    [again] = await store.append(
        [
            new_event(
                promoted.model_copy(update={"reason": "promoted again"}),
                stream_id=deployment_stream("racing"),
                producer=TEST_PRODUCER,
            )
        ]
    )
    await asyncio.sleep(0.25)
    await trainer.handle(await rows(300))
    await trainer.handle(await rows(300))
    chosen_events = [
        e for e in await store.read_stream(data_stream("racing")) if e.type == "ConfigChosen"
    ]
    assert [(e.payload["config"], e.payload["decided_at"]) for e in chosen_events] == [
        (entrant.config, promotion.stream_version),
        (first.config, decision.stream_version),
        (entrant.config, again.stream_version),
    ]
    line = [m for m in await models() if m.role == "candidate"]
    assert {m.config for m in line if m.n_learned_total > 2100} == {entrant.config}

    _, replayed = await replay_models(store, "racing")
    digests = [runtime.artifacts.put(c.model_bytes) for c in replayed]
    assert digests == [m.artifact_sha256 for m in await models()]
    await trainer.runtime.store.close()
    await store.close()
