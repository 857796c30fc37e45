"""Bias audits: Fairlearn figures per group, limits judged, small groups reported but not judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.governance.audit import AuditReport, audit, render_audit
from services.governance.compas import compas_score_audit, load_compas
from shared.tasks import AuditThresholds, load_spec

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
