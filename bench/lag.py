"""How far behind a caller the trees serving answers with are: one stream and label timing through
a fresh stack, the caller as fast as it goes, and for every request the rows the answering model's
trees had learned against the rows the caller had already asked about.

    .venv/bin/python bench/lag.py [--stream agrawal] [--timing 100:0] [--runs 2] [--no-write]

Per run: served accuracy (from serving's answers, asked before each label existed), the trainer's
prequential figure, the caller's rows/s, and the lag in rows (the request's first row minus the
rows learned by the model version that answered it: `n_learned_total` of its `ModelTrained`),
median and 90th percentile, with the served accuracy of each tenth of the stream (where the drifts
cost). The lag has a floor in the timing itself: labels come after their request, and trees change
only with a published version (every 250 rows).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from bench.served import ENTITY, load_streams, task_name  # noqa: E402
from continuo.caller import stream_through_serving, wait_until_learned  # noqa: E402
from continuo.simulate import Timing  # noqa: E402
from continuo.stack import Stack, write_task_specs  # noqa: E402
from shared.events.types import ModelTrained, model_stream  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402

SECTION = "Served trees' lag behind the caller (bench/lag.py)"
TENTHS = 10


async def one_run(stream: Any, timing: Timing, workdir: Path) -> dict[str, Any]:
    task = task_name(stream.name, timing)
    spec = stream.spec.model_copy(update={"name": task})
    store_url = f"sqlite+aiosqlite:///{workdir / 'events.db'}"
    stack = Stack(
        workdir, store_url=store_url, env_overrides=write_task_specs(workdir / "tasks", [spec])
    )
    await stack.start()
    try:
        urls = {name: stack.url(name) for name in ("serving", "ingest")}
        served = await stream_through_serving(
            urls, task, stream.features, stream.labels, timing, entity=ENTITY, progress=False
        )
        status = await wait_until_learned(
            stack.url("trainer"), task, len(stream.labels), timeout=600
        )
    finally:
        stack.stop()
    store = open_event_store(store_url)
    learned = {
        m.model_version: _rows_learned(m)
        for m in (e.data() for e in await store.read_stream(model_stream(task)))
        if isinstance(m, ModelTrained)
    }
    await store.close()
    lags = np.array([row - learned[v] for row, v in served.answered_by if v is not None])
    right = served.right(stream.labels)
    return {
        "served": float(right.mean()),
        "trainer": status["metrics"]["accuracy"],
        "rows_per_s": len(stream.labels) / served.seconds,
        "lag_p50": float(np.median(lags)),
        "lag_p90": float(np.percentile(lags, 90)),
        "tenths": [float(part.mean()) for part in np.array_split(right, TENTHS)],
    }


def _rows_learned(model: ModelTrained) -> int:
    """The stream's rows up to the last its trees learned: a challenger learned only those after
    the drift it was started at (its config says where)."""
    if model.role == "challenger":
        return int(model.config.rsplit("-at-", 1)[1]) + model.n_learned_total
    return model.n_learned_total


def report(stream: str, timing: Timing, runs: list[dict[str, Any]], started: datetime) -> str:
    lines = [
        f"Command: `python bench/lag.py --stream {stream} --timing "
        f"{timing.batch}:{timing.label_delay} --runs {len(runs)}` ({started:%Y-%m-%d %H:%M} "
        "UTC), this 2-core machine, each run on a fresh stack (four services, embedded broker, "
        "SQLite), the caller as fast as it goes. Lag: rows the caller had asked about before "
        "the request, minus rows the answering model's trees had learned.",
        "",
        "| run | served | trainer-side | rows/s | lag p50 (rows) | lag p90 (rows) | "
        "served by tenth of the stream |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, r in enumerate(runs, start=1):
        tenths = " ".join(f"{t:.2f}" for t in r["tenths"])
        lines.append(
            f"| {i} | {r['served']:.4f} | {r['trainer']:.4f} | {r['rows_per_s']:,.0f} | "
            f"{r['lag_p50']:,.0f} | {r['lag_p90']:,.0f} | {tenths} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", default="agrawal")
    parser.add_argument("--timing", default="100:0")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    batch, delay = (int(x) for x in args.timing.split(":"))
    timing = Timing(batch, delay)
    stream = load_streams(None)[args.stream]
    started = datetime.now(UTC)
    runs = []
    for i in range(args.runs):
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="continuo-lag-") as tmp:
            runs.append(asyncio.run(one_run(stream, timing, Path(tmp))))
        r = runs[-1]
        print(
            f"  run {i + 1}: served {r['served']:.4f} trainer {r['trainer']:.4f} "
            f"lag p50 {r['lag_p50']:.0f} p90 {r['lag_p90']:.0f} rows "
            f"({time.perf_counter() - began:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    body = report(args.stream, timing, runs, started)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
