"""Benchmark: Continuo's online learner vs River's online learners and LightGBM baselines.

    .venv/bin/python bench/learner.py [--quick] [--no-write]
    .venv/bin/python bench/learner.py --search [--no-write]
    .venv/bin/python bench/learner.py --search-with '[{"rounds": 40}]' [--no-write]
    .venv/bin/python bench/learner.py --kind multiclass|regression [--no-write]

Streams: elec.csv (real, drifting), and two River synthetic streams with known drift points
(SEA with 10% label noise, abrupt drifts; Agrawal, gradual drifts), 50,000 rows each, fixed seeds.
Every learner is scored prequentially (predict each row, then learn it), on one core, in this run.
Results go to stdout and to docs/benchmarks.md under "## Learner (bench/learner.py)".
`--quick` runs River's ensembles (ARF, leveraging bagging) on the first 5,000 rows only.
`--search`: the tuning's gain and cost instead, the learner with and without its search of the
short member's window, alternated, on these streams and on three whose drift is faster or slower
than the defaults assume (section "Tuning that searches (bench/learner.py --search)").
`--search-with CHANGES`: the same streams, the default search against the default search plus
the given alternatives (a JSON list of `short_search` entries: `rounds`, `num_leaves`, ...), in
section "Tuning that searches: other settings (bench/learner.py --search-with)".
`--kind multiclass`, `--kind regression`: those kinds of target against River's learners of
the same kind (bench/learner_kinds.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from continuo.progress import progress  # noqa: E402
from services.trainer import baselines  # noqa: E402
from services.trainer.learner import LEARNER_DEFAULTS, OnlineLearner  # noqa: E402
from shared.model_codec import decode  # noqa: E402

SECTION = "Learner (bench/learner.py)"
SEARCH_SECTION = "Tuning that searches (bench/learner.py --search)"
SEARCH_WITH_SECTION = "Tuning that searches: other settings (bench/learner.py --search-with)"
SYNTH_ROWS = 50_000
QUICK_RIVER_ROWS = 5_000
CHUNK = 1000


@dataclass
class Stream:
    name: str
    X: np.ndarray
    y: np.ndarray
    drifts: list[int]  # known drift centres (synthetic streams)


@dataclass
class Result:
    stream: str
    learner: str
    accuracy: float
    events_per_s: float | None
    rows: int
    note: str = ""


HEADER = (
    "Measured {date} on this 2-core machine, one process, one core. The machine is shared with\n"
    "other work: Continuo rows are the best of 3 identical runs; River's learners run once each\n"
    "(minutes per stream)."
)

# Development measurements (elec unless stated; same machine, busier, so events/s are rough).
DID_NOT_WORK = """
### What we tried that did not work (or not well enough)

- **LightGBM on the request features alone**, sliding window retrained every K rows: best 0.794
  (window 3,000, K = 50, ~8,000 ev/s); K = 200 drops to 0.782. Below the previous-label baseline
  (0.853) at any window (300 to 10,000): on elec the label's own recent history matters most.
- **Stream features inside LightGBM only** (last label + label EWMA as inputs, no online blend):
  window 5,000 gives 0.866 at K = 100 (~6,000 ev/s) but 0.859 at K = 500 (the rate we can
  afford at 20,000 ev/s). Barely above previous-label. More stream inputs (EWMA 0.9, run length)
  added at most +0.003. What made the difference is the per-row online logistic blend over the
  members with the blend's own recent residual: 0.888 at K = 500 (without the residual: 0.881).
- **Blend learning rate**: 0.005 -> 0.872, 0.02 -> 0.882, 0.05 -> 0.888 on elec; on SEA/Agrawal a
  slow blend is slightly better. That is the trade-off the race settles per stream.
- **A third racing configuration** (long member only, slow): elec 0.8901 with or without it, SEA
  0.8821 vs 0.8811, Agrawal 0.9740 vs 0.9754, for ~25-30% fewer events/s. Dropped: the race has
  two blends. The race itself gains ~0.001 on the synthetic streams and nothing on elec (see the
  "one blend (no race)" row) for ~15-25% of the throughput; it stays, small, as the on-the-fly
  tuning mechanism, and `racing: false` turns it off.
- **First defaults** (long member 5,000 rows, 20 trees, every 1,000): elec 0.8901, SEA 0.8821,
  Agrawal 0.9740. The long member on 10,000 rows with 40 trees every 2,000 costs the same per
  row and gives 0.8939 / 0.8845 / 0.9758.
- **`linear_tree: true`**: elec 0.8876, SEA 0.8817, Agrawal 0.9775, ~35% slower. Not default.
- **31 leaves, 40 trees in both members**: elec 0.8923, SEA 0.8811, Agrawal 0.9761, slower.
- **LightGBM's default prediction threading**: `Booster.predict` without `num_threads=1` spins up
  OpenMP on every call; on a busy 2-core machine a 250-row predict took 3-7 ms and a single row
  ~2 ms, against ~0.1 ms and ~20-90 us with `num_threads=1`. Every predict call passes it.
"""

# ---------------------------------------------------------------- streams


def load_elec() -> Stream:
    # The project's data folder beside the repository when present, else the repository's copy.
    plain = ROOT.parent / "shared" / "data" / "elec.csv"
    path = plain if plain.exists() else ROOT / "data" / "elec.csv.gz"
    frame = pd.read_csv(path)
    return Stream(
        "elec",
        frame.drop(columns=["class"]).to_numpy(dtype=float),
        frame["class"].to_numpy(dtype=np.int64),
        [],
    )


def _drifting(make: Callable[[int, int], object], concepts: list[int], width: int, seed: int):
    """Concepts in sequence; drift k is centred at (k + 1) * rows / len(concepts)."""
    from river.datasets import synth

    seg = SYNTH_ROWS // len(concepts)
    stream = make(concepts[-1], seed + len(concepts))
    for k in range(len(concepts) - 2, -1, -1):
        stream = synth.ConceptDriftStream(
            stream=make(concepts[k], seed + k),
            drift_stream=stream,
            position=seg * (k + 1),
            width=width,
            seed=seed,
        )
    return stream, [seg * (k + 1) for k in range(len(concepts) - 1)]


def _materialise(name: str, stream: object, drifts: list[int]) -> Stream:
    X, y = [], []
    for i, (x, label) in enumerate(stream):  # type: ignore[attr-defined]
        if i >= SYNTH_ROWS:
            break
        X.append(list(x.values()))
        y.append(int(label))
    return Stream(name, np.array(X, dtype=float), np.array(y, dtype=np.int64), drifts)


def load_sea() -> Stream:
    from river.datasets import synth

    stream, drifts = _drifting(
        lambda v, s: synth.SEA(variant=v, noise=0.1, seed=s), [0, 1, 2, 3], width=250, seed=42
    )
    return _materialise("SEA (noise 0.1, abrupt)", stream, drifts)


def load_agrawal() -> Stream:
    from river.datasets import synth

    stream, drifts = _drifting(
        lambda f, s: synth.Agrawal(classification_function=f, seed=s),
        [0, 2, 5, 8],
        width=1000,
        seed=42,
    )
    return _materialise("Agrawal (gradual)", stream, drifts)


def _cycling(name: str, generators: list[object], every: int) -> Stream:
    """An abrupt change of concept every `every` rows, cycling through `generators`."""
    rows = [iter(g) for g in generators]  # type: ignore[call-overload]
    X, y = [], []
    for i in range(SYNTH_ROWS):
        x, label = next(rows[(i // every) % len(rows)])
        X.append(list(x.values()))
        y.append(int(label))
    drifts = list(range(every, SYNTH_ROWS, every))
    return Stream(name, np.array(X, dtype=float), np.array(y, dtype=np.int64), drifts)


def search_streams() -> list[Stream]:
    """Streams whose drift is faster or slower than the learner's defaults assume."""
    from river.datasets import synth

    stagger = [synth.STAGGER(classification_function=f, seed=100 + f) for f in range(3)]
    sea = [synth.SEA(variant=v, noise=0.1, seed=100 + v) for v in range(4)]
    plane = synth.Hyperplane(
        seed=42, n_features=10, n_drift_features=2, mag_change=0.001, noise_percentage=0.05
    )
    return [
        _cycling("STAGGER, a new concept every 1,000 rows", stagger, 1000),  # type: ignore[arg-type]
        _cycling("SEA, a new concept every 2,000 rows", sea, 2000),  # type: ignore[arg-type]
        _materialise("Hyperplane, slow continuous drift", plane, []),
    ]


# ---------------------------------------------------------------- learners


def run_continuo(
    stream: Stream, label: str, params: dict | None = None, repeats: int = 3
) -> tuple[Result, list[int]]:
    """Best events/s of `repeats` identical runs (deterministic: same accuracy every time), so
    another process on this shared 2-core machine does not decide the figure."""
    best = float("inf")
    for _ in range(repeats):
        learner = OnlineLearner(stream.X.shape[1], seed=7, params=params or {})
        drifts: list[int] = []
        started = time.perf_counter()
        for start in range(0, len(stream.y), CHUNK):
            stop = start + CHUNK
            report = learner.test_then_train(stream.X[start:stop], stream.y[start:stop])
            drifts += [d.at_labelled for d in report.drifts if d.evidence["action"] != "none"]
        best = min(best, time.perf_counter() - started)
    n = len(stream.y)
    note = f"{learner.n_updates} updates, {len(drifts)} drifts acted on; best of {repeats} runs"
    return Result(stream.name, label, learner.metrics["accuracy"], n / best, n, note), drifts


def run_river(stream: Stream, label: str, make: Callable[[], object], rows: int) -> Result:
    model = make()
    X, y = stream.X[:rows].tolist(), stream.y[:rows].tolist()
    correct = 0
    started = time.perf_counter()
    for xi, yi in zip(X, y, strict=True):
        x = dict(enumerate(xi))
        correct += model.predict_one(x) == yi  # type: ignore[attr-defined]
        model.learn_one(x, yi)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    note = "" if rows == len(stream.y) else f"first {rows:,} rows only"
    return Result(stream.name, label, correct / rows, rows / elapsed, rows, note)


def river_learners() -> list[tuple[str, Callable[[], object], bool]]:
    from river import ensemble, forest, tree

    return [
        ("River ARF (10 trees)", lambda: forest.ARFClassifier(n_models=10, seed=42), True),
        (
            "River Leveraging Bagging (10)",
            lambda: ensemble.LeveragingBaggingClassifier(
                model=tree.HoeffdingTreeClassifier(), n_models=10, seed=42
            ),
            True,
        ),
        (
            "River Hoeffding Adaptive Tree",
            lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42),
            False,
        ),
    ]


def run_baselines(stream: Stream) -> list[Result]:
    X, y, n = stream.X, stream.y, len(stream.y)
    out = []
    started = time.perf_counter()
    acc = baselines.previous_label_accuracy(y)
    out.append(Result(stream.name, "previous label", acc, n / (time.perf_counter() - started), n))
    started = time.perf_counter()
    acc = baselines.legacy_batch_accuracy(X, y, fraction=0.1, seed=7)
    note = "trained on first 10%, scored on the other 90%"
    out.append(Result(stream.name, "legacy LightGBM (frozen)", acc, None, n, note))
    started = time.perf_counter()
    acc = baselines.retrain_every_accuracy(X, y, every=5000, seed=7)
    eps = n / (time.perf_counter() - started)
    note = "all rows so far; scored after the first model"
    out.append(Result(stream.name, "LightGBM retrained every 5,000", acc, eps, n, note))
    return out


# ---------------------------------------------------------------- latency


def latencies(stream: Stream) -> dict[str, float]:
    """Single-row costs the trainer and serving see, in microseconds."""
    learner = OnlineLearner(stream.X.shape[1], seed=7)
    learner.test_then_train(stream.X[:20_000], stream.y[:20_000])
    learn_us = []
    for i in range(20_000, 24_000):
        x, label = stream.X[i : i + 1], stream.y[i : i + 1]
        proba = learner.predict_proba(x)
        started = time.perf_counter()
        learner.learn(x, label, proba)
        learn_us.append((time.perf_counter() - started) * 1e6)
    predictor = decode(learner.model_bytes())
    serve_us = []
    for i in range(24_000, 26_000):
        started = time.perf_counter()
        predictor.predict_proba(stream.X[i : i + 1])
        serve_us.append((time.perf_counter() - started) * 1e6)
    started = time.perf_counter()
    data = learner.model_bytes()
    encode_ms = (time.perf_counter() - started) * 1e3
    return {
        "learn_1row_median_us": statistics.median(learn_us),
        "learn_1row_p99_us": float(np.percentile(learn_us, 99)),
        "learn_1row_max_us": max(learn_us),
        "serve_1row_median_us": statistics.median(serve_us),
        "model_bytes_ms": encode_ms,
        "model_kb": len(data) / 1024,
    }


# ---------------------------------------------------------------- report


ABLATIONS = [
    ("Continuo, one blend (no race)", {"racing": False}),
    ("Continuo, no linear members", {"linear": False}),
    ("Continuo, drifts not acted on", {"drift_response": False}),
]


def search_report(
    streams: list[Stream], repeats: int = 3, extra: list[dict[str, Any]] | None = None
) -> str:
    """The search's gain and cost per stream: the learner with its defaults against the same
    learner without the search (`short_search: ()`), best events/s of `repeats` runs each.
    With `extra`: the default search against the default search plus those alternatives."""
    default = list(LEARNER_DEFAULTS["short_search"])
    if extra:
        off_params, on_params = {}, {"short_search": default + extra}
        off_name, on_name = "default search", "with " + json.dumps(extra)
        command = f"bench/learner.py --search-with '{json.dumps(extra)}'"
    else:
        off_params, on_params = {"short_search": ()}, {}
        off_name, on_name = "without search", "with search"
        command = "bench/learner.py --search"
    lines = [
        f"Measured {date.today().isoformat()} on this 2-core machine, one process, one core;"
        f" prequential (labels on arrival), {SYNTH_ROWS:,} rows a stream (elec: all). Events/s:"
        f" best of {repeats} runs of each, {off_name} then {on_name}, stream by stream.",
        "",
        "```",
        f"  .venv/bin/python {command}",
        "```",
        "",
        f"| stream | accuracy {off_name} | {on_name} | gain (points) | events/s {off_name} |"
        f" {on_name} | cost | champion at the end | short members left |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    with progress("search on and off", len(streams) * 2, unit="runs") as bar:
        for stream in streams:
            off, _ = run_continuo(stream, "off", off_params, repeats)
            bar.advance()
            on, _ = run_continuo(stream, "on", on_params, repeats)
            bar.advance()
            learner = OnlineLearner(stream.X.shape[1], seed=7, params=on_params)
            for start in range(0, len(stream.y), CHUNK):
                stop = start + CHUNK
                learner.test_then_train(stream.X[start:stop], stream.y[start:stop])
            racing = {k.split(".", 1)[1] for k in learner.metrics if k.startswith("race_recent_")}
            window = LEARNER_DEFAULTS["short_window"]
            members = [f"{window} (default)"] if "blend-fast" in racing else []
            members += [c.split("/short-")[1] for c in sorted(racing) if "/short-" in c]
            assert off.events_per_s and on.events_per_s
            lines.append(
                f"| {stream.name} | {off.accuracy:.4f} | {on.accuracy:.4f} |"
                f" {100 * (on.accuracy - off.accuracy):+.2f} | {off.events_per_s:,.0f} |"
                f" {on.events_per_s:,.0f} | {1 - on.events_per_s / off.events_per_s:.0%} |"
                f" {learner.champion_config()} | {', '.join(members)} |"
            )
    return "\n".join(lines)


def table(results: list[Result]) -> list[str]:
    lines = [
        "| stream | learner | accuracy | events/s | note |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for r in results:
        eps = f"{r.events_per_s:,.0f}" if r.events_per_s else "-"
        lines.append(f"| {r.stream} | {r.learner} | {r.accuracy:.4f} | {eps} | {r.note} |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/learner.py")
    parser.add_argument("--quick", action="store_true", help="River ensembles on 5,000 rows")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--search", action="store_true", help="the tuning's gain and cost only")
    parser.add_argument(
        "--search-with",
        type=json.loads,
        metavar="CHANGES",
        help='JSON list of short_search entries raced beside the defaults: [{"rounds": 40}]',
    )
    parser.add_argument(
        "--kind",
        choices=["binary", "multiclass", "regression"],
        default="binary",
        help="the kind of task (default binary; the others: bench/learner_kinds.py)",
    )
    args = parser.parse_args(argv)
    if args.kind != "binary":
        from bench import learner_kinds

        text = learner_kinds.report(args.kind, *learner_kinds.run_all(args.kind))
        print(text)
        if not args.no_write:
            write_section(learner_kinds.SECTIONS[args.kind], text)
        return 0
    if args.search or args.search_with:
        streams = [load_elec(), load_sea(), load_agrawal(), *search_streams()]
        text = search_report(streams, extra=args.search_with)
        print(text)
        if not args.no_write:
            write_section(SEARCH_WITH_SECTION if args.search_with else SEARCH_SECTION, text)
        return 0
    results: list[Result] = []
    ratios: list[str] = []
    detected: list[str] = []
    streams = [load_elec(), load_sea(), load_agrawal()]
    # Every run: Continuo and its ablations, River's learners, the baselines, on each stream.
    runs = len(streams) * (2 + len(ABLATIONS) + len(river_learners()))
    with progress("learners", runs, unit="runs") as bar:
        for stream in streams:
            print(f"== {stream.name}: {len(stream.y):,} rows", file=sys.stderr, flush=True)
            ours, drifts = run_continuo(stream, "**Continuo learner (defaults)**")
            results.append(ours)
            bar.advance()
            for label, params in ABLATIONS:
                results.append(run_continuo(stream, label, params)[0])
                bar.advance()
            if stream.drifts:
                detected.append(
                    f"{stream.name}: true drifts at {stream.drifts}; acted on at {drifts}"
                )
            for label, make, ensemble in river_learners():
                rows = QUICK_RIVER_ROWS if args.quick and ensemble else len(stream.y)
                print(f"   {label} on {rows:,} rows", file=sys.stderr, flush=True)
                result = run_river(stream, label, make, rows)
                results.append(result)
                bar.advance()
                if label.startswith("River ARF"):
                    ratio = ours.events_per_s / result.events_per_s
                    ratios.append(f"{stream.name}: {ratio:,.0f}x ARF's events/s")
            results.extend(run_baselines(stream))
            bar.advance()
    lat = latencies(streams[0])
    lines = [HEADER.format(date=date.today().isoformat()), ""]
    lines += [
        "```",
        "  .venv/bin/python bench/learner.py" + (" --quick" if args.quick else ""),
        "```",
    ]
    lines += ["", *table(results), "", "Continuo's events/s vs River ARF's: " + "; ".join(ratios)]
    lines += ["", "Drift detection: " + " | ".join(detected), ""]
    lines += ["Latency on elec (after 20,000 rows; microseconds unless stated): "]
    lines += ["", ", ".join(f"{k} {v:,.1f}" for k, v in lat.items()), ""]
    lines += [DID_NOT_WORK.strip(), ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
