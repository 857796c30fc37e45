"""Served multiclass and regression: what callers of the running system got on targets that are
not binary, next to the learner in process and River's learners under the same label timing.

    .venv/bin/python bench/served_kinds.py --kind multiclass|regression [--rows N] [--rate R]
        [--streams NAME ...] [--no-write]

The streams of `bench/learner.py --kind multiclass|regression` (multiclass: RandomRBFDrift and
LEDDrift, `--rows` rows each, fixed seeds, and River's ImageSegments; regression: FriedmanDrift
with abrupt, gradual and local drifts, `--rows` rows each, fixed seeds, and River's TrumpApproval
and ChickWeights), each a task of that kind in the running system (four services, embedded
broker, SQLite store; the spec's defaults): every 100-row request asks serving first, recording
the rows (log and wait), and its labels go to ingest by prediction id after the next request's
answers (one request late). The served figure is computed here from serving's answers: what the
caller got, asked before the label existed (a multiclass answer: its most probable class).
The caller goes as fast as serving answers, or, with `--rate`, offers the rows at that many a
second: as fast as it goes, a short stream (ChickWeights' 578 rows take under a second) ends
before the trainer's first model has reached serving, so what it measures there is the latency
of publishing, promoting and swapping, not the learner; at a stated pace it is both.

In process, under the same timing (`continuo.simulate.requests`), with the same inputs: the
learner's own answers (`learner_answers`: its champion at the moment each row was asked, fresher
than any published model), River's learners of the kind (`bench/learner_kinds.py`) and the
previous label. Every figure is computed on the same rows: those serving answered (a row asked
before the task's first model reached serving has no served answer; how many is reported).
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
from shared.online_models import RESIDUALS  # noqa: E402
from shared.tasks import TaskSpec  # noqa: E402

SECTIONS = {
    "multiclass": "Served multiclass (bench/served_kinds.py --kind multiclass)",
    "regression": "Served regression (bench/served_kinds.py --kind regression)",
}
# The headline figure per kind, and whether lower is better.
HEADLINE = {"multiclass": ("accuracy", False), "regression": ("MAE", True)}
TIMING = Timing(100, 1)


def task_spec(index: int, stream: Stream) -> TaskSpec:
    """A task of the stream's kind with its columns as float features, the spec's defaults (a
    multiclass stream's classes: its class indices)."""
    kind = "multiclass" if stream.n_classes else "regression"
    target: dict[str, Any] = {"name": "y", "kind": kind}
    if stream.n_classes:
        target["classes"] = list(range(stream.n_classes))
    return TaskSpec.model_validate(
        {
            "name": f"{kind}-{index}",
            "features": [{"name": f"x{j}"} for j in range(stream.X.shape[1])],
            "target": target,
            "serving": {"record": True},
        }
    )


def served_answers(stream: Stream, answers: list[Any]) -> np.ndarray:
    """Serving's answers as the in-process learners give theirs: a value, or the index of the
    most probable class (NaN: no model yet)."""
    if not stream.n_classes:
        return np.array([np.nan if a is None else a for a in answers], dtype=float)
    return np.array(
        [np.nan if a is None else float(int(max(a, key=a.__getitem__))) for a in answers]
    )


def headline(stream: Stream, answers: np.ndarray) -> str:
    known = ~np.isnan(answers)
    if stream.n_classes:
        return f"served accuracy {(answers[known] == stream.y[known]).mean():.4f}"
    return f"served MAE {np.abs(answers[known] - stream.y[known]).mean():.4f}"


async def through_system(
    streams: list[Stream], workdir: Path, rate: float | None = None
) -> list[dict[str, Any]]:
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
                urls, spec.name, features, labels, TIMING, progress=False, rate=rate
            )
            status = await wait_until_learned(stack.url("trainer"), spec.name, len(labels), 600)
            answers = served_answers(stream, served.answers)
            out.append(
                {
                    "answers": answers,
                    "trainer": status["metrics"],
                    "rows_per_s": len(labels) / served.seconds,
                    "versions": len(served.versions),
                    # A regression's 90% prediction intervals: the share of labels inside
                    # them, their mean width, how many rows had one.
                    "intervals": served.interval_coverage(labels),
                    # ...of the last RESIDUALS of them, as the caller and the trainer count.
                    "intervals_last": served.interval_coverage(labels, RESIDUALS)[0],
                    "trainer_intervals": status["metrics"].get("served_interval_coverage"),
                }
            )
            print(
                f"  {stream.name}: {headline(stream, answers)} "
                f"({len(labels) / served.seconds:,.0f} rows/s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        stack.stop()
    return out


def measure(
    kind: str,
    rows: int,
    workdir: Path,
    rate: float | None = None,
    names: list[str] | None = None,
) -> tuple[list[Stream], list[dict[str, Any]]]:
    learner_kinds.SYNTH_ROWS = rows
    streams = [
        s
        for s in learner_kinds.streams(kind)
        if not names or any(n.lower() in s.name.lower() for n in names)
    ]
    if not streams:
        raise SystemExit(f"no {kind} stream is named like {names}")
    started = time.perf_counter()
    system = asyncio.run(through_system(streams, workdir, rate))
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
        for name, make in river_learners(kind):
            cell[name] = run_river(stream, TIMING, make)[0]
        results.append(
            {
                "stream": stream.name,
                "rows": len(stream.y),
                "unanswered": int((~answered).sum()),
                # Every learner scored on the same rows: those serving answered.
                "cell": {
                    k: answer_figures(y, a[answered], stream.n_classes) for k, a in cell.items()
                },
                "system": run,
            }
        )
    return streams, results


def section(kind: str, rate: float | None) -> str:
    return SECTIONS[kind] if rate is None else f"{SECTIONS[kind]}, {rate:g} rows/s offered"


def report(
    kind: str,
    results: list[dict[str, Any]],
    rows: int,
    rate: float | None = None,
    names: list[str] | None = None,
) -> str:
    figure, lower = HEADLINE[kind]
    columns = ["accuracy", "macro-F1"] if kind == "multiclass" else ["MAE", "RMSE", "R^2"]
    synthetic = "RandomRBFDrift and LEDDrift" if kind == "multiclass" else "FriedmanDrift"
    lines = [
        f"Measured {date.today().isoformat()} on this 2-core machine: the running system (four "
        f"services, embedded broker, SQLite; each {kind} task's spec defaults), then the "
        "in-process learners, in one run. 100-row requests, each request's labels posted after "
        "the next request was answered; every figure on the rows serving answered (the same rows "
        f"for every learner). {synthetic} streams: {rows:,} rows each. "
        + (
            "The caller as fast as serving answers."
            if rate is None
            else f"The rows offered at {rate:g} a second (the in-process learners have no clock)."
        ),
        "",
        "```",
        f"  .venv/bin/python bench/served_kinds.py --kind {kind} --rows {rows}"
        + ("" if rate is None else f" --rate {rate:g}")
        + ("" if not names else " --streams " + " ".join(names)),
        "```",
        "",
        f"| stream | rows (unanswered) | learner | {' | '.join(columns)} |",
        f"| --- | ---: | --- | {' | '.join('---:' for _ in columns)} |",
    ]
    verdicts = []
    for r in results:
        for learner, f in r["cell"].items():
            lines.append(
                f"| {r['stream']} | {r['rows']:,} ({r['unanswered']}) | {learner} | "
                + " | ".join(f"{f[c]:.4f}" for c in columns)
                + " |"
            )
        served = r["cell"]["**served (through the system)**"][figure]
        river = {k: v[figure] for k, v in r["cell"].items() if k.startswith("River")}
        best = (min if lower else max)(river, key=lambda k: river[k])
        inside = r["cell"]["learner in process (trainer-side)"][figure]
        ahead = served < river[best] if lower else served > river[best]
        covered, width, with_interval = r["system"]["intervals"]
        own = r["system"]["trainer_intervals"]
        interval = (
            f"; 90% intervals on {with_interval:,} rows held {covered:.1%} of the labels "
            f"(mean width {width:.4g}; of the last {RESIDUALS}: "
            f"{r['system']['intervals_last']:.1%}, the trainer's own "
            f"`served_interval_coverage` {'none' if own is None else f'{own:.1%}'})"
            if with_interval
            else ""
        )
        verdicts.append(
            f"- {r['stream']}: served {figure} {served:.4f} vs {best} {river[best]:.4f} "
            f"({'better' if ahead else 'not better'}; served/best "
            f"{served / river[best]:.2f}x); the learner in process {inside:.4f}; "
            f"{r['system']['versions']} model versions answered, "
            f"{r['system']['rows_per_s']:,.0f} rows/s through the system{interval}"
        )
    wins = sum(" (better;" in v for v in verdicts)
    lines += [
        "",
        f"Served against the best River learner of each stream ({figure}, "
        f"{'lower' if lower else 'higher'} is better):",
        "",
        *verdicts,
        "",
        f"Served ahead of the best River learner on {wins} of {len(results)} streams.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(SECTIONS), required=True)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per synthetic stream")
    parser.add_argument(
        "--rate", type=float, help="rows offered a second (default: as fast as serving answers)"
    )
    parser.add_argument(
        "--streams", nargs="+", help="only the streams whose names contain these (any case)"
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write the docs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        _, results = measure(args.kind, args.rows, Path(tmp), args.rate, args.streams)
    text = report(args.kind, results, args.rows, args.rate, args.streams)
    print(text)
    if args.streams and not args.no_write:
        print("(--streams: a part of the section, not written to docs/benchmarks.md)")
    elif not args.no_write:
        write_section(section(args.kind, args.rate), text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
