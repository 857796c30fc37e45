"""SQLAlchemy 2 async adapters of the event store: PostgreSQL (asyncpg) and SQLite (aiosqlite).

Gap safety: a reader tailing by position must never skip an event that commits late. Both adapters
serialise appends, so positions become visible in the order they were assigned:
- PostgreSQL takes a transaction-level advisory lock before taking positions; the lock is released
  after the commit is visible, so position n+1 cannot be visible before position n.
- SQLite opens write transactions with BEGIN IMMEDIATE (one writer at a time across processes).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Text,
    cast,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    type_coerce,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import NullType

from shared.events.envelope import Envelope, EnvelopeJson, Producer, utcnow
from shared.store.port import ANY, Appended, ConcurrencyError, EventIdChanged, EventIdTaken
from shared.store.schema import cursors, events

# Failures of the store (or the network to it) that make a request retryable, not a bug.
STORE_FAILURES = (SQLAlchemyError, OSError, TimeoutError, ConcurrencyError)

T = TypeVar("T")

# Any 64-bit constant; all Continuo appenders agree on it.
_APPEND_LOCK_KEY = 0x0C0471_0E7E47


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# How every Continuo database engine writes and reads JSON columns: orjson, several times faster
# than the standard library's encoder (which was a third of a governance projection rebuild).
JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


# What a read selects: every column, the ones whose SQLAlchemy result processing costs most per
# row (UUIDs and datetimes parsed from text on SQLite, JSON) taken as the driver gives them and
# decoded in `_row_to_envelope`, which takes either form. Reads decoded 15-20k events/s before.
_RAW = {"event_id", "correlation_id", "causation_id", "occurred_at", "recorded_at", "payload"}
_READ_COLUMNS = [
    type_coerce(c, NullType()).label(c.name) if c.name in _RAW else c for c in events.c
]
# What a read for the bus selects: the same columns, with the payload, UUIDs and timestamps as
# the database's text (asyncpg would otherwise parse PostgreSQL's jsonb, UUIDs and timestamps, and
# the relay write them out again); `_row_to_json` slices the common forms.
_JSON_COLUMNS = [
    type_coerce(cast(c, Text), NullType()).label(c.name) if c.name in _RAW else c for c in events.c
]
_ENVELOPE_FIELDS = frozenset(Envelope.model_fields)
_PRODUCERS: dict[tuple[str, str], Producer] = {}  # few: one per service and release
_new = object.__new__
_set = object.__setattr__


def _uuid(value: Any) -> uuid.UUID | None:
    # SQLite stores a UUID as 32 hex digits; asyncpg gives its own subclass of UUID, which orjson
    # does not serialise (it takes the standard class only): made a standard one here.
    if value is None or value.__class__ is uuid.UUID:
        return value
    return uuid.UUID(int=value.int) if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _when(value: Any) -> datetime:
    # SQLite stores "YYYY-MM-DD HH:MM:SS.ffffff" (UTC, no offset): parsed with the offset, as
    # datetime.replace(tzinfo=) costs ten times the parse; asyncpg gives an aware datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value + "+00:00" if len(value) == 26 else value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _producer(service: str, version: str) -> Producer:
    producer = _PRODUCERS.get((service, version))
    if producer is None:
        producer = Producer(service=service, version=version)
        if len(_PRODUCERS) < 1000:
            _PRODUCERS[(service, version)] = producer
    return producer


def _row_to_envelope(row: Any) -> Envelope:
    """A stored row (`_READ_COLUMNS`, in the table's column order) as an envelope.

    What `Envelope.model_construct` makes, without its per-field loop: the row was validated
    when it was appended. Frozen producers are shared between envelopes."""
    (
        position,
        event_id,
        stream_id,
        stream_version,
        type_,
        schema_version,
        occurred_at,
        recorded_at,
        correlation_id,
        causation_id,
        service,
        version,
        payload,
    ) = row
    envelope = _new(Envelope)
    _set(
        envelope,
        "__dict__",
        {
            "event_id": _uuid(event_id),
            "type": type_,
            "schema_version": schema_version,
            "stream_id": stream_id,
            "stream_version": stream_version,
            "occurred_at": _when(occurred_at),
            "recorded_at": _when(recorded_at),
            "correlation_id": _uuid(correlation_id),
            "causation_id": _uuid(causation_id),
            "producer": _producer(service, version),
            "payload": orjson.loads(payload) if isinstance(payload, (str, bytes)) else payload,
            "position": position,
        },
    )
    _set(envelope, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
    _set(envelope, "__pydantic_extra__", None)
    _set(envelope, "__pydantic_private__", None)
    return envelope


def _uuid_text(value: Any) -> str | None:
    # SQLite stores 32 hex digits; PostgreSQL's text is the dashed form already.
    if isinstance(value, str) and len(value) == 32:
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return None if value is None else str(value)


def _when_text(value: Any) -> str:
    # RFC 3339 by slicing the common forms: PostgreSQL's text of a timestamptz in UTC
    # ("YYYY-MM-DD HH:MM:SS[.f...]+00", trailing zeros of the fraction dropped) and SQLite's
    # "YYYY-MM-DD HH:MM:SS.ffffff" (UTC); any other through `_when`.
    if isinstance(value, str):
        if value.endswith("+00"):
            return f"{value[:10]}T{value[11:-3]}+00:00"
        if len(value) == 26 and value[19] == ".":
            return f"{value[:10]}T{value[11:]}+00:00"
    return _when(value).isoformat()


# How a stored payload begins when `task` is its first key: as appended (orjson, declaration
# order) and as PostgreSQL's jsonb gives it back (shorter keys first, ", " and ": ").
_TASK_PREFIXES = ('{"task":"', '{"task": "')


def _payload_task(payload: str) -> str | None:
    """The payload's `task`, read off its first key where it is plain text; parsed otherwise."""
    for prefix in _TASK_PREFIXES:
        if payload.startswith(prefix):
            end = payload.find('"', len(prefix))
            task = payload[len(prefix) : end]
            if end > 0 and "\\" not in task:
                return task
            break
    task = orjson.loads(payload).get("task")
    return task if isinstance(task, str) else None


def _row_to_json(row: Any) -> EnvelopeJson:
    """A stored row (`_READ_COLUMNS`) as the bus sends it: the envelope's JSON made from the
    row's own text (the payload is not parsed), which decodes to what `_row_to_envelope` makes."""
    (
        position,
        event_id,
        stream_id,
        stream_version,
        type_,
        schema_version,
        occurred_at,
        recorded_at,
        correlation_id,
        causation_id,
        service,
        version,
        payload,
    ) = row
    if isinstance(payload, bytes):
        payload = payload.decode()
    elif not isinstance(payload, str):
        payload = orjson.dumps(payload).decode()
    event = _uuid_text(event_id)
    body = orjson.dumps(
        {
            "event_id": event,
            "type": type_,
            "schema_version": schema_version,
            "stream_id": stream_id,
            "stream_version": stream_version,
            "occurred_at": _when_text(occurred_at),
            "recorded_at": _when_text(recorded_at),
            "correlation_id": _uuid_text(correlation_id),
            "causation_id": _uuid_text(causation_id),
            "producer": {"service": service, "version": version},
            "payload": orjson.Fragment(payload),
            "position": position,
        }
    )
    return EnvelopeJson(type_, position, event or "", stream_id, _payload_task(payload), body)


class SqlEventStore:
    """The event store on a SQL database. Use `open_event_store(url)` to get the right adapter.

    Every operation is one unit of work, a plain function of a synchronous SQLAlchemy
    `Connection`; an adapter says how a unit runs: on PostgreSQL through asyncpg (`run_sync`, each
    statement awaited natively), on SQLite in one worker thread (a statement there costs
    microseconds; hopping threads per statement, as an async SQLite driver does, cost ~1 ms each).
    """

    def __init__(self) -> None:
        self._watchers: list[asyncio.Event] = []

    def watch(self) -> asyncio.Event:
        """An event this store sets after every append made through it (in this process): a
        relay waits on it instead of polling the store. The waiter clears it before it reads,
        so an append during the read wakes it again."""
        event = asyncio.Event()
        self._watchers.append(event)
        return event

    async def _read(self, work: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def _write(self, work: Callable[..., T], *args: Any, append: bool = False) -> T:
        """Run `work` in a write transaction; `append`: under the appenders' lock."""
        raise NotImplementedError

    def _insert(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[uuid.UUID, Any]:
        """Insert rows (inside the append lock); return each event's (position, version)."""
        result = conn.execute(
            insert(events).returning(
                events.c.event_id,
                events.c.position,
                events.c.stream_version,
                sort_by_parameter_order=True,
            ),
            rows,
        )
        return {r.event_id: (r.position, r.stream_version) for r in result}

    async def append(
        self,
        events_: Sequence[Envelope],
        *,
        expected_version: int | None = ANY,
        refuse_changed: bool = False,
    ) -> list[Appended]:
        if not events_:
            return []
        stream_id = events_[0].stream_id
        if any(e.stream_id != stream_id for e in events_):
            raise ValueError("one append takes the events of one stream")
        ids = [e.event_id for e in events_]
        if len(set(ids)) != len(ids):
            raise ValueError("an append names the same event_id twice")
        try:
            appended = await self._write(
                self._append_locked,
                stream_id,
                events_,
                expected_version,
                refuse_changed,
                append=True,
            )
        except IntegrityError as exc:  # only reachable if two writers bypass the lock
            current = await self._read(_stream_version, stream_id)
            raise ConcurrencyError(stream_id, expected_version or -1, current) from exc
        for watcher in self._watchers:
            watcher.set()
        return appended

    def _append_locked(
        self,
        conn: Connection,
        stream_id: str,
        events_: Sequence[Envelope],
        expected_version: int | None,
        refuse_changed: bool,
    ) -> list[Appended]:
        known: dict[uuid.UUID, Any] = {}
        # In chunks: SQLite and asyncpg refuse statements with more than 32,766 parameters.
        for start in range(0, len(events_), 500):
            chunk = [e.event_id for e in events_[start : start + 500]]
            found = conn.execute(
                select(
                    events.c.event_id,
                    events.c.position,
                    events.c.stream_version,
                    events.c.stream_id,
                    events.c.type,
                    events.c.payload,
                ).where(events.c.event_id.in_(chunk))
            )
            known.update((row.event_id, row) for row in found)
        taken = [i for i, row in known.items() if row.stream_id != stream_id]
        if taken:
            raise EventIdTaken(stream_id, taken)
        if refuse_changed and known:
            changed = [
                e.event_id
                for e in events_
                if (row := known.get(e.event_id)) is not None
                and (row.type != e.type or row.payload != orjson.loads(_json_dumps(e.payload)))
            ]
            if changed:
                raise EventIdChanged(stream_id, changed)
        fresh = [e for e in events_ if e.event_id not in known]
        current = 0
        if fresh:
            current = _stream_version(conn, stream_id)
            if expected_version is not ANY and current != expected_version:
                raise ConcurrencyError(stream_id, expected_version, current)
        recorded_at = utcnow()
        rows = [
            {
                "event_id": e.event_id,
                "stream_id": stream_id,
                "stream_version": current + i,
                "type": e.type,
                "schema_version": e.schema_version,
                "occurred_at": e.occurred_at,
                "recorded_at": recorded_at,
                "correlation_id": e.correlation_id,
                "causation_id": e.causation_id,
                "producer_service": e.producer.service,
                "producer_version": e.producer.version,
                "payload": e.payload,
            }
            for i, e in enumerate(fresh, start=1)
        ]
        positions = self._insert(conn, rows) if rows else {}
        outcome = []
        for e in events_:
            if e.event_id in known:
                row = known[e.event_id]
                outcome.append(Appended(e.event_id, row.position, row.stream_version, True))
            else:
                position, version = positions[e.event_id]
                outcome.append(Appended(e.event_id, position, version, False))
        return outcome

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Iterable[str] | None = None,
        producer: str | None = None,
        until: int | None = None,
        streams: Iterable[str] | None = None,
        descending: bool = False,
    ) -> list[Envelope]:
        query = select(*_READ_COLUMNS).where(events.c.position > after)
        if until is not None:
            query = query.where(events.c.position <= until)
        if types is not None:
            query = query.where(events.c.type.in_(list(types)))
        if producer is not None:
            query = query.where(events.c.producer_service == producer)
        if streams is not None:
            query = query.where(events.c.stream_id.in_(list(streams)))
        order = events.c.position.desc() if descending else events.c.position
        return await self._read(_envelopes, query.order_by(order).limit(limit))

    async def read_all_json(
        self, after: int = 0, limit: int = 1000, *, producer: str | None = None
    ) -> list[EnvelopeJson]:
        query = select(*_JSON_COLUMNS).where(events.c.position > after)
        if producer is not None:
            query = query.where(events.c.producer_service == producer)
        return await self._read(_envelope_jsons, query.order_by(events.c.position).limit(limit))

    async def read_stream(
        self, stream_id: str, after_version: int = 0, limit: int | None = None
    ) -> list[Envelope]:
        query = (
            select(*_READ_COLUMNS)
            .where(events.c.stream_id == stream_id, events.c.stream_version > after_version)
            .order_by(events.c.stream_version)
            .limit(limit)
        )
        return await self._read(_envelopes, query)

    async def get(self, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Envelope]:
        wanted = list(set(event_ids))
        if not wanted:
            return {}
        return await self._read(_by_id, wanted)

    async def head(self) -> int:
        return await self._read(_head)

    async def load_cursor(self, name: str) -> int:
        return await self._read(_cursor, name)

    async def save_cursor(self, name: str, position: int, *, expected: int | None = None) -> bool:
        return await self._write(_save_cursor, name, position, expected)

    async def close(self) -> None:
        raise NotImplementedError


# -- units of work (plain functions of a synchronous connection) ----------------------------------


def _stream_version(conn: Connection, stream_id: str) -> int:
    value = conn.scalar(
        select(func.max(events.c.stream_version)).where(events.c.stream_id == stream_id)
    )
    return int(value or 0)


def _decoded(conn: Connection, query: Any, decode: Callable[[Any], T]) -> list[T]:
    # The driver's rows as they are (tuples): every column either needs no processing or is
    # decoded by `decode`; building SQLAlchemy rows cost a quarter of a read.
    result = conn.execute(query)
    try:
        with _no_collections():
            return list(map(decode, result.cursor.fetchall()))
    finally:
        result.close()


def _envelopes(conn: Connection, query: Any) -> list[Envelope]:
    return _decoded(conn, query, _row_to_envelope)


def _envelope_jsons(conn: Connection, query: Any) -> list[EnvelopeJson]:
    return _decoded(conn, query, _row_to_json)


@contextmanager
def _no_collections() -> Iterator[None]:
    """No cyclic garbage collection while a page is decoded: it makes no cycles (reference
    counting frees what it drops), but its thousands of new dicts set off collections that cost
    a fifth of a read (SQLite, pages of 1,000: 45k -> 55-60k events/s). Collection is
    process-wide: it is turned back on only by the reader that turned it off."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _by_id(conn: Connection, wanted: list[uuid.UUID]) -> dict[uuid.UUID, Envelope]:
    found: dict[uuid.UUID, Envelope] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(select(*_READ_COLUMNS).where(events.c.event_id.in_(chunk)))
        found.update((e.event_id, e) for e in map(_row_to_envelope, rows))
    return found


def _head(conn: Connection) -> int:
    return int(conn.scalar(select(func.max(events.c.position))) or 0)


def _cursor(conn: Connection, name: str) -> int:
    return int(conn.scalar(select(cursors.c.position).where(cursors.c.name == name)) or 0)


def _save_cursor(conn: Connection, name: str, position: int, expected: int | None) -> bool:
    query = cursors.update().where(cursors.c.name == name)
    if expected is not None:
        query = query.where(cursors.c.position == expected)
    updated = conn.execute(query.values(position=position, updated_at=utcnow()))
    if updated.rowcount:
        return True
    exists = conn.scalar(select(cursors.c.name).where(cursors.c.name == name))
    if exists is not None or (expected is not None and expected != 0):
        return False  # someone else moved it since the caller read it
    conn.execute(cursors.insert().values(name=name, position=position, updated_at=utcnow()))
    return True


# -- adapters ------------------------------------------------------------------------------------


class PostgresEventStore(SqlEventStore):
    """PostgreSQL adapter (asyncpg): appends serialised by a transaction-level advisory lock."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self._engine = engine

    async def _read(self, work: Callable[..., T], *args: Any) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(work, *args)

    async def _write(self, work: Callable[..., T], *args: Any, append: bool = False) -> T:
        async with self._engine.begin() as conn:
            if append:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY}
                )
            return await conn.run_sync(work, *args)

    async def close(self) -> None:
        await self._engine.dispose()


class SqliteEventStore(SqlEventStore):
    """SQLite adapter: WAL journal, writes in BEGIN IMMEDIATE transactions, reads never block.

    Each unit of work runs in one worker thread on pysqlite connections."""

    def __init__(self, url: str) -> None:
        super().__init__()
        sync_url = url.replace("sqlite+aiosqlite:", "sqlite:", 1)
        self._reader = _sqlite_engine(sync_url, immediate=False)
        self._writer = _sqlite_engine(sync_url, immediate=True)
        # One writer per process at a time: the file has one write lock, and writers of the
        # same process that race for it only spin (`_begin_immediate`) while one holds it.
        self._write_lock = threading.Lock()

    async def _read(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(_run, self._reader, False, work, args)

    async def _write(self, work: Callable[..., T], *args: Any, append: bool = False) -> T:
        # BEGIN IMMEDIATE takes the file's one write lock: appends are serialised by it.
        return await asyncio.to_thread(self._run_write, work, args)

    def _run_write(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._write_lock:
            return _run(self._writer, True, work, args)

    def _insert(self, conn: Connection, rows: list[dict[str, Any]]) -> dict[uuid.UUID, Any]:
        # SQLite cannot return ordered RETURNING rows from an executemany, so SQLAlchemy would
        # insert one row per round trip. The write lock (BEGIN IMMEDIATE) is held, so the next
        # positions are known: number them here and insert in one executemany.
        last = conn.scalar(select(func.max(events.c.position))) or 0
        for position, row in enumerate(rows, start=last + 1):
            row["position"] = position
        # The driver's executemany, each value through its column type's own bind processor:
        # SQLAlchemy's generic per-row parameter handling was half of an append's CPU.
        columns = _bind_processors(conn)
        statement = (
            f"INSERT INTO {events.name} ({', '.join(name for name, _ in columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        conn.exec_driver_sql(
            statement,
            [
                tuple(row[name] if bind is None else bind(row[name]) for name, bind in columns)
                for row in rows
            ],
        )
        return {row["event_id"]: (row["position"], row["stream_version"]) for row in rows}

    async def close(self) -> None:
        await asyncio.to_thread(self._reader.dispose)
        await asyncio.to_thread(self._writer.dispose)


_PROCESSORS: weakref.WeakKeyDictionary[Any, list[tuple[str, Callable[[Any], Any] | None]]] = (
    weakref.WeakKeyDictionary()
)


def _bind_processors(conn: Connection) -> list[tuple[str, Callable[[Any], Any] | None]]:
    """Each `events` column with what SQLAlchemy gives the driver for its values on this
    connection's dialect (None: the value as it is; JSON with the engine's serialiser), looked
    up once per engine's dialect."""
    dialect = conn.dialect
    found = _PROCESSORS.get(dialect)
    if found is None:
        found = _PROCESSORS[dialect] = [
            (column.name, column.type.dialect_impl(dialect).bind_processor(dialect))
            for column in events.columns
        ]
    return found


def _run(engine: Engine, write: bool, work: Callable[..., T], args: tuple[Any, ...]) -> T:
    with engine.begin() if write else engine.connect() as conn:
        return work(conn, *args)


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent), unless it is already; retry while others hold it.

    Changing the journal mode needs the file to itself, and SQLite answers "database is locked"
    at once rather than waiting when processes open a new file together.
    """
    for _ in range(100):
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception as exc:  # the driver's OperationalError, through the async adapter
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)
    raise RuntimeError("could not switch the SQLite event store to WAL: it stayed locked")


# How long a writer waits for SQLite's one write lock before the append fails.
WRITE_LOCK_TIMEOUT = 60.0
# SQLite's own busy handler sleeps 1, 2, 5, 10, ... up to 100 ms between tries and is not woken
# when the lock is released: with four services writing one file, the lock sat free while every
# writer slept (docs/benchmarks.md, "The SQLite write lock"). A writer connection lets SQLite
# wait 2 ms at most (a try after 1 ms and after 2), then `_begin_immediate` tries again at once.
_WRITER_BUSY_MS = 2


def _begin_immediate(conn: Any) -> None:
    """Take the write lock, trying every millisecond or two until `WRITE_LOCK_TIMEOUT`."""
    deadline = time.monotonic() + WRITE_LOCK_TIMEOUT
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    """An engine on the SQLite file: `immediate` for the writer (every transaction takes the
    write lock when it begins), else the reader (WAL readers never wait for the writer)."""
    busy_ms = _WRITER_BUSY_MS if immediate else int(WRITE_LOCK_TIMEOUT * 1000)
    engine = create_engine(
        url,
        **JSON_CODEC,
        connect_args={"timeout": busy_ms / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if immediate:
            _begin_immediate(conn)
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def open_event_store(url: str, *, pool_size: int = 5) -> SqlEventStore:
    """The event store adapter for a SQLAlchemy URL (postgresql+asyncpg:// or sqlite+aiosqlite://)."""
    if url.startswith("sqlite"):
        return SqliteEventStore(url)
    if url.startswith("postgresql"):
        engine = create_async_engine(
            url,
            **JSON_CODEC,
            pool_size=pool_size,
            pool_pre_ping=True,
        )
        return PostgresEventStore(engine)
    raise ValueError(
        f"unsupported event store URL {url!r}: use postgresql+asyncpg:// or sqlite+aiosqlite://"
    )
