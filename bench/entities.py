"""Many entities: per-entity label history against a task-wide one, through the running system
and in process, against River given the same inputs under the same label timing.

    .venv/bin/python bench/entities.py [--rows N] [--entities K] [--timings 20:0,100:0]
                                       [--skip-system] [--skip-river] [--no-write]

The stream (`entity_stream`, fixed seed): K customers (2,000 by default) whose rows interleave,
a few of them far more active than most (log-normal activity). Each customer has a habit, a
persistent leaning towards one class that its request features do not show; the class is the
habit plus a non-linear function of four request features plus logistic noise. Halfway through,
a third of the customers change their habit (a drift that only per-customer history sees).

The same rows under three task specs:
- `entities`: the request features and the customer's own label history (last label, mean of
  the last 8, age), `scope: entity`;
- `entities-task`: the same features with `scope: task`, the stream's history whoever it was
  (what a global feature gives on interleaved entities: mostly other customers' labels);
- `entities-none`: the request features alone.

Each through the running system (serving asked before each label exists, log and wait, labels by
prediction id; `bench/served.py`'s machinery) and in process (`continuo.simulate`), with River's
ARF, Leveraging Bagging, Hoeffding Adaptive Tree and logistic regression given the same inputs
(and, where the spec has history, the request features alone), the learner's speed alone, and
the online fold's memory per customer (`--fold-memory`: that figure only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from bench.served import Stream, measure  # noqa: E402
from continuo.simulate import Timing  # noqa: E402
from shared.tasks import TaskSpec  # noqa: E402

SECTION = "Many entities (bench/entities.py)"
TIMINGS = (Timing(20, 0), Timing(100, 0))
FEATURES = [f"x{j}" for j in range(4)]
HISTORY = [
    {"name": "last_label", "kind": "last_label"},
    {"name": "label_mean_8", "kind": "label_mean", "window": 8},
    {"name": "label_age", "kind": "label_age"},
]


def entity_stream(
    rows: int = 50_000, entities: int = 2_000, seed: int = 11
) -> tuple[list[dict[str, float]], list[int], list[str]]:
    """Features, labels and each row's entity (see the module doc)."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, entities)
    who = rng.choice(entities, size=rows, p=activity / activity.sum())
    habit = rng.normal(0.0, 1.5, entities)
    X = rng.random((rows, len(FEATURES)))
    concept = 4.0 * (X[:, 0] - 0.5) + 3.0 * (X[:, 1] - X[:, 2]) + 2.0 * np.sin(6.0 * X[:, 3])
    noise = rng.logistic(0.0, 0.5, rows)
    half = rows // 2
    changed = habit.copy()
    moved = rng.random(entities) < 1 / 3
    changed[moved] = rng.normal(0.0, 1.5, int(moved.sum()))
    leaning = np.where(np.arange(rows) < half, habit[who], changed[who])
    labels = (leaning + concept + noise > 0).astype(int)
    features = [dict(zip(FEATURES, x, strict=True)) for x in X.tolist()]
    return features, labels.tolist(), [f"customer-{e}" for e in who]


def spec(name: str, scope: str | None) -> TaskSpec:
    online = [] if scope is None else [{**f, "scope": scope} for f in HISTORY]
    return TaskSpec.model_validate(
        {
            "name": name,
            "features": [{"name": f} for f in FEATURES],
            "target": {"name": "y"},
            "online_features": online,
            "learner": {"publish_every": 250},
        }
    )


def load_streams(rows: int, entities: int) -> dict[str, Stream]:
    features, labels, who = entity_stream(rows, entities)
    seen = len(set(who))
    notes = {
        "entities": f"{seen:,} customers; each one's own label history (scope: entity)",
        "entities-task": f"{seen:,} customers; the same history task-wide (scope: task)",
        "entities-none": f"{seen:,} customers; request features only",
    }
    scopes = {"entities": "entity", "entities-task": "task", "entities-none": None}
    return {
        name: Stream(name, spec(name, scopes[name]), features, labels, notes[name], who)
        for name in scopes
    }


def fold_memory(spec: TaskSpec, entities: int = 50_000, rows_each: int = 3) -> float:
    """Bytes the online fold (`shared.features.OnlineFold`, as the trainer and every serving
    replica hold it) keeps per entity, measured with tracemalloc after `rows_each` labelled rows
    of each of `entities` entities."""
    import tracemalloc
    import uuid

    from shared.features import OnlineFold

    row = dict.fromkeys(FEATURES, 0.5)
    tracemalloc.start()
    try:
        fold = OnlineFold(spec)
        for i in range(entities * rows_each):
            event_id, entity = uuid.UUID(int=i + 1), f"customer-{i % entities}"
            fold.values(entity, row)
            fold.observe(event_id, entity, row)
            fold.label(event_id, entity, i % 2)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held / entities


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--entities", type=int, default=2_000)
    parser.add_argument(
        "--timings", default=",".join(f"{t.batch}:{t.label_delay}" for t in TIMINGS)
    )
    parser.add_argument("--skip-system", action="store_true")
    parser.add_argument("--skip-river", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--fold-memory", action="store_true", help="only the online fold's memory per entity"
    )
    args = parser.parse_args(argv)
    memory = (
        f"Online fold memory (`fold_memory`, tracemalloc, 50,000 customers with 3 labelled rows "
        f"each, scope entity): {fold_memory(spec('memory', 'entity')):,.0f} bytes per customer."
    )
    if args.fold_memory:
        print(memory)
        return 0
    streams = load_streams(args.rows, args.entities)
    timings = [Timing(*map(int, t.split(":"))) for t in args.timings.split(",")]
    text = measure(
        streams,
        timings,
        command=("python bench/entities.py " + " ".join(argv)).strip(),
        system=not args.skip_system,
        river=not args.skip_river,
        rate=None,
        arrival_rows=args.rows,
    )
    text += f"\n{memory}\n"
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
