"""Task (pipeline) specs: versioned data describing what a task learns and how it is governed.

A spec's version is the sha256 of its canonical JSON form, so two identical specs have the same
version wherever they were written, and any change to features, learner or policy is a new version.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FeatureType = Literal["float", "int", "bool", "category"]
# Integers beyond this lose precision as JSON numbers (and as model inputs): refused at the door.
MAX_SAFE_INT = 2**53


class Feature(BaseModel):
    """One input column of a task, with its type (and allowed values for categories)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: FeatureType = "float"
    categories: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _categories_only_for_category(self) -> Feature:
        if self.type == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs its categories")
        if self.type != "category" and self.categories:
            raise ValueError(f"feature {self.name!r}: only category features take categories")
        return self


class Target(BaseModel):
    """The label column; Continuo learns binary classification, classes given in order (0, 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    classes: tuple[Any, Any] = (0, 1)


class AuditThresholds(BaseModel):
    """Bias limits a model must respect to be promoted (None: not checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    equalized_odds_difference_max: float | None = None
    demographic_parity_difference_max: float | None = None
    demographic_parity_ratio_min: float | None = None
    min_group_size: int = 30


class PromotionPolicy(BaseModel):
    """When a newer model may replace the champion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["accuracy"] = "accuracy"
    # The candidate's recent prequential accuracy must be >= champion's minus this tolerance.
    tolerance: float = 0.0
    # How many recent labelled events the comparison looks at.
    window: int = 1000
    require_audit: bool = False
    require_approval: bool = False
    approvals_required: int = 1
    audit: AuditThresholds = AuditThresholds()


class LearnerSpec(BaseModel):
    """How the trainer learns this task. `params` are passed to LightGBM as given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "lightgbm-window"
    seed: int = 7
    # A model version is emitted after this many newly learned labelled events.
    publish_every: int = 1000
    params: Mapping[str, Any] = Field(default_factory=dict)


class TaskSpec(BaseModel):
    """A task: features, target, sensitive attributes, learner and promotion policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    description: str = ""
    features: tuple[Feature, ...]
    target: Target
    # Attributes kept with every observation for audits; used as features only if allowed.
    sensitive: tuple[Feature, ...] = ()
    sensitive_as_features: bool = False
    learner: LearnerSpec = LearnerSpec()
    promotion: PromotionPolicy = PromotionPolicy()

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: tuple[Feature, ...]) -> tuple[Feature, ...]:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if not names:
            raise ValueError("a task needs at least one feature")
        return features

    @cached_property
    def version(self) -> str:
        """Content hash of the spec: its identity as a pipeline version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @cached_property
    def model_features(self) -> tuple[Feature, ...]:
        """The columns the model learns from, in order."""
        extra = self.sensitive if self.sensitive_as_features else ()
        return self.features + tuple(f for f in extra if f.name not in self.feature_names)

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @cached_property
    def input_features(self) -> tuple[Feature, ...]:
        """Every column an observation must carry: features, then sensitive attributes."""
        return self.features + tuple(f for f in self.sensitive if f.name not in self.feature_names)


class RecordError(ValueError):
    """A record does not fit its task spec; the message says which field and why."""


def _coerce(feature: Feature, value: Any) -> float | int | bool | str:
    if value is None:
        raise RecordError(f"{feature.name}: is required")
    if feature.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{feature.name}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise RecordError(f"{feature.name}: must be finite, got {value!r}")
        return float(value)
    if feature.type == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{feature.name}: expected an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise RecordError(f"{feature.name}: expected an integer, got {value!r}")
        if abs(value) > MAX_SAFE_INT:
            raise RecordError(f"{feature.name}: {value!r} is out of range (|n| <= 2**53)")
        return int(value)
    if feature.type == "bool":
        if not isinstance(value, bool):
            raise RecordError(f"{feature.name}: expected true or false, got {value!r}")
        return value
    if str(value) not in feature.categories:
        raise RecordError(
            f"{feature.name}: {value!r} is not one of {', '.join(feature.categories)}"
        )
    return str(value)


def validate_features(spec: TaskSpec, features: Mapping[str, Any]) -> dict[str, Any]:
    """Check one record's features against the spec; return them coerced, or raise RecordError."""
    if not isinstance(features, Mapping):
        raise RecordError("features: expected an object")
    known = {f.name for f in spec.input_features}
    unknown = sorted(set(features) - known)
    if unknown:
        raise RecordError(f"unknown feature(s): {', '.join(unknown)}")
    return {f.name: _coerce(f, features.get(f.name)) for f in spec.input_features}


def validate_label(spec: TaskSpec, label: Any) -> int:
    """Map a label to its class index (0 or 1), or raise RecordError."""
    for index, cls in enumerate(spec.target.classes):
        # True == 1 in Python; a JSON boolean is only a label where the classes are booleans.
        if label == cls and isinstance(label, bool) == isinstance(cls, bool):
            return index
    raise RecordError(f"label: {label!r} is not one of {', '.join(map(repr, spec.target.classes))}")


def feature_vector(spec: TaskSpec, features: Mapping[str, Any]) -> list[float]:
    """The model's numeric input for validated features (categories as their index)."""
    row: list[float] = []
    for f in spec.model_features:
        value = features[f.name]
        row.append(float(f.categories.index(value)) if f.type == "category" else float(value))
    return row


def categorical_indices(spec: TaskSpec) -> list[int]:
    """Positions of category columns in `feature_vector`, for LightGBM's categorical_feature."""
    return [i for i, f in enumerate(spec.model_features) if f.type == "category"]


def load_spec(path: str | Path) -> TaskSpec:
    """Read a task spec from a YAML file."""
    with open(path, encoding="utf-8") as handle:
        return TaskSpec.model_validate(yaml.safe_load(handle))


def load_specs(directory: str | Path) -> dict[str, TaskSpec]:
    """Read every `*.yaml` spec in a directory, keyed by task name."""
    specs = [load_spec(p) for p in sorted(Path(directory).glob("*.yaml"))]
    return {s.name: s for s in specs}


def specs_by_name(specs: Sequence[TaskSpec]) -> dict[str, TaskSpec]:
    return {s.name: s for s in specs}
