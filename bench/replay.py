"""Replay speed from the event store, on SQLite and on PostgreSQL, in events a second.

    .venv/bin/python bench/replay.py [--rows 50000] [--stores sqlite postgres] [--no-write]

A SQLite store is filled through the store's append as a stream through serving leaves it:
`--rows` elec rows (repeated), each an observation, its label one 20-row request later, and the
predictions served for them (log and wait; one PredictionServed event per 20-row request). The
PostgreSQL store gets the same rows by COPY (filling it through append would take the run's time;
appends are measured by the ingest benchmarks).
Then, in this one process, with a bar per replay on a terminal:

- baseline: the events read by the database driver alone (sqlite3, asyncpg; rows as tuples,
  nothing decoded), in pages of 10,000 by position: the floor a replay reads at.
- (a) `continuo replay`: the relays publish the store again. Each producer's relay (`ingest`: the
  data events; `serving`: the predictions) runs from position 0 to the end, as the services do
  after their cursors are reset, to the embedded broker (acks=all). Also the store read alone in
  the relay's pages of 1,000 (`read_all_json`: each event's JSON, made from its row).
- (b) governance's projection rebuild (`Governance.rebuild`: empty the tables, apply every
  projected event from position 0, one transaction), its projections in a database of the same
  kind.
- (c) the trainer's store replay of the task (`replay_models`: a fresh core over every data event,
  learning included), and the task's stream read alone in its pages (`stream_pages`).

Per core: events over the CPU seconds spent meanwhile by this process, the broker and the
PostgreSQL backends serving the run (what one core gives, whatever else the machine runs).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.recovery import SPEC, data_events  # noqa: E402
from bench.report import write_section  # noqa: E402
from continuo.progress import progress  # noqa: E402
from services.governance.app import MIGRATIONS  # noqa: E402
from services.governance.projections import PROJECTED_TYPES  # noqa: E402
from services.governance.schema import governance_engine, predictions  # noqa: E402
from services.governance.service import Governance  # noqa: E402
from services.trainer.service import replay_models  # noqa: E402
from shared.broker import start_broker_ready  # noqa: E402
from shared.bus import KafkaPublisher, ensure_topics  # noqa: E402
from shared.events.envelope import Envelope, Producer, new_event  # noqa: E402
from shared.events.types import (  # noqa: E402
    PredictionServed,
    ServedPrediction,
    data_stream,
    prediction_stream,
)
from shared.registry import register_tasks  # noqa: E402
from shared.relay import Relay  # noqa: E402
from shared.runtime import Runtime, tune_collector  # noqa: E402
from shared.settings import CommonSettings  # noqa: E402
from shared.store.migrate import upgrade_async  # noqa: E402
from shared.store.pages import PAGE, position_pages, stream_pages  # noqa: E402
from shared.store.port import EventStore  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402
from tests.support import create_pg_database_async, drop_pg_database_async  # noqa: E402

SECTION = "Replay (bench/replay.py)"
PG_ADMIN = os.environ.get("CONTINUO_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
INGEST = Producer(service="ingest", version="bench")
SERVING = Producer(service="serving", version="bench")
GOAL = 50_000
REQUEST = 20  # rows a log-and-wait request records together


def served(observations: list[Envelope]) -> list[Envelope]:
    """The predictions served for these observations (log and wait: the prediction's id is the
    observation's), one event per request, as serving's recorder stores them."""
    rows = [
        ServedPrediction(
            prediction_id=o.event_id,
            model_version=1,
            entity_id=o.payload["entity_id"],
            features=o.payload["features"],
            probability=0.5,
            label=1,
            recorded=True,
            learned_through=(o.stream_version or 1) - 1,
        )
        for o in observations
    ]
    return [
        new_event(
            PredictionServed(task=SPEC.name, predictions=rows[i : i + REQUEST]),
            stream_id=prediction_stream(SPEC.name),
            producer=SERVING,
        )
        for i in range(0, len(rows), REQUEST)
    ]


async def fill(store: EventStore, rows: int) -> int:
    """Store `rows` rows (observation, label, prediction); return the events stored."""
    await register_tasks(store, [SPEC], INGEST)
    events: Iterator[Envelope] = data_events(INGEST)
    started, stored, seen = time.perf_counter(), 1, 0
    with progress("filling the store", rows, unit="rows") as bar:
        while seen < rows:
            page = list(itertools.islice(events, 3000))
            await store.append(page)
            observed = [e for e in page if e.type == "ObservationRecorded"][: rows - seen]
            predictions = served(observed)
            await store.append(predictions)
            seen += len(observed)
            stored += len(page) + len(predictions)
            bar.advance(len(observed))
    print(f"  stored {stored:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    return stored


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def copy_store(sqlite_file: Path, url: str) -> int:
    """The SQLite store's events, positions included, into a migrated PostgreSQL store."""

    def when(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    source = sqlite3.connect(sqlite_file)
    conn = await asyncpg.connect(_dsn(url))
    copied = 0
    try:
        cursor = source.execute("SELECT * FROM events ORDER BY position")
        while rows := cursor.fetchmany(20_000):
            records = [
                (
                    r[0],
                    uuid.UUID(r[1]),
                    *r[2:6],
                    when(r[6]),
                    when(r[7]),
                    uuid.UUID(r[8]) if r[8] else None,
                    uuid.UUID(r[9]) if r[9] else None,
                    *r[10:],
                )
                for r in rows
            ]
            await conn.copy_records_to_table("events", records=records)
            copied += len(records)
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'position'), max(position)) FROM events"
        )
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()
        source.close()
    return copied


def _ticks(pid: int | str) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


class Cpu:
    """CPU seconds of this process, the broker and the PostgreSQL backends of `database`."""

    def __init__(self, broker_pid: int, database: str | None) -> None:
        self._pids = [os.getpid(), broker_pid]
        self._database = database

    def seconds(self) -> float:
        pids: list[int | str] = list(self._pids)
        if self._database:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        title = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    if title.startswith(b"postgres:") and self._database.encode() in title:
                        pids.append(entry.name)
        ticks = 0
        for pid in pids:
            try:
                ticks += _ticks(pid)
            except OSError:
                pass  # a backend that ended: its time is lost (the pool keeps them open)
        return ticks / os.sysconf("SC_CLK_TCK")

    async def time(
        self, label: str, total: int, work: Callable[[Callable[[int], object]], Awaitable[int]]
    ) -> dict[str, float]:
        """Run `work(advance)` under a bar; its events, seconds, events/s and CPU seconds."""
        cpu, started = self.seconds(), time.perf_counter()
        with progress(label, total, unit="events") as bar:
            events = await work(bar.advance)
        wall = time.perf_counter() - started
        used = max(self.seconds() - cpu, 1e-9)
        rate = events / wall
        print(f"  {label}: {events:,} events, {wall:.1f} s, {rate:,.0f} events/s", flush=True)
        return {"events": events, "seconds": wall, "rate": rate, "cpu": used}


async def raw_read(kind: str, url: str, file: Path | None, advance: Callable[[int], object]) -> int:
    """Every event as the driver gives it, in pages of `PAGE` by position: the floor."""
    sql = "SELECT * FROM events WHERE position > {} ORDER BY position LIMIT {}"
    count, after = 0, 0
    if kind == "sqlite":
        assert file is not None
        conn = sqlite3.connect(file)
        try:
            while rows := conn.execute(sql.format("?", PAGE), (after,)).fetchall():
                count, after = count + len(rows), rows[-1][0]
                advance(len(rows))
        finally:
            conn.close()
        return count
    pg = await asyncpg.connect(_dsn(url))
    try:
        while rows := await pg.fetch(sql.format("$1", PAGE), after):
            count, after = count + len(rows), rows[-1][0]
            advance(len(rows))
    finally:
        await pg.close()
    return count


async def read_pages(store: EventStore, advance: Callable[[int], object]) -> int:
    """Read the store as the relay does (each event's JSON), in its pages of 1,000, and count."""
    after, count = 0, 0
    while page := await store.read_all_json(after=after, limit=1000):
        count += len(page)
        after = page[-1].position
        advance(len(page))
    return count


async def relay_all(store: EventStore, bootstrap: str, advance: Callable[[int], object]) -> int:
    """Each producer's relay from 0 to the end of the store, to the broker (acks=all)."""
    publisher = KafkaPublisher(bootstrap, idempotence=False)
    await publisher.start()
    try:
        count = 0
        for producer in ("ingest", "serving"):
            relay = Relay(store, publisher, producer=producer)
            await store.save_cursor(relay.cursor_name, 0)
            while n := await relay.publish_once():
                count += n
                advance(n)
        return count
    finally:
        await publisher.stop()


async def measure(
    kind: str, rows: int, workdir: Path, broker_pid: int, bootstrap: str, source: Path | None
) -> dict[str, Any]:
    """Fill (SQLite) or copy (PostgreSQL, from `source`) a store, then time each replay."""
    print(f"{kind}:", flush=True)
    names: list[str] = []
    file: Path | None = None
    if kind == "sqlite":
        file = workdir / "events.db"
        url = f"sqlite+aiosqlite:///{file}"
        gov_url = f"sqlite+aiosqlite:///{workdir / 'governance.db'}"
    else:
        names = [f"continuo_bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
        url, gov_url = [await create_pg_database_async(PG_ADMIN, n) for n in names]
    try:
        await upgrade_async(url)
        await upgrade_async(gov_url, MIGRATIONS, "gov_alembic_version")
        store = open_event_store(url)
        if source is None:
            stored = await fill(store, rows)
        else:
            stored = await copy_store(source, url)
            print(f"  copied {stored:,} events from the SQLite store", flush=True)
        head = await store.head()
        cpu = Cpu(broker_pid, names[0] if names else None)
        out: dict[str, Any] = {"store": kind, "events": stored, "rows": rows, "file": file}
        out["raw"] = await cpu.time("driver read", head, lambda a: raw_read(kind, url, file, a))
        out["relay_read"] = await cpu.time("relay read", head, lambda a: read_pages(store, a))
        out["relay"] = await cpu.time(
            "relay publish", head, lambda a: relay_all(store, bootstrap, a)
        )

        settings = CommonSettings(store_url=url, artifacts_dir=workdir / "artifacts")
        runtime = Runtime.build("governance", settings)
        engine = governance_engine(gov_url)
        governance = Governance(runtime, engine)

        async def rebuild(advance: Callable[[int], object]) -> int:
            return int((await governance.rebuild(progress=advance))["events_applied"])

        async def projected_read(advance: Callable[[int], object]) -> int:
            count = 0
            async for page in position_pages(store, types=PROJECTED_TYPES):
                count += len(page)
                advance(len(page))
            return count

        projected = await projected_read(lambda _: None)
        out["governance_read"] = await cpu.time("governance read", projected, projected_read)
        out["governance"] = await cpu.time("governance rebuild", projected, rebuild)
        async with engine.connect() as conn:
            out["predictions"] = (
                await conn.execute(select(func.count()).select_from(predictions))
            ).scalar()
        await governance.close()
        await engine.dispose()
        await runtime.store.close()

        stream = data_stream(SPEC.name)

        async def stream_read(advance: Callable[[int], object]) -> int:
            count = 0
            async for page in stream_pages(store, stream):
                count += len(page)
                advance(len(page))
            return count

        data = await stream_read(lambda _: None)
        out["trainer_read"] = await cpu.time("trainer read", data, stream_read)

        async def trainer(advance: Callable[[int], object]) -> int:
            core, _ = await replay_models(store, SPEC.name, progress=advance)
            return core.version

        out["trainer"] = await cpu.time("trainer replay", data, trainer)
        await store.close()
        return out
    finally:
        for name in names:
            await drop_pg_database_async(PG_ADMIN, name)


ROWS = (
    ("raw", "baseline: the driver reads every event, nothing decoded (pages of 10,000)"),
    (
        "relay_read",
        "(a) `continuo replay`: the relay's store read alone (`read_all_json`, pages of 1,000)",
    ),
    ("relay", "(a) `continuo replay`: the relays publish the store to the broker (acks=all)"),
    ("governance_read", "(b) governance: the projected events read alone (`position_pages`)"),
    ("governance", "(b) governance projection rebuild (`Governance.rebuild`)"),
    ("trainer_read", "(c) trainer: the task's data stream read alone (`stream_pages`)"),
    ("trainer", "(c) trainer store replay, learning included (`replay_models`)"),
)


def report(results: list[dict[str, Any]], rows: int, load: tuple[float, float]) -> str:
    stores = " and ".join(f"{r['store']} ({r['events']:,} events)" for r in results)
    lines = [
        f"`python bench/replay.py --rows {rows}` ({date.today()}, this 2-core machine, one "
        f"process; {stores}; per elec row an observation, its label one request later and the "
        f"prediction served for it, one PredictionServed event per {REQUEST}-row request, so "
        f"governance's events hold {REQUEST} predictions each; the PostgreSQL store is a COPY "
        "of the SQLite one). Events/s over wall time; per core: events over the CPU seconds "
        "this process, the broker and the PostgreSQL backends spent meanwhile. Goal: "
        f"{GOAL:,} events/s; the baseline row is the same run's driver reading the same events. "
        f"Load average (1 min) at the start and the end of the run: {load[0]:.1f}, {load[1]:.1f}"
        + (" (above 1: other work shared the two cores)." if max(load) > 1 else "."),
        "",
        "| replay | store | events | seconds | events/s | vs baseline | CPU s "
        "| events/s per core |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in ROWS:
        for r in results:
            m, base = r[key], r["raw"]
            lines.append(
                f"| {label} | {r['store']} | {int(m['events']):,} | {m['seconds']:.1f} "
                f"| {m['rate']:,.0f} | {m['rate'] / base['rate']:.2f}x | {m['cpu']:.1f} "
                f"| {m['events'] / m['cpu']:,.0f} |"
            )
    lines += [
        "",
        "What bounds each row: the relay reads each event as the JSON it sends, made from the "
        "stored row's text (UUIDs, timestamps and the payload as the database gives them "
        "back, not parsed; `EventStore.read_all_json`), 6-13 us an event against the driver's "
        "2-6 us, and reads the next page while the broker acknowledges the last (until "
        "2026-11-28 it built every envelope and serialised it again: 25-30 us an event); the "
        "rebuild validates each PredictionServed "
        "payload and inserts its rows into governance's tables; the trainer's replay is its "
        "learner (LightGBM and the online models: half its time), which must make the same "
        "bytes, so it is not batched differently.",
    ]
    for r in results:
        m = r["governance"]
        lines.append(
            f"\n{r['store']}: the rebuild projected {r['predictions']:,} predictions, "
            f"{r['predictions'] / m['seconds']:,.0f} predictions/s."
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # Governance's rebuild and the trainer's replay run in their services with the services'
    # collector setting; here too (with CPython's default they ran 1.3-1.6x slower).
    tune_collector(CommonSettings())
    load_before = os.getloadavg()[0]
    broker = await start_broker_ready()
    try:
        await ensure_topics(broker.bootstrap)
        with tempfile.TemporaryDirectory(prefix="continuo-replay-") as tmp:
            results: list[dict[str, Any]] = []
            source: Path | None = None
            # SQLite first, always: the PostgreSQL store is a copy of it.
            for kind in ("sqlite", "postgres"):
                if kind == "postgres" and kind not in args.stores:
                    break
                (Path(tmp) / kind).mkdir()
                out = await measure(
                    kind, args.rows, Path(tmp) / kind, broker.process.pid, broker.bootstrap, source
                )
                source = out["file"]
                if kind in args.stores:
                    results.append(out)
    finally:
        broker.stop()
    text = report(results, args.rows, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    asyncio.run(main())
