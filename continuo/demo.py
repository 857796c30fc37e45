"""`continuo demo`: the electricity stream through the whole running system, with late labels.

Starts the stack on the embedded defaults (Tansu broker, SQLite store), posts every row of the
electricity data set to ingest over HTTP (features first, each label one batch later), waits for the
trainer to learn it all and for serving to answer with the champion, prints a summary next to a
legacy batch model measured in the same run, and shuts everything down.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from continuo.stack import Stack
from shared.settings import REPO_ROOT

FEATURES = ("period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer")
ELEC_CANDIDATES = (
    REPO_ROOT / "data" / "elec.csv.gz",
    REPO_ROOT.parent / "shared" / "data" / "elec.csv",
)
START = datetime(1996, 5, 7, tzinfo=UTC)  # the data set's first day; one row per half hour


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


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    for start in range(0, len(rows), size):
        yield start, rows[start : start + size]


@dataclass
class StreamResult:
    observations: int = 0
    labels: int = 0
    requests: int = 0
    seconds: float = 0.0
    # For each label request: when ingest accepted it (time.monotonic()) and its last position.
    label_batches: list[tuple[float, int]] = field(default_factory=list)


async def _post(client: httpx.AsyncClient, path: str, body: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    if response.status_code != 202:
        raise RuntimeError(f"ingest refused {path}: {response.status_code} {response.text[:500]}")
    return response.json()


async def _post_labels(
    client: httpx.AsyncClient, task: str, labels: list[dict[str, Any]], result: StreamResult
) -> None:
    accepted = await _post(client, f"/v1/tasks/{task}/labels", labels)
    result.label_batches.append((time.monotonic(), max(accepted["positions"])))
    result.labels += len(labels)
    result.requests += 1


async def stream_elec(
    ingest_url: str,
    rows: list[dict[str, Any]],
    *,
    task: str = "elec",
    batch: int = 100,
    label_delay: int = 1,
    progress: bool = True,
    inline_labels: bool = False,
    rate: float | None = None,
) -> StreamResult:
    """Post rows as observations in batches, and each batch's labels `label_delay` batches on
    (or, with `inline_labels`, each label inside its observation). With `rate`, rows are sent no
    faster than that many per second (an offered load, for latency measurements)."""
    result = StreamResult()
    started = time.monotonic()
    waiting: deque[list[dict[str, Any]]] = deque()
    next_report = 0.1
    async with httpx.AsyncClient(base_url=ingest_url, timeout=60) as client:
        for start, chunk in _chunks(rows, batch):
            body = [
                {
                    "entity_id": "nsw",
                    "event_id": f"{task}-{start + i}",
                    "event_time": (START + timedelta(minutes=30 * (start + i))).isoformat(),
                    "features": {f: row[f] for f in FEATURES},
                    **({"label": row["class"]} if inline_labels else {}),
                }
                for i, row in enumerate(chunk)
            ]
            accepted = await _post(client, f"/v1/tasks/{task}/observations", body)
            result.observations += len(chunk)
            result.requests += 1
            if inline_labels:
                result.labels += len(chunk)
                result.label_batches.append((time.monotonic(), max(accepted["positions"])))
            else:
                waiting.append(
                    [
                        {"observation_id": oid, "label": row["class"]}
                        for oid, row in zip(accepted["ids"], chunk, strict=True)
                    ]
                )
                while len(waiting) > label_delay:
                    await _post_labels(client, task, waiting.popleft(), result)
            if rate:
                ahead = result.observations / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            done = result.observations / len(rows)
            if progress and done >= next_report:
                sent = (result.observations + result.labels) / (time.monotonic() - started)
                print(
                    f"  streamed {done:4.0%}  {result.observations:>6} rows  {sent:,.0f} events/s"
                )
                next_report += 0.1
        while waiting:
            await _post_labels(client, task, waiting.popleft(), result)
    result.seconds = time.monotonic() - started
    return result


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


async def wait_for_serving(stack: Stack, task: str, timeout: float) -> dict[str, Any]:
    """Wait until serving answers with governance's champion; return the prediction."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            models = (
                await client.get(
                    f"{stack.url('governance')}/v1/tasks/{task}/models",
                    headers=stack.governance_headers(),
                )
            ).json()
            champion = models.get("champion")
            predicted = await client.post(
                f"{stack.url('serving')}/v1/tasks/{task}/predict",
                json={"features": dict.fromkeys(FEATURES, 0.5)},
            )
            if (
                predicted.status_code == 200
                and champion
                and predicted.json()["model_version"] == champion
            ):
                return {"models": models, "prediction": predicted.json()}
            if time.monotonic() > deadline:
                raise TimeoutError(f"serving did not answer with champion {champion} in {timeout}s")
            await asyncio.sleep(0.2)


def _label_timing(label_delay: int) -> str:
    if label_delay == 0:
        return "each label comes in the request after its observations'"
    return f"each label comes {label_delay + 1} requests after its observations'"


def legacy_accuracy(rows: list[dict[str, Any]]) -> float:
    from services.trainer.baselines import legacy_batch_accuracy

    X = np.array([[r[f] for f in FEATURES] for r in rows])
    y = np.array([r["class"] for r in rows])
    return legacy_batch_accuracy(X, y)


async def run_demo(
    workdir: Path, *, limit: int | None = None, batch: int = 20, label_delay: int = 0
) -> int:
    started = time.monotonic()
    rows = read_rows(find_elec(), limit)
    print(
        f"Continuo demo: {len(rows):,} electricity rows, {batch} a request; "
        f"{_label_timing(label_delay)}"
    )
    stack = Stack(workdir, store_url=f"sqlite+aiosqlite:///{workdir / 'events.db'}")
    print(f"- starting broker, store and the four services (logs in {workdir / 'logs'})")
    await stack.start()
    try:
        print(f"- streaming through ingest at {stack.url('ingest')}")
        streamed = await stream_elec(
            stack.url("ingest"), rows, batch=batch, label_delay=label_delay
        )
        print("- waiting for the trainer to learn every label")
        status = await wait_until_learned(
            stack.url("trainer"), "elec", streamed.labels, timeout=180
        )
        served = await wait_for_serving(stack, "elec", timeout=60)
    finally:
        print("- shutting down")
        stack.stop()
    legacy = legacy_accuracy(rows)
    models = served["models"]["models"]
    promotions = sum(1 for m in models if m["status"] in ("champion", "retired"))
    metrics = status["metrics"]
    events = streamed.observations + streamed.labels
    lines = [
        (
            "events accepted",
            f"{events:,}",
            f"{streamed.observations:,} observations, {streamed.labels:,} late labels",
        ),
        ("ingest throughput", f"{events / streamed.seconds:,.0f}", "events/s over HTTP"),
        ("model versions", str(len(models)), ""),
        ("promotions", str(promotions), f"champion: v{served['models']['champion']}"),
        ("serving answered with", f"v{served['prediction']['model_version']}", ""),
        (
            "prequential accuracy",
            f"{metrics['accuracy']:.4f}",
            f"Continuo; labels up to {batch * (label_delay + 1)} rows late",
        ),
        (
            "legacy batch accuracy",
            f"{legacy:.4f}",
            "LightGBM trained once on the first 10%, frozen",
        ),
        ("total time", f"{time.monotonic() - started:.1f}s", ""),
    ]
    print("\nSummary")
    for name, value, note in lines:
        print(f"  {name:<22} {value:>10}  {note}".rstrip())
    return 0


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="continuo demo", description=__doc__)
    parser.add_argument("--rows", type=int, default=None, help="stream only the first N rows")
    parser.add_argument("--batch", type=int, default=20, help="records per HTTP request")
    parser.add_argument(
        "--label-delay",
        type=int,
        default=0,
        help="requests between an observation's and its label's (0: the very next request)",
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
