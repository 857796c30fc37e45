"""The electricity stream through ingest and the running system, measured end to end.

    python bench/system.py [--rows N] [--batch 100] [--rate ROWS/S] [--no-write]

Starts the four services as processes on the embedded broker and a SQLite store, posts the rows
to ingest over HTTP, each label inside its observation (the ingest path: rows that are not served;
bench/served.py measures the log-and-wait path, labels late, and what callers got), while a watcher
polls serving's champion every 20 ms, and reports:
- the system's prequential accuracy, next to the same learner replayed in process over the very
  events the system stored (they must agree within 0.5 points; being deterministic, they should
  agree exactly, and the replay must reproduce every model's artifact hash);
- the in-process learner with labels on arrival (no delay): what the delay costs;
- sustained events/s end to end: from the first request until governance has decided on the last
  model published and serving answers with the resulting champion;
- freshness: for each label request, the time from ingest accepting it to serving first answering
  with a model that learned it (p50, p95, max). Measure it with `--rate` below the end-to-end
  capacity: past capacity a backlog builds and any latency grows with the length of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.caller import freshness, wait_until_learned  # noqa: E402
from continuo.demo import FEATURES, find_elec, read_rows  # noqa: E402
from continuo.stack import Stack  # noqa: E402
from services.trainer.learner import OnlineLearner  # noqa: E402
from services.trainer.service import replay_models  # noqa: E402
from shared.artifacts import sha256  # noqa: E402
from shared.events.types import (  # noqa: E402
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    PromotionRefused,
    deployment_stream,
    model_stream,
)
from shared.features import OnlineFold, model_inputs  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402
from shared.tasks import TaskSpec, load_spec  # noqa: E402

TASK = "elec"


async def watch_serving(url: str, seen: list[tuple[float, int]], stop: asyncio.Event) -> None:
    """Record (time, version) each time serving's champion changes."""
    current = None
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            response = await client.get(f"/v1/tasks/{TASK}/model")
            if response.status_code == 200:
                version = response.json()["model_version"]
                if version != current:
                    seen.append((time.monotonic(), version))
                    current = version
            await asyncio.sleep(0.02)


@dataclass
class Streamed:
    observations: int = 0
    seconds: float = 0.0
    # For each request: when ingest accepted it (time.monotonic()) and its last position.
    label_batches: list[tuple[float, int]] = field(default_factory=list)


async def post_labelled(
    ingest_url: str, rows: list[dict], batch: int, rate: float | None
) -> Streamed:
    """Post rows to ingest, each label inside its observation, `batch` a request; with `rate`,
    no faster than that many rows a second (an offered load)."""
    out = Streamed()
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=ingest_url, timeout=60) as client:
        for start in range(0, len(rows), batch):
            body = [
                {
                    "entity_id": "nsw",
                    "event_id": f"{TASK}-{start + i}",
                    "features": {f: row[f] for f in FEATURES},
                    "label": row["class"],
                }
                for i, row in enumerate(rows[start : start + batch])
            ]
            response = await client.post(f"/v1/tasks/{TASK}/observations", json=body)
            if response.status_code != 202:
                raise RuntimeError(f"ingest refused: {response.status_code} {response.text}")
            out.label_batches.append((time.monotonic(), max(response.json()["positions"])))
            out.observations += len(body)
            if rate:
                ahead = out.observations / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    out.seconds = time.monotonic() - started
    return out


async def stored_models(store_url: str) -> list[ModelTrained]:
    store = open_event_store(store_url)
    models = [e.data() for e in await store.read_stream(model_stream(TASK))]
    await store.close()
    return [m for m in models if isinstance(m, ModelTrained)]


async def final_champion(store_url: str, last_version: int, timeout: float) -> int:
    """The champion once governance has decided on `last_version` (promoted or refused)."""
    store = open_event_store(store_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            decisions = [e.data() for e in await store.read_stream(deployment_stream(TASK))]
            decided = {
                d.model_version
                for d in decisions
                if isinstance(d, ModelPromoted | ModelRolledBack | PromotionRefused)
            }
            if last_version in decided:
                promoted = [
                    d.model_version
                    for d in decisions
                    if isinstance(d, ModelPromoted | ModelRolledBack)
                ]
                return promoted[-1]
            if time.monotonic() > deadline:
                raise RuntimeError(f"governance did not decide on v{last_version} in {timeout} s")
            await asyncio.sleep(0.05)
    finally:
        await store.close()


async def replay_in_process(store_url: str) -> tuple[float, list[str]]:
    """Feed the stored data events to a fresh core: its accuracy and its model hashes."""
    store = open_event_store(store_url)
    core, made = await replay_models(store, TASK)
    await store.close()
    return core.learner.metrics["accuracy"], [sha256(c.model_bytes) for c in made]


def immediate_labels_accuracy(rows: list[dict], spec: TaskSpec) -> tuple[float, float]:
    """The learner alone with each label on arrival (test-then-train), on the spec's inputs
    (online features included): accuracy and labelled events/s."""
    fold, X = OnlineFold(spec), []
    for i, row in enumerate(rows):
        features = {f: row[f] for f in FEATURES}
        X.append(model_inputs(spec, features, fold.values("nsw", features)))
        fold.observe(uuid.UUID(int=i + 1), "nsw", features)
        fold.label(uuid.UUID(int=i + 1), "nsw", row["class"])
    learner = OnlineLearner.from_spec(spec)
    y = np.array([r["class"] for r in rows])
    started = time.perf_counter()
    learner.test_then_train(np.array(X), y)
    return learner.metrics["accuracy"], len(rows) / (time.perf_counter() - started)


async def run(rows: list[dict], batch: int, workdir: Path, rate: float | None) -> dict:
    store_url = f"sqlite+aiosqlite:///{workdir / 'events.db'}"
    stack = Stack(workdir, store_url=store_url)
    await stack.start()
    seen: list[tuple[float, int]] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_serving(stack.url("serving"), seen, stop))
    try:
        started = time.monotonic()
        streamed = await post_labelled(stack.url("ingest"), rows, batch, rate)
        status = await wait_until_learned(
            stack.url("trainer"), TASK, streamed.observations, timeout=300
        )
        models = await stored_models(store_url)
        if not models:
            raise RuntimeError("the system published no model: nothing to measure")
        # End to end: until governance has decided on the last model published and serving
        # answers with the champion that leaves (the last model itself, unless it was refused).
        champion = await final_champion(store_url, models[-1].model_version, timeout=60)
        deadline = time.monotonic() + 60
        while not seen or seen[-1][1] != champion:
            if time.monotonic() > deadline:
                raise RuntimeError(f"serving did not answer with champion v{champion} in 60 s")
            await asyncio.sleep(0.02)
        finished = seen[-1][0]
    finally:
        stop.set()
        await watcher
        stack.stop()
    learned = {m.model_version: m.last_position for m in models}
    delays, unserved = freshness(streamed.label_batches, seen, learned)
    replay_accuracy, replay_hashes = await replay_in_process(store_url)
    return {
        "streamed": streamed,
        "system_accuracy": status["metrics"]["accuracy"],
        "replay_accuracy": replay_accuracy,
        "hashes_match": replay_hashes == [m.artifact_sha256 for m in models],
        "models": len(models),
        "served_versions": len({v for _, v in seen}),
        "events": (events := streamed.observations),
        "end_to_end_events_per_s": events / (finished - started),
        "ingest_events_per_s": events / streamed.seconds,
        "delays": delays,
        "unserved": unserved,
    }


def report(
    result: dict, immediate: tuple[float, float], args: argparse.Namespace, rows: int
) -> str:
    d = np.array(result["delays"]) if result["delays"] else np.array([np.nan])
    gap = abs(result["system_accuracy"] - result["replay_accuracy"]) * 100
    labels = "each label inside its observation"
    rate = f" --rate {args.rate:g}" if args.rate else ""
    pace = (
        f"offered at {args.rate:,.0f} rows/s" if args.rate else "sent as fast as ingest takes them"
    )
    lines = [
        f"Command: `python bench/system.py --rows {rows} --batch {args.batch}{rate}` "
        f"({date.today().isoformat()}). {rows:,} rows, "
        f"{result['events']:,} events; {labels}; {pace}.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| system prequential accuracy | {result['system_accuracy']:.4f} |",
        f"| same learner replayed in process over the stored events | "
        f"{result['replay_accuracy']:.4f} (gap {gap:.2f} points) |",
        f"| replay reproduces every model's artifact hash | {result['hashes_match']} |",
        f"| in-process learner, labels on arrival (reference) | {immediate[0]:.4f} |",
        f"| model versions / versions serving answered with | {result['models']} / "
        f"{result['served_versions']} |",
        f"| ingest over HTTP | {result['ingest_events_per_s']:,.0f} events/s |",
        f"| end to end (first request → last model decided, serving its champion) | "
        f"{result['end_to_end_events_per_s']:,.0f} events/s |",
        f"| in-process learner alone (same run) | {immediate[1]:,.0f} labelled events/s |",
        f"| freshness p50 / p95 / max (label accepted → serving answers with a model that "
        f"learned it) | {np.nanpercentile(d, 50):.2f} s / {np.nanpercentile(d, 95):.2f} s / "
        f"{np.nanmax(d):.2f} s over {len(result['delays'])} label requests |",
        f"| label requests no served model had learned by the end (stream tail, below one "
        f"publish interval) | {result['unserved']} |",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=None, help="rows per second offered")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    rows = read_rows(find_elec(), args.rows)
    immediate = immediate_labels_accuracy(rows, load_spec(ROOT / "tasks" / f"{TASK}.yaml"))
    with tempfile.TemporaryDirectory(prefix="continuo-bench-") as tmp:
        result = asyncio.run(run(rows, args.batch, Path(tmp), args.rate))
    text = report(result, immediate, args, len(rows))
    print(text)
    if not args.no_write:
        mode = "labels inside observations"
        mode += f", {args.rate:,.0f} rows/s offered" if args.rate else ", as fast as it goes"
        write_section(f"System (bench/system.py, {mode})", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
