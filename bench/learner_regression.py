"""Benchmark: Continuo's learner on numeric targets vs River's regressors (`bench/learner.py
--kind regression`).

Streams: River's FriedmanDrift (global recurring abrupt, global slow gradual, local expanding
abrupt; 20,000 rows each, fixed seeds) and the two real data sets River ships, TrumpApproval
(1,001 rows) and ChickWeights (578 rows). Every learner gets the same inputs (the stream's
features, as floats) under the same label timing, in one process on one core:

* labels on arrival: each row answered, then its label learned, before the next row;
* 100-row requests, labels one request late: every row of a request is answered before any of
  its labels exists; its labels are learned after the next request has been answered.

Continuo's answer is its learner's champion at the moment the row was asked
(`OnlineLearner.predict_on_arrival`), in process: trainer-side, not through serving. Every
figure is computed by the same code from the answers (MAE, RMSE, R^2 = 1 - SSE / SST over the
stream). River's learners get a StandardScaler in front, as River's own examples do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from continuo.progress import progress
from continuo.simulate import Timing, learner_answers, requests
from services.trainer.learner import OnlineLearner

SECTION = "Learner: regression (bench/learner.py --kind regression)"
FRIEDMAN_ROWS = 20_000
REQUEST = 100


@dataclass
class Stream:
    name: str
    X: np.ndarray
    y: np.ndarray


TIMINGS = [Timing(1, 0), Timing(REQUEST, 1)]


@dataclass
class Result:
    stream: str
    timing: str
    learner: str
    mae: float
    rmse: float
    r2: float
    rows_per_s: float


def _materialise(name: str, rows: Any) -> Stream:
    X, y = [], []
    for x, target in rows:
        X.append([float(v) for v in x.values()])
        y.append(float(target))
    return Stream(name, np.array(X), np.array(y))


def streams() -> list[Stream]:
    from river import datasets
    from river.datasets import synth

    def friedman(kind: str, position: tuple[int, ...], **extra: Any) -> Any:
        return synth.FriedmanDrift(drift_type=kind, position=position, seed=42, **extra).take(
            FRIEDMAN_ROWS
        )

    return [
        _materialise(
            "FriedmanDrift, global recurring abrupt (7,000; back at 14,000)",
            friedman("gra", (7_000, 14_000)),
        ),
        _materialise(
            "FriedmanDrift, global slow gradual (7,000 and 14,000; 2,000 wide)",
            friedman("gsg", (7_000, 14_000), transition_window=2_000),
        ),
        _materialise(
            "FriedmanDrift, local expanding abrupt (5,000, 10,000, 15,000)",
            friedman("lea", (5_000, 10_000, 15_000)),
        ),
        _materialise("TrumpApproval", datasets.TrumpApproval()),
        _materialise("ChickWeights", datasets.ChickWeights()),
    ]


def river_learners() -> list[tuple[str, Callable[[], Any]]]:
    from river import forest, linear_model, preprocessing, tree

    def scaled(model: Any) -> Any:
        return preprocessing.StandardScaler() | model

    return [
        ("River linear regression", lambda: scaled(linear_model.LinearRegression())),
        ("River Hoeffding tree", lambda: scaled(tree.HoeffdingTreeRegressor())),
        (
            "River Hoeffding adaptive tree",
            lambda: scaled(tree.HoeffdingAdaptiveTreeRegressor(seed=42)),
        ),
        ("River ARF (10 trees)", lambda: scaled(forest.ARFRegressor(n_models=10, seed=42))),
    ]


def run_continuo(stream: Stream, timing: Timing) -> tuple[np.ndarray, float]:
    """The learner's answer to each row when it was asked, and rows/s."""
    learner = OnlineLearner(stream.X.shape[1], seed=7, regression=True)
    started = time.perf_counter()
    answers = learner_answers(learner, stream.X, stream.y, timing)
    return answers, len(stream.y) / (time.perf_counter() - started)


def run_river(stream: Stream, timing: Timing, make: Callable[[], Any]) -> tuple[np.ndarray, float]:
    """A River learner under the same timing: each row answered when asked, labels learned when
    posted."""
    model = make()
    X = [dict(enumerate(row)) for row in stream.X.tolist()]
    y = stream.y.tolist()
    answers = np.empty(len(y))
    started = time.perf_counter()
    for request, due in requests(len(y), timing):
        for i in request:
            answers[i] = model.predict_one(X[i])
        for labelled in due:
            for i in labelled:
                model.learn_one(X[i], y[i])
    return answers, len(y) / (time.perf_counter() - started)


def run_previous_value(stream: Stream, timing: Timing) -> tuple[np.ndarray, float]:
    """The last label known when the row was asked (0 before any)."""
    answers = np.empty(len(stream.y))
    known = 0.0
    started = time.perf_counter()
    for request, due in requests(len(stream.y), timing):
        answers[request.start : request.stop] = known
        for labelled in due:
            known = float(stream.y[labelled.stop - 1])
    return answers, len(stream.y) / (time.perf_counter() - started)


def score(stream: Stream, timing: Timing, learner: str, run: Any) -> Result:
    answers, rate = run
    errors = stream.y - answers
    sse = float((errors**2).sum())
    sst = float(((stream.y - stream.y.mean()) ** 2).sum())
    return Result(
        stream.name,
        timing.describe(),
        learner,
        float(np.abs(errors).mean()),
        (sse / len(errors)) ** 0.5,
        1.0 - sse / sst if sst else 0.0,
        rate,
    )


def run_all() -> list[Result]:
    data = streams()
    rivers = river_learners()
    results: list[Result] = []
    with progress("regression", len(data) * len(TIMINGS) * (len(rivers) + 2), unit="runs") as bar:
        for stream in data:
            for timing in TIMINGS:
                ours = run_continuo(stream, timing)
                results.append(score(stream, timing, "**Continuo learner (defaults)**", ours))
                bar.advance()
                for label, make in rivers:
                    results.append(score(stream, timing, label, run_river(stream, timing, make)))
                    bar.advance()
                previous = run_previous_value(stream, timing)
                results.append(score(stream, timing, "previous value", previous))
                bar.advance()
    return results


def report(results: list[Result]) -> str:
    lines = [
        f"Measured {date.today().isoformat()} on this 2-core machine, one process, one core, "
        "each learner once (deterministic: the same errors on every run; rows/s vary with the "
        "machine's other work). Continuo's answers are its learner's, in process (trainer-side), "
        "not served: the running system does not serve regression tasks yet.",
        "",
        "```",
        "  .venv/bin/python bench/learner.py --kind regression",
        "```",
        "",
        "| stream | label timing | learner | MAE | RMSE | R^2 | rows/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.stream} | {r.timing} | {r.learner} | {r.mae:.4f} | {r.rmse:.4f} | "
            f"{r.r2:.4f} | {r.rows_per_s:,.0f} |"
        )
    lines += [
        "",
        "Continuo against the best River learner of each cell (by MAE; lower is better):",
        "",
    ]
    cells: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        cells.setdefault((r.stream, r.timing), []).append(r)
    for (stream, timing), cell in cells.items():
        ours = next(r for r in cell if r.learner.startswith("**Continuo"))
        best = min((r for r in cell if r.learner.startswith("River")), key=lambda r: r.mae)
        verdict = "better" if ours.mae < best.mae else "worse"
        lines.append(
            f"- {stream}, {timing}: MAE {ours.mae:.4f} vs {best.learner} {best.mae:.4f} "
            f"({verdict}, {ours.mae / best.mae:.2f}x); {ours.rows_per_s:,.0f} rows/s"
        )
    return "\n".join(lines)
