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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

FeatureType = Literal["float", "int", "bool", "category"]
OnlineKind = Literal[
    "last_label", "label_mean", "label_age", "residual", "count", "mean", "deviation"
]
# Online features computed from labels: they carry one row's outcome into another row's inputs.
LABEL_KINDS = frozenset({"last_label", "label_mean", "label_age", "residual"})
# Online features computed from a numeric request feature over recent observations.
SOURCE_KINDS = frozenset({"mean", "deviation"})
_NAME = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$"
# Integers beyond this lose precision as JSON numbers (and as model inputs): refused at the door.
MAX_SAFE_INT = 2**53
# Floats beyond this are refused at the door too: finite, but sums and squares of them (an online
# feature's window mean, the online members' running variance) overflow to inf, and one such row
# would make every later prediction of the task NaN. Far beyond any measurement.
MAX_ABS_FLOAT = 1e100
MAX_CLASSES = 100  # a multiclass target's classes: one binary learner each
# An entity id's length: serving refuses longer ones, and governance keeps them in 200 characters.
MAX_ENTITY_ID = 200


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


class OnlineFeature(BaseModel):
    """A feature computed at prediction time from the task's earlier events (shared.features).

    Kinds: `last_label` (the label of the newest labelled observation), `label_mean` (mean of the
    last `window` labels recorded), `label_age` (observations since the newest labelled one),
    `residual` (mean of label minus served probability over the last `window` labelled rows
    that serving answered: how far off its recent answers were), `count` (observations before
    this one), `mean` (mean of `source` over the last `window` observations) and `deviation`
    (the row's `source` minus that mean). `scope` says whose events
    count: the row's entity's (`entity`) or the whole task's (`task`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME)
    kind: OnlineKind
    scope: Literal["entity", "task"] = "entity"
    source: str | None = None
    window: int | None = Field(None, ge=1, le=100_000)
    # The value before there is any history (label kinds: 0.5, no information either way).
    default: float | None = None

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> OnlineFeature:
        needs_source = self.kind in SOURCE_KINDS
        if needs_source != (self.source is not None):
            verb = "needs a" if needs_source else "takes no"
            raise ValueError(f"online feature {self.name!r}: {self.kind} {verb} `source`")
        needs_window = self.kind in SOURCE_KINDS or self.kind in ("label_mean", "residual")
        if needs_window != (self.window is not None):
            verb = "needs a" if needs_window else "takes no"
            raise ValueError(f"online feature {self.name!r}: {self.kind} {verb} `window`")
        if self.default is not None and not math.isfinite(self.default):
            raise ValueError(f"online feature {self.name!r}: default must be finite")
        return self


class Target(BaseModel):
    """The label column and the kind of task: `binary` (two classes, in order: the second is
    class 1), `multiclass` (three or more classes, given in order: labels are their indices) or
    `regression` (a finite number; `classes` does not apply).

    The running system (ingest, trainer, serving, governance) serves every kind; each is also
    evaluated in process (`continuo evaluate --kind`, `bench/learner.py --kind`; docs/tasks.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["binary", "multiclass", "regression"] = "binary"
    classes: tuple[Any, ...] = (0, 1)

    @model_validator(mode="after")
    def _classes_fit_the_kind(self) -> Target:
        given = "classes" in self.model_fields_set
        # The default comes back in every dump of a regression spec: only others are refused.
        if self.kind == "regression" and given and self.classes != (0, 1):
            raise ValueError("a regression target takes no `classes`")
        if self.kind == "binary" and len(self.classes) != 2:
            raise ValueError(
                f"a binary target has 2 classes, not {len(self.classes)} (more: kind multiclass)"
            )
        if self.kind == "multiclass" and (not given or len(self.classes) < 3):
            raise ValueError("a multiclass target lists its classes, three or more, in order")
        if len(self.classes) > MAX_CLASSES:
            raise ValueError(
                f"a target has at most {MAX_CLASSES} classes (the learner keeps one binary "
                f"learner per class), not {len(self.classes)}"
            )
        for cls in self.classes:
            if not _is_class(cls):
                raise ValueError(
                    f"a target's class is a non-empty string, a whole or finite number or a "
                    f"boolean, not {cls!r}"
                )
        for i, cls in enumerate(self.classes):
            # Distinct as labels match them (`validate_label`): 1 and 1.0 would both take the
            # label 1, and the second could never be learned.
            if any(same_class(cls, other) for other in self.classes[:i]):
                raise ValueError(f"a target's classes must be distinct: {cls!r} repeats a class")
        # Serving answers a multiclass task's probabilities keyed by each class as text.
        if self.kind == "multiclass" and len(set(map(str, self.classes))) != len(self.classes):
            raise ValueError(
                "a multiclass target's classes must be distinct as text (1 and '1' are not)"
            )
        return self


class AuditThresholds(BaseModel):
    """Bias limits a model must respect to be promoted (None: not checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    equalized_odds_difference_max: float | None = None
    demographic_parity_difference_max: float | None = None
    demographic_parity_ratio_min: float | None = None
    # Balanced accuracy ((TPR + TNR) / 2) at least this overall, and above 0.5 in every judged
    # group: a constant answer scores 0.5 wherever both outcomes occur, so "flag everyone" can
    # never pass as fair.
    balanced_accuracy_min: float | None = Field(0.55, ge=0.0, le=1.0)
    # Regression tasks (services/governance/audit.py `audit_regression`): the largest group MAE
    # over the smallest, and largest minus smallest (in label units), over the judged groups.
    mae_ratio_max: float | None = Field(None, ge=1.0)
    mae_difference_max: float | None = Field(None, ge=0.0)
    # R^2 (1 - SSE/SST over the audited rows) at least this: answering the mean scores 0 and any
    # other constant less, so a constant answer can never pass as fair.
    r2_min: float | None = Field(0.05, le=1.0)
    min_group_size: int = 30
    # A candidate is audited on labelled rows it never learned; it waits for at least this many.
    min_rows: int = Field(200, ge=1)


class CanaryPolicy(BaseModel):
    """How canaries and shadows are judged on live labels (services/governance/canary.py), and
    what governance starts by itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=1)  # the chance of a wrong decision on equal models
    # The mixing spread of the effect under the alternative (accuracy): about the size of a
    # difference worth detecting.
    tau: float = Field(0.05, gt=0, le=1)
    min_labels: int = Field(200, ge=1)  # per arm, before any decision
    max_labels: int = Field(20_000, ge=1)  # per arm: past it, stop as inconclusive
    max_seconds: float = Field(86_400.0, gt=0)  # past it, stop as inconclusive
    # Guardrails on the canary's own traffic, against the champion's.
    max_error_rate_increase: float = Field(0.01, ge=0, le=1)
    max_p99_latency_ratio: float = Field(2.0, ge=1)
    # ...and at least this much slower (ms): a p99 read from a few hundred requests is noisy,
    # and 1 ms against 2 ms is no reason to stop a more accurate model.
    min_p99_latency_increase_ms: float = Field(5.0, ge=0)
    min_requests: int = Field(200, ge=1)  # per arm, before a guardrail is read
    # What governance does by itself: a shadow that beats the champion becomes a canary with
    # this share of entities; challengers the trainer publishes after a drift run as shadows.
    weight: float = Field(20.0, gt=0, le=100)
    shadow_challengers: bool = True
    # The trainer publishes the runner-up configuration of its race (an entrant)
    # every `entrant_every` labelled rows, to run as a live shadow; promoting one switches the
    # race to it (a ConfigChosen event in the data stream). Off by default: each entrant is one
    # more model for serving to load and run.
    shadow_entrants: bool = False
    entrant_every: int = Field(2000, ge=250)
    max_shadows: int = Field(3, ge=0)


class PromotionPolicy(BaseModel):
    """When a newer model may replace the champion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["accuracy"] = "accuracy"
    # The candidate's recent prequential accuracy must be >= champion's minus this tolerance.
    tolerance: float = 0.0
    # ... unless the shortfall is noise: where the trainer scored both on the same rows, a
    # candidate below that is refused only if the rows where exactly one of the two was right
    # show it worse at this significance (McNemar's exact test, one-sided). 1.0 refuses any
    # shortfall, as before 2026-11-28.
    significance: float = Field(0.05, gt=0, le=1)
    # How many recent labelled events the comparison looks at.
    window: int = 1000
    require_audit: bool = False
    require_approval: bool = False
    approvals_required: int = 1
    audit: AuditThresholds = AuditThresholds()
    canary: CanaryPolicy = CanaryPolicy()


class ServingPolicy(BaseModel):
    """How serving treats this task's predictions by default (a request may say otherwise)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Log and wait: record every served row as an observation, so its label can name the
    # prediction id and the trainer learns the row with exactly the inputs serving used.
    record: bool = False


class SearchChange(BaseModel):
    """One alternative to the learner's short tree member that its search races (an entry of
    `learner.params.short_search`): another window, LightGBM learning rate, number of trees
    (`rounds`) and/or tree size (`num_leaves`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int | None = Field(None, ge=2, le=1_000_000)
    learning_rate: float | None = Field(None, gt=0.0, le=1.0)
    rounds: int | None = Field(None, ge=1, le=1_000)
    num_leaves: int | None = Field(None, ge=2, le=1_024)

    @classmethod
    def parse_all(cls, search: Any) -> list[SearchChange]:
        """`short_search` as given (a list of mappings), validated; ValueError otherwise."""
        if isinstance(search, str | bytes | Mapping) or not isinstance(search, Sequence):
            raise ValueError(
                "short_search must be a list of changes, e.g. [{window: 250}, {window: 4000}]"
            )
        return [cls.model_validate(change) for change in search]


class LearnerSpec(BaseModel):
    """How the trainer learns this task. `params`: the learner's settings
    (services/trainer/learner.py, `LEARNER_DEFAULTS`); every other key goes to LightGBM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "lightgbm-window"
    seed: int = 7
    # A model version is emitted after this many newly learned labelled events (version 1 at the
    # task's first event, early ones at 50, 100 and 200 rows). Serving moves a version's online
    # parts on by itself; its trees only change with the next version, so publishing at every
    # retrain (250 rows) keeps them fresh.
    publish_every: int = Field(250, ge=1)
    params: Mapping[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _search_is_valid(cls, params: Mapping[str, Any]) -> Mapping[str, Any]:
        if "short_search" in params:  # refused here, at the door, not when a trainer starts
            SearchChange.parse_all(params["short_search"])
        return params


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
    # Computed at prediction time from earlier events, identically by serving and the trainer.
    online_features: tuple[OnlineFeature, ...] = ()
    serving: ServingPolicy = ServingPolicy()
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

    @model_validator(mode="after")
    def _online_features_fit(self) -> TaskSpec:
        names = [f.name for f in self.input_features]
        numeric = {f.name for f in self.model_features if f.type in ("float", "int")}
        for online in self.online_features:
            if online.name in names:
                raise ValueError(f"online feature {online.name!r}: the name is already taken")
            names.append(online.name)
            if online.source is not None and online.source not in numeric:
                raise ValueError(
                    f"online feature {online.name!r}: source {online.source!r} is not a numeric "
                    "model feature of this task"
                )
            # Rows of a task with sensitive attributes are people: one person's outcome must
            # never become another person's input.
            if self.sensitive and online.kind in LABEL_KINDS and online.scope != "entity":
                raise ValueError(
                    f"online feature {online.name!r}: a task with sensitive attributes describes "
                    "people, so label-derived online features must have scope 'entity' (a "
                    "task-wide one would feed one person's outcome into another's prediction)"
                )
            if self.target.kind == "multiclass":
                self._fits_many_classes(online)
        return self

    def _fits_many_classes(self, online: OnlineFeature) -> None:
        """A multiclass label is a class index: no mean of indices (the classes need not be
        ordered), no residual (a multiclass answer is not one number), and no `last_label`
        default that is itself a class index ("no label yet" must not read as a class)."""
        if online.kind in ("residual", "label_mean"):
            raise ValueError(
                f"online feature {online.name!r}: a {online.kind} reads labels (and answers) "
                "as numbers; a multiclass task's labels are class indices, which need not be "
                "ordered (last_label and label_age apply)"
            )
        n = len(self.target.classes)
        default = online.default
        if online.kind == "last_label" and default is not None and default in range(n):
            raise ValueError(
                f"online feature {online.name!r}: default {default:g} is the index of "
                f"class {self.target.classes[int(default)]!r}; a multiclass last_label "
                f"needs a default that is no class index (-1, say, or anything outside 0..{n - 1})"
            )

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> TaskSpec:
        """A copy, validated again: an edited spec is a new version, never the old one's hash."""
        return TaskSpec.model_validate({**self.model_dump(), **(update or {})})

    @cached_property
    def version(self) -> str:
        """Content hash of the spec: its identity as a pipeline version.

        Fields added after the first release are left out while they hold their default, so a
        spec that does not use them keeps the version it always had."""
        doc = self.model_dump(mode="json")
        for path, default in _ADDED_LATER:
            *parents, leaf = path
            holder = doc
            for key in parents:
                holder = holder[key]
            if holder.get(leaf) == default:
                del holder[leaf]
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
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
    def online_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.online_features)

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        """The model's columns, in order: model features, then online features."""
        return tuple(f.name for f in self.model_features) + self.online_names

    @cached_property
    def entity_scoped(self) -> bool:
        """Whether a prediction needs the row's entity (some online feature is per entity)."""
        return any(f.scope == "entity" for f in self.online_features)

    @cached_property
    def input_features(self) -> tuple[Feature, ...]:
        """Every column an observation must carry: features, then sensitive attributes."""
        return self.features + tuple(f for f in self.sensitive if f.name not in self.feature_names)


# (path, default as JSON) of every spec field added after the first release (see `version`).
_ADDED_LATER: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("target", "kind"), "binary"),
    (("online_features",), []),
    (("serving",), {"record": False}),
    (("promotion", "audit", "balanced_accuracy_min"), 0.55),
    (("promotion", "audit", "min_rows"), 200),
    (("promotion", "canary"), CanaryPolicy().model_dump(mode="json")),
    (("promotion", "significance"), 0.05),
    (("promotion", "audit", "mae_ratio_max"), None),
    (("promotion", "audit", "mae_difference_max"), None),
    (("promotion", "audit", "r2_min"), 0.05),
)


class RecordError(ValueError):
    """A record does not fit its task spec; the message says which field and why."""


def storable(text: str, what: str) -> str:
    """Text the event store can hold, or RecordError: PostgreSQL's JSONB refuses the NUL
    character, and no store takes a lone surrogate (text that is not UTF-8)."""
    if "\x00" in text:
        raise RecordError(f"{what}: contains a NUL character (\\u0000), which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{what}: is not valid UTF-8 (a lone surrogate)") from None
    return text


def _storable_field(text: str) -> str:
    return storable(text, "text")


# A request field whose text is stored: refused with a 422 if the store could not hold it.
StorableStr = Annotated[str, AfterValidator(_storable_field)]


def shown(value: Any) -> str:
    """A value as an error message quotes it: at most 40 characters (a request may carry a
    10,000-digit number or a megabyte of text)."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's digit limit for str()
        return "a number too large to print"
    return text if len(text) <= 40 else f"{text[:37]}..."


def _name(text: str) -> str:
    """A name as a message quotes it: as is if short and printable, else `shown`."""
    return text if len(text) <= 40 and text.isprintable() else shown(text)


def _coerce(feature: Feature, value: Any) -> float | int | bool | str:
    if value is None:
        raise RecordError(f"{feature.name}: is required")
    if feature.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{feature.name}: expected a number, got {shown(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            raise RecordError(f"{feature.name}: {shown(value)} is out of range") from None
        if not math.isfinite(number):
            raise RecordError(f"{feature.name}: must be finite, got {shown(value)}")
        if abs(number) > MAX_ABS_FLOAT:
            raise RecordError(f"{feature.name}: {shown(value)} is out of range (|x| <= 1e100)")
        return number
    if feature.type == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{feature.name}: expected an integer, got {shown(value)}")
        if isinstance(value, float) and not value.is_integer():
            raise RecordError(f"{feature.name}: expected an integer, got {shown(value)}")
        if abs(value) > MAX_SAFE_INT:
            raise RecordError(f"{feature.name}: {shown(value)} is out of range (|n| <= 2**53)")
        return int(value)
    if feature.type == "bool":
        if not isinstance(value, bool):
            raise RecordError(f"{feature.name}: expected true or false, got {shown(value)}")
        return value
    if not isinstance(value, str | int | float):  # bool is an int
        raise RecordError(f"{feature.name}: expected one of {', '.join(feature.categories)}")
    text = value if isinstance(value, str) else shown(value)
    if text not in feature.categories:
        raise RecordError(
            f"{feature.name}: {shown(value)} is not one of {', '.join(feature.categories)}"
        )
    return text


def validate_features(spec: TaskSpec, features: Mapping[str, Any]) -> dict[str, Any]:
    """Check one record's features against the spec; return them coerced, or raise RecordError."""
    if not isinstance(features, Mapping):
        raise RecordError("features: expected an object")
    known = {f.name for f in spec.input_features}
    unknown = sorted(set(features) - known)
    if unknown:
        raise RecordError(f"unknown feature(s): {', '.join(_name(u) for u in unknown)}")
    checked = {}
    for f in spec.input_features:
        value = features.get(f.name)
        if value is None:
            raise RecordError(_missing(spec, f))
        checked[f.name] = _coerce(f, value)
    return checked


def fits(spec: TaskSpec, features: Mapping[str, Any]) -> bool:
    """Whether features validated under another version of the spec fit this one: every feature
    it reads is there and valid for it (other features are left aside)."""
    try:
        for f in spec.input_features:
            _coerce(f, features.get(f.name))
    except RecordError:
        return False
    return True


def reads_within(arm: TaskSpec, champion: TaskSpec) -> bool:
    """Whether a model of spec `arm` can answer rows validated by spec `champion` (another version
    of the task's): every feature it reads is one of the champion's, of the same type and
    categories."""
    known = {f.name: f for f in champion.input_features}
    return all(
        (theirs := known.get(f.name)) is not None
        and theirs.type == f.type
        and theirs.categories == f.categories
        for f in arm.input_features
    )


def _missing(spec: TaskSpec, feature: Feature) -> str:
    """Why a column is required; a sensitive attribute says what it is kept for."""
    if feature.name in spec.feature_names or all(s.name != feature.name for s in spec.sensitive):
        return f"{feature.name}: is required"
    if spec.sensitive_as_features:
        return f"{feature.name}: is required (a sensitive attribute, a model input of this task)"
    # Every row and prediction keeps it: audits group rows by it (docs/api.md says why).
    return (
        f"{feature.name}: is required: a sensitive attribute the model does not use, kept with "
        "every row and prediction for the task's bias audits"
    )


def same_class(label: Any, cls: Any) -> bool:
    """Does `label` name class `cls`? Equal values (1.0 names 1), except that a boolean names
    only a boolean class (True == 1 in Python)."""
    return bool(label == cls) and isinstance(label, bool) == isinstance(cls, bool)


def _is_class(value: Any) -> bool:
    if isinstance(value, str):
        return value != ""
    if isinstance(value, bool | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def validate_label(spec: TaskSpec, label: Any) -> float:
    """Map a label to its class index (0 or 1), or a regression's finite number; else raise
    RecordError."""
    if spec.target.kind == "regression":  # a number as a float feature takes it (|x| <= 1e100)
        return float(_coerce(Feature(name="label", type="float"), label))
    for index, cls in enumerate(spec.target.classes):
        if same_class(label, cls):
            return index
    raise RecordError(
        f"label: {shown(label)} is not one of {', '.join(map(repr, spec.target.classes))}"
    )


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


class SpecFileError(ValueError):
    """A task spec file that is not YAML or is refused: the file and every reason, one line."""


def load_spec(path: str | Path) -> TaskSpec:
    """Read a task spec from a YAML file; SpecFileError names the file and what is wrong."""
    with open(path, encoding="utf-8") as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise SpecFileError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise SpecFileError(f"{path}: {reasons}") from None


def load_specs(directory: str | Path) -> dict[str, TaskSpec]:
    """Read every `*.yaml` spec in a directory, keyed by task name."""
    specs = [load_spec(p) for p in sorted(Path(directory).glob("*.yaml"))]
    return {s.name: s for s in specs}


def specs_by_name(specs: Sequence[TaskSpec]) -> dict[str, TaskSpec]:
    return {s.name: s for s in specs}
