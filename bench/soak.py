"""Soak: the running system at 80% of its measured maximum ingest rate, with prediction traffic
beside it, for 10 minutes: nothing accepted is lost, and no service's memory keeps growing.

    python bench/soak.py [--minutes 10] [--load 0.8] [--warmup 2] [--no-write]

The four services run as processes on the embedded broker and a SQLite store (the embedded
defaults). First the maximum: for 20 s, 4 concurrent clients post labelled observations (100 to a
request) as fast as ingest accepts them. Then the soak: the same requests paced at `--load` times
that rate, while 2 clients ask serving for 20-row predictions back to back. Every 5 s the resident
memory (RSS) of each service process is sampled.

Checked at the end, after the trainer has caught up:
- every observation ingest accepted is in the store, once (its count equals the accepted ones);
- the trainer learned every one (its count equals the stored labelled rows);
- each service's memory, averaged over the last minute, is within 10% of its average over the
  minute after warm-up (`--warmup` minutes).
Exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.caller import wait_until_learned  # noqa: E402
from continuo.demo import FEATURES, find_elec, read_rows  # noqa: E402
from continuo.progress import Bar, aprogress  # noqa: E402
from continuo.stack import SERVICES, Stack  # noqa: E402
from shared.events.types import data_stream  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402

TASK = "elec"
BATCH = 100
CLIENTS = 4
PREDICTORS = 2
GROWTH_LIMIT = 0.10


@dataclass
class Traffic:
    accepted: int = 0  # observations ingest accepted (202)
    refused: int = 0  # requests answered otherwise
    predictions: int = 0
    failed_predictions: int = 0
    failure: str = ""  # the last failed prediction's answer
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # (seconds, bytes)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def post(client: httpx.AsyncClient, rows: itertools.cycle, traffic: Traffic) -> None:
    body = [
        {"entity_id": "nsw", "features": {f: row[f] for f in FEATURES}, "label": row["class"]}
        for row in itertools.islice(rows, BATCH)
    ]
    response = await client.post(f"/v1/tasks/{TASK}/observations", json=body)
    if response.status_code == 202:
        traffic.accepted += len(body)
    else:
        traffic.refused += 1


async def ingest(url: str, traffic: Traffic, until: float, rate: float | None) -> None:
    """CLIENTS clients posting labelled rows until `until`, together at most `rate` rows/s."""
    rows = itertools.cycle(read_rows(find_elec()))
    started = time.monotonic()

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while time.monotonic() < until:
                await post(client, rows, traffic)
                if rate:
                    ahead = traffic.accepted / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)

    await asyncio.gather(*(client_loop() for _ in range(CLIENTS)))


async def predict(url: str, traffic: Traffic, until: float) -> None:
    rows = read_rows(find_elec(), limit=2000)
    # Predictions only (not recorded for log and wait: the rows come in through ingest).
    records = [{"entity_id": "nsw", "features": {f: r[f] for f in FEATURES}} for r in rows[:20]]
    body = {"records": records, "record": False}

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.monotonic() < until:
                response = await client.post(f"/v1/tasks/{TASK}/predict", json=body)
                if response.status_code == 200:
                    traffic.predictions += 20
                else:
                    traffic.failed_predictions += 1
                    traffic.failure = f"{response.status_code} {response.text[:200]}"

    await asyncio.gather(*(client_loop() for _ in range(PREDICTORS)))


async def sample(stack: Stack, traffic: Traffic, until: float, started: float) -> None:
    while time.monotonic() < until:
        for name in SERVICES:
            traffic.rss.setdefault(name, []).append(
                (time.monotonic() - started, rss(stack.processes[name].pid))
            )
        await asyncio.sleep(5)


async def clock(bar: Bar, started: float, until: float) -> None:
    """The soak's bar: seconds gone of its duration."""
    while (now := time.monotonic()) < until:
        bar.update(completed=now - started)
        await asyncio.sleep(1)
    bar.update(completed=until - started)


def growth(samples: list[tuple[float, int]], warmup: float, end: float) -> tuple[float, float]:
    """(MB over the minute after warm-up, MB over the last minute)."""
    after = [b for t, b in samples if warmup <= t < warmup + 60]
    last = [b for t, b in samples if t >= end - 60]
    return statistics.mean(after) / 1e6, statistics.mean(last) / 1e6


async def run(minutes: float, load: float, warmup: float, workdir: Path) -> dict:
    store_url = f"sqlite+aiosqlite:///{workdir / 'events.db'}"
    stack = Stack(workdir, store_url=store_url)
    await stack.start()
    try:
        probe = Traffic()
        await ingest(stack.url("ingest"), probe, time.monotonic() + 20, None)
        maximum = probe.accepted / 20
        rate = load * maximum
        print(
            f"maximum ingest rate {maximum:,.0f} rows/s; soaking at {rate:,.0f} rows/s", flush=True
        )
        traffic = Traffic(accepted=0)
        started = time.monotonic()
        until = started + minutes * 60
        async with aprogress("soaking (s)", minutes * 60) as bar:
            await asyncio.gather(
                ingest(stack.url("ingest"), traffic, until, rate),
                predict(stack.url("serving"), traffic, until),
                sample(stack, traffic, until, started),
                clock(bar, started, until),
            )
        accepted = probe.accepted + traffic.accepted
        print(f"accepted {accepted:,} rows; waiting for the trainer to learn them", flush=True)
        status = await wait_until_learned(stack.url("trainer"), TASK, accepted, timeout=1800)
    finally:
        stack.stop()
    store = open_event_store(store_url)
    stored, after = 0, 0
    while page := await store.read_stream(data_stream(TASK), after_version=after, limit=20_000):
        stored += sum(1 for e in page if e.type == "ObservationRecorded")
        after = page[-1].stream_version or after
    await store.close()
    end = minutes * 60
    memory = {name: growth(s, warmup * 60, end) for name, s in traffic.rss.items()}
    return {
        "maximum": maximum,
        "rate": rate,
        "achieved": traffic.accepted / (minutes * 60),
        "accepted": accepted,
        "refused": probe.refused + traffic.refused,
        "stored": stored,
        "learned": int(status["learned"]),
        "predictions": traffic.predictions,
        "failed_predictions": traffic.failed_predictions,
        "failure": traffic.failure,
        "memory": memory,
    }


def report(r: dict, minutes: float, load: float, warmup: float) -> tuple[str, bool]:
    lost = r["accepted"] - r["stored"]
    problems = []
    if r["stored"] != r["accepted"]:
        problems.append(f"{r['accepted']:,} accepted, {r['stored']:,} stored")
    if r["failed_predictions"]:
        problems.append(f"{r['failed_predictions']} prediction requests failed: {r['failure']}")
    if r["learned"] != r["stored"]:
        problems.append(f"{r['learned']:,} learned of {r['stored']:,} stored")
    lines = [
        f"`python bench/soak.py --minutes {minutes:g} --load {load:g} --warmup {warmup:g}` "
        f"({date.today()}; SQLite store, embedded broker). Maximum ingest rate measured first "
        f"in the same run: {r['maximum']:,.0f} labelled rows/s (4 clients, 100-row requests); "
        f"soaked at {load:.0%} of it ({r['rate']:,.0f} rows/s offered, {r['achieved']:,.0f} "
        f"accepted on average) with {PREDICTORS} clients asking serving for 20-row predictions "
        "back to back.",
        "",
        f"- accepted {r['accepted']:,} rows, stored {r['stored']:,}, lost {lost:,}; the trainer "
        f"learned {r['learned']:,}; {r['refused']} requests refused",
        f"- predictions answered: {r['predictions']:,} ({r['failed_predictions']} requests failed)",
        "",
        f"| service | RSS, the minute after {warmup:g} min warm-up | RSS, the last minute "
        "| growth |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, (before, last) in r["memory"].items():
        change = (last - before) / before
        if change > GROWTH_LIMIT:
            problems.append(f"{name} memory grew {change:.0%}")
        lines.append(f"| {name} | {before:.0f} MB | {last:.0f} MB | {change:+.1%} |")
    lines += ["", "Problems: " + ("; ".join(problems) if problems else "none.")]
    return "\n".join(lines), not problems


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="continuo-soak-") as tmp:
        result = await run(args.minutes, args.load, args.warmup, Path(tmp))
    text, ok = report(result, args.minutes, args.load, args.warmup)
    print(text)
    if not args.no_write:
        write_section("Soak: 80% of the maximum ingest rate, with predictions", text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
