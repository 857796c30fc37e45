"""The task catalogue, as events: register specs, and read back the newest spec of each task."""

from __future__ import annotations

import uuid

from shared.events.envelope import Producer, new_event
from shared.events.types import TaskRegistered, task_stream
from shared.store.port import EventStore
from shared.tasks import TaskSpec

_NAMESPACE = uuid.UUID("5a1f0d2e-7c3b-4e51-9a43-0c0471e0c0de")


async def register_tasks(store: EventStore, specs: list[TaskSpec], producer: Producer) -> None:
    """Record each spec version once (the event id is derived from name and version)."""
    for spec in specs:
        event = new_event(
            TaskRegistered(task=spec.name, version=spec.version, spec=spec.model_dump(mode="json")),
            stream_id=task_stream(spec.name),
            producer=producer,
            event_id=uuid.uuid5(_NAMESPACE, f"{spec.name}/{spec.version}"),
        )
        await store.append([event])


async def registered_tasks(store: EventStore) -> dict[str, TaskSpec]:
    """The latest registered spec of every task."""
    tasks: dict[str, TaskSpec] = {}
    after = 0
    while page := await store.read_all(after=after, limit=1000, types=["TaskRegistered"]):
        for envelope in page:
            data = envelope.data()
            assert isinstance(data, TaskRegistered)
            tasks[data.task] = TaskSpec.model_validate(data.spec)
        after = page[-1].position or after
    return tasks


async def spec_versions(store: EventStore, task: str) -> dict[str, TaskSpec]:
    """Every registered version of one task's spec, by version hash."""
    versions = {}
    for envelope in await store.read_stream(task_stream(task)):
        data = envelope.data()
        assert isinstance(data, TaskRegistered)
        versions[data.version] = TaskSpec.model_validate(data.spec)
    return versions
