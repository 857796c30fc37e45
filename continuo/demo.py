"""`continuo demo`: the electricity stream through the whole running system, as a caller sees it.

Starts the stack on the embedded defaults (Tansu broker, SQLite store), then, request by request
(`batch` rows each): asks serving for predictions before any of the rows' labels exist, recording
the rows as observations (log and wait); posts each request's labels to ingest by prediction id
`label_delay` requests later. The headline is the accuracy of serving's answers, computed here
from the answers themselves. Beside it: the trainer's own prequential figure (from its status),
and, in process under the same label timing with the same inputs (online features included),
River's ARF and a legacy LightGBM trained once on the first 10% and frozen.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx

from continuo.caller import (
    ENTITY,
    governance_models,
    stream_through_serving,
    trainer_status,
    wait_until_learned,
)
from continuo.loop import describe, loop_spec, run_loop
from continuo.progress import aprogress, progress
from continuo.simulate import Baseline, Rows, Timing, simulate
from continuo.stack import Stack, write_task_specs
from shared.settings import REPO_ROOT
from shared.tasks import TaskSpec, load_spec

TASK = "elec"
FEATURES = ("period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")
ELEC_CANDIDATES = (
    REPO_ROOT / "data" / "elec.csv.gz",
    REPO_ROOT.parent / "shared" / "data" / "elec.csv",
)


def find_elec() -> Path:
    for path in ELEC_CANDIDATES:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"elec data not found; looked for {', '.join(map(str, ELEC_CANDIDATES))}"
    )


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The electricity rows as dicts of floats (class as int), in time order."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
        rows = []
        for row in reader:
            rows.append({**{f: float(row[f]) for f in FEATURES}, "class": int(float(row["class"]))})
            if limit and len(rows) >= limit:
                break
    return rows


def in_process(
    spec: TaskSpec, rows: list[dict[str, Any]], timing: Timing
) -> tuple[dict[str, float], int]:
    """River ARF and the frozen legacy model under the same timing, with the same inputs."""
    from river import forest

    from services.trainer.baselines import FrozenBatch

    cut = len(rows) // 10
    stream = Rows(
        [{f: r[f] for f in FEATURES} for r in rows],
        [r["class"] for r in rows],
        [ENTITY] * len(rows),
    )
    with progress("in process", len(rows), unit="rows") as bar:
        result = simulate(
            spec,
            stream,
            timing,
            baselines={
                "River ARF (10 trees)": cast(Baseline, forest.ARFClassifier(n_models=10, seed=42)),
                "legacy batch model": FrozenBatch(
                    max(1, cut - timing.batch * (timing.label_delay + 1))
                ),
            },
            scored_from={"legacy batch model": cut},
            progress=lambda through: bar.update(completed=through),
        )
    return {**result.baselines, "in-process served": result.served_accuracy}, cut


async def learn_all(trainer_url: str, labels: int) -> dict[str, Any]:
    """`wait_until_learned`, with a bar of the labels the trainer has learned so far."""
    async with aprogress("trainer learning", labels, unit="labels") as bar:

        async def follow() -> None:
            while True:
                # Only the bar: wait_until_learned below reports a trainer that fails to answer.
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    learned = (await trainer_status(trainer_url, TASK)).get("learned", 0)
                    bar.update(completed=learned)
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(follow())
        try:
            return await wait_until_learned(trainer_url, TASK, labels, timeout=180)
        finally:
            watcher.cancel()


async def run_demo(
    workdir: Path, *, limit: int | None = None, batch: int = 20, label_delay: int = 0
) -> int:
    started = time.monotonic()
    rows = read_rows(find_elec(), limit)
    timing = Timing(batch, label_delay)
    spec = load_spec(REPO_ROOT / "tasks" / f"{TASK}.yaml")
    print(f"Continuo demo: {len(rows):,} electricity rows, {timing.describe()}")
    print(
        "  each request asks serving first (recording the rows: log and wait), then posts labels "
        "to ingest by prediction id"
    )
    loop = loop_spec()
    stack = Stack(
        workdir,
        store_url=f"sqlite+aiosqlite:///{workdir / 'events.db'}",
        env_overrides=write_task_specs(workdir / "tasks", [spec, loop]),
    )
    print(f"- starting broker, store and the four services (logs in {workdir / 'logs'})")
    await stack.start()
    try:
        urls = {name: stack.url(name) for name in ("serving", "ingest")}
        print(f"- streaming through serving at {urls['serving']}, labels to {urls['ingest']}")
        served = await stream_through_serving(
            urls,
            TASK,
            [{f: r[f] for f in FEATURES} for r in rows],
            [r["class"] for r in rows],
            timing,
        )
        print("- waiting for the trainer to learn every label")
        status = await learn_all(stack.url("trainer"), served.labels)
        models = await governance_models(stack, TASK)
        print(
            f"- the closed loop on {loop.name!r} (continuo/loop.py): an abrupt drift at row 3,200; "
            "nobody acts until an operator tries the pre-drift model as a canary at row 6,500"
        )
        run = await run_loop(stack, task=loop.name)
    finally:
        print("- shutting down")
        stack.stop()
    system_seconds = time.monotonic() - started
    labels = [r["class"] for r in rows]
    right = served.right(labels)
    print("- measuring River ARF and the legacy model in process, same inputs and label timing")
    baselines, cut = in_process(spec, rows, timing)
    metrics = status["metrics"]
    promotions = sum(1 for m in models["models"] if m["status"] in ("champion", "retired"))
    n = len(rows)
    lines = [
        (
            "served accuracy",
            f"{right.mean():.4f}",
            f"what callers got, asked before each label existed ({served.unanswered} rows "
            "asked before the first model count as wrong)",
        ),
        (
            "trainer-side accuracy",
            f"{metrics['accuracy']:.4f}",
            "the learner's own prequential figure (a diagnostic)",
        ),
        (
            "River ARF (10 trees)",
            f"{baselines['River ARF (10 trees)']:.4f}",
            "in process, same inputs, same label timing",
        ),
        (
            "legacy batch model",
            f"{baselines['legacy batch model']:.4f}",
            f"LightGBM trained once on the first 10%, frozen, same inputs; on the last "
            f"{n - cut:,} rows (served there: {right[cut:].mean():.4f})",
        ),
        (
            "rows",
            f"{n:,}",
            f"{served.requests:,} HTTP requests (predict and label), {served.labels:,} labels",
        ),
        ("through the system", f"{n / served.seconds:,.0f}", "rows/s, predict + label"),
        ("model versions", str(len(models["models"])), f"{promotions} promoted"),
        ("serving answered with", f"{len(served.versions)}", "model versions"),
        ("system time", f"{system_seconds:.1f}s", "start, stream, learn, stop"),
        ("total time", f"{time.monotonic() - started:.1f}s", ""),
    ]
    print("\nSummary")
    for name, value, note in lines:
        print(f"  {name:<22} {value:>9}  {note}".rstrip())
    print(
        f"\nThe closed loop ({loop.name}, {run.rows:,} rows, served accuracy "
        f"{run.served_accuracy:.4f}): governance's trail"
    )
    for event in run.trail:
        if event["type"] != "AuditCompleted" or event["payload"].get("passed"):
            print(f"  {describe(event)}")
    return 0


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="continuo demo", description=__doc__)
    parser.add_argument(
        "--rows", type=int, default=None, help="stream only the first N rows (default: all)"
    )
    parser.add_argument("--batch", type=int, default=20, help="rows per request (default: 20)")
    parser.add_argument(
        "--label-delay",
        type=int,
        default=0,
        help="requests between a request's answers and its labels (default 0: right after it)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the run keeps its files (default: var/demo-<time>)",
    )
    args = parser.parse_args(argv)
    workdir = args.workdir or REPO_ROOT / "var" / f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        return asyncio.run(
            run_demo(workdir, limit=args.rows, batch=args.batch, label_delay=args.label_delay)
        )
    except (TimeoutError, RuntimeError, FileNotFoundError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
