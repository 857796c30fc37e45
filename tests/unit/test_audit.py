"""Bias audits: Fairlearn figures per group, limits judged, small groups reported but not judged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.governance.audit import (
    AuditReport,
    audit,
    audit_multiclass,
    audit_regression,
    render_audit,
)
from services.governance.audits import UnseenWindow, audit_candidate, audit_live
from services.governance.compas import compas_score_audit, load_compas
from shared.events.envelope import Envelope, Producer
from shared.tasks import AuditThresholds, TaskSpec, load_spec

REPO = Path(__file__).resolve().parents[2]
COMPAS_GZ = REPO / "data" / "compas-scores-two-years.csv.gz"
COMPAS_SPEC = REPO / "tasks" / "compas.yaml"


def _percent(value: float | None) -> str:
    assert value is not None
    return f"{100 * value:.2f}"


@pytest.fixture(scope="module")
def compas_report() -> AuditReport:
    if not COMPAS_GZ.exists():
        pytest.fail(f"the repo's COMPAS copy is missing: {COMPAS_GZ}")
    return compas_score_audit(load_compas(COMPAS_GZ), load_spec(COMPAS_SPEC).promotion.audit)


def test_the_compas_score_audit_reproduces_propublicas_figures_to_the_digit(
    compas_report: AuditReport,
) -> None:
    race = compas_report.attributes["race"].groups
    black, white = race["African-American"], race["Caucasian"]
    assert compas_report.n == 7214
    assert (black.count, white.count) == (3696, 2454)
    assert _percent(black.false_positive_rate) == "44.85"
    assert _percent(white.false_positive_rate) == "23.45"
    assert _percent(black.false_negative_rate) == "27.99"
    assert _percent(white.false_negative_rate) == "47.72"


def test_the_compas_score_fails_the_compas_task_limits_on_race(compas_report: AuditReport) -> None:
    assert not compas_report.passed
    assert compas_report.reasons == ["race: equalized-odds difference 0.40 > 0.3"]
    table = render_audit(compas_report)
    assert "44.85%" in table and "verdict: FAILED on 7214 rows" in table


def test_an_audit_report_is_json_with_undefined_figures_as_null() -> None:
    # Group "b" has no actual negatives, so its false positive rate is undefined.
    report = audit(
        [0, 1, 0, 1, 1, 1],
        [0, 1, 1, 1, 1, 0],
        {"g": ["a", "a", "a", "a", "b", "b"]},
        AuditThresholds(min_group_size=1),
    )
    payload = json.loads(report.model_dump_json())
    assert payload["attributes"]["g"]["groups"]["b"]["false_positive_rate"] is None
    assert AuditReport.model_validate(payload) == report


def test_a_threshold_breach_fails_with_a_reason_naming_the_attribute_and_figure() -> None:
    # Group a: every error is a false positive (FPR 0.5); group b: perfect. EO difference 0.5.
    y_true = [0, 0, 1, 1] * 10 + [0, 0, 1, 1] * 10
    y_pred = [1, 0, 1, 1] * 10 + [0, 0, 1, 1] * 10
    groups = ["a"] * 40 + ["b"] * 40
    report = audit(
        y_true, y_pred, {"sex": groups}, AuditThresholds(equalized_odds_difference_max=0.15)
    )
    assert not report.passed
    assert report.reasons == ["sex: equalized-odds difference 0.50 > 0.15"]
    assert report.attributes["sex"].groups["a"].false_positive_rate == 0.5


def test_groups_below_min_group_size_are_reported_but_excluded_from_pass_fail() -> None:
    # Two large groups treated alike, plus a 10-row group where every prediction is wrong.
    y_true = [0, 1] * 50 + [0, 1] * 50 + [0, 1] * 5
    y_pred = [0, 1] * 50 + [0, 1] * 50 + [1, 0] * 5
    groups = ["a"] * 100 + ["b"] * 100 + ["tiny"] * 10
    limits = AuditThresholds(equalized_odds_difference_max=0.1, min_group_size=30)
    report = audit(y_true, y_pred, {"race": groups}, limits)
    race = report.attributes["race"]
    assert report.passed and report.reasons == []
    assert race.groups["tiny"].count == 10 and not race.groups["tiny"].in_pass_fail
    assert race.groups["tiny"].false_positive_rate == 1.0
    assert race.excluded_groups == ("tiny",)
    assert race.equalized_odds_difference == 0.0
    assert any("tiny excluded from pass/fail" in note for note in report.notes)


def test_a_perfectly_fair_predictor_passes_every_limit() -> None:
    y_true = [0, 1, 0, 1] * 25
    y_pred = list(y_true)
    sensitive = {"race": ["x", "x", "y", "y"] * 25, "sex": ["F"] * 50 + ["M"] * 50}
    limits = AuditThresholds(
        equalized_odds_difference_max=0.0,
        demographic_parity_difference_max=0.0,
        demographic_parity_ratio_min=1.0,
    )
    report = audit(y_true, y_pred, sensitive, limits)
    assert report.passed and report.reasons == []
    for attribute in report.attributes.values():
        assert attribute.equalized_odds_difference == 0.0
        assert attribute.demographic_parity_ratio == 1.0


def test_the_compas_task_loads_and_names_race_and_sex_as_sensitive() -> None:
    spec = load_spec(COMPAS_SPEC)
    assert [f.name for f in spec.sensitive] == ["race", "sex"]
    assert not spec.sensitive_as_features
    assert not {"race", "sex"} & {f.name for f in spec.model_features}
    assert spec.target.name == "two_year_recid"
    assert spec.promotion.require_audit
    assert spec.promotion.audit.equalized_odds_difference_max is not None


def test_the_compas_tasks_categories_cover_the_data() -> None:
    spec = load_spec(COMPAS_SPEC)
    frame = load_compas(COMPAS_GZ)
    for feature in (*spec.features, *spec.sensitive):
        if feature.type == "category":
            assert set(frame[feature.name].astype(str)) <= set(feature.categories)


class _Constant:
    """A model that answers "will reoffend" (p 0.999) for everyone."""

    feature_names: list[str] = []

    def predict_proba(self, X):
        import numpy as np

        return np.full(len(X), 0.999)


def test_a_model_that_flags_everyone_is_refused_by_the_audit_with_the_figure_named() -> None:
    from services.governance.audits import audit_candidate
    from shared.features import model_inputs

    spec = load_spec(COMPAS_SPEC)
    frame = load_compas(COMPAS_GZ).head(2000)
    names = [f.name for f in spec.input_features]
    rows = [
        {"features": r, "inputs": model_inputs(spec, r, []), "label": int(y)}
        for r, y in zip(
            frame[names].to_dict("records"), frame["two_year_recid"].tolist(), strict=True
        )
    ]
    report = audit_candidate(spec, _Constant(), rows)
    # Every group is flagged alike, so the fairness gaps say nothing is wrong ...
    assert report.attributes["race"].equalized_odds_difference == 0.0
    # ... and balanced accuracy says it all.
    assert not report.passed
    assert report.balanced_accuracy == 0.5
    assert "balanced accuracy 0.50 < 0.55: hardly better than a constant answer (0.5)" in (
        report.reasons
    )
    assert any(
        r.startswith("race=African-American: balanced accuracy 0.5000 <= 0.5")
        for r in report.reasons
    )


# -- regression: a numeric target, judged on the groups' MAE and on R^2 -------------------------


def _regression_spec(**audit_limits: object) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": "demand",
            "features": [{"name": "x", "type": "float"}],
            "target": {"name": "units", "kind": "regression"},
            "sensitive": [{"name": "region", "type": "category", "categories": ["a", "b"]}],
            "promotion": {"audit": audit_limits},
        }
    )


class _Linear:
    """A regression model answering 3x, plus `extra` for rows of group b (read from x's sign:
    the tests put group b at negative x). Like LiveModel, it has no probabilities."""

    feature_names: list[str] = ["x"]

    def __init__(self, extra: float = 0.0) -> None:
        self.extra = extra

    def predict(self, X: np.ndarray) -> np.ndarray:
        x = np.asarray(X)[:, 0]
        return 3 * x + np.where(x < 0, self.extra, 0.0)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise TypeError("a regression model answers values: call predict")


def _regression_rows(n: int = 100) -> list[dict[str, Any]]:
    """Group a at x = 1..n, group b at x = -1..-n; labels 3x, off by +1 and -1 in turn."""
    rows = []
    for i in range(1, n + 1):
        for region, x in (("a", float(i)), ("b", float(-i))):
            label = 3 * x + (1.0 if i % 2 else -1.0)
            rows.append({"features": {"x": x, "region": region}, "inputs": [x], "label": label})
    return rows


def test_a_regression_model_close_to_the_labels_passes_with_each_groups_errors() -> None:
    report = audit_candidate(_regression_spec(mae_ratio_max=1.5), _Linear(), _regression_rows())
    assert report.passed and report.reasons == []
    assert report.kind == "regression" and report.n == 200
    assert report.mae == 1.0 and report.rmse == 1.0
    assert report.r2 is not None and report.r2 > 0.99
    region = report.attributes["region"]
    assert (region.mae_difference, region.mae_ratio) == (0.0, 1.0)
    a = region.groups["a"]
    assert (a.count, a.mae, a.rmse) == (100, 1.0, 1.0)
    assert a.mean_label == a.mean_prediction == 151.5
    assert a.selection_rate is None and a.false_positive_rate is None
    table = render_audit(report)
    assert "mean label" in table and "151.5000" in table
    assert "limits: MAE ratio <= 1.5, R^2 >= 0.05" in table
    assert "verdict: PASSED on 200 rows" in table


def test_a_regression_model_that_answers_the_mean_fails_on_r2_whatever_its_gaps() -> None:
    rows = _regression_rows()
    labels = [r["label"] for r in rows]
    mean = sum(labels) / len(labels)
    report = audit_regression(
        labels,
        [mean] * len(labels),
        {"region": [r["features"]["region"] for r in rows]},
        AuditThresholds(),
    )
    assert not report.passed
    assert report.r2 == 0.0
    assert report.reasons == [
        "R^2 0.00 < 0.05: hardly better than a constant answer (answering the mean scores 0)"
    ]


def test_a_regression_model_worse_for_one_group_fails_the_mae_gap_limits_naming_both() -> None:
    rows = _regression_rows()
    for row in rows:  # group b's labels are off by 3 instead of 1
        if row["features"]["region"] == "b":
            row["label"] += 2.0 if row["label"] > 3 * row["inputs"][0] else -2.0
    spec = _regression_spec(mae_ratio_max=1.5, mae_difference_max=1.0)
    report = audit_candidate(spec, _Linear(), rows)
    region = report.attributes["region"]
    assert (region.groups["a"].mae, region.groups["b"].mae) == (1.0, 3.0)
    assert (region.mae_difference, region.mae_ratio) == (2.0, 3.0)
    assert not report.passed
    assert report.reasons == [
        "region: MAE ratio 3.00 > 1.5 (MAE b 3, a 1)",
        "region: MAE difference 2 > 1 (MAE b 3, a 1)",
    ]
    # Off by default: the same model passes a task that sets no gap limit.
    assert audit_candidate(_regression_spec(), _Linear(), rows).passed


def test_small_groups_are_reported_but_left_out_of_the_regression_gaps() -> None:
    y_true = [float(v) for v in range(200)] + [0.0] * 10
    y_pred = [v + (1 if v % 2 else -1) for v in y_true[:200]] + [50.0] * 10
    groups = ["a", "b"] * 100 + ["tiny"] * 10
    limits = AuditThresholds(mae_ratio_max=1.1, min_group_size=30)
    report = audit_regression(y_true, y_pred, {"race": groups, "one": ["x"] * 210}, limits)
    race = report.attributes["race"]
    assert report.passed and report.reasons == []
    assert race.groups["tiny"].mae == 50.0 and not race.groups["tiny"].in_pass_fail
    assert race.excluded_groups == ("tiny",)
    assert (race.mae_difference, race.mae_ratio) == (0.0, 1.0)
    assert report.attributes["one"].mae_ratio is None
    assert "race: tiny excluded from pass/fail (fewer than 30 rows)" in report.notes
    assert "one: not judged, fewer than two groups with 30+ rows" in report.notes


def test_equal_labels_leave_r2_undefined_and_unjudged_with_a_note() -> None:
    report = audit_regression(
        [5.0] * 60, [4.0, 6.0] * 30, {"g": ["a"] * 30 + ["b"] * 30}, AuditThresholds()
    )
    assert report.r2 is None and report.mae == 1.0
    assert report.passed and report.reasons == []
    assert "every label is 5: R^2 undefined; the R^2 floor was not checked" in report.notes


@pytest.mark.parametrize(
    ("y_true", "y_pred", "sensitive", "message"),
    [
        ([1.0, float("nan")], [1.0, 2.0], {"g": ["a", "b"]}, "y_true: 1 values are not finite"),
        ([1.0, 2.0], [1.0, float("inf")], {"g": ["a", "b"]}, "y_pred: 1 values are not finite"),
        ([1.0, "x"], [1.0, 2.0], {"g": ["a", "b"]}, "y_true: expected a flat sequence"),
        ([[1.0], [2.0]], [1.0, 2.0], {"g": ["a", "b"]}, "y_true: expected a flat sequence"),
        ([1.0, 2.0], [1.0], {"g": ["a", "b"]}, "y_true has 2 rows but y_pred has 1"),
        ([1.0, 2.0], [1.0, 2.0], {"g": ["a"]}, "g: has 1 rows but y_true has 2"),
        ([1.0, 2.0], [1.0, 2.0], {}, "at least one attribute"),
        ([], [], {"g": []}, "no rows"),
    ],
)
def test_a_regression_audit_refuses_bad_inputs_saying_which(
    y_true: list[Any], y_pred: list[Any], sensitive: dict[str, list[Any]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        audit_regression(y_true, y_pred, sensitive, AuditThresholds())


def test_a_live_regression_audit_reports_mean_predictions_and_judges_nothing() -> None:
    served = [
        {"features": {"x": 1.0, "region": region}, "probability": None, "value": value}
        for region, value in [("a", 10.0), ("a", 20.0), ("b", 40.0)] * 20
    ]
    report = audit_live(_regression_spec(mae_ratio_max=1.5), served)
    assert report.kind == "regression" and report.n == 60
    assert report.passed and report.reasons == []
    a, b = report.attributes["region"].groups["a"], report.attributes["region"].groups["b"]
    assert (a.count, a.mean_prediction, b.count, b.mean_prediction) == (40, 15.0, 20, 40.0)
    assert a.mae is None and report.r2 is None
    assert report.unavailable == ["mae", "rmse", "r2", "mae_difference", "mae_ratio"]
    assert report.notes[-1].endswith("; limits not checked: MAE ratio, R^2")
    assert "verdict: PASSED on 60 rows" in render_audit(report)


def test_a_regression_report_round_trips_through_json() -> None:
    rows = _regression_rows(40)
    report = audit_candidate(_regression_spec(mae_difference_max=0.5), _Linear(2.0), rows)
    assert AuditReport.model_validate(json.loads(report.model_dump_json())) == report


def test_a_binary_report_dumps_no_regression_figure_and_reports_every_limit_in_force() -> None:
    report = audit([0, 1] * 40, [0, 1, 1, 1] * 20, {"g": ["a", "b"] * 40}, AuditThresholds())
    dump = report.model_dump()
    assert set(dump) == {
        *("n", "thresholds", "attributes", "passed", "reasons", "notes", "unavailable"),
        "balanced_accuracy",
    }
    assert set(dump["thresholds"]) == {
        "equalized_odds_difference_max",
        "demographic_parity_difference_max",
        "demographic_parity_ratio_min",
        "balanced_accuracy_min",
        "min_group_size",
        "min_rows",
        # The limits in force are all reported, a regression's included.
        *("mae_ratio_max", "mae_difference_max", "r2_min"),
    }
    attribute = dump["attributes"]["g"]
    assert set(attribute) == {
        "groups",
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equalized_odds_difference",
        "excluded_groups",
        "notes",
    }
    assert set(attribute["groups"]["a"]) == {
        "count",
        "positives",
        "selection_rate",
        "accuracy",
        "false_positive_rate",
        "false_negative_rate",
        "in_pass_fail",
        "balanced_accuracy",
    }
    # A report stored before regression audits reads back as a binary one.
    assert AuditReport.model_validate(dump).kind == "binary"


def _envelope(type_: str, payload: dict[str, Any], position: int) -> Envelope:
    return Envelope(
        type=type_,
        schema_version=1,
        stream_id="data-demand",
        producer=Producer(service="test", version="0"),
        payload=payload,
        position=position,
    )


@pytest.mark.parametrize(("kind", "labels"), [("regression", [2.5, 1.25]), ("binary", [1, 0])])
def test_the_unseen_window_keeps_a_regressions_labels_as_floats_and_classes_as_ints(
    kind: str, labels: list[float]
) -> None:
    observed = _envelope("ObservationRecorded", {"label": None, "features": {}}, 1)
    events = [
        _envelope("ObservationRecorded", {"label": labels[0], "features": {}}, 2),
        _envelope(
            "LabelRecorded", {"observation_id": str(observed.event_id), "label": labels[1]}, 3
        ),
    ]
    window = UnseenWindow(10, kind=kind)
    window.add(events)
    assert window.join({observed.event_id: observed}) == 0
    got = [r["label"] for r in window.rows]
    assert got == labels
    assert [type(v) for v in got] == [type(v) for v in labels]


# Multiclass: each class one against the rest, skill on the mean recall.

MULTICLASS = ("low", "mid", "high")


def _three_classes(n: int = 600, seed: int = 2) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, n), ["a" if v else "b" for v in rng.random(n) < 0.5]


def test_a_multiclass_model_close_to_the_labels_passes_with_each_class_audited_per_group() -> None:
    truth, groups = _three_classes()
    rng = np.random.default_rng(4)
    predicted = np.where(rng.random(len(truth)) < 0.85, truth, (truth + 1) % 3)
    report = audit_multiclass(
        truth.tolist(), predicted.tolist(), MULTICLASS, {"site": groups}, AuditThresholds()
    )
    assert report.passed, report.reasons
    assert report.kind == "multiclass"
    assert set(report.attributes) == {"site[low]", "site[mid]", "site[high]"}
    mid = report.attributes["site[mid]"].groups
    assert set(mid) == {"a", "b"} and all(0.7 < g.accuracy < 1 for g in mid.values())
    assert report.balanced_accuracy == pytest.approx(0.85, abs=0.05)
    # 1/3 + a tenth of the way to 1, as 0.55 is for two classes.
    assert report.balanced_accuracy_floor == pytest.approx(0.4)
    assert AuditReport.model_validate_json(report.model_dump_json()) == report


def test_a_constant_multiclass_model_fails_overall_and_in_every_judged_group() -> None:
    truth, groups = _three_classes()
    report = audit_multiclass(
        truth.tolist(), [1] * len(truth), MULTICLASS, {"site": groups}, AuditThresholds()
    )
    assert not report.passed
    assert report.balanced_accuracy == pytest.approx(1 / 3)
    assert any(
        "hardly better than a constant answer (0.33 with 3 classes)" in r for r in report.reasons
    )
    assert any(r.startswith("site=a:") for r in report.reasons)
    assert any(r.startswith("site=b:") for r in report.reasons)


def test_a_multiclass_gap_limit_names_the_class_and_the_attribute() -> None:
    truth, groups = _three_classes()
    predicted = truth.copy()
    # Group b's "high" rows are answered "low": its recall of "high" collapses.
    predicted[(np.array(groups) == "b") & (truth == 2)] = 0
    report = audit_multiclass(
        truth.tolist(),
        predicted.tolist(),
        MULTICLASS,
        {"site": groups},
        AuditThresholds(equalized_odds_difference_max=0.2),
    )
    assert not report.passed
    assert any(r.startswith("site[high]: equalized-odds difference") for r in report.reasons)


def test_a_multiclass_audit_refuses_labels_that_are_not_class_indices() -> None:
    with pytest.raises(ValueError, match="class indices 0..2"):
        audit_multiclass([0, 3], [0, 1], MULTICLASS, {"s": ["a", "b"]}, AuditThresholds())
    with pytest.raises(ValueError, match="class indices"):
        audit_multiclass([0, 1.5], [0, 1], MULTICLASS, {"s": ["a", "b"]}, AuditThresholds())


def test_a_live_multiclass_audit_reports_each_classs_selection_rate_per_group() -> None:
    spec = TaskSpec.model_validate(
        {
            "name": "triage",
            "features": [{"name": "x"}],
            "target": {"name": "level", "kind": "multiclass", "classes": list(MULTICLASS)},
            "sensitive": [{"name": "site", "type": "category", "categories": ["a", "b"]}],
        }
    )
    served = [
        {"features": {"x": 0.0, "site": "a" if i % 2 else "b"}, "value": MULTICLASS[i % 3]}
        for i in range(120)
    ]
    report = audit_live(spec, served)
    assert report.kind == "multiclass" and report.passed
    assert report.unavailable and report.balanced_accuracy is None
    rates = {g: m.selection_rate for g, m in report.attributes["site[low]"].groups.items()}
    assert rates == {"a": pytest.approx(1 / 3), "b": pytest.approx(1 / 3)}


def test_a_multiclass_report_renders_each_class_and_the_floor_it_applied() -> None:
    truth, groups = _three_classes()
    report = audit_multiclass(
        truth.tolist(), truth.tolist(), MULTICLASS, {"site": groups}, AuditThresholds()
    )
    text = render_audit(report)
    assert "site[high]" in text and "as far from a constant as, with two classes" in text
    assert "against the floor of 0.40 for these classes" in text
    assert "PASSED" in text


def test_a_class_absent_from_one_group_does_not_fail_a_perfect_multiclass_model() -> None:
    truth, groups = _three_classes()
    truth[(np.array(groups) == "b") & (truth == 2)] = 1  # no "high" in group b
    report = audit_multiclass(
        truth.tolist(),
        truth.tolist(),
        MULTICLASS,
        {"site": groups},
        AuditThresholds(equalized_odds_difference_max=0.1),
    )
    assert report.passed, report.reasons
    assert set(report.attributes["site[high]"].groups) == {"a", "b"}
    assert any("site[high]: b left out of the equalized-odds" in n for n in report.notes)


def test_answering_a_class_to_a_group_it_never_occurs_in_still_fails_demographic_parity() -> None:
    truth, groups = _three_classes()
    in_b = np.array(groups) == "b"
    truth[in_b & (truth == 2)] = 1  # no "high" in group b...
    predicted = truth.copy()
    rng = np.random.default_rng(9)
    predicted[in_b & (rng.random(len(truth)) < 0.8)] = 2  # ...but 80% of b answered "high"
    report = audit_multiclass(
        truth.tolist(),
        predicted.tolist(),
        MULTICLASS,
        {"site": groups},
        AuditThresholds(demographic_parity_difference_max=0.1),
    )
    assert not report.passed
    assert any(r.startswith("site[high]: demographic-parity difference") for r in report.reasons)


def test_a_multiclass_candidate_is_audited_on_its_most_probable_class() -> None:
    spec = TaskSpec.model_validate(
        {
            "name": "triage",
            "features": [{"name": "x"}],
            "target": {"name": "level", "kind": "multiclass", "classes": list(MULTICLASS)},
            "sensitive": [{"name": "site", "type": "category", "categories": ["a", "b"]}],
        }
    )
    truth, groups = _three_classes()

    class Knows:
        """Answers the row's class (its input) with p 0.6, the others 0.2."""

        feature_names = ["x"]

        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            out = np.full((len(X), 3), 0.2)
            out[np.arange(len(X)), X[:, 0].astype(int)] = 0.6
            return out

    rows = [
        {"inputs": [float(t)], "features": {"x": float(t), "site": g}, "label": int(t)}
        for t, g in zip(truth, groups, strict=True)
    ]
    report = audit_candidate(spec, Knows(), rows)
    assert report.kind == "multiclass" and report.passed, report.reasons
    assert report.balanced_accuracy == 1.0
    assert set(report.attributes) == {f"site[{c}]" for c in MULTICLASS}
