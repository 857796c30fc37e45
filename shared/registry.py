"""The task catalogue, as events: register specs, and read back the newest spec of each task."""

from __future__ import annotations

import uuid

import structlog
from pydantic import ValidationError

from shared.events.envelope import Envelope, Producer, new_event
from shared.events.types import TaskRegistered, task_stream
from shared.store.port import EventStore
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)

_NAMESPACE = uuid.UUID("5a1f0d2e-7c3b-4e51-9a43-0c0471e0c0de")
# Each TaskRegistered event's spec, parsed once: an event never changes, and governance asks for a
# task's spec several times per event it handles. Bounded: cleared past this many.
_PARSED: dict[uuid.UUID, tuple[TaskRegistered, TaskSpec | None]] = {}
_PARSED_LIMIT = 4096


def _registered(envelope: Envelope) -> tuple[TaskRegistered, TaskSpec | None]:
    """A TaskRegistered event's payload and its spec; None, logged, for a spec this version of
    Continuo refuses (registered before a check it fails was added: a multiclass target with
    classes 1 and 1.0): one such task must not keep every service from starting. Its events
    stay in the store; registering a corrected spec brings the task back."""
    found = _PARSED.get(envelope.event_id)
    if found is None:
        data = envelope.data()
        assert isinstance(data, TaskRegistered)
        try:
            found = data, TaskSpec.model_validate(data.spec)
        except ValidationError as exc:
            log.error(
                "registry.spec_refused",
                task=data.task,
                version=data.version,
                position=envelope.position,
                error=" ".join(str(exc).split()),
            )
            found = data, None
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[envelope.event_id] = found
    return found


async def register_tasks(
    store: EventStore,
    specs: list[TaskSpec],
    producer: Producer,
    *,
    by: str | None = None,
    reason: str | None = None,
) -> None:
    """Record each spec version once (the event id is derived from name and version), with who
    and why when a person registers it."""
    for spec in specs:
        event = new_event(
            TaskRegistered(
                task=spec.name,
                version=spec.version,
                spec=spec.model_dump(mode="json"),
                registered_by=by,
                reason=reason,
            ),
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
            data, spec = _registered(envelope)
            if spec is None:  # its newest spec is refused: the task is out until it is fixed
                tasks.pop(data.task, None)
            else:
                tasks[data.task] = spec
        after = page[-1].position or after
    return tasks


async def registered_since(store: EventStore, after: int) -> tuple[list[str], int]:
    """The tasks registered (a first or a new version) after store position `after`, and the
    position read through: what a service that already knows the catalogue reads to follow it,
    instead of the whole catalogue again."""
    tasks: list[str] = []
    while page := await store.read_all(after=after, limit=1000, types=["TaskRegistered"]):
        tasks.extend(str(e.payload["task"]) for e in page)
        after = page[-1].position or after
    return tasks, after


async def registered_spec(store: EventStore, task: str) -> TaskSpec | None:
    """The latest registered spec of one task, from its own stream (None: never registered).

    The same answer as `registered_tasks(store).get(task)`, without reading every task's."""
    stream = await store.read_stream(task_stream(task))
    return _registered(stream[-1])[1] if stream else None


async def spec_versions(store: EventStore, task: str) -> dict[str, TaskSpec]:
    """Every registered version of one task's spec, by version hash."""
    versions = {}
    for envelope in await store.read_stream(task_stream(task)):
        data, spec = _registered(envelope)
        if spec is not None:
            versions[data.version] = spec
    return versions
