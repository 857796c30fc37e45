"""The trainer's Prometheus instruments (docs/metrics.md): labels learned, models published, drift
alarms, and served accuracy per model version and role.

(`metrics.py` beside this module is the learner's prequential figures, not Prometheus'.)

Served accuracy is set from the core's `ServedScored` facts: each closes a window of labelled rows
that serving answered and recorded, with every (model version, role) that answered in it. The
gauge holds the newest window's figures; series of versions absent from it are removed, so a
task has as many series as arms answering now, not one per version ever published. A restarted
trainer shows them again at the next window (or at once, for windows its replay re-emits).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.events.envelope import Payload
from shared.events.types import DriftDetected, ServedScored
from shared.metrics import FollowedTotal

LABELS_LEARNED = Counter(
    "continuo_trainer_labels_learned_total",
    "Labelled rows the task's core has learned, as its count stands once a batch is stored "
    "(restored with a snapshot: a restarted trainer continues from the task's total)",
    ["task"],
)
MODELS_PUBLISHED = Counter(
    "continuo_trainer_models_published_total",
    "Model versions stored (ModelTrained), by role: candidate, or challenger after a drift",
    ["task", "role"],
)
DRIFT_ALARMS = Counter(
    "continuo_trainer_drift_alarms_total",
    "DriftDetected facts stored: a detector saw the served error rate change",
    ["task", "detector"],
)
SERVED_ACCURACY = Gauge(
    "continuo_served_accuracy",
    "Share of the rows a model answered (log and wait) whose label it got right, over the newest "
    "ServedScored window of the task (`window` labelled served rows, 200)",
    ["task", "model_version", "role"],
)
SERVED_MAE = Gauge(
    "continuo_served_mae",
    "A regression's continuo_served_accuracy: the mean absolute error of the values a model "
    "answered (log and wait), over the newest ServedScored window of the task",
    ["task", "model_version", "role"],
)
SERVED_SCORED_ROWS = Gauge(
    "continuo_served_scored_rows",
    "Rows behind continuo_served_accuracy (or _mae): how many of the newest window's rows the "
    "model answered",
    ["task", "model_version", "role"],
)

# Per task, the label values of the served-accuracy series now exposed.
_served_series: dict[str, set[tuple[str, str, str]]] = {}


def served_scored(fact: ServedScored) -> None:
    """Show a window's served accuracy (a regression's: MAE) per model version and role; drop
    the arms not in it."""
    shown: set[tuple[str, str, str]] = set()
    regression = any("abs_error" in arm for arm in fact.arms)
    figure, score = (SERVED_MAE, "abs_error") if regression else (SERVED_ACCURACY, "correct")
    for arm in fact.arms:
        labels = (fact.task, str(arm["model_version"]), str(arm["role"]))
        n = int(arm["n"])
        figure.labels(*labels).set(float(arm[score]) / n if n else float("nan"))
        SERVED_SCORED_ROWS.labels(*labels).set(n)
        shown.add(labels)
    for gone in _served_series.get(fact.task, set()) - shown:
        figure.remove(*gone)
        SERVED_SCORED_ROWS.remove(*gone)
    _served_series[fact.task] = shown


class LabelsLearned:
    """Each task's labels learned, followed from its core's count (a core rebuilt by replay
    counts again only past what was counted)."""

    def __init__(self) -> None:
        self._tasks: dict[str, FollowedTotal] = {}

    def follow(self, task: str, total: int) -> None:
        if task not in self._tasks:
            self._tasks[task] = FollowedTotal(LABELS_LEARNED.labels(task))
        self._tasks[task].follow(total)


def fact_stored(fact: Payload, *, duplicate: bool) -> None:
    """A fact the core made, once appended: drift alarms count when new; a ServedScored window
    shows, new or re-emitted by a replay (the newest known window is what the gauge holds)."""
    if isinstance(fact, ServedScored):
        served_scored(fact)
    elif isinstance(fact, DriftDetected) and not duplicate:
        DRIFT_ALARMS.labels(fact.task, fact.detector).inc()
