"""The chaos suite, long variant: 20,000 labelled rows through the running system while each
service in turn is killed with SIGKILL and restarted and the broker is lost, on SQLite and on
PostgreSQL (tests/chaos runs a short variant in `make test`; continuo/chaos.py says what is
checked).

    python bench/chaos.py [--rows 20000] [--rate 300] [--stores sqlite postgres] [--no-write]

PostgreSQL: a fresh database is made on CONTINUO_TEST_PG's server (default the local `test` one)
and dropped afterwards. Exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.chaos import ChaosResult, run_chaos  # noqa: E402
from tests.support import create_pg_database, drop_pg_database  # noqa: E402

PG_ADMIN_URL = os.environ.get("CONTINUO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def one(store: str, rows: int, rate: float, workdir: Path) -> ChaosResult:
    print(f"{store}: {rows:,} rows at {rate:.0f} rows/s", flush=True)
    if store == "sqlite":
        return await run_chaos(
            workdir, f"sqlite+aiosqlite:///{workdir / 'events.db'}", rows, rate=rate, progress=print
        )
    name = f"continuo_chaos_{uuid.uuid4().hex[:8]}"
    url = await asyncio.to_thread(create_pg_database, PG_ADMIN_URL, name)
    try:
        return await run_chaos(workdir, url, rows, rate=rate, progress=print)
    finally:
        await asyncio.to_thread(drop_pg_database, PG_ADMIN_URL, name)


def report(results: list[ChaosResult], rate: float) -> str:
    lines = [
        f"`python bench/chaos.py --rows {results[0].rows} --rate {rate:.0f}` ({date.today()}): "
        "the stream through serving (two replicas, the caller fails over) and ingest, labels one "
        "20-row request late; in turn ingest, the trainer, one serving replica and governance "
        "SIGKILLed and restarted, then the broker stopped and started empty. `ready`: until the "
        "faulted part answered again; `caught up`: until the trainer had learned every label "
        "accepted before the fault.",
        "",
        "| store | rows | faults survived | accepted events lost | learned twice | models equal to "
        "a fault-free replay | requests failed on every serving replica | failovers | "
        "label retries | rows stored but never answered |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        twice = max(0, r.learned - r.stored_labels)
        survived = len(r.faults) if not r.problems else "FAILED"
        lines.append(
            f"| {r.store.split('+')[0]} | {r.rows:,} | {survived} "
            f"| {r.lost} | {twice} | {'yes' if r.models_equal else 'NO'} ({r.models} models) "
            f"| {r.unanswered_requests} | {r.failovers} | {r.label_retries} "
            f"| {r.unacknowledged} |"
        )
    lines += [
        "",
        "| store | fault | ready | caught up | note |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for r in results:
        for f in r.faults:
            note = (
                f"restarted from the snapshot at data version {f.restored_from:,}"
                if (f.restored_from)
                else ""
            )
            lines.append(
                f"| {r.store.split('+')[0]} | {f.name} (at row {f.at_row:,}) | {f.ready:.1f} s "
                f"| {f.caught_up:.1f} s | {note} |"
            )
    problems = [f"{r.store}: {p}" for r in results for p in r.problems]
    lines += ["", "Problems: " + ("; ".join(problems) if problems else "none.")]
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = []
    for store in args.stores:
        with tempfile.TemporaryDirectory(prefix=f"continuo-chaos-{store}-") as tmp:
            results.append(await one(store, args.rows, args.rate, Path(tmp)))
    text = report(results, args.rate)
    print(text)
    if not args.no_write:
        write_section("Chaos: every service killed in turn, the broker lost", text)
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
