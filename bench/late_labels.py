"""What late labels cost the learner, and what its drift response does about it, on elec.

    python bench/late_labels.py [--rows N] [--no-write]

Rows arrive in requests of `batch` rows; each request's rows are predicted when they arrive and
their labels come `delay` requests later (0: in the very next request), as in `continuo demo`.
Each late row is learned with the label history it was predicted with (see docs/architecture.md).
Compared in one run: the default learner, the learner without its drift response, and the legacy
LightGBM trained once on the first 10% and frozen (unaffected by label timing).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section  # noqa: E402
from continuo.demo import FEATURES, find_elec, read_rows  # noqa: E402
from services.trainer.baselines import legacy_batch_accuracy  # noqa: E402
from services.trainer.learner import OnlineLearner  # noqa: E402

SETTINGS = ((None, 1), (0, 20), (1, 20), (0, 100), (1, 100))  # (delay, batch); None: on arrival


def prequential(X: np.ndarray, y: np.ndarray, delay: int | None, batch: int, params: dict) -> float:
    learner = OnlineLearner(X.shape[1], params=params)
    if delay is None:
        learner.test_then_train(X, y)
        return learner.metrics["accuracy"]
    waiting: list[tuple[int, np.ndarray, np.ndarray]] = []
    for start in range(0, len(y), batch):
        rows = slice(start, start + batch)
        proba = learner.predict_proba(X[rows])
        waiting.append((start, proba, np.tile(learner.stream_vector(), (len(proba), 1))))
        while len(waiting) > delay:
            first, p, seen = waiting.pop(0)
            learner.learn(X[first : first + batch], y[first : first + batch], p, seen)
    for first, p, seen in waiting:
        learner.learn(X[first : first + batch], y[first : first + batch], p, seen)
    return learner.metrics["accuracy"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rows = read_rows(find_elec(), args.rows)
    X = np.array([[r[f] for f in FEATURES] for r in rows])
    y = np.array([r["class"] for r in rows])
    started = time.perf_counter()
    lines = [
        f"Command: `python bench/late_labels.py` ({date.today().isoformat()}), elec, "
        f"{len(y):,} rows. Legacy LightGBM (first 10%, frozen): "
        f"{legacy_batch_accuracy(X, y):.4f} whatever the label timing.",
        "",
        "| labels | rows a request | default learner | without drift response |",
        "| --- | ---: | ---: | ---: |",
    ]
    for delay, batch in SETTINGS:
        timing = (
            "on arrival (test-then-train)"
            if delay is None
            else "in the next request"
            if delay == 0
            else f"{delay + 1} requests later"
        )
        ours = prequential(X, y, delay, batch, {})
        plain = prequential(X, y, delay, batch, {"drift_response": False})
        lines.append(f"| {timing} | {batch} | {ours:.4f} | {plain:.4f} |")
        print(lines[-1], flush=True)
    lines += ["", f"({time.perf_counter() - started:.0f} s in all.)"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("Late labels (bench/late_labels.py)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
