"""Replay from the store, on both adapters: reads give back what was appended, pages read ahead
give every event once in order, and a model rebuilt by replay has the bytes of the live one."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

from continuo.cli import COMMANDS
from services.trainer.service import Trainer, replay_models
from shared.artifacts import sha256
from shared.bus import decode, to_records
from shared.events.envelope import Envelope, new_event
from shared.events.types import (
    LabelRecorded,
    ModelTrained,
    ObservationRecorded,
    data_stream,
    model_stream,
)
from shared.registry import register_tasks
from shared.runtime import Runtime
from shared.settings import CommonSettings
from shared.store.pages import position_pages, stream_pages
from shared.store.sql import SqlEventStore
from shared.tasks import TaskSpec
from tests.support import TEST_PRODUCER, observation


async def test_an_event_read_back_equals_the_one_appended_with_its_store_fields(
    store: SqlEventStore,
):
    cause = observation(stream_id=f"s-{uuid.uuid4()}")
    event = new_event(
        ObservationRecorded(
            task="t",
            pipeline_version="v",
            entity_id="é",
            features={"x": 1.5, "nested": {"a": [1, None, "z"]}},
            label=1,
        ),
        stream_id=cause.stream_id,
        producer=TEST_PRODUCER,
        correlation_id=uuid.uuid4(),
        causation=cause,
    )
    [appended] = await store.append([event])
    [by_position] = await store.read_all(after=appended.position - 1, limit=1)
    [by_stream] = await store.read_stream(event.stream_id)
    by_id = (await store.get([event.event_id]))[event.event_id]
    for read in (by_position, by_stream, by_id):
        assert read == by_position
        assert isinstance(read, Envelope)
        # What validation would make of the stored row, field for field (types included).
        assert Envelope.model_validate(read.model_dump()) == read
        assert read.model_dump() == {
            **event.model_dump(),
            "position": appended.position,
            "stream_version": 1,
            "recorded_at": read.recorded_at,
        }
        assert read.occurred_at.utcoffset() is not None and read.recorded_at is not None
        assert read.recorded_at.utcoffset() is not None
        assert read.model_fields_set == set(Envelope.model_fields)
        # The standard classes (asyncpg's own UUID class is not one orjson serialises).
        assert {type(read.event_id), type(read.correlation_id), type(read.causation_id)} == {
            uuid.UUID
        }
        assert Envelope.from_json(read.to_json()) == read
    # As the relays read it: the JSON made from the stored row decodes to the same envelope.
    [as_sent] = await store.read_all_json(after=appended.position - 1, limit=1)
    assert decode(as_sent.body) == [by_position]
    assert (as_sent.type, as_sent.position, as_sent.event_id, as_sent.task) == (
        "ObservationRecorded",
        appended.position,
        str(event.event_id),
        "t",
    )
    assert _records(to_records([as_sent])) == _records(to_records([by_position]))


async def test_the_relays_json_of_every_event_decodes_to_what_the_store_reads(
    store: SqlEventStore,
):
    # Events of every kind of payload the relays send, with and without a task; a page of them
    # read as envelopes and as JSON: the same envelopes, keyed and grouped the same.
    stream = f"s-{uuid.uuid4()}"
    events = [
        observation(stream_id=stream, task=f"t{i % 3}", label=i % 2 or None) for i in range(30)
    ]
    events.append(
        new_event(
            ModelTrained(
                task='say "hi" \\ ü',
                model_version=1,
                parent_version=None,
                pipeline_version="v",
                artifact_sha256="0" * 64,
                config="c",
                params={"a": [1, 2.5, None]},
                metrics={"accuracy": 0.5},
                first_position=1,
                last_position=2,
                n_learned=2,
                n_learned_total=2,
            ),
            stream_id=stream,
            producer=TEST_PRODUCER,
        )
    )
    appended = await store.append(events)
    after = appended[0].position - 1
    read = await store.read_all(after=after, limit=len(events))
    as_sent = await store.read_all_json(after=after, limit=len(events))
    assert [e for j in as_sent for e in decode(j.body)] == read
    assert as_sent[-1].task == 'say "hi" \\ ü'
    assert _records(to_records(as_sent)) == _records(to_records(read))


def _records(records: list) -> list:
    """Records as consumers see them (PostgreSQL gives jsonb back spaced and reordered)."""
    return [(r.topic, r.key, r.headers, decode(r.value)) for r in records]


async def test_pages_read_ahead_give_every_event_once_in_store_order(store: SqlEventStore):
    streams = [f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"]
    for i in range(12):
        await store.append([observation(stream_id=streams[i % 2]) for _ in range(25)])
    head = await store.head()
    everything = await store.read_all(after=0, limit=10_000)
    paged = [e async for page in position_pages(store, page=7) for e in page]
    assert [e.event_id for e in paged] == [e.event_id for e in everything]
    until = everything[100].position
    assert until is not None and until < head
    upto = [e async for page in position_pages(store, until=until, page=9) for e in page]
    assert [e.position for e in upto] == [e.position for e in everything[:101]]
    one = [
        e async for page in stream_pages(store, streams[1], after_version=10, page=11) for e in page
    ]
    assert [e.stream_version for e in one] == list(range(11, 151))
    none = [e async for page in position_pages(store, types=["NoSuchType"]) for e in page]
    assert none == []


SPEC = TaskSpec.model_validate(
    {
        "name": "replayed",
        "features": [{"name": "x"}, {"name": "z"}],
        "target": {"name": "y"},
        "learner": {"publish_every": 60},
    }
)


def _data_events(rows: int) -> list[Envelope]:
    """Observations, a third labelled inline, the rest labelled two to nine rows later."""
    rng = random.Random(11)
    stream, events, waiting = data_stream(SPEC.name), [], []
    for i in range(rows):
        x, z = rng.random(), rng.random()
        label = int(x + 0.3 * z > 0.6)
        inline = i % 3 == 0
        observed = new_event(
            ObservationRecorded(
                task=SPEC.name,
                pipeline_version=SPEC.version,
                entity_id=f"e{i % 5}",
                features={"x": x, "z": z},
                label=label if inline else None,
            ),
            stream_id=stream,
            producer=TEST_PRODUCER,
        )
        events.append(observed)
        if not inline:
            waiting.append((i + rng.randint(2, 9), observed, label))
        for due in [w for w in waiting if w[0] <= i]:
            waiting.remove(due)
            _, late, late_label = due
            labelled = LabelRecorded(
                task=SPEC.name,
                observation_id=late.event_id,
                entity_id=late.payload["entity_id"],
                label=late_label,
            )
            events.append(new_event(labelled, stream_id=stream, producer=TEST_PRODUCER))
    return events


async def _train_live(store_url: str, tmp_path: Path) -> tuple[Runtime, list[ModelTrained]]:
    """A live trainer over the task's stored data events as Kafka delivers them: batches of
    uneven sizes, one delivered twice, and a restart half way (the new trainer rebuilds the task
    from the store, then takes the rest). Its runtime and the models it stored."""
    settings = CommonSettings(store_url=store_url, artifacts_dir=tmp_path / "artifacts")
    live = Runtime.build("trainer", settings)
    await register_tasks(live.store, [SPEC], TEST_PRODUCER)
    events = _data_events(700)
    for start in range(0, len(events), 50):  # ingest's requests
        await live.store.append(events[start : start + 50])
    stored = await live.store.read_stream(data_stream(SPEC.name))
    trainer, cuts = Trainer(live), [0, 13, 90, 91, 260, 500, 777, len(stored)]
    for n, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False)):
        if n == 4:
            trainer = Trainer(live)
        await trainer.handle(stored[start:end])
        if n == 2:
            await trainer.handle(stored[start:end])
    made = [
        m
        for m in (e.data() for e in await live.store.read_stream(model_stream(SPEC.name)))
        if isinstance(m, ModelTrained)
    ]
    return live, made


async def test_a_model_rebuilt_by_replay_has_the_same_bytes_as_the_one_built_live(
    store_url: str, tmp_path: Path
):
    live, made_live = await _train_live(store_url, tmp_path)
    assert len(made_live) >= 5
    core, replayed = await replay_models(live.store, SPEC.name)
    assert core.version == len(await live.store.read_stream(data_stream(SPEC.name)))
    assert [c.model_version for c in replayed] == [m.model_version for m in made_live]
    for model, candidate in zip(made_live, replayed, strict=True):
        assert sha256(candidate.model_bytes) == model.artifact_sha256
        assert live.artifacts.get(model.artifact_sha256) == candidate.model_bytes
    await live.store.close()


def test_continuo_replay_models_rebuilds_a_task_and_finds_the_stored_bytes(
    sqlite_url: str, tmp_path: Path, monkeypatch, capsys
):
    async def train() -> int:
        live, made = await _train_live(sqlite_url, tmp_path)
        await live.store.close()
        return len(made)

    models = asyncio.run(train())
    monkeypatch.setenv("CONTINUO_STORE_URL", sqlite_url)
    replay = COMMANDS["replay"]  # not cli.main: it would point logging at capsys's stream
    assert replay(["--models", SPEC.name]) == 0
    out = capsys.readouterr().out
    assert f"{models} models rebuilt, {models} with the stored bytes" in out
    assert replay(["--models", "no-such-task"]) == 2
