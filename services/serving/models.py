"""How a batch of records becomes predictions: validation, and one model's answers. No I/O here.
(Which model answers which rows is `routing.py`.)"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.serving.routing import Predictor
from shared.features import model_inputs
from shared.ids import new_uuid
from shared.online_models import answered_class
from shared.tasks import RecordError, TaskSpec, validate_features

# Probability of class 1 at or above which the predicted label is class 1.
THRESHOLD = 0.5


class InvalidRecords(ValueError):
    """Some records of a request do not fit the task's spec; `errors` maps index to reason."""

    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__("; ".join(f"record {i}: {reason}" for i, reason in errors.items()))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Prediction:
    prediction_id: uuid.UUID
    entity_id: str | None
    features: dict[str, Any]
    online: dict[str, float]  # the online-feature values the model was given
    probability: float | None  # None: no model yet (a recorded row before the first model)
    label: Any  # the class at THRESHOLD, or a regression's value
    model_version: int | None = None
    role: str = "champion"
    pipeline_version: str | None = None  # the spec version whose inputs the model was given
    value: float | None = None  # a regression's answer (its `probability` is None)
    # A multiclass task's answer: P(each class), in the spec's class order (`probability` None).
    probabilities: list[float] | None = None
    # A regression's prediction interval (shared.online_models.INTERVAL_COVERAGE), if the
    # model has one yet.
    interval: tuple[float, float] | None = None

    @property
    def answer(self) -> float | list[float] | None:
        """What was answered: P(class 1), a regression's value, or a multiclass task's class
        probabilities (None: no model)."""
        if self.probabilities is not None:
            return self.probabilities
        return self.probability if self.probability is not None else self.value


def validate_records(spec: TaskSpec, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every record's features checked and coerced; raises InvalidRecords naming each bad one."""
    valid: list[dict[str, Any]] = []
    errors: dict[int, str] = {}
    for index, features in enumerate(records):
        try:
            valid.append(validate_features(spec, features))
        except RecordError as exc:
            errors[index] = str(exc)
    if errors:
        raise InvalidRecords(errors)
    return valid


def predict(
    predictor: Predictor,
    spec: TaskSpec,
    rows: Sequence[dict[str, Any]],
    entity_ids: Sequence[str | None],
    online: Sequence[Sequence[float]],
    *,
    model_version: int | None = None,
    role: str = "champion",
    prediction_ids: Sequence[uuid.UUID] | None = None,
) -> list[Prediction]:
    """Predict validated rows with one model, given each row's online-feature values (in
    `spec.online_names` order); the label is the class at `THRESHOLD` (a regression's: its
    value). New prediction ids unless given (a shadow scores the rows the answer went out for,
    under their ids)."""
    if not rows:
        return []
    ids = prediction_ids or [new_uuid() for _ in rows]
    X = np.asarray(
        [model_inputs(spec, row, values) for row, values in zip(rows, online, strict=True)],
        dtype=np.float64,
    )
    names = spec.online_names
    return [
        Prediction(
            prediction_id=pid,
            entity_id=entity_id,
            features=row,
            online=dict(zip(names, values, strict=True)),
            model_version=model_version,
            role=role,
            pipeline_version=spec.version,
            **answer,
        )
        for pid, row, entity_id, values, answer in zip(
            ids, rows, entity_ids, online, _answers(predictor, spec, X), strict=True
        )
    ]


def _answers(predictor: Predictor, spec: TaskSpec, X: np.ndarray) -> list[dict[str, Any]]:
    """Each row's answer, as `Prediction` holds it for the task's kind: P(class 1) and the class
    at THRESHOLD; a multiclass task's class probabilities and the most probable class; a
    regression's value (its label too) and its prediction interval, once the model has one."""
    if spec.target.kind == "regression":
        values = np.asarray(predictor.predict(X), dtype=np.float64).reshape(-1).tolist()
        # A LiveModel's reach (a predictor without intervals answers none).
        reach = getattr(predictor, "interval_half_width", lambda: None)()
        return [
            {
                "probability": None,
                "label": v,
                "value": v,
                "interval": None if reach is None else (v - reach, v + reach),
            }
            for v in values
        ]
    if spec.target.kind == "multiclass":
        classes = spec.target.classes
        table = np.asarray(predictor.predict_proba(X), dtype=np.float64).reshape(len(X), -1)
        return [
            {"probability": None, "label": classes[answered_class(ps)], "probabilities": ps}
            for ps in table.tolist()
        ]
    negative, positive = spec.target.classes
    return [
        {"probability": p, "label": positive if p >= THRESHOLD else negative}
        for p in np.asarray(predictor.predict_proba(X), dtype=np.float64).reshape(-1).tolist()
    ]


def unanswered(
    spec: TaskSpec,
    rows: Sequence[dict[str, Any]],
    entity_ids: Sequence[str | None],
    online: Sequence[Sequence[float]],
) -> list[Prediction]:
    """Rows recorded before the task has any model: ids to label them by, and no answer."""
    names = spec.online_names
    return [
        Prediction(new_uuid(), entity_id, row, dict(zip(names, values, strict=True)), None, None)
        for row, entity_id, values in zip(rows, entity_ids, online, strict=True)
    ]
