"""The task catalogue read back from the store, on every adapter."""

from __future__ import annotations

from shared.events.envelope import new_event
from shared.events.types import TaskRegistered, task_stream
from shared.registry import register_tasks, registered_spec, registered_tasks, spec_versions
from shared.store.sql import SqlEventStore
from shared.tasks import TaskSpec
from tests.support import TEST_PRODUCER


def _spec(name: str, publish_every: int = 250) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": name,
            "features": [{"name": "x"}],
            "target": {"name": "y"},
            "learner": {"publish_every": publish_every},
        }
    )


async def test_one_tasks_spec_is_its_newest_registered_version(store: SqlEventStore):
    first, second, other = _spec("alpha", 250), _spec("alpha", 500), _spec("beta")
    await register_tasks(store, [first, other], TEST_PRODUCER)
    await register_tasks(store, [second], TEST_PRODUCER)

    newest = await registered_spec(store, "alpha")

    assert newest == second != first
    assert newest == (await registered_tasks(store))["alpha"]
    assert await registered_spec(store, "beta") == other
    assert await registered_spec(store, "gamma") is None
    assert await spec_versions(store, "alpha") == {first.version: first, second.version: second}


async def test_every_kind_of_task_is_recorded(store: SqlEventStore):
    multiclass = TaskSpec.model_validate(
        {
            "name": "triage",
            "features": [{"name": "x"}],
            "target": {"name": "u", "kind": "multiclass", "classes": ["a", "b", "c"]},
        }
    )
    await register_tasks(store, [multiclass], TEST_PRODUCER)
    assert await registered_spec(store, "triage") == multiclass
    regression = TaskSpec.model_validate(
        {
            "name": "demand",
            "features": [{"name": "x"}],
            "target": {"name": "u", "kind": "regression"},
        }
    )
    await register_tasks(store, [regression], TEST_PRODUCER)
    assert await registered_spec(store, "demand") == regression


async def test_a_stored_spec_this_version_refuses_leaves_the_other_tasks_readable(
    store: SqlEventStore,
):
    """A spec registered before a check it fails was added (classes 1 and 1.0: refused since
    2026-11-30) used to raise on every read of the catalogue, so no service could start."""
    good = _spec("beta")
    await register_tasks(store, [good], TEST_PRODUCER)
    stale = good.model_dump(mode="json") | {
        "name": "triage",
        "target": {"name": "u", "kind": "multiclass", "classes": [1, 1.0, 2]},
    }
    await store.append(
        [
            new_event(
                TaskRegistered(task="triage", version="stale", spec=stale),
                stream_id=task_stream("triage"),
                producer=TEST_PRODUCER,
            )
        ]
    )

    assert await registered_tasks(store) == {"beta": good}
    assert await registered_spec(store, "triage") is None
    assert await spec_versions(store, "triage") == {}
    fixed = TaskSpec.model_validate(stale | {"target": stale["target"] | {"classes": [1, 2, 3]}})
    await register_tasks(store, [fixed], TEST_PRODUCER)
    assert await registered_spec(store, "triage") == fixed
    assert (await registered_tasks(store))["triage"] == fixed
