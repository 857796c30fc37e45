"""End to end with several trainer workers: labelled rows/s through the whole running system, four
tasks streaming at once, with one trainer worker and with two in one consumer group, same run.

    .venv/bin/python bench/workers.py [--rows 20000] [--request 500] [--no-write]

For each worker count, a fresh stack (four services, embedded broker, SQLite store) with four
tasks whose names cover the data topic's three partitions (`tests/support.py`); with two
workers, the second joins the group and the partitions are split before any row is sent. Four
clients, one per task, post `--rows` labelled observations each (the synthetic drifting stream of
`continuo/loop.py`, labels inside the rows) to ingest in requests of `--request` rows, as fast as
ingest answers. Timed from the first request to every task's labels learned and its models
stored (the workers' `/v1/status`: `learned` and `settled`); also the time until ingest had
accepted everything. On this 2-core machine the four services, the broker and the clients share
the cores: the figure says what one machine allows, not what a second worker adds on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.loop import loop_spec  # noqa: E402
from continuo.stack import Stack, write_task_specs  # noqa: E402
from tests.support import (  # noqa: E402
    labelled_streams,
    partition_of,
    partitions_split,
    tasks_on_every_partition,
)

SECTION = "Trainer workers (bench/workers.py)"


async def _learned(client: httpx.AsyncClient, urls: list[str]) -> dict[str, tuple[int, bool]]:
    """Per task, the most any worker learned and whether that worker is settled."""
    out: dict[str, tuple[int, bool]] = {}
    for url in urls:
        for task, status in (await client.get(f"{url}/v1/status")).json()["tasks"].items():
            learned = int(status.get("learned", 0))
            if learned >= out.get(task, (-1, False))[0]:
                out[task] = (learned, bool(status.get("settled")))
    return out


async def run(workers: int, rows: int, request: int, workdir: Path) -> dict[str, Any]:
    tasks = tasks_on_every_partition()
    specs = [loop_spec(task) for task in tasks]
    stack = Stack(
        workdir,
        store_url=f"sqlite+aiosqlite:///{workdir / 'events.db'}",
        env_overrides=write_task_specs(workdir / "tasks", specs),
    )
    await stack.start()
    try:
        names = ["trainer"] + [await stack.add_replica("trainer") for _ in range(workers - 1)]
        urls = [stack.url(name) for name in names]
        bodies = labelled_streams(tasks, rows)
        async with httpx.AsyncClient(timeout=120) as client:
            owned = await partitions_split(client, urls, timeout=90)
            shares = [sorted(t for t in tasks if partition_of(t) in o) for o in owned]
            ingest = stack.url("ingest")

            async def post(task: str) -> None:
                for start in range(0, rows, request):
                    response = await client.post(
                        f"{ingest}/v1/tasks/{task}/observations",
                        json=bodies[task][start : start + request],
                    )
                    if response.status_code != 202:
                        raise RuntimeError(f"ingest refused: {response.text[:300]}")

            started = time.monotonic()
            await asyncio.gather(*(post(task) for task in tasks))
            accepted = time.monotonic() - started
            deadline = time.monotonic() + 900
            while True:
                learned = await _learned(client, urls)
                if all(learned.get(t, (0, False)) >= (rows, True) for t in tasks):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not all learned: {learned}")
                await asyncio.sleep(0.1)
            seconds = time.monotonic() - started
    finally:
        stack.stop()
    total = rows * len(tasks)
    return {
        "workers": workers,
        "shares": shares,
        "labelled": total,
        "accepted_per_s": total / accepted,
        "learned_per_s": total / seconds,
        "seconds": seconds,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="labelled rows per task")
    parser.add_argument("--request", type=int, default=500, help="rows per ingest request")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="continuo-workers-") as tmp:
            result = asyncio.run(run(workers, args.rows, args.request, Path(tmp)))
        print(result, file=sys.stderr, flush=True)
        results.append(result)
    base = results[0]["learned_per_s"]
    command = "python bench/workers.py " + " ".join(argv)
    lines = [
        f"Command: `{command.strip()}` ({date.today().isoformat()}), this 2-core machine; four "
        f"tasks, {args.rows:,} labelled rows each in requests of {args.request}, four clients "
        "at once; one stack per worker count, in the same run.",
        "",
        "| trainer workers | tasks per worker | ingest accepted (rows/s) | learned end to end "
        "(labelled rows/s) | per core (2 cores) | vs one worker |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['workers']} | {' + '.join(str(len(s)) for s in r['shares'])} | "
            f"{r['accepted_per_s']:,.0f} | {r['learned_per_s']:,.0f} | "
            f"{r['learned_per_s'] / 2:,.0f} | {r['learned_per_s'] / base:.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
