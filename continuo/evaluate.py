"""`continuo evaluate FILE.csv --target COLUMN`: run the online learner prequentially over a CSV.

Each row is predicted before its label is learned (test-then-train), in file order. Features are
the spec's model features when `--spec` is given, else every other numeric column.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.trainer.learner import OnlineLearner
from shared.tasks import TaskSpec, load_spec

CHUNK = 1000
PROGRESS_EVERY_S = 2.0


class UsageError(Exception):
    """A problem with the command's input, reported without a traceback (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continuo evaluate",
        description="Prequential (test-then-train) evaluation of Continuo's learner on a CSV.",
    )
    parser.add_argument("file", type=Path, help="CSV file in stream order (plain or .gz)")
    parser.add_argument("--target", required=True, help="binary label column")
    parser.add_argument("--spec", type=Path, help="task spec YAML (features, learner params)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--window", type=int, default=1000, help="rows in the recent accuracy")
    return parser


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        return pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable CSV ({exc})") from exc


def _labels(column: pd.Series, spec: TaskSpec | None) -> np.ndarray:
    """Map the target to 0/1: by the spec's classes, else 0/1 as is, else two sorted values."""
    if column.isna().any():
        raise UsageError(f"target {column.name!r} has missing values")
    if spec is not None:
        classes = list(spec.target.classes)
        unknown = set(column.unique()) - set(classes)
        if unknown:
            raise UsageError(f"target values {sorted(map(str, unknown))} not in the spec")
        return column.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    values = sorted(column.unique().tolist(), key=str)
    if len(values) > 2:
        raise UsageError(f"target {column.name!r} is not binary: {len(values)} distinct values")
    if set(values) <= {0, 1}:
        return column.to_numpy(dtype=np.int64)
    return (column == values[-1]).to_numpy(dtype=np.int64)


def _features(frame: pd.DataFrame, target: str, spec: TaskSpec | None) -> tuple[np.ndarray, list]:
    if spec is not None:
        missing = [f.name for f in spec.model_features if f.name not in frame.columns]
        if missing:
            raise UsageError(f"columns named in the spec are missing: {', '.join(missing)}")
        columns = []
        for f in spec.model_features:
            col = frame[f.name]
            if f.type == "category":
                col = col.astype(str).map({c: float(i) for i, c in enumerate(f.categories)})
            columns.append(pd.to_numeric(col, errors="coerce"))
        names = [f.name for f in spec.model_features]
        return np.column_stack(columns).astype(float), names
    numeric = frame.drop(columns=[target]).select_dtypes(include="number")
    if numeric.shape[1] == 0:
        raise UsageError("no numeric feature columns besides the target")
    return numeric.to_numpy(dtype=float), list(numeric.columns)


def evaluate(
    X: np.ndarray, y: np.ndarray, learner: OnlineLearner, progress: bool
) -> dict[str, Any]:
    """Prequential run; returns the summary figures."""
    drifts: list[dict[str, Any]] = []
    switches = 0
    started = last_report = time.perf_counter()
    for start in range(0, len(y), CHUNK):
        report = learner.test_then_train(X[start : start + CHUNK], y[start : start + CHUNK])
        drifts += [{"detector": d.detector, "at": d.at_labelled} for d in report.drifts]
        switches += len(report.switches)
        now = time.perf_counter()
        if progress and now - last_report > PROGRESS_EVERY_S:
            done = min(len(y), start + CHUNK)
            print(f"  {done:,}/{len(y):,} rows", file=sys.stderr, flush=True)
            last_report = now
    elapsed = max(time.perf_counter() - started, 1e-9)
    metrics = learner.metrics
    return {
        "rows": len(y),
        "accuracy": metrics["accuracy"],
        "log_loss": metrics["log_loss"],
        "recent_accuracy": metrics["recent_accuracy"],
        "recent_window": int(metrics["recent_window"]),
        "events_per_s": len(y) / elapsed,
        "seconds": elapsed,
        "model_updates": learner.n_updates,
        "drifts": len(drifts),
        "drift_positions": [d["at"] for d in drifts],
        "config_switches": switches,
        "champion_config": learner.champion_config(),
    }


def _print_text(path: Path, features: list, summary: dict[str, Any]) -> None:
    print(f"{path}: {summary['rows']:,} rows, features: {', '.join(map(str, features))}")
    print(f"  accuracy            {summary['accuracy']:.4f}")
    print(f"  log-loss            {summary['log_loss']:.4f}")
    print(
        f"  recent accuracy     {summary['recent_accuracy']:.4f}  (last {summary['recent_window']})"
    )
    print(f"  events/s            {summary['events_per_s']:,.0f}")
    print(f"  model updates       {summary['model_updates']}")
    shown = ", ".join(f"{p:,}" for p in summary["drift_positions"][:10])
    more = " ..." if summary["drifts"] > 10 else ""
    print(f"  drifts detected     {summary['drifts']}" + (f"  (at {shown}{more})" if shown else ""))
    champion = f"(champion {summary['champion_config']})"
    print(f"  config switches     {summary['config_switches']}  {champion}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = load_spec(args.spec) if args.spec else None
        frame = _read(args.file)
        if args.target not in frame.columns:
            raise UsageError(f"no column {args.target!r}; columns: {', '.join(frame.columns)}")
        if frame.empty:
            raise UsageError(f"{args.file}: no rows")
        if args.window < 1:
            raise UsageError("--window must be at least 1")
        y = _labels(frame[args.target], spec)
        X, names = _features(frame, args.target, spec)
    except (UsageError, OSError, ValueError) as exc:
        print(f"continuo evaluate: {exc}", file=sys.stderr)
        return 2
    params = dict(spec.learner.params) if spec else {}
    params["recent_window"] = args.window
    learner = OnlineLearner(
        X.shape[1], seed=spec.learner.seed if spec else 7, params=params, feature_names=names
    )
    summary = evaluate(X, y, learner, progress=len(y) > 20 * CHUNK)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        _print_text(args.file, names, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
