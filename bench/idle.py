"""What an idle stack costs: CPU of each service while no request comes, with the relays polling
the store every 20 ms (how they ran until 2026-11-28) and as they run now (woken by their own
service's appends, looking every 0.5 s for other processes' events), in the same run.

    .venv/bin/python bench/idle.py [--tasks 2] [--seconds 20] [--no-write]

Each configuration starts a whole stack (four services, embedded broker, SQLite store) with
`--tasks` registered tasks, waits 10 s for start-up to settle, then reads each service's CPU time
(user + system, from /proc) over `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.stack import SERVICES, Stack, write_task_specs  # noqa: E402
from shared.tasks import TaskSpec  # noqa: E402

SECTION = "Idle stack (bench/idle.py)"
CONFIGURATIONS = {
    "relays polling every 20 ms (before 2026-11-28)": {"CONTINUO_RELAY_INTERVAL": "0.02"},
    "relays woken by appends, polling every 0.5 s (default)": {},
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                pids += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


async def idle_cpu(tasks: int, seconds: float, env: dict[str, str]) -> dict[str, float]:
    """Cores each service used while idle, for one stack configuration."""
    specs = [
        TaskSpec.model_validate(
            {"name": f"idle{i}", "features": [{"name": "x"}], "target": {"name": "y"}}
        )
        for i in range(tasks)
    ]
    with tempfile.TemporaryDirectory(prefix="continuo-idle-") as tmp:
        workdir = Path(tmp)
        stack = Stack(
            workdir,
            store_url=f"sqlite+aiosqlite:///{workdir / 'events.db'}",
            env_overrides={**write_task_specs(workdir / "tasks", specs), **env},
        )
        await stack.start()
        try:
            await asyncio.sleep(10)
            pids = {name: stack.processes[name].pid for name in SERVICES}
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - started
            return {n: (cpu_seconds(pid) - before[n]) / elapsed for n, pid in pids.items()}
        finally:
            stack.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for label, env in CONFIGURATIONS.items():
        cores = asyncio.run(idle_cpu(args.tasks, args.seconds, env))
        print(label, {n: round(c, 3) for n, c in cores.items()}, file=sys.stderr, flush=True)
        rows.append((label, cores))
    command = "python bench/idle.py " + " ".join(argv)
    lines = [
        f"Command: `{command.strip()}` ({date.today().isoformat()}). A stack with {args.tasks} "
        f"registered tasks and no traffic; cores used over {args.seconds:.0f} s after a 10 s "
        "settle, per service (user + system CPU from /proc), both configurations in the same run.",
        "",
        "| relays | " + " | ".join(SERVICES) + " | all four |",
        "| --- |" + " ---: |" * (len(SERVICES) + 1),
    ]
    for label, cores in rows:
        cells = [f"{cores[n]:.3f}" for n in SERVICES] + [f"**{sum(cores.values()):.3f}**"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
