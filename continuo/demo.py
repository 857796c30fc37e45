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
import csv
import gzip
import io
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np

from continuo.simulate import Baseline, Rows, Timing, simulate
from continuo.stack import Stack
from shared.settings import REPO_ROOT
from shared.tasks import TaskSpec, load_spec

TASK = "elec"
FEATURES = ("period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")
ENTITY = "nsw"
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


@dataclass
class Served:
    """What serving answered, row by row, and when labels were accepted."""

    probability: list[float | None]
    requests: int = 0
    labels: int = 0
    seconds: float = 0.0
    # For each label request: when ingest accepted it (time.monotonic()) and its last position.
    label_batches: list[tuple[float, int]] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)
    first_seen: dict[int, float] = field(default_factory=dict)  # version -> time first answered

    def right(self, labels: list[int]) -> np.ndarray:
        """1 where serving answered the row's class; unanswered rows (before any model) are 0."""
        p = np.array([np.nan if v is None else v for v in self.probability], dtype=float)
        return ~np.isnan(p) & ((p >= 0.5) == (np.asarray(labels) == 1))

    @property
    def unanswered(self) -> int:
        return sum(1 for p in self.probability if p is None)


async def _post(client: httpx.AsyncClient, url: str, body: Any) -> dict[str, Any]:
    for attempt in range(20):
        response = await client.post(url, json=body)
        if response.status_code < 500:
            break
        await asyncio.sleep(0.1 * (attempt + 1))  # starting up, or the store blinked: retry
    if response.status_code not in (200, 202):
        raise RuntimeError(f"{url} refused: {response.status_code} {response.text[:500]}")
    return response.json()


async def stream_through_serving(
    urls: dict[str, str],
    task: str,
    features: list[dict[str, Any]],
    labels: list[Any],
    timing: Timing,
    *,
    entity: str = ENTITY,
    progress: bool = True,
    rate: float | None = None,
) -> Served:
    """Ask serving for each request's predictions (recording the rows), then post their labels
    by prediction id `timing.label_delay` requests later. Each request passes the last position
    ingest returned, so serving's online features include every label already posted (what a
    caller sees that posts its own labels). With `rate`, rows go no faster than that many a
    second (an offered load)."""
    served = Served([None] * len(features))
    waiting: deque[list[dict[str, Any]]] = deque()
    position = 0
    started = time.monotonic()
    next_report = 0.1
    async with httpx.AsyncClient(timeout=60) as client:
        predict_url = f"{urls['serving']}/v1/tasks/{task}/predict"
        labels_url = f"{urls['ingest']}/v1/tasks/{task}/labels"

        async def post_labels(batch: list[dict[str, Any]]) -> None:
            nonlocal position
            accepted = await _post(client, labels_url, batch)
            position = max(position, *accepted["positions"])
            served.label_batches.append((time.monotonic(), position))
            served.labels += len(batch)
            served.requests += 1

        for start in range(0, len(features), timing.batch):
            chunk = range(start, min(len(features), start + timing.batch))
            body = {
                "records": [{"features": features[i], "entity_id": entity} for i in chunk],
                "record": True,
                "after_position": position,
            }
            answer = await _post(client, predict_url, body)
            served.requests += 1
            if answer["model_version"] is not None:
                if answer["model_version"] not in served.versions:
                    served.first_seen[answer["model_version"]] = time.monotonic()
                served.versions.add(answer["model_version"])
            for i, prediction in zip(chunk, answer["predictions"], strict=True):
                served.probability[i] = prediction["probability"]
            waiting.append(
                [
                    {"prediction_id": p["prediction_id"], "label": labels[i]}
                    for i, p in zip(chunk, answer["predictions"], strict=True)
                ]
            )
            while len(waiting) > timing.label_delay:
                await post_labels(waiting.popleft())
            if rate:
                ahead = chunk.stop / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if progress and chunk.stop / len(features) >= next_report:
                pace = chunk.stop / (time.monotonic() - started)
                print(
                    f"  {chunk.stop / len(features):4.0%}  {chunk.stop:>6} rows  {pace:,.0f} rows/s"
                )
                next_report += 0.1
        while waiting:
            await post_labels(waiting.popleft())
    served.seconds = time.monotonic() - started
    return served


async def trainer_status(trainer_url: str, task: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{trainer_url}/v1/status")
        return response.json()["tasks"].get(task, {})


async def wait_until_learned(
    trainer_url: str, task: str, labels: int, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await trainer_status(trainer_url, task)
        # `settled`: no batch in flight, so every model built from these labels is stored.
        if status.get("learned", 0) >= labels and status.get("settled"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"trainer learned {status.get('learned', 0)} of {labels} labels in {timeout}s"
            )
        await asyncio.sleep(0.2)


async def governance_models(stack: Stack, task: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{stack.url('governance')}/v1/tasks/{task}/models",
            headers=stack.governance_headers(),
        )
        return response.json()


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
    )
    return {**result.baselines, "in-process served": result.served_accuracy}, cut


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
    stack = Stack(workdir, store_url=f"sqlite+aiosqlite:///{workdir / 'events.db'}")
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
        status = await wait_until_learned(stack.url("trainer"), TASK, served.labels, timeout=180)
        models = await governance_models(stack, TASK)
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
        ("rows", f"{n:,}", f"{served.requests:,} requests, {served.labels:,} labels"),
        ("through the system", f"{n / served.seconds:,.0f}", "rows/s, predict + label"),
        ("model versions", str(len(models["models"])), f"{promotions} promoted"),
        ("serving answered with", f"{len(served.versions)}", "model versions"),
        ("system time", f"{system_seconds:.1f}s", "start, stream, learn, stop"),
        ("total time", f"{time.monotonic() - started:.1f}s", ""),
    ]
    print("\nSummary")
    for name, value, note in lines:
        print(f"  {name:<22} {value:>9}  {note}".rstrip())
    return 0


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="continuo demo", description=__doc__)
    parser.add_argument("--rows", type=int, default=None, help="stream only the first N rows")
    parser.add_argument("--batch", type=int, default=20, help="rows per request")
    parser.add_argument(
        "--label-delay",
        type=int,
        default=0,
        help="requests between a request's answers and its labels (0: right after it)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the run keeps its files")
    args = parser.parse_args(argv)
    workdir = args.workdir or REPO_ROOT / "var" / f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        return asyncio.run(
            run_demo(workdir, limit=args.rows, batch=args.batch, label_delay=args.label_delay)
        )
    except (TimeoutError, RuntimeError, FileNotFoundError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
