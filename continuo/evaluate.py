"""`continuo evaluate FILE.csv --target COLUMN`: what serving would have answered on a CSV stream.

The rows arrive in file order, `--batch` to a request, each request's labels `--label-delay`
requests late (defaults: one row at a time, each label before the next row). Every request is
answered as serving answers it (the newest published model, given the spec's online features as of
that moment) and the trainer learns as it does in the running system (`continuo.simulate`). The
headline is that served accuracy; the trainer's own prequential figure is reported beside it.
Features are the spec's when `--spec` is given (with its online features), else every other
numeric column.

A multiclass or numeric target (`--kind multiclass|regression`, or a spec's `target.kind`) runs
the same way, online features included: served accuracy and macro-F1 (MAE, RMSE and R^2; a
regression's prediction intervals, how many of the labels they held), the trainer's own figures
beside them, and those of answering each row with the last label known.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from continuo.progress import progress
from continuo.simulate import (
    Result,
    Rows,
    Timing,
    answer_figures,
    previous_label_answers,
    simulate,
)
from shared.tasks import (
    MAX_ABS_FLOAT,
    MAX_CLASSES,
    Feature,
    RecordError,
    Target,
    TaskSpec,
    load_spec,
    validate_features,
)


class UsageError(Exception):
    """A problem with the command's input, reported without a traceback (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continuo evaluate",
        description="What serving would have answered on a CSV stream, under a label timing.",
    )
    parser.add_argument("file", type=Path, help="CSV file in stream order (plain or .gz)")
    parser.add_argument("--target", required=True, help="label column")
    parser.add_argument(
        "--kind",
        choices=["binary", "multiclass", "regression"],
        help="the kind of task (default: the spec's, else binary)",
    )
    parser.add_argument("--spec", type=Path, help="task spec YAML (features, online features)")
    parser.add_argument("--entity", help="column naming each row's entity (default: one entity)")
    parser.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument(
        "--label-delay",
        type=int,
        default=0,
        help="requests between a request's answers and its labels (0: right after it)",
    )
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
            raise UsageError(_not_classes(column, unknown, classes))
        return column.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    values = sorted(column.unique().tolist(), key=str)
    if len(values) == 1:
        raise UsageError(
            f"target {column.name!r} has one value ({values[0]}): nothing to tell apart (a "
            "binary target has two classes: --spec with its classes evaluates a stream of one; "
            "--kind regression for a number)"
        )
    if len(values) > 2:
        raise UsageError(
            f"target {column.name!r} is not binary: {len(values)} distinct values (--kind "
            "multiclass, or --kind regression for a number)"
        )
    if set(values) <= {0, 1}:
        return column.to_numpy(dtype=np.int64)
    return (column == values[-1]).to_numpy(dtype=np.int64)


def _values(column: pd.Series) -> np.ndarray:
    """A regression's target: finite numbers on every row (not booleans, which ingest refuses
    as a regression's label too)."""
    if pd.api.types.is_bool_dtype(column):
        raise UsageError(
            f"target {column.name!r} holds booleans, not numbers: --kind binary, or a "
            "numeric column"
        )
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~(np.abs(values) <= MAX_ABS_FLOAT))  # NaN and infinity fail too
    if len(bad):
        others = f" ({len(bad) - 1} other rows too)" if len(bad) > 1 else ""
        raise UsageError(
            f"target {column.name!r}, row {bad[0] + 1}: {column.iloc[bad[0]]} is not a finite "
            f"number within +-1e100{others}"
        )
    return values


def _spec_for(frame: pd.DataFrame, target: str, entity: str | None, kind: str) -> TaskSpec:
    """Without a spec: every other numeric column is a float feature; no online features; a
    multiclass target's classes are its distinct values, sorted."""
    numeric = frame.drop(columns=[c for c in (target, entity) if c]).select_dtypes("number")
    if numeric.shape[1] == 0:
        raise UsageError("no numeric feature columns besides the target")
    if kind == "multiclass":
        classes = sorted(frame[target].dropna().unique().tolist(), key=str)
        if len(classes) < 3:
            raise UsageError(f"target {target!r} has {len(classes)} classes: not multiclass")
        if len(classes) > MAX_CLASSES:
            raise UsageError(
                f"target {target!r} has {len(classes)} classes; a multiclass target has at most "
                f"{MAX_CLASSES} (one binary learner each)"
            )
        labelled = Target(name=target, kind="multiclass", classes=tuple(classes))
    else:
        labelled = Target(name=target, kind=kind)  # type: ignore[arg-type]
    return TaskSpec(
        name="evaluate",
        features=tuple(Feature(name=str(c)) for c in numeric.columns),
        target=labelled,
    )


def _rows(frame: pd.DataFrame, spec: TaskSpec, y: np.ndarray, entity: str | None) -> Rows:
    features = _validated(frame, spec, [f.name for f in spec.input_features])
    entities = frame[entity].astype(str).tolist() if entity else ["-"] * len(frame)
    return Rows(features, y.tolist(), entities)


def kind_summary(y: np.ndarray, spec: TaskSpec, result: Result) -> dict[str, Any]:
    """A multiclass or regression evaluation's figures: what serving answered (a class answer
    where it answered nothing counts wrong; a regression is scored on the rows it answered),
    the trainer's own, and those of answering each row with the last label known."""
    classes = len(spec.target.classes) if spec.target.kind == "multiclass" else 0
    served, timing, m = result.served_answers, result.timing, result.trainer_metrics
    if classes:
        answered = ~np.isnan(served[:, 0])
        given = np.where(answered, np.nan_to_num(served).argmax(axis=1), -1)
        scored_y = y
        trainer = {"accuracy": m["accuracy"], "macro-F1": m["macro_f1"]}
        extra: dict[str, Any] = {}
    else:
        answered = ~np.isnan(served)
        given, scored_y = served[answered], y[answered]
        r2 = m["r2"] if np.ptp(y) > 0 else math.nan  # undefined for a target that never varies
        trainer = {"MAE": m["mae"], "RMSE": m["rmse"], "R^2": r2}
        reach = result.served_reach
        held = ~np.isnan(reach)
        extra = {
            "interval_rows": int(held.sum()),
            "interval_coverage": float((np.abs(y - served)[held] <= reach[held]).mean())
            if held.any()
            else math.nan,
            "interval_mean_width": float(2 * reach[held].mean()) if held.any() else math.nan,
        }
    previous = previous_label_answers(y, timing)
    return {
        "kind": spec.target.kind,
        "rows": len(y),
        "batch": timing.batch,
        "label_delay": timing.label_delay,
        **answer_figures(scored_y, given, classes),
        **extra,
        "trainer": trainer,
        "previous_label": answer_figures(
            scored_y, previous if classes else previous[answered], classes
        ),
        **_run_figures(result),
    }


def _run_figures(result: Result) -> dict[str, Any]:
    """What every evaluation reports of the run itself, whatever the kind."""
    return {
        "unanswered": result.unanswered,
        "events_per_s": result.events_per_s,
        "seconds": result.seconds,
        "models_published": result.models,
        "models_promoted": result.promoted,
        "model_updates": result.model_updates,
        "drifts": len(result.drifts),
        "config_switches": result.switches,
        "champion_config": result.champion_config,
    }


def _validated(frame: pd.DataFrame, spec: TaskSpec, columns: list[str]) -> list[dict[str, Any]]:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UsageError(f"columns named in the spec are missing: {', '.join(missing)}")
    out = []
    for i, record in enumerate(frame[columns].to_dict("records")):
        try:
            out.append(validate_features(spec, record))
        except RecordError as exc:
            raise UsageError(f"row {i + 1}: {exc}") from None
    return out


def summary(result: Result, window: int) -> dict[str, Any]:
    recent = result.served_right[-window:]
    return {
        "rows": result.rows,
        "batch": result.timing.batch,
        "label_delay": result.timing.label_delay,
        "accuracy": result.served_accuracy,
        "log_loss": result.served_log_loss,
        "recent_accuracy": float(recent.mean()) if len(recent) else 0.0,
        "recent_window": window,
        "trainer_accuracy": result.trainer_accuracy,
        **_run_figures(result),
        "drift_positions": result.drifts,
    }


def _print_text(path: Path, spec: TaskSpec, timing: Timing, s: dict[str, Any]) -> None:
    names = ", ".join(spec.input_names)
    print(f"{path}: {s['rows']:,} rows, {timing.describe()}; inputs: {names}")
    print(f"  served accuracy     {s['accuracy']:.4f}  (what serving would have answered)")
    print(f"  trainer accuracy    {s['trainer_accuracy']:.4f}  (the learner's own, prequential)")
    print(f"  served log-loss     {s['log_loss']:.4f}")
    print(f"  recent accuracy     {s['recent_accuracy']:.4f}  (served, last {s['recent_window']})")
    print(f"  unanswered rows     {s['unanswered']}  (before the first model; counted wrong)")
    print(f"  events/s            {s['events_per_s']:,.0f}")
    print(f"  models              {s['models_published']} published, {s['models_promoted']} served")
    shown = ", ".join(f"{p:,}" for p in s["drift_positions"][:10])
    more = " ..." if s["drifts"] > 10 else ""
    print(f"  drifts detected     {s['drifts']}" + (f"  (at {shown}{more})" if shown else ""))
    print(f"  config switches     {s['config_switches']}  (champion {s['champion_config']})")


def _figure(value: float) -> str:
    """A figure to 4 places (4 significant digits far from 1: a target in micro-units or in
    1e90s); an undefined one (R^2 of a target that never varies) as n/a."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"


def _defined(result: Any) -> Any:
    """`result` with undefined figures (NaN) as null: JSON has no NaN."""
    if isinstance(result, dict):
        return {k: _defined(v) for k, v in result.items()}
    if isinstance(result, float) and math.isnan(result):
        return None
    return result


def _print_kind(path: Path, spec: TaskSpec, timing: Timing, s: dict[str, Any]) -> None:
    names = ", ".join(spec.input_names)
    before, trainer = s["previous_label"], s["trainer"]
    print(f"{path}: {s['rows']:,} rows, {timing.describe()}; inputs: {names}")
    print(f"  {s['kind']}: what serving would have answered, each row before its label existed")
    for name, value in before.items():
        print(
            f"  {name:<19} {_figure(s[name])}  (trainer's own {_figure(trainer[name])}; "
            f"previous label {_figure(value)})"
        )
    if s["kind"] == "regression":
        held = s["interval_coverage"]
        print(
            f"  90% intervals       held {'n/a' if math.isnan(held) else f'{held:.1%}'} of the "
            f"labels on {s['interval_rows']:,} rows (mean width "
            f"{_figure(s['interval_mean_width'])})"
        )
    print(f"  unanswered rows     {s['unanswered']}")
    print(f"  events/s            {s['events_per_s']:,.0f}")
    print(f"  models              {s['models_published']} published, {s['models_promoted']} served")
    print(f"  drifts detected     {s['drifts']}  (champion {s['champion_config']})")


def _kind_labels(column: pd.Series, spec: TaskSpec) -> np.ndarray:
    """A regression's values, or a multiclass target's class indices."""
    return _values(column) if spec.target.kind == "regression" else _class_indices(column, spec)


def _not_classes(column: pd.Series, unknown: set[Any], classes: list[Any]) -> str:
    """Which target values are not classes of the spec, shown as values (1 and '1' differ), at
    most ten of them."""
    values = [v.item() if isinstance(v, np.generic) else v for v in unknown]
    shown = ", ".join(sorted(map(repr, values))[:10])
    more = f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else ""
    listed = ", ".join(map(repr, classes[:10])) + (", ..." if len(classes) > 10 else "")
    return (
        f"target {column.name!r} has values that are not the spec's classes ({listed}): "
        f"{shown}{more} (numbers in the file match numeric classes only)"
    )


def _class_indices(column: pd.Series, spec: TaskSpec) -> np.ndarray:
    if column.isna().any():
        raise UsageError(f"target {column.name!r} has missing values")
    index = {c: i for i, c in enumerate(spec.target.classes)}
    unknown = set(column.unique()) - set(index)
    if unknown:
        raise UsageError(_not_classes(column, unknown, list(index)))
    return column.map(index).to_numpy(dtype=np.int64)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = load_spec(args.spec) if args.spec else None
        frame = _read(args.file)
        if args.target not in frame.columns:
            raise UsageError(f"no column {args.target!r}; columns: {', '.join(frame.columns)}")
        if args.entity and args.entity not in frame.columns:
            raise UsageError(f"no column {args.entity!r} for --entity")
        if frame.empty:
            raise UsageError(f"{args.file}: no rows")
        if args.window < 1:
            raise UsageError("--window must be at least 1")
        try:
            timing = Timing(args.batch, args.label_delay)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        kind = args.kind or (spec.target.kind if spec else "binary")
        if spec is not None and kind != spec.target.kind:
            raise UsageError(f"--kind {kind}: the spec's target is {spec.target.kind}")
        spec = spec or _spec_for(frame, args.target, args.entity, kind)
        if kind == "binary":
            y = _labels(frame[args.target], spec if args.spec else None)
        else:
            y = _kind_labels(frame[args.target], spec)
        rows = _rows(frame, spec, y, args.entity)
    except (UsageError, OSError, ValueError) as exc:
        print(f"continuo evaluate: {exc}", file=sys.stderr)
        return 2
    # A bar on a terminal (not with --json: that output is for programs), nothing in a log.
    quiet = False if args.json else None
    with progress(args.file.name, len(y), unit="rows", enabled=quiet) as bar:
        done = simulate(spec, rows, timing, progress=lambda through: bar.update(completed=through))
    if kind != "binary":
        result = kind_summary(y, spec, done)
        if args.json:
            print(json.dumps(_defined(result), sort_keys=True))
        else:
            _print_kind(args.file, spec, timing, result)
        return 0
    result = summary(done, args.window)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_text(args.file, spec, timing, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
