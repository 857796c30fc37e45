"""What an audit audits: a candidate on labelled rows it never learned, or the champion live.

Pure: the caller reads events and artifacts; these functions join, predict and call the audit
maths (`audit.py`). A candidate's window is up to the task's `promotion.window` rows whose labels
were recorded after the last row the model learned (observations joined with their labels, oldest
first), so the audit measures the model on data it has not seen; the candidate predicts them as
serving would: with the online-feature values serving used (rows it recorded), or those the fold
gives at the row's place in the stream, and threshold 0.5 (a regression: the values it answers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.governance.audit import (
    AuditReport,
    audit,
    audit_multiclass,
    audit_regression,
    audit_selection,
    audit_served_classes,
    audit_served_values,
)
from shared.events.envelope import Envelope
from shared.features import model_inputs
from shared.tasks import TaskSpec

THRESHOLD = 0.5


class NotAuditable(ValueError):
    """The audit cannot run (no sensitive attributes, no rows); the message says why."""


@dataclass
class UnseenWindow:
    """Labelled rows a model never learned: labels recorded after its last learned position,
    oldest first. Labels that came separately wait for their observation's features.

    `kind` is the task's `target.kind`: a regression's labels stay numbers (floats), a class
    label is its index (int)."""

    size: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # observation, label, position
    waiting: dict[uuid.UUID, tuple[float, int]] = field(default_factory=dict)  # obs -> label, pos
    kind: str = "binary"

    def _label(self, value: Any) -> float:
        return float(value) if self.kind == "regression" else int(value)

    @property
    def full(self) -> bool:
        return len(self.rows) + len(self.waiting) >= self.size

    def add(self, events: Iterable[Envelope]) -> None:
        """Take labels from a page of data events read oldest first, until the window is full."""
        for envelope in events:
            if self.full:
                return
            payload = envelope.payload  # read as stored: validating thousands costs more
            if envelope.type == "ObservationRecorded" and payload.get("label") is not None:
                self.rows.append(
                    {
                        "observation": envelope,
                        "label": self._label(payload["label"]),
                        "position": envelope.position,
                    }
                )
            elif envelope.type == "LabelRecorded":
                observation_id = uuid.UUID(str(payload["observation_id"]))
                self.waiting[observation_id] = (
                    self._label(payload["label"]),
                    envelope.position or 0,
                )

    def join(self, observations: Mapping[uuid.UUID, Envelope]) -> int:
        """Give waiting labels their observation; return how many stayed unmatched."""
        unmatched = 0
        for observation_id, (label, position) in self.waiting.items():
            found = observations.get(observation_id)
            if found is None:
                unmatched += 1
                continue
            self.rows.append({"observation": found, "label": label, "position": position})
        self.waiting = {}
        self.rows.sort(key=lambda r: r["position"])
        return unmatched


def recorded_inputs(spec: TaskSpec, observation: Envelope) -> list[float] | None:
    """A served row's model inputs as serving built them (None: computed from the stream)."""
    payload = observation.payload
    if not spec.online_features:
        return model_inputs(spec, payload["features"], [])
    online = payload.get("online")
    if online is None or any(name not in online for name in spec.online_names):
        return None
    return model_inputs(spec, payload["features"], [online[n] for n in spec.online_names])


def sensitive_use(spec: TaskSpec, feature_names: Sequence[str]) -> list[str]:
    """Reasons the model breaks the spec's `sensitive_as_features: false` (none if it honours it).

    The trainer builds inputs from `spec.model_features`, which leaves sensitive attributes out
    unless the spec allows them; a model whose encoded columns name one anyway fails the audit.
    """
    if spec.sensitive_as_features:
        return []
    used = sorted({f.name for f in spec.sensitive} & set(feature_names))
    return [f"model uses sensitive attribute {name!r} as a feature" for name in used]


def _sensitive_columns(spec: TaskSpec, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {f.name: [row.get(f.name, "unknown") for row in rows] for f in spec.sensitive}


def audit_candidate(
    spec: TaskSpec,
    predictor: Any,
    rows: Sequence[Mapping[str, Any]],
    current: TaskSpec | None = None,
) -> AuditReport:
    """Audit a model on labelled rows (`features`, `inputs`, `label`): its 0/1 predictions, or
    for a regression (`target.kind`) the values it answers against the numeric labels.

    `spec` is the pipeline version the model was trained under (the rows' `inputs` are its model
    inputs, online features included); `current` (default: the same) is the task's spec now,
    whose sensitive attributes and limits the audit applies.
    """
    policy = current or spec
    if not policy.sensitive:
        raise NotAuditable(f"task {policy.name!r} names no sensitive attributes")
    if not rows:
        raise NotAuditable("no labelled data to audit the model on")
    X = np.asarray([r["inputs"] for r in rows], dtype=np.float64)
    sensitive = _sensitive_columns(policy, [r["features"] for r in rows])
    if spec.target.kind == "regression":
        report = audit_regression(
            y_true=[float(r["label"]) for r in rows],
            y_pred=np.asarray(predictor.predict(X), dtype=np.float64).tolist(),
            sensitive=sensitive,
            thresholds=policy.promotion.audit,
        )
    elif spec.target.kind == "multiclass":
        report = audit_multiclass(
            y_true=[int(r["label"]) for r in rows],
            y_pred=np.asarray(predictor.predict_proba(X)).argmax(axis=1).tolist(),
            classes=policy.target.classes,
            sensitive=sensitive,
            thresholds=policy.promotion.audit,
        )
    else:
        predicted = (np.asarray(predictor.predict_proba(X)) >= THRESHOLD).astype(int)
        report = audit(
            y_true=[int(r["label"]) for r in rows],
            y_pred=predicted.tolist(),
            sensitive=sensitive,
            thresholds=policy.promotion.audit,
        )
    misuse = sensitive_use(policy, list(getattr(predictor, "feature_names", ())))
    if misuse:
        report = report.model_copy(update={"passed": False, "reasons": [*report.reasons, *misuse]})
    return report


def audit_live(spec: TaskSpec, served: Sequence[Mapping[str, Any]]) -> AuditReport:
    """Audit served predictions (`features`, and `probability`, or a regression's `value`):
    selection rates, or a regression's mean prediction per group; no outcomes."""
    if not spec.sensitive:
        raise NotAuditable(f"task {spec.name!r} names no sensitive attributes")
    if not served:
        raise NotAuditable("no served predictions to audit")
    sensitive = _sensitive_columns(spec, [p["features"] for p in served])
    if spec.target.kind == "regression":
        values = [float(p["value"]) for p in served]
        return audit_served_values(values, sensitive, spec.promotion.audit)
    if spec.target.kind == "multiclass":  # `value`: the class answered
        classes = spec.target.classes
        index = {repr(c): k for k, c in enumerate(classes)}
        answered = [index[repr(p["value"])] for p in served]
        return audit_served_classes(answered, classes, sensitive, spec.promotion.audit)
    predicted = [int(float(p["probability"]) >= THRESHOLD) for p in served]
    return audit_selection(predicted, sensitive, spec.promotion.audit)
