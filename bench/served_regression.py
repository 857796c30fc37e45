"""Served regression: what callers of the running system got on numeric targets, next to the
learner in process and River's regressors under the same label timing.

    .venv/bin/python bench/served_regression.py [--rows N] [--no-write]

The regression streams of `bench/learner.py --kind regression` (FriedmanDrift with abrupt,
gradual and local drifts, `--rows` rows each, fixed seeds; River's TrumpApproval and ChickWeights
data sets), each a regression task of the running system (four services, embedded broker,
SQLite store; the spec's defaults): every 100-row request asks serving first, recording the rows
(log and wait), and its labels go to ingest by prediction id after the next request's answers
(one request late). The served figure is computed here from serving's answers: what the caller
got, asked before the label existed.

In process, under the same timing (`continuo.simulate.requests`), with the same inputs: the
learner's own answers (`learner_answers`: its champion at the moment each row was asked, fresher
than any published model), River's regressors (`bench/learner_kinds.py`) and the previous label.
Every figure is computed on the same rows: those serving answered (a row asked before the task's
first model reached serving has no served answer; how many is reported).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import learner_kinds  # noqa: E402
from bench.learner_kinds import (  # noqa: E402
    Stream,
    river_learners,
    run_continuo,
    run_previous_label,
    run_river,
)
from bench.report import write_section  # noqa: E402
from continuo.caller import stream_through_serving, wait_until_learned  # noqa: E402
from continuo.progress import track  # noqa: E402
from continuo.simulate import Timing, answer_figures  # noqa: E402
from continuo.stack import Stack, write_task_specs  # noqa: E402
from shared.tasks import TaskSpec  # noqa: E402

SECTION = "Served regression (bench/served_regression.py)"
TIMING = Timing(100, 1)


def task_spec(index: int, stream: Stream) -> TaskSpec:
    """A regression task with the stream's columns as float features, the spec's defaults."""
    return TaskSpec.model_validate(
        {
            "name": f"regression-{index}",
            "features": [{"name": f"x{j}"} for j in range(stream.X.shape[1])],
            "target": {"name": "y", "kind": "regression"},
            "serving": {"record": True},
        }
    )


async def through_system(streams: list[Stream], workdir: Path) -> list[dict[str, Any]]:
    """Each stream through the running system: serving's answer to each row, the trainer's
    figures, rows/s."""
    specs = [task_spec(i, s) for i, s in enumerate(streams)]
    store_url = f"sqlite+aiosqlite:///{workdir / 'events.db'}"
    stack = Stack(
        workdir, store_url=store_url, env_overrides=write_task_specs(workdir / "tasks", specs)
    )
    await stack.start()
    out = []
    try:
        urls = {name: stack.url(name) for name in ("serving", "ingest")}
        for spec, stream in track(list(zip(specs, streams, strict=True)), "through the system"):
            features = [{f"x{j}": v for j, v in enumerate(row)} for row in stream.X.tolist()]
            labels = stream.y.tolist()
            served = await stream_through_serving(
                urls, spec.name, features, labels, TIMING, progress=False
            )
            status = await wait_until_learned(stack.url("trainer"), spec.name, len(labels), 600)
            answers = np.array([np.nan if a is None else a for a in served.answers], dtype=float)
            out.append(
                {
                    "answers": answers,
                    "trainer": status["metrics"],
                    "rows_per_s": len(labels) / served.seconds,
                    "versions": len(served.versions),
                }
            )
            print(
                f"  {stream.name}: served MAE {np.nanmean(np.abs(answers - stream.y)):.4f} "
                f"({len(labels) / served.seconds:,.0f} rows/s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        stack.stop()
    return out


def measure(rows: int, workdir: Path) -> tuple[list[Stream], list[dict[str, Any]]]:
    learner_kinds.SYNTH_ROWS = rows
    streams = learner_kinds.streams("regression")
    started = time.perf_counter()
    system = asyncio.run(through_system(streams, workdir))
    print(f"through the system: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results = []
    for stream, run in zip(streams, system, strict=True):
        answered = ~np.isnan(run["answers"])
        y = stream.y[answered]
        cell = {
            "**served (through the system)**": run["answers"],
            "learner in process (trainer-side)": run_continuo(stream, TIMING)[0],
            "previous label": run_previous_label(stream, TIMING)[0],
        }
        for name, make in river_learners("regression"):
            cell[name] = run_river(stream, TIMING, make)[0]
        results.append(
            {
                "stream": stream.name,
                "rows": len(stream.y),
                "unanswered": int((~answered).sum()),
                # Every learner scored on the same rows: those serving answered.
                "cell": {k: answer_figures(y, a[answered], 0) for k, a in cell.items()},
                "system": run,
            }
        )
    return streams, results


def report(results: list[dict[str, Any]], rows: int) -> str:
    lines = [
        f"Measured {date.today().isoformat()} on this 2-core machine: the running system (four "
        "services, embedded broker, SQLite; each regression task's spec defaults), then the "
        "in-process learners, in one run. 100-row requests, each request's labels posted after "
        "the next request was answered; every figure on the rows serving answered (the same rows "
        f"for every learner). FriedmanDrift streams: {rows:,} rows each.",
        "",
        "```",
        f"  .venv/bin/python bench/served_regression.py --rows {rows}",
        "```",
        "",
        "| stream | rows (unanswered) | learner | MAE | RMSE | R^2 |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    verdicts = []
    for r in results:
        for learner, f in r["cell"].items():
            lines.append(
                f"| {r['stream']} | {r['rows']:,} ({r['unanswered']}) | {learner} | "
                f"{f['MAE']:.4f} | {f['RMSE']:.4f} | {f['R^2']:.4f} |"
            )
        served = r["cell"]["**served (through the system)**"]["MAE"]
        river = {k: v["MAE"] for k, v in r["cell"].items() if k.startswith("River")}
        best = min(river, key=lambda k: river[k])
        inside = r["cell"]["learner in process (trainer-side)"]["MAE"]
        verdicts.append(
            f"- {r['stream']}: served MAE {served:.4f} vs {best} {river[best]:.4f} "
            f"({'better' if served < river[best] else 'not better'}; served/best "
            f"{served / river[best]:.2f}x); the learner in process {inside:.4f}; "
            f"{r['system']['versions']} model versions answered, "
            f"{r['system']['rows_per_s']:,.0f} rows/s through the system"
        )
    wins = sum(" (better;" in v for v in verdicts)
    lines += [
        "",
        "Served against the best River regressor of each stream (MAE, lower is better):",
        "",
        *verdicts,
        "",
        f"Served ahead of the best River regressor on {wins} of {len(results)} streams.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per FriedmanDrift stream")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the docs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        _, results = measure(args.rows, Path(tmp))
    text = report(results, args.rows)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
