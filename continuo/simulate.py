"""A task's stream under a label timing, in process: what serving would answer, what the trainer
learns, and baselines given the same inputs at the same moments.

The stream arrives in requests of `batch` rows. For each request, in order:

1. serving answers every row with the champion (the newest published model that the promotion
   policy's metric check let through, its online parts moved on by every label posted since it
   was published: `shared.online_models.LiveModel`), given the online features as of that moment
   (the rows of the same request see the ones before them: the request is recorded in order,
   log and wait);
2. the rows are recorded as observations carrying those values and answers;
3. the labels of the request `label_delay` requests back are posted (0: this request's own).

Each model the trainer core publishes is decoded with the model codec and serves from the next
request on; version 1 (the learner as it starts) is published before the first request, as the
trainer publishes it when it starts the task. This is the running system's semantics
(`shared.features` for online features, `services.trainer.core` for learning and publishing,
`shared.model_codec` for serving) without its latency: in the system a model needs about a
second to reach serving, and serving sees a label only once it has come through Kafka (unless
the caller passes `after_position`).

Every kind of task runs this way: serving's answer is P(class 1), a multiclass task's class
probabilities or a regression's value (with its prediction interval's reach), and the
observations carry it, with the answering version, as log and wait records them. Baselines
(River models, a frozen batch model; binary tasks) answer each row from the same inputs when
serving does, and learn each row's label when it is posted, with the inputs it was answered
with. A row that gets no answer (serving before its first model, a baseline before it learned
anything) counts as wrong for everyone.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from services.governance.policy import metric_check
from services.trainer.core import Learner, Output, TaskTraining
from services.trainer.multiclass import learner_for
from shared.features import DataEvent, OnlineFold, model_inputs
from shared.online_models import LearnedRow, LiveModel, RecentRows
from shared.tasks import TaskSpec


@dataclass(frozen=True)
class Timing:
    """Rows arrive `batch` to a request; a request's labels are posted `label_delay` requests
    later (0: right after its own predictions, before the next request)."""

    batch: int = 1
    label_delay: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.label_delay < 0:
            raise ValueError("batch must be at least 1 and label_delay at least 0")

    def describe(self) -> str:
        if self.batch == 1 and self.label_delay == 0:
            return "each label on arrival (before the next row)"
        when = (
            "after the request"
            if self.label_delay == 0
            else (f"{self.label_delay} request{'s' if self.label_delay > 1 else ''} late")
        )
        return f"{self.batch}-row requests, labels {when}"


class Baseline(Protocol):
    """A learner answering and learning one row at a time (River's interface)."""

    def predict_one(self, x: dict[int, float]) -> Any: ...
    def learn_one(self, x: dict[int, float], y: int) -> Any: ...


@dataclass
class Rows:
    """A labelled stream: features (as validated records), class indices (a regression's
    values) and entities."""

    features: list[dict[str, Any]]
    labels: list[Any]
    entities: list[str]

    def __post_init__(self) -> None:
        if not len(self.features) == len(self.labels) == len(self.entities):
            raise ValueError("features, labels and entities must have the same length")


@dataclass
class Result:
    rows: int
    timing: Timing
    # A classifier's (rows answered before any model count as wrong: see `unanswered`); NaN for
    # a regression, whose figures come from `served_answers` (`answer_figures`).
    served_accuracy: float
    served_log_loss: float
    trainer_accuracy: float
    unanswered: int
    models: int
    promoted: int
    seconds: float
    baselines: dict[str, float] = field(default_factory=dict)
    drifts: list[int] = field(default_factory=list)
    switches: int = 0
    champion_config: str = ""
    model_updates: int = 0
    # Per row: 1 where serving's answer was right (0 where wrong or unanswered).
    served_right: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # Per row, what serving answered: P(class 1), a value, or (rows, classes) probabilities;
    # NaN where it answered nothing. A regression's interval reach either side (NaN: none).
    served_answers: np.ndarray = field(default_factory=lambda: np.zeros(0))
    served_reach: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trainer_metrics: dict[str, float] = field(default_factory=dict)  # the learner's own

    def served_accuracy_from(self, row: int) -> float:
        """Serving's accuracy on rows `row`.. (to compare with a baseline scored from there)."""
        part = self.served_right[row:]
        return float(part.mean()) if len(part) else 0.0

    @property
    def events_per_s(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


def requests(n: int, timing: Timing) -> Iterator[tuple[range, list[range]]]:
    """Per request: its rows, and the requests whose labels are posted right after it."""
    waiting: deque[range] = deque()
    for start in range(0, n, timing.batch):
        rows = range(start, min(n, start + timing.batch))
        waiting.append(rows)
        due = []
        while len(waiting) > timing.label_delay:
            due.append(waiting.popleft())
        if start + timing.batch >= n:
            due.extend(waiting)
        yield rows, due


def learner_answers(
    learner: Any,
    X: np.ndarray,
    y: np.ndarray,
    timing: Timing,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """What the learner (an `OnlineLearner`, or a multiclass `OneVsRest`) answers each row when
    it is asked, under `timing`: every row of a request answered before any of its labels
    exists (`predict_on_arrival`), the labels learned when they are posted, judged on those
    answers. Trainer-side, in process: no publishing, no serving (`continuo evaluate` of the
    other kinds, and benchmarks of the learner). Answers: P(class 1), a value, or (rows,
    classes) probabilities.

    Labels on arrival (one-row requests, no delay) go through `test_then_train` in chunks: the
    same answers (each row predicted as of the rows before it; equal up to the last bit of a
    floating-point sum) at several times the speed of asking row by row."""
    answers: list[np.ndarray] = []
    if timing.batch == 1 and timing.label_delay == 0:
        for start in range(0, len(y), 1000):
            stop = min(len(y), start + 1000)
            answers.append(learner.test_then_train(X[start:stop], y[start:stop]).proba)
            if progress is not None:
                progress(stop)
        return np.concatenate(answers)
    waiting: dict[int, tuple[np.ndarray, Any]] = {}
    for request, due in requests(len(y), timing):
        answer, configs = learner.predict_on_arrival(X[request.start : request.stop])
        answers.append(answer)
        waiting[request.start] = (answer, configs)
        for labelled in due:
            given, judged = waiting.pop(labelled.start)
            rows = slice(labelled.start, labelled.stop)
            learner.learn(X[rows], y[rows], given, judged)
        if progress is not None:
            progress(request.stop)
    return np.concatenate(answers)


def answer_figures(y: np.ndarray, answers: np.ndarray, n_classes: int = 0) -> dict[str, float]:
    """The figures of answers to a stream, the same for every learner that gave them: accuracy
    and macro-F1 of class answers (`n_classes`; -1: no answer, wrong), or MAE, RMSE and R^2
    (1 - SSE / SST over the stream; NaN where the target never varies: it is undefined) of
    values."""
    y, answers = np.asarray(y), np.asarray(answers)
    if n_classes:
        f1s = []
        for k in range(n_classes):
            occurs = float((answers == k).sum() + (y == k).sum())
            if occurs:
                f1s.append(2 * float(((answers == k) & (y == k)).sum()) / occurs)
        return {"accuracy": float((answers == y).mean()), "macro-F1": float(np.mean(f1s))}
    # Squares of values near 1e-300 underflow to 0 (an RMSE below the MAE, an R^2 taken for
    # undefined): summed in units of the largest value, then scaled back.
    unit = float(np.abs(np.concatenate([y, answers])).max()) if len(y) else 0.0
    unit = unit if 0.0 < unit < math.inf else 1.0
    errors = (y - answers) / unit
    sse = float((errors**2).sum())
    sst = float((((y - y.mean()) / unit) ** 2).sum())
    return {
        "MAE": float(np.abs(y - answers).mean()),
        "RMSE": unit * (sse / len(errors)) ** 0.5,
        "R^2": 1.0 - sse / sst if sst else math.nan,
    }


def previous_label_answers(y: np.ndarray, timing: Timing) -> np.ndarray:
    """Each row answered with the last label posted before it was asked (0 before any)."""
    answers = np.zeros(len(y))
    known = 0.0
    for request, due in requests(len(y), timing):
        answers[request.start : request.stop] = known
        for labelled in due:
            known = float(y[labelled.stop - 1])
    return answers


def simulate(
    spec: TaskSpec,
    rows: Rows,
    timing: Timing,
    *,
    learner: Learner | None = None,
    baselines: Mapping[str, Baseline] | None = None,
    scored_from: Mapping[str, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Result:
    """Run the stream; `scored_from[name]` scores a baseline only from that row on."""
    kind = spec.target.kind
    if baselines and kind != "binary":
        raise ValueError("baselines answer binary tasks only")
    core = TaskTraining(spec, learner or learner_for(spec))
    serving = OnlineFold(spec)  # serving's own fold, fed the same events as the trainer's
    baselines = dict(baselines or {})
    n = len(rows.labels)
    classes = len(spec.target.classes) if kind == "multiclass" else 0
    served = np.full((n, classes) if classes else n, np.nan)
    reach = np.full(n, np.nan)
    answers = {name: np.zeros(n, dtype=np.int8) for name in baselines}
    inputs: list[list[float]] = [[] for _ in range(n)]
    ids = [uuid.UUID(int=i + 1) for i in range(n)]
    champion: LiveModel | None = None
    champion_metrics: dict[str, float] | None = None
    champion_version = 0
    recent = RecentRows()  # what serving learned lately, to bring a new champion up to date
    version = models = promoted = switches = 0
    drifts: list[int] = []
    started = time.perf_counter()

    def feed(events: Sequence[DataEvent], learned: list[LearnedRow]) -> None:
        for event in events:
            serving.apply(event)
        recent.add(learned)
        if champion is not None:
            champion.learn(learned)  # serving's model goes on learning, as the trainer's does
        publish(core.apply(events))

    def publish(out: Output) -> None:
        nonlocal champion, champion_metrics, champion_version, models, promoted, switches
        for _, fact in out.facts:
            if fact.type_name == "DriftDetected":
                drifts.append(fact.at_labelled)  # type: ignore[union-attr]
            elif fact.type_name == "ConfigSwitched":
                switches += 1
        for candidate in out.candidates:
            models += 1
            ok, _ = metric_check(
                spec.promotion, candidate.metrics, champion_metrics, core.champion_version
            )
            if ok:
                champion, champion_metrics = LiveModel(candidate.model_bytes), candidate.metrics
                champion_version = candidate.model_version
                champion.learn(recent.after(champion.learned_through))
                core.set_champion(candidate.model_version, LiveModel(candidate.model_bytes))
                promoted += 1

    publish(core.start())  # version 1, as the trainer publishes it when it starts the task
    for request, due in requests(n, timing):
        batch = [(rows.entities[i], rows.features[i]) for i in request]
        online = serving.preview(batch)
        X = [model_inputs(spec, f, v) for (_, f), v in zip(batch, online, strict=True)]
        if champion is not None and kind == "regression":
            served[request.start : request.stop] = champion.predict(np.array(X))
            half = champion.interval_half_width()
            reach[request.start : request.stop] = np.nan if half is None else half
        elif champion is not None:
            served[request.start : request.stop] = champion.predict_proba(np.array(X))
        for name, model in baselines.items():
            for i, x in zip(request, X, strict=True):
                answer = model.predict_one(dict(enumerate(x)))
                # No answer (nothing learned yet) counts as wrong, as serving's does.
                answers[name][i] = -1 if answer is None else int(answer)
        events = []
        for i, x, values in zip(request, X, online, strict=True):
            inputs[i] = x
            version += 1
            events.append(
                DataEvent(
                    version,
                    version,
                    ids[i],
                    rows.entities[i],
                    None,
                    features=rows.features[i],
                    pipeline_version=spec.version,
                    online=dict(zip(spec.online_names, values, strict=True)),
                    served=None if champion is None else served[i].tolist(),
                    served_version=None if champion is None else champion_version,
                )
            )
        learned = []
        for labelled in due:
            for i in labelled:
                version += 1
                learned.append(LearnedRow(version, inputs[i], rows.labels[i]))
                events.append(
                    DataEvent(
                        version,
                        version,
                        uuid.UUID(int=n + i + 1),
                        rows.entities[i],
                        rows.labels[i],
                        observation_id=ids[i],
                    )
                )
                for model in baselines.values():
                    model.learn_one(dict(enumerate(inputs[i])), rows.labels[i])
        feed(events, learned)
        if progress is not None:
            progress(request.stop)
    y = np.asarray(rows.labels)
    answered = ~np.isnan(served if served.ndim == 1 else served[:, 0])
    if kind == "regression":
        accuracy = log_loss = math.nan
        right = np.zeros(n, dtype=bool)
    elif classes:
        probabilities = np.clip(np.nan_to_num(served, nan=1.0 / classes), 1e-7, 1.0)
        right = answered & (probabilities.argmax(axis=1) == y)
        accuracy = float(right.mean()) if n else 0.0
        picked = probabilities[np.arange(n), y.astype(int)] if n else probabilities[:, 0]
        log_loss = float(-np.mean(np.log(picked))) if n else 0.0
    else:
        p = np.clip(np.where(answered, served, 0.5), 1e-7, 1 - 1e-7)
        right = answered & ((p >= 0.5) == (y == 1))
        accuracy = float(right.mean()) if n else 0.0
        log_loss = float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))) if n else 0.0
    scored = scored_from or {}
    metrics = core.learner.metrics
    return Result(
        rows=n,
        timing=timing,
        served_accuracy=accuracy,
        served_log_loss=log_loss,
        trainer_accuracy=float(metrics.get("accuracy", math.nan)),
        unanswered=int((~answered).sum()),
        models=models,
        promoted=promoted,
        seconds=time.perf_counter() - started,
        baselines={
            name: float((answers[name][scored.get(name, 0) :] == y[scored.get(name, 0) :]).mean())
            for name in baselines
        },
        drifts=drifts,
        switches=switches,
        champion_config=core.learner.champion_config(),
        model_updates=int(core.learner.n_updates),
        served_right=right,
        served_answers=served,
        served_reach=reach,
        trainer_metrics=dict(metrics),
    )
