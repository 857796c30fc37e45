"""Benchmark: Continuo's learner on multiclass and numeric targets against River's learners of
the same kind (`bench/learner.py --kind multiclass`, `--kind regression`).

Multiclass: River's RandomRBFDrift (5 classes, 10 features, 50 moving centroids) and LEDDrift
(10 classes, 10% noise, 7 drifting features), 20,000 rows each with fixed seeds, and the
ImageSegments data set River ships (7 classes, 2,310 rows). Regression: FriedmanDrift (global
recurring abrupt, global slow gradual, local expanding abrupt; 20,000 rows each, fixed seeds)
and TrumpApproval (1,001 rows) and ChickWeights (578 rows), both shipped with River.

Every learner gets the same inputs (the stream's features, as floats) under the same label
timing, in one process on one core (`continuo.simulate.requests` decides when each label is
posted, for everyone):

* labels on arrival: each row answered, then its label learned, before the next row;
* 100-row requests, labels one request late: every row of a request is answered before any of
  its labels exists; its labels are learned after the next request has been answered.

Continuo's answer is its learner's champion at the moment the row was asked
(`continuo.simulate.learner_answers`), in process: trainer-side, not through serving (the
running system's answers: `bench/served_kinds.py`). Figures are computed by the same code
from everyone's answers: accuracy and macro-F1 (multiclass); MAE, RMSE and R^2 = 1 - SSE / SST
over the stream (regression). River's learners get a StandardScaler in front where River's
examples put one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from continuo.progress import progress
from continuo.simulate import (
    Timing,
    answer_figures,
    learner_answers,
    previous_label_answers,
    requests,
)
from services.trainer.learner import OnlineLearner
from services.trainer.multiclass import OneVsRest

SECTIONS = {
    "multiclass": "Learner: multiclass (bench/learner.py --kind multiclass)",
    "regression": "Learner: regression (bench/learner.py --kind regression)",
}
SYNTH_ROWS = 20_000
REQUEST = 100
TIMINGS = [Timing(1, 0), Timing(REQUEST, 1)]
# The headline figure per kind, and whether lower is better.
HEADLINE = {"multiclass": ("accuracy", False), "regression": ("MAE", True)}


@dataclass
class Stream:
    name: str
    X: np.ndarray
    y: np.ndarray  # class indices, or numbers
    n_classes: int = 0  # 0: a regression


@dataclass
class Result:
    stream: str
    timing: str
    learner: str
    figures: dict[str, float]
    rows_per_s: float


def _materialise(name: str, rows: Any, kind: str) -> Stream:
    X, targets = [], []
    for x, target in rows:
        X.append([float(v) for v in x.values()])
        targets.append(target)
    if kind == "regression":
        return Stream(name, np.array(X), np.array(targets, dtype=float))
    classes = sorted(set(targets), key=str)
    index = {c: i for i, c in enumerate(classes)}
    return Stream(name, np.array(X), np.array([index[t] for t in targets]), len(classes))


def streams(kind: str) -> list[Stream]:
    from river import datasets
    from river.datasets import synth

    if kind == "multiclass":
        rbf = synth.RandomRBFDrift(
            seed_model=7,
            seed_sample=8,
            n_classes=5,
            n_features=10,
            n_centroids=50,
            change_speed=0.0001,
            n_drift_centroids=50,
        )
        led = synth.LEDDrift(
            seed=42, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7
        )
        return [
            _materialise(
                "RandomRBFDrift (5 classes, 50 moving centroids)", rbf.take(SYNTH_ROWS), kind
            ),
            _materialise(
                "LEDDrift (10 classes, 10% noise, 7 drifting)", led.take(SYNTH_ROWS), kind
            ),
            _materialise("ImageSegments (7 classes)", datasets.ImageSegments(), kind),
        ]

    def friedman(drift: str, position: tuple[int, ...], **extra: Any) -> Any:
        stream = synth.FriedmanDrift(drift_type=drift, position=position, seed=42, **extra)
        return stream.take(SYNTH_ROWS)

    return [
        _materialise(
            "FriedmanDrift, global recurring abrupt (7,000; back at 14,000)",
            friedman("gra", (7_000, 14_000)),
            kind,
        ),
        _materialise(
            "FriedmanDrift, global slow gradual (7,000 and 14,000; 2,000 wide)",
            friedman("gsg", (7_000, 14_000), transition_window=2_000),
            kind,
        ),
        _materialise(
            "FriedmanDrift, local expanding abrupt (5,000, 10,000, 15,000)",
            friedman("lea", (5_000, 10_000, 15_000)),
            kind,
        ),
        _materialise("TrumpApproval", datasets.TrumpApproval(), kind),
        _materialise("ChickWeights", datasets.ChickWeights(), kind),
    ]


def river_learners(kind: str) -> list[tuple[str, Callable[[], Any]]]:
    from river import ensemble, forest, linear_model, preprocessing, tree

    def scaled(model: Any) -> Any:
        return preprocessing.StandardScaler() | model

    if kind == "multiclass":
        return [
            ("River softmax regression", lambda: scaled(linear_model.SoftmaxRegression())),
            (
                "River Hoeffding adaptive tree",
                lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=42),
            ),
            (
                "River Leveraging Bagging (10)",
                lambda: ensemble.LeveragingBaggingClassifier(
                    model=tree.HoeffdingTreeClassifier(), n_models=10, seed=42
                ),
            ),
            ("River ARF (10 trees)", lambda: forest.ARFClassifier(n_models=10, seed=42)),
        ]
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
    n = stream.X.shape[1]
    learner = (
        OneVsRest(n, stream.n_classes, seed=7)
        if stream.n_classes
        else OnlineLearner(n, seed=7, regression=True)
    )
    started = time.perf_counter()
    answers = learner_answers(learner, stream.X, stream.y, timing)
    if stream.n_classes:
        answers = answers.argmax(axis=1)
    return answers, len(stream.y) / (time.perf_counter() - started)


def run_river(stream: Stream, timing: Timing, make: Callable[[], Any]) -> tuple[np.ndarray, float]:
    """A River learner under the same timing: each row answered when asked, labels learned when
    posted. A classifier that has learned nothing yet (no answer) counts as wrong."""
    model = make()
    X = [dict(enumerate(row)) for row in stream.X.tolist()]
    y = stream.y.tolist()
    answers = np.empty(len(y))
    started = time.perf_counter()
    for request, due in requests(len(y), timing):
        for i in request:
            answer = model.predict_one(X[i])
            answers[i] = -1 if answer is None else answer
        for labelled in due:
            for i in labelled:
                model.learn_one(X[i], y[i])
    return answers, len(y) / (time.perf_counter() - started)


def run_previous_label(stream: Stream, timing: Timing) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    answers = previous_label_answers(stream.y, timing)
    return answers, len(stream.y) / (time.perf_counter() - started)


def first_informed(n: int, timing: Timing) -> int:
    """The first row asked after some label was posted (n if none)."""
    posted = False
    for request, due in requests(n, timing):
        if posted:
            return request.start
        posted = bool(due)
    return n


def binary_speed(stream: Stream) -> float:
    """The binary learner's rows/s on the same rows (labels: the first row's class against the
    rest, or above the median), labels on arrival: the same-run baseline for this kind's speed
    (only its time is used)."""
    y = stream.y == stream.y[0] if stream.n_classes else stream.y > np.median(stream.y)
    learner = OnlineLearner(stream.X.shape[1], seed=7)
    started = time.perf_counter()
    learner_answers(learner, stream.X, y.astype(np.int64), TIMINGS[0])
    return len(y) / (time.perf_counter() - started)


def run_all(kind: str) -> tuple[list[Result], dict[str, float]]:
    """Every learner on every stream and timing; and the binary learner's rows/s per stream."""
    data = streams(kind)
    rivers = river_learners(kind)
    results: list[Result] = []
    speeds: dict[str, float] = {}

    def add(stream: Stream, timing: Timing, learner: str, run: tuple[np.ndarray, float]) -> None:
        answers, rate = run
        scored = answer_figures(stream.y, answers, stream.n_classes)
        results.append(Result(stream.name, timing.describe(), learner, scored, rate))

    def add_scored(stream: Stream, timing: Timing, learner: str, run: Any) -> None:
        answers, rate = run
        if stream.n_classes:
            # Rows asked before any label was posted: no answer from anyone (River's learners
            # give none; an untrained one-vs-rest or the previous label would guess a class).
            answers = answers.copy()
            answers[: first_informed(len(stream.y), timing)] = -1
        add(stream, timing, learner, (answers, rate))

    with progress(kind, len(data) * len(TIMINGS) * (len(rivers) + 2), unit="runs") as bar:
        for stream in data:
            speeds[stream.name] = binary_speed(stream)
            for timing in TIMINGS:
                add_scored(
                    stream, timing, "**Continuo learner (defaults)**", run_continuo(stream, timing)
                )
                bar.advance()
                for label, make in rivers:
                    add_scored(stream, timing, label, run_river(stream, timing, make))
                    bar.advance()
                add_scored(stream, timing, "previous label", run_previous_label(stream, timing))
                bar.advance()
    return results, speeds


# How each kind scores the rows asked before any label was posted.
FIRST_ROWS = {
    "multiclass": "Rows asked before any label was posted count as unanswered (wrong) for every "
    "learner.",
    "regression": "Rows asked before any label was posted are answered 0 by every learner "
    "(Continuo's learner: the mean of no labels; River's: their untrained 0).",
}


def report(kind: str, results: list[Result], speeds: dict[str, float]) -> str:
    names = list(results[0].figures)
    lines = [
        f"Measured {date.today().isoformat()} on this 2-core machine, one process, one core, "
        "each learner once (deterministic: the same answers on every run; rows/s vary with "
        "the machine's other work). Continuo's answers are its learner's, in process "
        "(trainer-side), not served (the served figures of each kind: bench/served_kinds.py). "
        "Rows/s with "
        "labels on arrival: Continuo's learner takes rows in 1,000-row test-then-train calls "
        "(the same answers as asking and learning row by row, several times faster), River's "
        "row by row as River learns; with 100-row requests both are asked a request at a time. "
        + FIRST_ROWS[kind],
        "",
        "```",
        f"  .venv/bin/python bench/learner.py --kind {kind}",
        "```",
        "",
        "| stream | label timing | learner | " + " | ".join(names) + " | rows/s |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in names) + " | ---: |",
    ]
    for r in results:
        shown = " | ".join(f"{r.figures[n]:.4f}" for n in names)
        lines.append(f"| {r.stream} | {r.timing} | {r.learner} | {shown} | {r.rows_per_s:,.0f} |")
    headline, lower = HEADLINE[kind]
    better = "lower" if lower else "higher"
    lines += [
        "",
        f"Continuo against the best River learner of each cell ({headline}; {better} is better):",
        "",
    ]
    cells: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        cells.setdefault((r.stream, r.timing), []).append(r)
    wins = 0
    for (stream, timing), cell in cells.items():
        ours = next(r for r in cell if r.learner.startswith("**Continuo"))
        river = [r for r in cell if r.learner.startswith("River")]
        sign = 1 if lower else -1
        best = min(river, key=lambda r: sign * r.figures[headline])
        won = sign * ours.figures[headline] < sign * best.figures[headline]
        wins += won
        lines.append(
            f"- {stream}, {timing}: {ours.figures[headline]:.4f} vs {best.learner} "
            f"{best.figures[headline]:.4f} ({'better' if won else 'not better'}); "
            f"{ours.rows_per_s:,.0f} rows/s against its {best.rows_per_s:,.0f}"
        )
    lines += ["", f"Continuo ahead of the best River learner in {wins} of {len(cells)} cells."]
    lines += [
        "",
        "Speed per core against the binary learner on the same rows in the same run (labels on "
        "arrival; the binary learner's labels: one class against the rest, or above the median):",
        "",
    ]
    arrival = TIMINGS[0].describe()
    for stream, binary in speeds.items():
        ours = next(
            r
            for r in results
            if r.stream == stream and r.timing == arrival and r.learner.startswith("**Continuo")
        )
        lines.append(
            f"- {stream}: {ours.rows_per_s:,.0f} rows/s against the binary learner's "
            f"{binary:,.0f} ({ours.rows_per_s / binary:.2f}x)"
        )
    return "\n".join(lines)
