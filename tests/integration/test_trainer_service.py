"""The trainer adapter on a real store: recovery by replay after a failed write, and restarts."""

from __future__ import annotations

from pathlib import Path

from services.trainer.service import Trainer
from shared.artifacts import FileArtifactStore
from shared.events.envelope import new_event
from shared.events.types import ModelTrained, ObservationRecorded, data_stream, model_stream
from shared.registry import register_tasks
from shared.runtime import Runtime
from shared.settings import CommonSettings
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


async def _stored_data(store: SqlEventStore, rows: int) -> list:
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
    await store.append(events)
    return await store.read_stream(data_stream("flaky"))


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
