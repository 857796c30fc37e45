"""What an audit audits: a candidate on recent labelled data, or the champion on live traffic.

Pure: the caller reads events and artifacts; these functions join, predict and call the audit
maths (`audit.py`). A candidate's window is the task's `promotion.window` most recent labelled
rows recorded before the model (observations joined with their labels, newest label first); the
candidate predicts them as serving would (its encoded stream state, threshold 0.5).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.governance.audit import AuditReport, audit, audit_selection
from shared.events.envelope import Envelope
from shared.tasks import TaskSpec, feature_vector

THRESHOLD = 0.5


class NotAuditable(ValueError):
    """The audit cannot run (no sensitive attributes, no rows); the message says why."""


@dataclass
class LabelledWindow:
    """Labelled rows gathered newest first; late labels wait for their observation's features."""

    size: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # features, label, position
    waiting: dict[uuid.UUID, tuple[int, int]] = field(default_factory=dict)  # obs -> label, pos
    scanned_to: int | None = None

    @property
    def full(self) -> bool:
        return len(self.rows) + len(self.waiting) >= self.size

    def add(self, events_newest_first: Iterable[Envelope]) -> None:
        """Take labels from a page of data events read newest first, until the window is full."""
        for envelope in events_newest_first:
            if self.full:
                return
            self.scanned_to = envelope.position
            payload = envelope.payload  # read as stored: validating 4,000 payloads costs more
            if envelope.type == "ObservationRecorded" and payload.get("label") is not None:
                self.rows.append(
                    {
                        "features": payload["features"],
                        "label": int(payload["label"]),
                        "position": envelope.position,
                    }
                )
            elif envelope.type == "LabelRecorded":
                observation_id = uuid.UUID(str(payload["observation_id"]))
                self.waiting[observation_id] = (int(payload["label"]), envelope.position or 0)

    def join(self, observations: Mapping[uuid.UUID, Envelope]) -> int:
        """Give waiting labels their observation's features; return how many stayed unmatched."""
        unmatched = 0
        for observation_id, (label, position) in self.waiting.items():
            found = observations.get(observation_id)
            if found is None:
                unmatched += 1
                continue
            features = found.payload["features"]
            self.rows.append({"features": features, "label": label, "position": position})
        self.waiting = {}
        self.rows.sort(key=lambda r: r["position"])
        return unmatched


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
    """Audit a model's 0/1 predictions on labelled rows (`features`, `label`).

    `spec` is the pipeline version the model was trained under (it builds the model's inputs);
    `current` (default: the same) is the task's spec now, whose sensitive attributes and limits
    the audit applies.
    """
    policy = current or spec
    if not policy.sensitive:
        raise NotAuditable(f"task {policy.name!r} names no sensitive attributes")
    if not rows:
        raise NotAuditable("no labelled data to audit the model on")
    X = np.asarray([feature_vector(spec, r["features"]) for r in rows], dtype=np.float64)
    predicted = (np.asarray(predictor.predict_proba(X)) >= THRESHOLD).astype(int)
    report = audit(
        y_true=[int(r["label"]) for r in rows],
        y_pred=predicted.tolist(),
        sensitive=_sensitive_columns(policy, [r["features"] for r in rows]),
        thresholds=policy.promotion.audit,
    )
    misuse = sensitive_use(policy, list(getattr(predictor, "feature_names", ())))
    if misuse:
        report = report.model_copy(update={"passed": False, "reasons": [*report.reasons, *misuse]})
    return report


def audit_live(spec: TaskSpec, served: Sequence[Mapping[str, Any]]) -> AuditReport:
    """Audit served predictions (`features`, `probability`): selection rates only, no outcomes."""
    if not spec.sensitive:
        raise NotAuditable(f"task {spec.name!r} names no sensitive attributes")
    if not served:
        raise NotAuditable("no served predictions to audit")
    predicted = [int(float(p["probability"]) >= THRESHOLD) for p in served]
    return audit_selection(
        predicted,
        _sensitive_columns(spec, [p["features"] for p in served]),
        spec.promotion.audit,
    )
