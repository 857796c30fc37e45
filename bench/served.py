"""Served accuracy under real label timing: what callers of the running system got, next to the
trainer's own figure, River's online learners and the legacy model, under the same timing.

    .venv/bin/python bench/served.py [--rows N] [--streams elec,sea] [--timings 1:0,20:0]
                                     [--skip-system] [--skip-river] [--rate 2500] [--no-write]

Streams: elec with its spec as shipped (the price's deviation from its 24-hour mean, and label
history), elec with label history only, and River's SEA (abrupt drifts, 10% label noise) and
Agrawal (gradual drifts) generators with fixed seeds, 50,000 rows each (no online features: their
rows are independent). Timings (`B:D`): requests of B rows, each request's labels posted D
requests after its answers (0: right after them, before the next request); 1:0 is "on arrival".

For every stream and timing:
- through the whole running system (four services, embedded broker, SQLite store): each request
  asks serving first, recording the rows (log and wait, passing the last position ingest returned
  so the labels already posted are in the online features); labels go to ingest by prediction id.
  Served accuracy is computed here from serving's answers (rows asked before the first model
  count as wrong); the trainer-side figure is the trainer's prequential accuracy, same run;
- in process under the same timing (`continuo.simulate`): River's ARF, Leveraging Bagging,
  Hoeffding Adaptive Tree and logistic regression, each given the same inputs as our models
  (request features and the spec's online features, as of the moment each row was asked about),
  and on streams with online features also on the request features alone; the legacy LightGBM,
  trained once on the first 10% and frozen, same inputs, scored on the other 90%.
Then the learner alone (labelled events/s on one core) and freshness at `--rate` rows/s offered:
seconds from ingest accepting a label to serving answering with a model that learned it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.learner import load_agrawal, load_sea  # noqa: E402
from bench.report import write_section  # noqa: E402
from continuo.caller import freshness, stream_through_serving, wait_until_learned  # noqa: E402
from continuo.demo import FEATURES, find_elec, read_rows  # noqa: E402
from continuo.progress import track  # noqa: E402
from continuo.simulate import Rows, Timing, simulate  # noqa: E402
from continuo.stack import Stack, write_task_specs  # noqa: E402
from services.trainer.baselines import FrozenBatch  # noqa: E402
from services.trainer.learner import OnlineLearner  # noqa: E402
from shared.events.types import ModelTrained, model_stream  # noqa: E402
from shared.features import OnlineFold, model_inputs  # noqa: E402
from shared.store.sql import open_event_store  # noqa: E402
from shared.tasks import TaskSpec, load_spec  # noqa: E402

SECTION = "Served accuracy (bench/served.py)"
TIMINGS = (Timing(1, 0), Timing(20, 0), Timing(20, 1), Timing(100, 0))
FRESHNESS_TIMING = Timing(100, 0)
FRESHNESS_CALLERS = 4
ENTITY = "e"
LABEL_HISTORY = [
    {"name": "last_label", "kind": "last_label"},
    {"name": "label_mean_4", "kind": "label_mean", "window": 4},
    {"name": "label_age", "kind": "label_age"},
]


@dataclass
class Stream:
    name: str
    spec: TaskSpec
    features: list[dict[str, Any]]
    labels: list[int]
    note: str
    entities: list[str] | None = None  # each row's entity (None: one entity, ENTITY)

    def entity_ids(self) -> list[str]:
        return self.entities or [ENTITY] * len(self.labels)


def _spec(name: str, features: list[str], online: list[dict], publish_every: int) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": name,
            "features": [{"name": f} for f in features],
            "target": {"name": "y"},
            "online_features": online,
            "learner": {"publish_every": publish_every},
        }
    )


def load_streams(rows: int | None) -> dict[str, Stream]:
    elec = read_rows(find_elec(), rows)
    shipped = load_spec(ROOT / "tasks" / "elec.yaml")
    features = [{f: r[f] for f in FEATURES} for r in elec]
    labels = [r["class"] for r in elec]
    streams = {
        "elec": Stream("elec", shipped, features, labels, "tasks/elec.yaml as shipped"),
        "elec-labels": Stream(
            "elec-labels",
            _spec("elec", list(FEATURES), LABEL_HISTORY, shipped.learner.publish_every),
            features,
            labels,
            "label history only (last label, mean of 4, age)",
        ),
    }
    for name, load in (("sea", load_sea), ("agrawal", load_agrawal)):
        synthetic = load()
        n = rows or len(synthetic.y)
        names = [f"x{i}" for i in range(synthetic.X.shape[1])]
        streams[name] = Stream(
            name,
            _spec(name, names, [], 250),
            [dict(zip(names, x, strict=True)) for x in synthetic.X[:n].tolist()],
            synthetic.y[:n].tolist(),
            synthetic.name,
        )
    return streams


# ---------------------------------------------------------------- in process


class Sliced:
    """A River model given only the first `k` inputs (the request features, no online ones)."""

    def __init__(self, model: Any, k: int) -> None:
        self.model, self.k = model, k

    def predict_one(self, x: dict[int, float]) -> Any:
        return self.model.predict_one({i: x[i] for i in range(self.k)})

    def learn_one(self, x: dict[int, float], y: int) -> None:
        self.model.learn_one({i: x[i] for i in range(self.k)}, y)


def river_models(spec: TaskSpec) -> dict[str, Any]:
    from river import ensemble, forest, linear_model, preprocessing, tree

    def make() -> dict[str, Any]:
        return {
            "River ARF (10 trees)": forest.ARFClassifier(n_models=10, seed=42),
            "River Leveraging Bagging (10)": ensemble.LeveragingBaggingClassifier(
                model=tree.HoeffdingTreeClassifier(), n_models=10, seed=42
            ),
            "River Hoeffding Adaptive Tree": tree.HoeffdingAdaptiveTreeClassifier(seed=42),
            "River logistic regression": preprocessing.StandardScaler()
            | linear_model.LogisticRegression(),
        }

    models = make()
    if spec.online_features:
        k = len(spec.model_features)
        models |= {f"{name}, request features only": Sliced(m, k) for name, m in make().items()}
    return models


def in_process(args: tuple[Stream, Timing, bool]) -> dict[str, Any]:
    stream, timing, river = args
    cut = len(stream.labels) // 10
    legacy_rows = max(1, cut - timing.batch * (timing.label_delay + 1))
    baselines: dict[str, Any] = {"legacy LightGBM (frozen)": FrozenBatch(legacy_rows)}
    if river:
        baselines |= river_models(stream.spec)
    started = time.perf_counter()
    result = simulate(
        stream.spec,
        Rows(stream.features, stream.labels, stream.entity_ids()),
        timing,
        baselines=baselines,
        scored_from={"legacy LightGBM (frozen)": cut},
    )
    print(
        f"  in process: {stream.name} {timing.describe()}: served {result.served_accuracy:.4f} "
        f"({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return {
        "served": result.served_accuracy,
        "trainer": result.trainer_accuracy,
        "served_legacy_rows": result.served_accuracy_from(cut),
        "baselines": result.baselines,
    }


def measure(
    streams: dict[str, Stream],
    timings: list[Timing],
    *,
    command: str,
    system: bool,
    river: bool,
    rate: float | None,
    arrival_rows: int,
) -> str:
    """Every stream under every timing through the running system (unless `system` is off)
    and in process, reported as `report` writes it."""
    started = time.perf_counter()
    served: dict[tuple[str, Timing], dict[str, Any]] = {}
    if system:
        with tempfile.TemporaryDirectory(prefix="continuo-served-") as tmp:
            served = asyncio.run(through_system(streams, timings, Path(tmp), rate, arrival_rows))
    inproc, speeds = in_process_runs(streams, timings, river=river, arrival_rows=arrival_rows)
    text = report(streams, timings, inproc, served, speeds, command, arrival_rows)
    return text + f"\n({time.perf_counter() - started:.0f} s in all.)\n"


def in_process_runs(
    streams: dict[str, Stream], timings: list[Timing], *, river: bool, arrival_rows: int
) -> tuple[dict[tuple[str, Timing], dict[str, Any]], dict[str, float]]:
    """Every stream under every timing in process, two runs at a time (`in_process`), and the
    learner's speed alone on each stream's inputs (`learner_speed`)."""
    jobs = [(_rows(s, t, arrival_rows), t, river) for s in streams.values() for t in timings]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = pool.imap(in_process, jobs, chunksize=1)  # in order, each as it finishes
        figures = list(track(done, "in process", total=len(jobs), unit="runs"))
    inproc = {(s.name, t): f for (s, t, _), f in zip(jobs, figures, strict=True)}
    return inproc, {name: learner_speed(stream) for name, stream in streams.items()}


def learner_speed(stream: Stream) -> float:
    """Labelled events/s of the learner alone, on the stream's inputs (best of 2, one core)."""
    fold = OnlineFold(stream.spec)
    X = []
    rows = zip(stream.features, stream.labels, stream.entity_ids(), strict=True)
    for i, (features, label, entity) in enumerate(rows):
        from uuid import UUID

        X.append(model_inputs(stream.spec, features, fold.values(entity, features)))
        fold.observe(UUID(int=i + 1), entity, features)
        fold.label(UUID(int=i + 1), entity, label)
    Xa, y = np.array(X), np.array(stream.labels)
    best = float("inf")
    for _ in range(2):
        learner = OnlineLearner.from_spec(stream.spec)
        started = time.perf_counter()
        for start in range(0, len(y), 1000):
            learner.test_then_train(Xa[start : start + 1000], y[start : start + 1000])
        best = min(best, time.perf_counter() - started)
    return len(y) / best


# ---------------------------------------------------------------- the running system


def _rows(stream: Stream, timing: Timing, arrival_rows: int) -> Stream:
    """The stream, cut to `arrival_rows` for the on-arrival timing (a request per row)."""
    if timing.batch > 1 or len(stream.labels) <= arrival_rows:
        return stream
    return Stream(
        stream.name,
        stream.spec,
        stream.features[:arrival_rows],
        stream.labels[:arrival_rows],
        stream.note,
        stream.entities[:arrival_rows] if stream.entities else None,
    )


def task_name(stream: str, timing: Timing) -> str:
    return f"{stream}-b{timing.batch}-d{timing.label_delay}"


async def through_system(
    streams: dict[str, Stream],
    timings: list[Timing],
    workdir: Path,
    rate: float | None,
    arrival_rows: int,
) -> dict[tuple[str, Timing], dict[str, Any]]:
    runs = [(_rows(s, t, arrival_rows), t) for s in streams.values() for t in timings]
    specs = [s.spec.model_copy(update={"name": task_name(s.name, t)}) for s, t in runs]
    fresh = streams.get("elec")
    if rate and fresh is not None:
        specs.append(fresh.spec.model_copy(update={"name": "elec-paced"}))
    store_url = f"sqlite+aiosqlite:///{workdir / 'events.db'}"
    stack = Stack(
        workdir, store_url=store_url, env_overrides=write_task_specs(workdir / "tasks", specs)
    )
    await stack.start()
    out: dict[tuple[str, Timing], dict[str, Any]] = {}
    try:
        urls = {name: stack.url(name) for name in ("serving", "ingest")}
        for stream, timing in track(runs, "through the system", unit="runs"):
            task = task_name(stream.name, timing)
            started = time.perf_counter()
            served = await stream_through_serving(
                urls,
                task,
                stream.features,
                stream.labels,
                timing,
                entity=ENTITY,
                entities=stream.entities,
                progress=False,
            )
            status = await wait_until_learned(
                stack.url("trainer"), task, len(stream.labels), timeout=600
            )
            right = served.right(stream.labels)
            out[(stream.name, timing)] = {
                "served": float(right.mean()),
                "trainer": status["metrics"]["accuracy"],
                "unanswered": served.unanswered,
                "rows_per_s": len(stream.labels) / served.seconds,
                "versions": len(served.versions),
            }
            print(
                f"  system: {task}: served {right.mean():.4f} trainer "
                f"{status['metrics']['accuracy']:.4f} "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        if rate and fresh is not None:
            out[("freshness", FRESHNESS_TIMING)] = await freshness_through_system(
                stack, fresh, store_url, rate
            )
    finally:
        stack.stop()
    return out


async def freshness_through_system(
    stack: Stack, stream: Stream, store_url: str, rate: float, callers: int = FRESHNESS_CALLERS
) -> dict[str, Any]:
    """Seconds from ingest accepting each label request to serving answering with a model that
    learned it, with rows offered at `rate` rows/s (requests of 100, labels right after) by
    `callers` concurrent callers, each taking every `callers`-th request at `rate / callers`
    (one sequential caller cannot offer more than one request's round trip allows)."""
    urls = {name: stack.url(name) for name in ("serving", "ingest")}
    batch = FRESHNESS_TIMING.batch
    chunks = [
        range(i, min(len(stream.labels), i + batch)) for i in range(0, len(stream.labels), batch)
    ]
    shares = [[i for chunk in chunks[c::callers] for i in chunk] for c in range(callers)]
    started = time.monotonic()
    parts = await asyncio.gather(
        *(
            stream_through_serving(
                urls,
                "elec-paced",
                [stream.features[i] for i in share],
                [stream.labels[i] for i in share],
                FRESHNESS_TIMING,
                entity=ENTITY,
                progress=False,
                rate=rate / callers,
            )
            for share in shares
        )
    )
    seconds = time.monotonic() - started
    right = np.zeros(len(stream.labels), dtype=bool)
    first_seen: dict[int, float] = {}
    label_batches = []
    for share, part in zip(shares, parts, strict=True):
        right[share] = part.right([stream.labels[i] for i in share])
        label_batches += part.label_batches
        for version, seen in part.first_seen.items():
            first_seen[version] = min(seen, first_seen.get(version, seen))
    store = open_event_store(store_url)
    learned = {
        m.model_version: m.last_position
        for m in (e.data() for e in await store.read_stream(model_stream("elec-paced")))
        if isinstance(m, ModelTrained)
    }
    await store.close()
    seen = [(t, v) for v, t in first_seen.items()]
    delays, unserved = freshness(label_batches, seen, learned)
    d = np.array(delays) if delays else np.array([np.nan])
    return {
        "offered": rate,
        "achieved": len(stream.labels) / seconds,
        "callers": callers,
        "p50": float(np.nanpercentile(d, 50)),
        "p95": float(np.nanpercentile(d, 95)),
        "max": float(np.nanmax(d)),
        "measured": len(delays),
        "unserved": unserved,
        "served": float(right.mean()),
    }


# ---------------------------------------------------------------- report


def report(
    streams: dict[str, Stream],
    timings: list[Timing],
    inproc: dict[tuple[str, Timing], dict[str, Any]],
    system: dict[tuple[str, Timing], dict[str, Any]],
    speeds: dict[str, float],
    command: str,
    arrival_rows: int,
) -> str:
    lines = [
        f"Command: `{command}` ({date.today().isoformat()}). Served accuracy is computed from "
        "serving's answers, asked before each label existed; rows asked before the first model "
        "count as wrong. River and the legacy model run in process under the same timing with "
        "the same inputs.",
        "",
    ]
    for name, stream in streams.items():
        lines += [f"**{name}** ({len(stream.labels):,} rows; {stream.note})", ""]
        if any(t.batch == 1 for t in timings) and arrival_rows < len(stream.labels):
            lines += [
                f"(On arrival, one request per row: the first {arrival_rows:,} rows, every "
                "figure in that column.)",
                "",
            ]
        header = ["figure"] + [t.describe() for t in timings]
        lines += ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(timings)]
        rows: dict[str, list[str]] = {}

        def put(label: str, i: int, value: float | None, rows: dict = rows) -> None:
            rows.setdefault(label, ["-"] * len(timings))
            rows[label][i] = "-" if value is None else f"{value:.4f}"

        for i, timing in enumerate(timings):
            sys_fig = system.get((name, timing))
            if sys_fig:
                put("**served, whole system**", i, sys_fig["served"])
                put("trainer-side, whole system", i, sys_fig["trainer"])
                rows.setdefault("rows asked before any model (whole system)", ["-"] * len(timings))
                rows["rows asked before any model (whole system)"][i] = str(sys_fig["unanswered"])
                rows.setdefault("rows/s through the system", ["-"] * len(timings))
                rows["rows/s through the system"][i] = f"{sys_fig['rows_per_s']:,.0f}"
            fig = inproc.get((name, timing))
            if fig:
                put("served, in process", i, fig["served"])
                put("trainer-side, in process", i, fig["trainer"])
                for label, value in fig["baselines"].items():
                    put(label, i, value)
                put(
                    "served on the legacy model's rows (last 90%), in process",
                    i,
                    fig["served_legacy_rows"],
                )
        for label, values in rows.items():
            lines.append(f"| {label} | " + " | ".join(values) + " |")
        best = []
        for timing in timings:
            fig, sys_fig = inproc.get((name, timing)), system.get((name, timing))
            if not fig:
                continue
            river = {k: v for k, v in fig["baselines"].items() if k.startswith("River")}
            if not river:
                continue
            top = max(river, key=lambda k: river[k])
            ours = sys_fig["served"] if sys_fig else fig["served"]
            where = "system" if sys_fig else "in process"
            best.append(
                f"{timing.describe()}: served ({where}) {ours:.4f} vs best River "
                f"{river[top]:.4f} ({top}): {100 * (ours - river[top]):+.2f} points"
            )
        if best:
            lines += ["", "Margin: " + "; ".join(best)]
        if name in speeds:
            lines += ["", f"Learner alone on these inputs: {speeds[name]:,.0f} labelled events/s"]
        lines.append("")
    fresh = system.get(("freshness", FRESHNESS_TIMING))
    if fresh:
        lines += [
            f"**Freshness** (elec, 100-row requests, labels right after, {fresh['offered']:,.0f} "
            f"rows/s offered by {fresh['callers']} concurrent callers, {fresh['achieved']:,.0f} "
            "achieved): from ingest accepting a label "
            f"request to serving answering with a model that learned it, p50 {fresh['p50']:.2f} s, "
            f"p95 {fresh['p95']:.2f} s, max {fresh['max']:.2f} s over {fresh['measured']} label "
            f"requests ({fresh['unserved']} at the stream's end no served model had learned); "
            f"served accuracy in that run {fresh['served']:.4f}.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=None, help="rows per stream (default all)")
    parser.add_argument("--streams", default="elec,elec-labels,sea,agrawal")
    parser.add_argument(
        "--timings", default=",".join(f"{t.batch}:{t.label_delay}" for t in TIMINGS)
    )
    parser.add_argument("--skip-system", action="store_true")
    parser.add_argument("--skip-river", action="store_true")
    parser.add_argument("--rate", type=float, default=2500.0, help="rows/s for freshness (0: skip)")
    parser.add_argument(
        "--arrival-rows",
        type=int,
        default=10_000,
        help="rows per stream for the on-arrival timing (1:0), one HTTP request per row",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    all_streams = load_streams(args.rows)
    streams = {n: all_streams[n] for n in args.streams.split(",")}
    timings = [Timing(*map(int, t.split(":"))) for t in args.timings.split(",")]
    text = measure(
        streams,
        timings,
        command=("python bench/served.py " + " ".join(argv)).strip(),
        system=not args.skip_system,
        river=not args.skip_river,
        rate=args.rate or None,
        arrival_rows=args.arrival_rows,
    )
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
