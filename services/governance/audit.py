"""Bias audit of a model's predictions: per-group figures and group-fairness gaps, judged by limits.

Pure: takes labels, predictions and sensitive attributes, returns an `AuditReport` (the payload of
an `AuditCompleted` event). The maths is Fairlearn's (`MetricFrame` and the demographic-parity and
equalized-odds functions). A binary audit (`audit`) compares 0/1 predictions' rates between
groups; a regression audit (`audit_regression`) compares the groups' mean absolute errors. Every
group is reported; groups with fewer than `min_group_size` rows are left out of the fairness gaps
that decide pass/fail, because a figure measured on a handful of rows is mostly noise, and the
report says which groups were left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from shared.tasks import AuditThresholds


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions (sklearn's accuracy_score, without its input checks)."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


# One MetricFrame per attribute gives every group's figures and, over the judged groups, the gaps:
# fairlearn's demographic_parity_difference/ratio and equalized_odds_difference are the
# between-groups difference/ratio of these same per-group selection rates, TPRs and FPRs.
_GROUP_METRICS = {
    "count": count,
    "selection_rate": selection_rate,
    "accuracy": _accuracy,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "false_negative_rate": false_negative_rate,
}


def _mean_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred))


def _mean_label(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true))


# A regression audit's per-group figures; the gaps are MetricFrame's between-groups difference
# and ratio of the MAE.
_REGRESSION_METRICS = {
    "count": count,
    "mae": mean_absolute_error,
    "rmse": root_mean_squared_error,
    "mean_prediction": _mean_prediction,
    "mean_label": _mean_label,
}


def _finite_or_none(value: Any) -> float | None:
    """NaN and infinities are not JSON; an undefined figure is reported as None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _is_none(value: Any) -> bool:
    return value is None


def _kind_field() -> Any:
    """A figure of regression (or multiclass) audits only: None, and left out of a dump while
    None, so a binary report dumps exactly as it did before them (and old reports validate)."""
    return Field(None, exclude_if=_is_none)


class GroupMetrics(BaseModel):
    """One group's figures. A rate is None where it is undefined (e.g. FPR without negatives)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int
    # False when the group is smaller than min_group_size: reported, not judged.
    in_pass_fail: bool
    # None in a live audit (served predictions have no outcomes yet), and in a regression's.
    positives: int | None = None
    selection_rate: float | None = None
    accuracy: float | None = None
    false_positive_rate: float | None = None
    false_negative_rate: float | None = None
    # (TPR + TNR) / 2; None without both outcomes in the group (and in a live audit).
    balanced_accuracy: float | None = None
    # Regression: mean absolute and root-mean-square error (None in a live audit), and the means
    # of the predictions and of the labels. The binary fields above are None in a regression.
    mae: float | None = _kind_field()
    rmse: float | None = _kind_field()
    mean_prediction: float | None = _kind_field()
    mean_label: float | None = _kind_field()

    @field_validator(
        "selection_rate",
        "accuracy",
        "false_positive_rate",
        "false_negative_rate",
        "balanced_accuracy",
        "mae",
        "rmse",
        "mean_prediction",
        "mean_label",
        mode="before",
    )
    @classmethod
    def _nan_to_none(cls, value: Any) -> float | None:
        return _finite_or_none(value)


class AttributeAudit(BaseModel):
    """Per-group figures and fairness gaps for one sensitive attribute.

    The gaps are computed over the groups with `in_pass_fail`; they are None when fewer than two
    such groups exist (there is nothing to compare).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: dict[str, GroupMetrics]
    demographic_parity_difference: float | None
    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    excluded_groups: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # Regression (the binary gaps above are None there): the largest group MAE minus the
    # smallest, and the largest over the smallest (None when the smallest is 0).
    mae_difference: float | None = _kind_field()
    mae_ratio: float | None = _kind_field()

    @field_validator(
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equalized_odds_difference",
        "mae_difference",
        "mae_ratio",
        mode="before",
    )
    @classmethod
    def _nan_to_none(cls, value: Any) -> float | None:
        return _finite_or_none(value)


class AuditReport(BaseModel):
    """One audit: figures per sensitive attribute, and the verdict with its reasons."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int
    thresholds: AuditThresholds
    attributes: dict[str, AttributeAudit]
    passed: bool
    # Each breached limit, in words with the figure; empty when passed.
    reasons: list[str]
    # What was not judged and why (small groups, undefined rates).
    notes: list[str]
    # Metrics that could not be computed at all (a live audit has no outcomes: only selection).
    unavailable: list[str] = []
    # Over all rows; None without both outcomes (and in a live audit).
    balanced_accuracy: float | None = None
    # A multiclass audit's floor on it, which depends on the classes that occur (`_multiclass_
    # skill`); None (and left out) elsewhere: a binary audit's is the limit itself.
    balanced_accuracy_floor: float | None = _kind_field()
    # What was audited: 0/1 predictions, or a regression's values (left out of a binary dump).
    # Multiclass: each class one against the rest (`audit_multiclass`).
    kind: Literal["binary", "multiclass", "regression"] = Field(
        "binary", exclude_if=lambda v: v == "binary"
    )
    # Regression, over all rows: None in a live audit, and R^2 when every label is equal.
    mae: float | None = _kind_field()
    rmse: float | None = _kind_field()
    r2: float | None = _kind_field()

    @field_validator("mae", "rmse", "r2", mode="before")
    @classmethod
    def _nan_to_none(cls, value: Any) -> float | None:
        return _finite_or_none(value)


def _as_binary(name: str, values: Sequence[Any]) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a flat sequence of 0/1")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name}: expected only 0 and 1")
    return array.astype(int)


def _group_column(name: str, values: Sequence[Any], rows: int, against: str) -> np.ndarray:
    """An attribute's group of every row, as text; ValueError unless it has one per row."""
    groups = np.asarray([str(v) for v in values], dtype=object)
    if len(groups) != rows:
        raise ValueError(f"{name}: has {len(groups)} rows but {against} has {rows}")
    return groups


def _judged(
    name: str, per_group: Mapping[str, GroupMetrics], min_group_size: int
) -> tuple[list[str], tuple[str, ...], list[str]]:
    """The groups judged, those left out as too small, and notes saying what was not judged."""
    judged = [g for g, m in per_group.items() if m.in_pass_fail]
    excluded = tuple(g for g, m in per_group.items() if not m.in_pass_fail)
    notes: list[str] = []
    if excluded:
        notes.append(
            f"{name}: {', '.join(excluded)} excluded from pass/fail "
            f"(fewer than {min_group_size} rows)"
        )
    if len(judged) < 2:
        notes.append(f"{name}: not judged, fewer than two groups with {min_group_size}+ rows")
    return judged, excluded, notes


def _group_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, min_group_size: int
) -> tuple[dict[str, GroupMetrics], Any]:
    frame = MetricFrame(
        metrics=_GROUP_METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=groups
    ).by_group
    result: dict[str, GroupMetrics] = {}
    for group, row in frame.iterrows():
        members = groups == group
        size = int(row["count"])
        positives = int(y_true[members].sum())
        # Fairlearn reports 0 for a rate whose denominator is empty; undefined is the honest value.
        both = 0 < positives < size
        result[str(group)] = GroupMetrics(
            count=size,
            positives=positives,
            selection_rate=row["selection_rate"],
            accuracy=row["accuracy"],
            false_positive_rate=row["false_positive_rate"] if size > positives else None,
            false_negative_rate=row["false_negative_rate"] if positives > 0 else None,
            in_pass_fail=size >= min_group_size,
            balanced_accuracy=(row["true_positive_rate"] + 1.0 - row["false_positive_rate"]) / 2
            if both
            else None,
        )
    return result, frame


def _gaps(frame: Any, judged: list[str]) -> dict[str, float]:
    """Fairlearn's between-groups gaps over the judged groups (undefined rates count as 0)."""
    rows = frame.loc[[g for g in frame.index if str(g) in judged]]
    selection, tpr, fpr = (
        rows[m].astype(float)
        for m in ("selection_rate", "true_positive_rate", "false_positive_rate")
    )
    return {
        "demographic_parity_difference": float(selection.max() - selection.min()),
        "demographic_parity_ratio": float(selection.min() / selection.max())
        if selection.max() > 0
        else float("nan"),
        "equalized_odds_difference": float(max(tpr.max() - tpr.min(), fpr.max() - fpr.min())),
    }


def _audit_attribute(
    name: str, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, min_group_size: int
) -> AttributeAudit:
    per_group, frame = _group_metrics(y_true, y_pred, groups, min_group_size)
    judged, excluded, notes = _judged(name, per_group, min_group_size)
    if len(judged) < 2:
        return AttributeAudit(
            groups=per_group,
            demographic_parity_difference=None,
            demographic_parity_ratio=None,
            equalized_odds_difference=None,
            excluded_groups=excluded,
            notes=tuple(notes),
        )
    undefined = [
        g
        for g in judged
        if per_group[g].false_positive_rate is None or per_group[g].false_negative_rate is None
    ]
    if undefined:
        notes.append(
            f"{name}: {', '.join(undefined)} lack positives or negatives; "
            "their undefined error rates count as 0 in the equalized-odds difference"
        )
    return AttributeAudit(
        groups=per_group,
        **_gaps(frame, judged),
        excluded_groups=excluded,
        notes=tuple(notes),
    )


def _figure(value: float, limit: float) -> str:
    """Two decimals, or four where two would print the limit itself (0.1503 > 0.15)."""
    short = f"{value:.2f}"
    return f"{value:.4f}" if float(short) == limit else short


def _breaches(name: str, result: AttributeAudit, limits: AuditThresholds) -> list[str]:
    """Each limit the attribute's gaps break, in words with the figure."""
    checks = [
        (
            "equalized-odds difference",
            result.equalized_odds_difference,
            limits.equalized_odds_difference_max,
            ">",
        ),
        (
            "demographic-parity difference",
            result.demographic_parity_difference,
            limits.demographic_parity_difference_max,
            ">",
        ),
        (
            "demographic-parity ratio",
            result.demographic_parity_ratio,
            limits.demographic_parity_ratio_min,
            "<",
        ),
    ]
    reasons = []
    for label, value, limit, op in checks:
        if value is None or limit is None:
            continue
        if (value > limit) if op == ">" else (value < limit):
            reasons.append(f"{name}: {label} {_figure(value, limit)} {op} {limit:g}")
    return reasons


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    """(TPR + TNR) / 2: 0.5 for any constant answer; None unless both outcomes occur."""
    positives = y_true == 1
    if positives.all() or not positives.any():
        return None
    tpr = float(y_pred[positives].mean())
    tnr = float(1 - y_pred[~positives].mean())
    return (tpr + tnr) / 2


def _skill_breaches(
    overall: float | None, attributes: Mapping[str, AttributeAudit], limits: AuditThresholds
) -> list[str]:
    """Where the model is no better than a constant answer: overall, below the limit; in a
    judged group, at or below 0.5 (a group's figure is noisier, so only that is judged)."""
    floor = limits.balanced_accuracy_min
    if floor is None:
        return []
    reasons = []
    if overall is not None and overall < floor:
        reasons.append(
            f"balanced accuracy {_figure(overall, floor)} < {floor:g}: hardly better than a "
            "constant answer (0.5)"
        )
    for name, result in attributes.items():
        for group, m in result.groups.items():
            ba = m.balanced_accuracy
            if m.in_pass_fail and ba is not None and ba <= 0.5:
                reasons.append(
                    f"{name}={group}: balanced accuracy {_figure(ba, 0.5)} <= 0.5: no better "
                    "than a constant answer for this group"
                )
    return reasons


def _check_rows(truth: np.ndarray, predicted: np.ndarray, sensitive: Mapping[str, Any]) -> None:
    """ValueError unless there are rows, as many answers as labels, and an attribute."""
    if len(truth) != len(predicted):
        raise ValueError(f"y_true has {len(truth)} rows but y_pred has {len(predicted)}")
    if not sensitive:
        raise ValueError("sensitive: at least one attribute is needed")
    if len(truth) == 0:
        raise ValueError("nothing to audit: no rows")


def _verdict(
    n: int,
    thresholds: AuditThresholds,
    attributes: dict[str, AttributeAudit],
    reasons: list[str],
    notes: list[str] | None = None,
    **figures: Any,
) -> AuditReport:
    """The report of an audit of `n` rows: passed when no limit was breached; `notes`: the
    attributes' own unless given; `figures`: the overall ones of its kind."""
    if notes is None:
        notes = [note for a in attributes.values() for note in a.notes]
    return AuditReport(
        n=n,
        thresholds=thresholds,
        attributes=attributes,
        passed=not reasons,
        reasons=reasons,
        notes=notes,
        **figures,
    )


def audit(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    sensitive: Mapping[str, Sequence[Any]],
    thresholds: AuditThresholds,
) -> AuditReport:
    """Audit 0/1 predictions against 0/1 labels for each sensitive attribute, judged by limits."""
    truth = _as_binary("y_true", y_true)
    predicted = _as_binary("y_pred", y_pred)
    _check_rows(truth, predicted, sensitive)
    attributes: dict[str, AttributeAudit] = {}
    for name, values in sensitive.items():
        groups = _group_column(name, values, len(truth), "y_true")
        attributes[name] = _audit_attribute(
            name, truth, predicted, groups, thresholds.min_group_size
        )
    overall = balanced_accuracy(truth, predicted)
    reasons = _skill_breaches(overall, attributes, thresholds)
    reasons += [r for name, a in attributes.items() for r in _breaches(name, a, thresholds)]
    return _verdict(len(truth), thresholds, attributes, reasons, balanced_accuracy=overall)


LABEL_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "false_positive_rate",
    "false_negative_rate",
    "equalized_odds_difference",
)


def _selection_attribute(
    name: str, y_pred: np.ndarray, groups: np.ndarray, min_group_size: int
) -> AttributeAudit:
    per_group: dict[str, GroupMetrics] = {}
    for group in sorted(set(groups.tolist())):
        members = groups == group
        per_group[str(group)] = GroupMetrics(
            count=int(members.sum()),
            positives=None,
            selection_rate=float(y_pred[members].mean()),
            accuracy=None,
            false_positive_rate=None,
            false_negative_rate=None,
            in_pass_fail=int(members.sum()) >= min_group_size,
        )
    judged, excluded, notes = _judged(name, per_group, min_group_size)
    rates = [per_group[g].selection_rate or 0.0 for g in judged]
    if len(judged) < 2:
        difference = ratio = None
    else:
        mask = np.isin(groups, judged)
        # Demographic parity compares selection rates only; y_true is required but unused.
        kwargs = {
            "y_true": y_pred[mask],
            "y_pred": y_pred[mask],
            "sensitive_features": groups[mask],
        }
        difference = demographic_parity_difference(**kwargs)
        ratio = demographic_parity_ratio(**kwargs) if max(rates) > 0 else None
    return AttributeAudit(
        groups=per_group,
        demographic_parity_difference=difference,
        demographic_parity_ratio=ratio,
        equalized_odds_difference=None,
        excluded_groups=excluded,
        notes=tuple(notes),
    )


def _no_outcomes(thresholds: AuditThresholds) -> str:
    """A live audit's note: what it could not compute without outcomes."""
    return (
        "no outcomes for served predictions: accuracy, false positive/negative rates and "
        "equalized-odds difference not computed"
        + (
            "; the equalized-odds limit was not checked"
            if thresholds.equalized_odds_difference_max is not None
            else ""
        )
    )


def audit_selection(
    y_pred: Sequence[Any], sensitive: Mapping[str, Sequence[Any]], thresholds: AuditThresholds
) -> AuditReport:
    """Audit predictions whose outcomes are unknown (live traffic): selection rates only.

    Demographic parity needs no labels; accuracy, error rates and equalized odds do, so they are
    listed in `unavailable` and their limits are not checked (a note says so).
    """
    predicted = _as_binary("y_pred", y_pred)
    if not sensitive:
        raise ValueError("sensitive: at least one attribute is needed")
    if len(predicted) == 0:
        raise ValueError("nothing to audit: no rows")
    attributes: dict[str, AttributeAudit] = {}
    for name, values in sensitive.items():
        groups = _group_column(name, values, len(predicted), "y_pred")
        attributes[name] = _selection_attribute(name, predicted, groups, thresholds.min_group_size)
    return _selection_verdict(len(predicted), thresholds, attributes)


def _selection_verdict(
    n: int, thresholds: AuditThresholds, attributes: dict[str, AttributeAudit], **figures: Any
) -> AuditReport:
    """A live audit's report: the selection-rate gaps judged, the rest not computed."""
    reasons = [r for name, a in attributes.items() for r in _breaches(name, a, thresholds)]
    notes = [note for a in attributes.values() for note in a.notes]
    return _verdict(
        n,
        thresholds,
        attributes,
        reasons,
        [*notes, _no_outcomes(thresholds)],
        unavailable=list(LABEL_METRICS),
        **figures,
    )


# Multiclass: each class audited as a binary decision ("answered class k or not", one against
# the rest), under the attribute's name with the class in brackets (`sex[high]`); skill judged on
# the multiclass balanced accuracy (the mean recall over the classes), where a constant answer
# scores 1 / (classes that occur).


def _as_classes(name: str, values: Sequence[Any], n_classes: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a flat sequence of class indices")
    whole = array.astype(np.int64)
    if array.size and (
        not np.array_equal(whole, array) or whole.min() < 0 or whole.max() >= n_classes
    ):
        raise ValueError(f"{name}: expected class indices 0..{n_classes - 1}")
    return whole


def _mean_recall(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float] | None:
    """The mean over the classes that occur of each one's recall, and a constant answer's
    figure (1 / those classes); None unless two classes occur."""
    present = np.unique(truth)
    if len(present) < 2:
        return None
    recalls = [float((predicted[truth == k] == k).mean()) for k in present]
    return float(np.mean(recalls)), 1.0 / len(present)


def _multiclass_skill(
    truth: np.ndarray,
    predicted: np.ndarray,
    sensitive: Mapping[str, np.ndarray],
    limits: AuditThresholds,
) -> tuple[float | None, float | None, list[str]]:
    """`_skill_breaches` for many classes: overall, the balanced accuracy must clear a constant
    answer's by as large a share of the way to 1 as `balanced_accuracy_min` does for two
    classes (0.55: a tenth of the way); in a judged group, it must beat a constant answer.
    Returns the figure, the floor applied to it, and the breaches."""
    overall = _mean_recall(truth, predicted)
    floor = limits.balanced_accuracy_min
    if floor is None:
        return (overall[0] if overall else None), None, []
    reasons = []
    needed = None
    if overall is not None:
        score, chance = overall
        needed = chance + (floor - 0.5) / 0.5 * (1.0 - chance)
        if score < needed:
            reasons.append(
                f"balanced accuracy {_figure(score, needed)} < {needed:.2f}: hardly better than "
                f"a constant answer ({chance:.2f} with {round(1 / chance)} classes)"
            )
    for name, groups in sensitive.items():
        for group in sorted(set(groups.tolist())):
            members = groups == group
            if members.sum() < limits.min_group_size:
                continue
            figure = _mean_recall(truth[members], predicted[members])
            if figure is not None and figure[0] <= figure[1]:
                reasons.append(
                    f"{name}={group}: balanced accuracy {figure[0]:.2f} <= {figure[1]:.2f}: no "
                    "better than a constant answer for this group"
                )
    return (overall[0] if overall else None), needed, reasons


def _class_attribute(
    key: str, is_class: np.ndarray, answered: np.ndarray, groups: np.ndarray, min_group_size: int
) -> AttributeAudit:
    """One class against the rest for one attribute: every group's figures and selection-rate
    gaps, as a binary audit's; the equalized-odds difference over the groups where the class
    both occurs and does not. In a group without it its true-positive rate is undefined, which
    the binary gap counts as 0, so a rare class absent from one group would fail a perfect
    model; answering the class to that group's rows still shows in demographic parity."""
    truth, predicted = is_class.astype(int), answered.astype(int)
    result = _audit_attribute(key, truth, predicted, groups, min_group_size)
    both = [
        g
        for g in sorted(set(groups.tolist()))
        if 0 < int(is_class[groups == g].sum()) < int((groups == g).sum())
    ]
    left = sorted(set(groups.tolist()) - set(both))
    if not left or result.equalized_odds_difference is None:
        return result
    rows = np.isin(groups, both)
    odds = (
        _audit_attribute(key, truth[rows], predicted[rows], groups[rows], min_group_size)
        if rows.any()
        else None
    )
    note = (
        f"{key}: {', '.join(left)} left out of the equalized-odds difference (the class is "
        "absent from it, or all of it: its true-positive or false-positive rate is undefined)"
    )
    return result.model_copy(
        update={
            "equalized_odds_difference": None if odds is None else odds.equalized_odds_difference,
            "notes": tuple(n for n in result.notes if "undefined error rates" not in n) + (note,),
        }
    )


def audit_multiclass(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    classes: Sequence[Any],
    sensitive: Mapping[str, Sequence[Any]],
    thresholds: AuditThresholds,
) -> AuditReport:
    """Audit answered class indices against labelled ones: each class one against the rest as a
    binary audit does (`name[class]`), skill on the multiclass balanced accuracy."""
    truth = _as_classes("y_true", y_true, len(classes))
    predicted = _as_classes("y_pred", y_pred, len(classes))
    _check_rows(truth, predicted, sensitive)
    columns = {
        name: _group_column(name, values, len(truth), "y_true")
        for name, values in sensitive.items()
    }
    attributes: dict[str, AttributeAudit] = {}
    for name, groups in columns.items():
        for k, cls in enumerate(classes):
            key = f"{name}[{cls}]"
            attributes[key] = _class_attribute(
                key, truth == k, predicted == k, groups, thresholds.min_group_size
            )
    overall, floor, reasons = _multiclass_skill(truth, predicted, columns, thresholds)
    reasons += [r for name, a in attributes.items() for r in _breaches(name, a, thresholds)]
    return _verdict(
        len(truth),
        thresholds,
        attributes,
        reasons,
        balanced_accuracy=overall,
        balanced_accuracy_floor=floor,
        kind="multiclass",
    )


def audit_served_classes(
    y_pred: Sequence[Any],
    classes: Sequence[Any],
    sensitive: Mapping[str, Sequence[Any]],
    thresholds: AuditThresholds,
) -> AuditReport:
    """`audit_selection` of a multiclass task's served answers: each class's selection rate per
    group (`name[class]`), no outcomes."""
    predicted = _as_classes("y_pred", y_pred, len(classes))
    if not sensitive:
        raise ValueError("sensitive: at least one attribute is needed")
    if len(predicted) == 0:
        raise ValueError("nothing to audit: no rows")
    attributes: dict[str, AttributeAudit] = {}
    for name, values in sensitive.items():
        groups = _group_column(name, values, len(predicted), "y_pred")
        for k, cls in enumerate(classes):
            key = f"{name}[{cls}]"
            attributes[key] = _selection_attribute(
                key, (predicted == k).astype(int), groups, thresholds.min_group_size
            )
    return _selection_verdict(len(predicted), thresholds, attributes, kind="multiclass")


# Regression: a numeric target, judged on the groups' mean absolute errors and on R^2 overall.

REGRESSION_LABEL_METRICS = ("mae", "rmse", "r2", "mae_difference", "mae_ratio")
# Limits on 0/1 predictions' rates, which a regression has not.
_BINARY_GAP_LIMITS = (
    "equalized_odds_difference_max",
    "demographic_parity_difference_max",
    "demographic_parity_ratio_min",
)


def _as_numbers(name: str, values: Sequence[Any]) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a flat sequence of numbers") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a flat sequence of numbers")
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} values are not finite (NaN or infinite)")
    return array


def _amount(value: float, limit: float | None = None) -> str:
    """A figure in label units: four significant digits, more where that would print the limit."""
    short = f"{value:.4g}"
    return f"{value:.6g}" if limit is not None and float(short) == limit else short


def _regression_attribute(
    name: str, y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, min_group_size: int
) -> AttributeAudit:
    frame = MetricFrame(
        metrics=_REGRESSION_METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=groups
    ).by_group
    per_group = {
        str(group): GroupMetrics(
            count=int(row["count"]),
            in_pass_fail=int(row["count"]) >= min_group_size,
            mae=row["mae"],
            rmse=row["rmse"],
            mean_prediction=row["mean_prediction"],
            mean_label=row["mean_label"],
        )
        for group, row in frame.iterrows()
    }
    judged, excluded, notes = _judged(name, per_group, min_group_size)
    difference = ratio = None
    if len(judged) >= 2:
        mask = np.isin(groups, judged)
        mae = MetricFrame(
            metrics=mean_absolute_error,
            y_true=y_true[mask],
            y_pred=y_pred[mask],
            sensitive_features=groups[mask],
        )
        difference = mae.difference()
        smallest_over_largest = mae.ratio()  # fairlearn's ratio is min / max
        if smallest_over_largest > 0:
            ratio = 1.0 / smallest_over_largest
        else:
            notes.append(f"{name}: MAE ratio undefined, a judged group's MAE is 0")
    return AttributeAudit(
        groups=per_group,
        demographic_parity_difference=None,
        demographic_parity_ratio=None,
        equalized_odds_difference=None,
        excluded_groups=excluded,
        notes=tuple(notes),
        mae_difference=difference,
        mae_ratio=ratio,
    )


def _mae_breaches(name: str, result: AttributeAudit, limits: AuditThresholds) -> list[str]:
    """Each MAE gap limit the attribute breaks, in words with the gap and the two groups' MAE."""
    maes = {g: m.mae for g, m in result.groups.items() if m.in_pass_fail and m.mae is not None}
    if len(maes) < 2:
        return []
    worst = max(maes, key=lambda g: maes[g] or 0.0)
    best = min(maes, key=lambda g: maes[g] or 0.0)
    groups = f"(MAE {worst} {_amount(maes[worst] or 0.0)}, {best} {_amount(maes[best] or 0.0)})"
    reasons = []
    ratio, ratio_max = result.mae_ratio, limits.mae_ratio_max
    if ratio is not None and ratio_max is not None and ratio > ratio_max:
        reasons.append(f"{name}: MAE ratio {_figure(ratio, ratio_max)} > {ratio_max:g} {groups}")
    gap, gap_max = result.mae_difference, limits.mae_difference_max
    if gap is not None and gap_max is not None and gap > gap_max:
        reasons.append(f"{name}: MAE difference {_amount(gap, gap_max)} > {gap_max:g} {groups}")
    return reasons


def audit_regression(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    sensitive: Mapping[str, Sequence[Any]],
    thresholds: AuditThresholds,
) -> AuditReport:
    """Audit a regression's values against numeric labels for each sensitive attribute: the
    groups' errors and the gaps between their MAE, and R^2 over all rows, judged by limits."""
    truth = _as_numbers("y_true", y_true)
    predicted = _as_numbers("y_pred", y_pred)
    _check_rows(truth, predicted, sensitive)
    attributes = {
        name: _regression_attribute(
            name,
            truth,
            predicted,
            _group_column(name, values, len(truth), "y_true"),
            thresholds.min_group_size,
        )
        for name, values in sensitive.items()
    }
    notes = [note for a in attributes.values() for note in a.notes]
    reasons: list[str] = []
    floor = thresholds.r2_min
    r2: float | None = None
    if (truth == truth[0]).all():
        # SST is 0: no variance to explain, so R^2 says nothing (sklearn would answer 0 or 1).
        notes.append(
            f"every label is {truth[0]:g}: R^2 undefined"
            + ("; the R^2 floor was not checked" if floor is not None else "")
        )
    else:
        r2 = float(r2_score(truth, predicted))
        if floor is not None and r2 < floor:
            reasons.append(
                f"R^2 {_figure(r2, floor)} < {floor:g}: hardly better than a constant answer "
                "(answering the mean scores 0)"
            )
    reasons += [r for name, a in attributes.items() for r in _mae_breaches(name, a, thresholds)]
    binary_only = [f for f in _BINARY_GAP_LIMITS if getattr(thresholds, f) is not None]
    if binary_only:
        notes.append(f"{', '.join(binary_only)}: limits on 0/1 predictions, not checked")
    return _verdict(
        len(truth),
        thresholds,
        attributes,
        reasons,
        notes,
        kind="regression",
        mae=mean_absolute_error(truth, predicted),
        rmse=root_mean_squared_error(truth, predicted),
        r2=r2,
    )


def audit_served_values(
    y_pred: Sequence[Any], sensitive: Mapping[str, Sequence[Any]], thresholds: AuditThresholds
) -> AuditReport:
    """Audit a regression's served values, whose outcomes are unknown (live traffic): each
    group's count and mean prediction. Every regression limit needs outcomes: nothing is judged,
    and the metrics that need them are listed in `unavailable`."""
    predicted = _as_numbers("y_pred", y_pred)
    if not sensitive:
        raise ValueError("sensitive: at least one attribute is needed")
    if len(predicted) == 0:
        raise ValueError("nothing to audit: no rows")
    attributes: dict[str, AttributeAudit] = {}
    for name, values in sensitive.items():
        groups = _group_column(name, values, len(predicted), "y_pred")
        frame = MetricFrame(
            metrics={"count": count, "mean_prediction": _mean_prediction},
            y_true=predicted,  # required, unused
            y_pred=predicted,
            sensitive_features=groups,
        ).by_group
        per_group = {
            str(group): GroupMetrics(
                count=int(row["count"]),
                in_pass_fail=int(row["count"]) >= thresholds.min_group_size,
                mean_prediction=row["mean_prediction"],
            )
            for group, row in frame.iterrows()
        }
        attributes[name] = AttributeAudit(
            groups=per_group,
            demographic_parity_difference=None,
            demographic_parity_ratio=None,
            equalized_odds_difference=None,
            excluded_groups=tuple(g for g, m in per_group.items() if not m.in_pass_fail),
        )
    unchecked = [
        label
        for label, limit in (
            ("MAE ratio", thresholds.mae_ratio_max),
            ("MAE difference", thresholds.mae_difference_max),
            ("R^2", thresholds.r2_min),
        )
        if limit is not None
    ]
    return AuditReport(
        kind="regression",
        n=len(predicted),
        thresholds=thresholds,
        attributes=attributes,
        passed=True,
        reasons=[],
        notes=[
            "no outcomes for served predictions: MAE, RMSE, R^2 and the MAE gaps not computed"
            + (f"; limits not checked: {', '.join(unchecked)}" if unchecked else "")
        ],
        unavailable=list(REGRESSION_LABEL_METRICS),
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _attribute_table(name: str, result: AttributeAudit) -> list[str]:
    width = max(len(name), *(len(g) for g in result.groups))
    header = (
        f"{name:<{width}}  {'count':>6}  {'selected':>8}  {'accuracy':>8}  {'FPR':>7}  {'FNR':>7}"
    )
    lines = [header, "-" * len(header)]
    for group, m in result.groups.items():
        mark = "" if m.in_pass_fail else "  (excluded: small group)"
        lines.append(
            f"{group:<{width}}  {m.count:>6}  {_pct(m.selection_rate):>8}  "
            f"{_pct(m.accuracy):>8}  {_pct(m.false_positive_rate):>7}  "
            f"{_pct(m.false_negative_rate):>7}{mark}"
        )
    lines.append(
        f"demographic-parity difference {_num(result.demographic_parity_difference)}, "
        f"ratio {_num(result.demographic_parity_ratio)}; "
        f"equalized-odds difference {_num(result.equalized_odds_difference)}"
    )
    return lines


def _regression_table(name: str, result: AttributeAudit) -> list[str]:
    width = max(len(name), *(len(g) for g in result.groups))
    header = (
        f"{name:<{width}}  {'count':>6}  {'MAE':>10}  {'RMSE':>10}  "
        f"{'mean pred':>10}  {'mean label':>10}"
    )
    lines = [header, "-" * len(header)]
    for group, m in result.groups.items():
        mark = "" if m.in_pass_fail else "  (excluded: small group)"
        lines.append(
            f"{group:<{width}}  {m.count:>6}  {_num(m.mae):>10}  {_num(m.rmse):>10}  "
            f"{_num(m.mean_prediction):>10}  {_num(m.mean_label):>10}{mark}"
        )
    lines.append(
        f"MAE difference {_num(result.mae_difference)}, "
        f"ratio (largest over smallest) {_num(result.mae_ratio)}"
    )
    return lines


def _limits_line(limits: AuditThresholds, kind: str = "binary") -> str:
    judged: tuple[tuple[str, str, float | None], ...]
    if kind == "regression":
        judged = (
            ("MAE ratio", "<=", limits.mae_ratio_max),
            ("MAE difference", "<=", limits.mae_difference_max),
            ("R^2", ">=", limits.r2_min),
        )
    else:
        judged = (
            ("equalized-odds difference", "<=", limits.equalized_odds_difference_max),
            ("demographic-parity difference", "<=", limits.demographic_parity_difference_max),
            ("demographic-parity ratio", ">=", limits.demographic_parity_ratio_min),
            ("balanced accuracy (overall and per group)", ">=", limits.balanced_accuracy_min),
        )
        if kind == "multiclass":  # its floor scaled to the classes (`_multiclass_skill`)
            judged = (
                *judged[:3],
                (
                    "balanced accuracy (as far from a constant as, with two classes)",
                    ">=",
                    limits.balanced_accuracy_min,
                ),
            )
    checked = [f"{label} {op} {value:g}" for label, op, value in judged if value is not None]
    return (
        f"limits: {', '.join(checked) or 'none set'}; "
        f"groups under {limits.min_group_size} rows not judged"
    )


def render_audit(report: AuditReport) -> str:
    """The report as a plain-text table: one block per attribute, then the verdict and reasons."""
    table = _regression_table if report.kind == "regression" else _attribute_table
    lines: list[str] = []
    for name, result in report.attributes.items():
        lines.extend(table(name, result))
        lines.append("")
    if report.kind == "regression":
        lines.append(
            f"overall: MAE {_num(report.mae)}, RMSE {_num(report.rmse)}, R^2 {_num(report.r2)}"
        )
    lines.append(_limits_line(report.thresholds, report.kind))
    if report.balanced_accuracy_floor is not None:
        lines.append(
            f"balanced accuracy {_num(report.balanced_accuracy)} against the floor of "
            f"{report.balanced_accuracy_floor:.2f} for these classes"
        )
    lines.append(f"verdict: {'PASSED' if report.passed else 'FAILED'} on {report.n} rows")
    lines.extend(f"  - {reason}" for reason in report.reasons)
    lines.extend(f"  note: {note}" for note in report.notes)
    return "\n".join(lines)
