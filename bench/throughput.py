"""Ingest at broker speed? A raw aiokafka producer and Continuo's ingest, in the same run, on the
embedded broker, on SQLite and on PostgreSQL.

    .venv/bin/python bench/throughput.py [--events 60000] [--clients 4] [--no-write]

For each store (a fresh SQLite file; a fresh PostgreSQL database on 127.0.0.1:5432):
1. **Raw producer**: one `AIOKafkaProducer` (acks=all, the service's defaults otherwise) sends
   `--events` records, each the bytes of a real `ObservationRecorded` envelope as the relay would
   publish it, keyed by task, and waits for every acknowledgement: record by record (`send`), and
   again through the producer's batch API (what ingest's relay uses). Measured first in each
   store's run, on the same broker the service then uses; the ratio is against the faster.
2. **Ingest**: the ingest service alone (no trainer, governance or serving competing for the two
   cores) takes the same number of observations from `--clients` concurrent HTTP clients in
   requests of 100 and of 1,000 records. Two figures: *accepted* (HTTP -> store: the last
   request answered) and *published* (HTTP -> store -> Kafka: until ingest's relay cursor, which
   moves only after the broker acknowledged, has passed the last accepted event).
The ratio that the issue asks about is published / raw producer. Every guarantee stays on:
gap-safe positions, idempotent appends, the relay's at-least-once publishing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.loop import drift_stream, loop_spec  # noqa: E402
from continuo.stack import Stack, write_task_specs  # noqa: E402
from shared.bus import ensure_topics  # noqa: E402
from shared.events.envelope import Producer, new_event  # noqa: E402
from shared.events.types import ObservationRecorded, data_stream  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402
from tests.support import create_pg_database, drop_pg_database  # noqa: E402

SECTION = "Ingest throughput (bench/throughput.py)"
TASK = "throughput"
PG_ADMIN = os.environ.get("CONTINUO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SIZES = (100, 1000)


def records(n: int) -> list[dict[str, Any]]:
    """`n` observations of the benchmark task, as a client posts them."""
    features, _, entities = drift_stream(n, drift_at=n)
    return [{"entity_id": e, "features": f} for f, e in zip(features, entities, strict=True)]


async def raw_producer(bootstrap: str, events: int, *, batched: bool = False) -> float:
    """Records per second one aiokafka producer gets acknowledged (acks=all): record by record
    (`send`), or `batched` (`create_batch`/`send_batch`, each batch to the key's partition)."""
    row = records(1)[0]
    envelope = new_event(
        ObservationRecorded(
            task=TASK, pipeline_version="v", entity_id=row["entity_id"], features=row["features"]
        ),
        stream_id=data_stream(TASK),
        producer=Producer(service="ingest", version="bench"),
    )
    value, key = envelope.to_json(), TASK.encode()
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)  # connected and warm
        started = time.perf_counter()
        pending = []
        if not batched:
            for start in range(0, events, 1000):
                pending += [
                    await producer.send(topic, value, key=key)
                    for _ in range(min(1000, events - start))
                ]
        else:  # the producer's batch API: one call per batch of records for a partition
            partition = DefaultPartitioner()(key, sorted(await producer.partitions_for(topic)), [])
            sent = 0
            while sent < events:
                batch = producer.create_batch()
                while sent < events and batch.append(key=key, value=value, timestamp=None):
                    sent += 1
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
        return events / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def ingest(stack: Stack, store_url: str, events: int, size: int, clients: int) -> dict:
    """Observations through ingest by `clients` concurrent clients in `size`-record requests:
    accepted/s (HTTP -> store) and published/s (until the relay passed the last one)."""
    url = f"{stack.url('ingest')}/v1/tasks/{TASK}/observations"
    body = records(size)
    requests = events // size
    taken = 0
    last = 0

    async def client() -> None:
        nonlocal taken, last
        async with httpx.AsyncClient(timeout=120) as http:
            while taken < requests:
                taken += 1
                response = await http.post(url, json=body)
                response.raise_for_status()
                last = max(last, max(response.json()["positions"]))

    store = open_event_store(store_url)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        accepted = time.perf_counter() - started
        while await store.load_cursor("relay:ingest") < last:
            await asyncio.sleep(0.01)
        published = time.perf_counter() - started
    finally:
        await store.close()
    sent = requests * size
    return {
        "size": size,
        "events": sent,
        "accepted": sent / accepted,
        "published": sent / published,
    }


async def run_store(name: str, store_url: str, events: int, clients: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"continuo-throughput-{name}-"))
    spec = loop_spec(TASK, publish_every=10**9)
    stack = Stack(
        workdir, store_url=store_url, env_overrides=write_task_specs(workdir / "t", [spec])
    )
    await stack.start(services=("ingest",))
    try:
        assert stack.bootstrap is not None
        print(f"- {name}: raw producer", file=sys.stderr, flush=True)
        raw = await raw_producer(stack.bootstrap, events)
        batched = await raw_producer(stack.bootstrap, events, batched=True)
        runs = []
        for size in SIZES:
            print(f"- {name}: ingest, {size}-record requests", file=sys.stderr, flush=True)
            runs.append(await ingest(stack, store_url, events, size, clients))
    finally:
        stack.stop()
    return {"store": name, "raw": raw, "batched": batched, "runs": runs}


def report(results: list[dict[str, Any]], command: str, events: int, clients: int) -> str:
    lines = [
        f"Command: `{command}` ({date.today().isoformat()}), this 2-core machine; the embedded "
        f"broker; ingest alone (one process: one core at most), {clients} concurrent HTTP "
        f"clients, {events:,} observations per run; the raw producer measured in the same run "
        "on the same broker (records of the same bytes the relay publishes).",
        "",
        "| store | request size | raw producer, `send` (records/s) | raw producer, batches "
        "(records/s) | ingest accepted (HTTP -> store, events/s) | ingest published (HTTP -> "
        "store -> Kafka, events/s) | published vs the faster raw producer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        best = max(result["raw"], result["batched"])
        for run in result["runs"]:
            lines.append(
                f"| {result['store']} | {run['size']:,} | {result['raw']:,.0f} | "
                f"{result['batched']:,.0f} | {run['accepted']:,.0f} | {run['published']:,.0f} | "
                f"{run['published'] / best:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for name in args.stores.split(","):
        if name == "sqlite":
            url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='continuo-tp-')}/events.db"
            results.append(asyncio.run(run_store(name, url, args.events, args.clients)))
        else:
            database = f"continuo_throughput_{uuid.uuid4().hex[:8]}"
            url = create_pg_database(PG_ADMIN, database)
            try:
                results.append(asyncio.run(run_store(name, url, args.events, args.clients)))
            finally:
                drop_pg_database(PG_ADMIN, database)
    command = ("python bench/throughput.py " + " ".join(argv)).strip()
    text = report(results, command, args.events, args.clients)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
