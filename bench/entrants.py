"""Entrants: the trainer's race runner-up run as a live shadow, on the closed loop's stream.

Runs the closed loop (`continuo/loop.py`: 9,000 rows at 300 rows/s in 20-row requests, each
request's labels posted right after its answers, an abrupt drift at row 3,200, 200 entities, the
four services as processes on a fresh SQLite store each run) with entrants off and on
(`canary.shadow_entrants`, one every 500 labelled rows), alternating, and reports per run what
callers got (served accuracy), what each mode made (models by role, shadows started, how the
entrants' shadows ended, promotions, race configurations chosen by governance) and its wall time.

    .venv/bin/python bench/entrants.py [--runs 1] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.loop import loop_spec, run_loop  # noqa: E402
from continuo.stack import Stack, write_task_specs  # noqa: E402
from shared.events.types import ModelTrained, data_stream, model_stream  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402

SECTION = "Entrants as live shadows (bench/entrants.py)"


async def one_run(entrants: bool) -> dict[str, Any]:
    spec = loop_spec(entrants=entrants)
    tmp = Path(tempfile.mkdtemp(prefix="continuo-entrants-"))
    url = f"sqlite+aiosqlite:///{tmp}/store.db"
    stack = Stack(tmp, store_url=url, env_overrides=write_task_specs(tmp / "tasks", [spec]))
    started = time.perf_counter()
    await stack.start()
    try:
        run = await run_loop(stack, task=spec.name)
    finally:
        stack.stop()
    seconds = time.perf_counter() - started
    store = open_event_store(url)
    try:
        models = [e.data() for e in await store.read_stream(model_stream(spec.name))]
        chosen = [
            e for e in await store.read_stream(data_stream(spec.name)) if e.type == "ConfigChosen"
        ]
    finally:
        await store.close()
    roles = Counter(m.role for m in models if isinstance(m, ModelTrained))
    entrant_versions = {
        m.model_version for m in models if isinstance(m, ModelTrained) and m.role == "entrant"
    }
    ends = Counter(
        e["payload"]["outcome"]
        for e in run.trail
        if e["type"] == "ShadowStopped" and e["payload"]["model_version"] in entrant_versions
    )
    canaries = Counter(
        e["payload"]["outcome"]
        for e in run.trail
        if e["type"] == "CanaryEnded" and e["payload"]["model_version"] in entrant_versions
    )
    return {
        "mode": "on" if entrants else "off",
        "entrant_canaries": canaries,
        "served": run.served_accuracy,
        "rows": run.rows,
        "roles": roles,
        "shadows": sum(1 for e in run.trail if e["type"] == "ShadowStarted"),
        "entrant_ends": ends,
        "promoted": sum(1 for e in run.trail if e["type"] == "ModelPromoted"),
        "entrants_promoted": sum(
            1
            for e in run.trail
            if e["type"] == "ModelPromoted" and e["payload"]["model_version"] in entrant_versions
        ),
        "chosen": len(chosen),
        "seconds": seconds,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| entrants | served accuracy | rows | models (candidate / challenger / entrant) | shadows "
        "started | entrant shadows ended | entrant canaries ended | promotions (of entrants) | "
        "ConfigChosen | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        roles = r["roles"]
        ends = ", ".join(f"{k} {v}" for k, v in sorted(r["entrant_ends"].items())) or "-"
        canaries = ", ".join(f"{k} {v}" for k, v in sorted(r["entrant_canaries"].items())) or "-"
        lines.append(
            f"| {r['mode']} | {r['served']:.4f} | {r['rows']:,} | {roles['candidate']} / "
            f"{roles['challenger']} / {roles['entrant']} | {r['shadows']} | {ends} | {canaries} | "
            f"{r['promoted']} ({r['entrants_promoted']}) | {r['chosen']} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs of each mode (alternated)")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks.md")
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        for entrants in (False, True):
            print(f"run {i + 1}: entrants {'on' if entrants else 'off'} ...", flush=True)
            results.append(await one_run(entrants))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    body = (
        f"`python bench/entrants.py --runs {args.runs}` ({date.today().isoformat()}, this "
        "machine; the closed loop's stream: 9,000 rows at 300 rows/s in 20-row requests, each "
        "request's labels posted right after its answers, an abrupt drift at row 3,200; the "
        "four services as processes, a fresh SQLite store each run; modes alternated). Served "
        "accuracy: what callers received, over the whole run.\n\n" + table(results)
    )
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    asyncio.run(main())
