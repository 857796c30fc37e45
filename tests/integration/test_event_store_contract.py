"""The event store contract, run against every adapter (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.events.types import ObservationRecorded
from shared.store.port import NO_STREAM, ConcurrencyError, EventIdChanged, EventIdTaken
from shared.store.sql import SqlEventStore
from tests.support import observation


def _stream() -> str:
    return f"s-{uuid.uuid4().hex}"


async def test_appended_events_get_increasing_positions_and_stream_versions(store: SqlEventStore):
    stream = _stream()
    result = await store.append([observation(stream_id=stream) for _ in range(3)])
    assert [r.stream_version for r in result] == [1, 2, 3]
    positions = [r.position for r in result]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert not any(r.duplicate for r in result)


async def test_a_retried_event_is_stored_once_and_reported_as_duplicate(store: SqlEventStore):
    stream = _stream()
    event = observation(stream_id=stream)
    first = await store.append([event])
    again = await store.append([event, observation(stream_id=stream)])
    assert again[0].duplicate and again[0].position == first[0].position
    assert not again[1].duplicate and again[1].stream_version == 2
    assert len(await store.read_stream(stream)) == 2


async def test_an_id_naming_another_streams_event_is_refused_and_nothing_appended(
    store: SqlEventStore,
):
    first, second = _stream(), _stream()
    taken = observation(stream_id=first)
    await store.append([taken])
    with pytest.raises(EventIdTaken) as caught:
        await store.append(
            [observation(stream_id=second), taken.model_copy(update={"stream_id": second})]
        )
    assert caught.value.event_ids == [taken.event_id]
    assert await store.read_stream(second) == []


async def test_an_id_re_appended_with_other_content_is_refused_when_asked(store: SqlEventStore):
    stream = _stream()
    event = observation(stream_id=stream, label=0)
    await store.append([event])
    changed = event.model_copy(update={"payload": {**event.payload, "label": 1}})
    # By default a known id is a duplicate whatever it carries (producers that derive ids)...
    [again] = await store.append([changed])
    assert again.duplicate
    # ...and for ids clients choose, other content under a known id is refused, atomically.
    same = event.model_copy(update={"occurred_at": event.occurred_at.replace(year=2001)})
    assert (await store.append([same], refuse_changed=True))[0].duplicate  # payload equal
    fresh = observation(stream_id=stream)
    with pytest.raises(EventIdChanged) as caught:
        await store.append([fresh, changed], refuse_changed=True)
    assert caught.value.event_ids == [event.event_id]
    [stored] = await store.read_stream(stream)
    assert stored.payload["label"] == 0


async def test_a_stale_expected_version_fails_with_a_concurrency_error(store: SqlEventStore):
    stream = _stream()
    await store.append([observation(stream_id=stream)], expected_version=NO_STREAM)
    with pytest.raises(ConcurrencyError, match="expected 0"):
        await store.append([observation(stream_id=stream)], expected_version=NO_STREAM)
    await store.append([observation(stream_id=stream)], expected_version=1)
    assert [e.stream_version for e in await store.read_stream(stream)] == [1, 2]


async def test_a_retried_versioned_append_is_a_no_op_not_a_conflict(store: SqlEventStore):
    stream = _stream()
    event = observation(stream_id=stream)
    await store.append([event], expected_version=NO_STREAM)
    again = await store.append([event], expected_version=NO_STREAM)
    assert again[0].duplicate


async def test_two_writers_racing_for_the_same_version_cannot_both_win(store: SqlEventStore):
    stream = _stream()
    outcomes = await asyncio.gather(
        *(
            store.append([observation(stream_id=stream)], expected_version=NO_STREAM)
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, ConcurrencyError) for o in outcomes if isinstance(o, BaseException))


async def test_concurrent_appends_each_get_their_own_outcome(store: SqlEventStore):
    """Appends made at once: one's refusal fails it alone, nothing of a refused append is
    stored, and what was stored has unique positions, in order within each stream."""
    known = observation(stream_id=_stream(), label=0)
    await store.append([known])
    changed = known.model_copy(update={"payload": {**known.payload, "label": 1}})
    raced = _stream()
    streams = [_stream() for _ in range(8)]
    fresh = [[observation(stream_id=stream) for _ in range(3)] for stream in streams]
    calls = [store.append(events) for events in fresh]
    calls += [store.append([changed, observation(stream_id=known.stream_id)], refuse_changed=True)]
    calls += [
        store.append([observation(stream_id=raced)], expected_version=NO_STREAM) for _ in range(4)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    stored, refused, racers = outcomes[:8], outcomes[8], outcomes[9:]
    assert all(isinstance(result, list) for result in stored), stored
    assert isinstance(refused, EventIdChanged)
    assert len(await store.read_stream(known.stream_id)) == 1
    assert sum(isinstance(o, list) for o in racers) == 1
    assert all(isinstance(o, ConcurrencyError) for o in racers if not isinstance(o, list))
    assert len(await store.read_stream(raced)) == 1
    positions = [r.position for result in stored for r in result]  # type: ignore[union-attr]
    assert len(set(positions)) == len(positions) == 24
    for events, result in zip(fresh, stored, strict=True):
        read = await store.read_stream(events[0].stream_id)
        assert [e.event_id for e in read] == [e.event_id for e in events]
        assert [e.position for e in read] == [r.position for r in result]  # type: ignore[union-attr]


async def test_one_append_takes_the_events_of_one_stream(store: SqlEventStore):
    with pytest.raises(ValueError, match="one stream"):
        await store.append([observation(stream_id=_stream()), observation(stream_id=_stream())])


async def test_read_all_pages_by_position_and_filters_by_type_and_producer(store: SqlEventStore):
    start = await store.head()
    stream = _stream()
    await store.append([observation(stream_id=stream) for _ in range(5)])
    page1 = await store.read_all(after=start, limit=2)
    page2 = await store.read_all(after=page1[-1].position, limit=10)
    assert len(page1) == 2 and len(page2) == 3
    assert [e.position for e in page1 + page2] == sorted(e.position for e in page1 + page2)
    assert len(await store.read_all(after=start, types=["ModelTrained"])) == 0
    assert len(await store.read_all(after=start, producer="tests")) == 5
    assert len(await store.read_all(after=start, until=page1[-1].position)) == 2


async def test_read_all_filters_by_stream(store: SqlEventStore):
    start = await store.head()
    ours, other, third = _stream(), _stream(), _stream()
    await store.append([observation(stream_id=ours) for _ in range(3)])
    await store.append([observation(stream_id=other) for _ in range(2)])
    await store.append([observation(stream_id=ours)])
    await store.append([observation(stream_id=third)])
    mine = await store.read_all(after=start, streams=[ours])
    assert [e.stream_id for e in mine] == [ours] * 4
    assert [e.stream_version for e in mine] == [1, 2, 3, 4]
    both = await store.read_all(after=start, streams=[ours, other])
    assert len(both) == 6 and {e.stream_id for e in both} == {ours, other}
    assert await store.read_all(after=start, streams=[]) == []


async def test_read_all_reads_newest_first_when_descending(store: SqlEventStore):
    start = await store.head()
    stream = _stream()
    await store.append([observation(stream_id=stream) for _ in range(5)])
    newest = await store.read_all(after=start, limit=2, streams=[stream], descending=True)
    assert [e.stream_version for e in newest] == [5, 4]
    older = await store.read_all(
        after=start, limit=10, streams=[stream], until=newest[-1].position - 1, descending=True
    )
    assert [e.stream_version for e in older] == [3, 2, 1]


async def test_stored_events_round_trip_with_their_typed_payload(store: SqlEventStore):
    event = observation(stream_id=_stream(), label=1)
    [appended] = await store.append([event])
    stored = (await store.get([event.event_id]))[event.event_id]
    assert stored.position == appended.position and stored.recorded_at is not None
    assert stored.occurred_at == event.occurred_at
    data = stored.data()
    assert isinstance(data, ObservationRecorded) and data.label == 1 and data.features == {"x": 1.0}


async def test_cursors_start_at_zero_and_keep_what_was_saved(store: SqlEventStore):
    name = f"c-{uuid.uuid4().hex}"
    assert await store.load_cursor(name) == 0
    await store.save_cursor(name, 41)
    await store.save_cursor(name, 42)
    assert await store.load_cursor(name) == 42


async def test_a_cursor_saved_with_an_expected_position_loses_to_a_reset(store: SqlEventStore):
    name = f"c-{uuid.uuid4().hex}"
    assert await store.save_cursor(name, 10, expected=0)  # first save of a new cursor
    await store.save_cursor(name, 0)  # a reset (continuo replay) while a relay was publishing
    assert not await store.save_cursor(name, 20, expected=10)  # the relay's stale save loses
    assert await store.load_cursor(name) == 0
    assert await store.save_cursor(name, 5, expected=0)


async def test_the_database_refuses_to_edit_or_delete_history(store: SqlEventStore, store_url: str):
    await store.append([observation(stream_id=_stream())])
    engine = create_async_engine(store_url)
    for statement in ("UPDATE events SET type = 'X'", "DELETE FROM events"):
        with pytest.raises(Exception, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    await engine.dispose()


async def test_sqlite_appends_store_each_value_as_sqlalchemy_would(tmp_path):
    """SQLite appends hand the driver each value through its column type's bind processor; the
    stored rows must equal what SQLAlchemy's own INSERT stores for the same rows (UUIDs, times
    with their microseconds, JSON text), or reads and other writers would disagree."""
    import sqlite3

    from sqlalchemy import create_engine, insert

    from shared.store.migrate import upgrade_async
    from shared.store.schema import events
    from shared.store.sql import _json_dumps, open_event_store

    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    await upgrade_async(f"sqlite+aiosqlite:///{ours}")
    await upgrade_async(f"sqlite+aiosqlite:///{theirs}")
    store = open_event_store(f"sqlite+aiosqlite:///{ours}")
    stream = _stream()
    sent = [observation(stream_id=stream) for _ in range(3)]
    sent[1] = sent[1].model_copy(update={"correlation_id": uuid.uuid4()})
    await store.append(sent)
    await store.close()
    columns = [c.name for c in events.columns]
    with sqlite3.connect(ours) as db:
        stored = db.execute(f"SELECT {', '.join(columns)} FROM events ORDER BY position").fetchall()
    # The same rows through SQLAlchemy's INSERT (recorded_at as our store stamped it).
    rows = [dict(zip(columns, row, strict=True)) for row in stored]
    engine = create_engine(f"sqlite:///{theirs}", json_serializer=_json_dumps)
    with engine.begin() as conn:
        conn.execute(
            insert(events),
            [
                {
                    **row,
                    "event_id": e.event_id,
                    "occurred_at": e.occurred_at,
                    "recorded_at": _sqlite_time(row["recorded_at"]),
                    "correlation_id": e.correlation_id,
                    "payload": e.payload,
                }
                for row, e in zip(rows, sent, strict=True)
            ],
        )
    engine.dispose()
    with sqlite3.connect(theirs) as db:
        expected = db.execute(
            f"SELECT {', '.join(columns)} FROM events ORDER BY position"
        ).fetchall()
    assert stored == expected


def _sqlite_time(text: str):
    from datetime import UTC, datetime

    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def test_a_sqlite_append_waits_for_another_writer_then_stores(tmp_path, monkeypatch):
    """Another process holding SQLite's write lock makes an append wait, not fail; once the lock
    is free the append goes through. Past the store's timeout it fails with SQLite's error."""
    import sqlite3
    import threading
    import time

    from sqlalchemy.exc import OperationalError

    from shared.store import sql
    from shared.store.migrate import upgrade_async

    path = tmp_path / "events.db"
    await upgrade_async(f"sqlite+aiosqlite:///{path}")
    store = sql.open_event_store(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        released = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        released.start()
        started = time.monotonic()
        stream = _stream()
        await store.append([observation(stream_id=stream)])
        assert time.monotonic() - started >= 0.25
        assert len(await store.read_stream(stream)) == 1

        monkeypatch.setattr(sql, "WRITE_LOCK_TIMEOUT", 0.2)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            await store.append([observation(stream_id=stream)])
        other.execute("COMMIT")
        await store.append([observation(stream_id=stream)])  # the connection is still usable
        assert len(await store.read_stream(stream)) == 2
    finally:
        other.close()
        await store.close()
