"""How long a restarted trainer takes to rebuild a task, with and without snapshots, by history.

    python bench/recovery.py [--events 45000 450000] [--every 20000] [--no-write]

For each history length, a SQLite store is filled with the electricity stream (repeated as needed)
as a caller of serving would leave it: each row an observation, its label one 20-row request
later. Then, in process and without a broker (the part of a restart that grows with history):

1. a trainer that never snapshotted rebuilds the task from all the stored events (what every
   restart cost before snapshots), and the same trainer with snapshots on does the same, taking a
   snapshot every `--every` events on the way (what snapshots cost);
2. a fresh trainer restarts from the newest snapshot and replays the events after it.

Both rebuilds must end in the same state (labels learned, model versions, and the newest model's
artifact hash), or the run fails. Reported: seconds for each, the events replayed after the
snapshot, the snapshot's size, and the ratio full/snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.demo import FEATURES, find_elec, read_rows  # noqa: E402
from services.trainer.service import Trainer  # noqa: E402
from shared.events.envelope import Envelope, Producer, new_event  # noqa: E402
from shared.events.types import (  # noqa: E402
    LabelRecorded,
    ModelTrained,
    ObservationRecorded,
    data_stream,
    model_stream,
    snapshot_stream,
)
from shared.registry import register_tasks  # noqa: E402
from shared.runtime import Runtime  # noqa: E402
from shared.settings import CommonSettings  # noqa: E402
from shared.store.migrate import upgrade_async  # noqa: E402
from shared.store.port import EventStore  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402
from shared.tasks import load_spec  # noqa: E402

SPEC = load_spec(ROOT / "tasks" / "elec.yaml")
BATCH = 20


def data_events(producer: Producer) -> Iterator[Envelope]:
    """The elec rows, repeated without end: each an observation, its label one request later."""
    rows = read_rows(find_elec())
    stream = data_stream(SPEC.name)
    waiting: list[tuple[uuid.UUID, int]] = []
    for i in itertools.count():
        row = rows[i % len(rows)]
        observation = ObservationRecorded(
            task=SPEC.name,
            pipeline_version=SPEC.version,
            entity_id="nsw",
            features={f: row[f] for f in FEATURES},
        )
        event = new_event(observation, stream_id=stream, producer=producer)
        yield event
        waiting.append((event.event_id, row["class"]))
        if len(waiting) == 2 * BATCH:  # a request's end: the one before it is labelled
            for observation_id, label in waiting[:BATCH]:
                labelled = LabelRecorded(
                    task=SPEC.name, observation_id=observation_id, entity_id="nsw", label=label
                )
                yield new_event(labelled, stream_id=stream, producer=producer)
            del waiting[:BATCH]


async def fill(store: EventStore, events: Iterator[Envelope], n: int) -> None:
    """Append the next `n` events, in pages."""
    started, written = time.perf_counter(), 0
    while written < n:
        page = list(itertools.islice(events, min(2000, n - written)))
        await store.append(page)
        written += len(page)
        if written % 100_000 < len(page):
            print(
                f"  stored {written:,} events ({time.perf_counter() - started:.0f} s)", flush=True
            )


async def rebuild(url: str, artifacts: Path, every: int) -> tuple[float, dict, Trainer]:
    """A trainer's first sight of the task, as at a restart: (seconds, its status, it)."""
    runtime = Runtime.build("trainer", CommonSettings(store_url=url, artifacts_dir=artifacts))
    trainer = Trainer(runtime, snapshot_every=every)
    started = time.perf_counter()
    await trainer.start_tasks()  # rebuilds the task's core (snapshot + the events after it)
    seconds = time.perf_counter() - started
    status = trainer.status()[SPEC.name]
    models = [e.data() for e in await runtime.store.read_stream(model_stream(SPEC.name))]
    newest = [m for m in models if isinstance(m, ModelTrained)][-1]
    status = {**status, "newest_artifact": newest.artifact_sha256}
    snaps = await runtime.store.read_stream(snapshot_stream(SPEC.name))
    status["snapshot_mb"] = snaps[-1].payload["size_bytes"] / 1e6 if snaps else 0.0
    return seconds, status, trainer


async def measure(n_events: int, every: int, workdir: Path) -> dict[str, float]:
    print(f"{n_events:,} events:")
    # Two stores with the same rows (event ids differ; nothing depends on them but joins).
    producer = Producer(service="bench", version="bench")
    stores = {}
    for name in ("plain", "snap"):
        url = f"sqlite+aiosqlite:///{workdir / f'{name}-{n_events}.db'}"
        await upgrade_async(url)
        stores[name] = (url, open_event_store(url), data_events(producer))
        await register_tasks(stores[name][1], [SPEC], producer)
    url, store, events = stores["plain"]
    await fill(store, events, n_events)
    full, full_status, plain = await rebuild(url, workdir / "a-plain", every=0)
    print(f"  full replay, no snapshots: {full:.1f} s")
    # With snapshots: the history but for the worst-case tail, a rebuild that snapshots on the
    # way and at its end (as at a shutdown), then the tail (just short of the next snapshot).
    tail = every - 1
    url, store, events = stores["snap"]
    await fill(store, events, n_events - tail)
    taking, _, trainer = await rebuild(url, workdir / "a-snap", every=every)
    await trainer.snapshot_all()
    print(f"  replay of {n_events - tail:,} taking snapshots every {every:,}: {taking:.1f} s")
    await fill(store, events, tail)
    restart, status, restarted = await rebuild(url, workdir / "a-snap", every=every)
    for stored in [*(s for _, s, _ in stores.values())] + [
        t.runtime.store for t in (plain, trainer, restarted)
    ]:
        await stored.close()
    replayed = n_events - int(status["restored_from"])
    print(
        f"  restart from the snapshot at {status['restored_from']:,}: {restart:.2f} s", flush=True
    )
    keys = ("learned", "model_version", "newest_artifact")
    if any(status[k] != full_status[k] for k in keys):
        raise SystemExit(
            f"the restored trainer differs: {[(k, status[k], full_status[k]) for k in keys]}"
        )
    return {
        "events": n_events,
        "full": full,
        "taking": taking,
        "taking_events": n_events - tail,
        "restart": restart,
        "replayed": replayed,
        "snapshot_mb": float(status["snapshot_mb"]),
        "learned": float(status["learned"]),
    }


def report(results: list[dict[str, float]], every: int) -> str:
    lines = [
        f"`python bench/recovery.py --every {every}` ({date.today()}; SQLite store, in process, "
        "elec repeated, labels one 20-row request late). The part of a trainer restart that grows "
        "with history: rebuilding the task's core before it takes new events. Both rebuilds end "
        "in the same state (labels learned, model versions, newest model's artifact hash) or the "
        "run fails.",
        "",
        "| stored events | labels | full replay (no snapshots) | replay taking snapshots: cost "
        "per event against none | restart from snapshot | events replayed after it | snapshot "
        "size | full / snapshot |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {int(r['events']):,} | {int(r['learned']):,} | {r['full']:.1f} s "
            f"| {(r['taking'] / r['taking_events']) / (r['full'] / r['events']):.2f}x "
            f"| {r['restart']:.2f} s "
            f"| {int(r['replayed']):,} | {r['snapshot_mb']:.1f} MB "
            f"| {r['full'] / r['restart']:.0f}x |"
        )
    lines += [
        "",
        f"A restart replays at most `TRAINER_SNAPSHOT_EVERY` ({every:,}) events after the newest "
        "snapshot, whatever the history; the snapshot is taken after everything the core emitted "
        "is stored.",
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[45_000, 450_000])
    parser.add_argument("--every", type=int, default=20_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress as it happens, also into a pipe
    with tempfile.TemporaryDirectory(prefix="continuo-recovery-") as tmp:
        results = [await measure(n, args.every, Path(tmp)) for n in args.events]
    text = report(results, args.every)
    print(text)
    if not args.no_write:
        write_section("Trainer restart: snapshots against full replay", text)


if __name__ == "__main__":
    asyncio.run(main())
