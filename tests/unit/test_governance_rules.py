"""Governance's pure rules: the promotion gate, deployment folding, keys and roles, lineage,
and the audit maths against Fairlearn's own functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
)

from services.governance.audit import audit, audit_selection
from services.governance.audits import sensitive_use
from services.governance.auth import (
    GRANTS,
    KeyFormatError,
    Role,
    allows,
    hash_secret,
    new_key,
    parse_bootstrap,
    parse_key,
    secret_matches,
)
from services.governance.lineage import models_that_learned, saw
from services.governance.policy import AuditResult, Verdict, decide
from services.governance.projections import model_status
from shared.deployments import DeploymentState
from shared.tasks import AuditThresholds, Feature, PromotionPolicy, Target, TaskSpec

GOOD, WORSE = {"recent_accuracy": 0.8}, {"recent_accuracy": 0.7}


def test_the_first_model_is_promoted_and_a_worse_one_refused_with_the_figures():
    policy = PromotionPolicy()
    assert decide(policy, GOOD, None).verdict is Verdict.PROMOTE
    refused = decide(policy, WORSE, GOOD)
    assert refused.verdict is Verdict.REFUSE
    assert refused.reasons == ["recent accuracy 0.7000 < champion 0.8000 - tolerance 0.0"]


def test_a_failed_audit_refuses_with_every_reason_and_a_missing_one_too():
    policy = PromotionPolicy(require_audit=True)
    failed = AuditResult(False, ["race: equalized-odds difference 0.40 > 0.3"])
    decision = decide(policy, WORSE, GOOD, audit=failed)
    assert decision.verdict is Verdict.REFUSE
    assert decision.reasons == [
        "recent accuracy 0.7000 < champion 0.8000 - tolerance 0.0",
        "bias audit failed: race: equalized-odds difference 0.40 > 0.3",
    ]
    assert decide(policy, GOOD, None).reasons == [
        "no bias audit of this version (the policy requires one)"
    ]
    assert decide(policy, GOOD, None, audit=AuditResult(True)).promote


def test_a_model_needing_approvals_waits_until_enough_distinct_people_approve():
    policy = PromotionPolicy(require_approval=True, approvals_required=2)
    waiting = decide(policy, GOOD, None, approvals=["ann", "ann"])
    assert waiting.verdict is Verdict.AWAIT and "awaiting approval: 1 of 2" in waiting.reasons
    assert decide(policy, GOOD, None, approvals=["ann", "bob"]).promote
    rejected = decide(policy, GOOD, None, approvals=["ann", "bob"], rejections=["cy: no"])
    assert rejected.verdict is Verdict.REFUSE and rejected.reasons == ["rejected by cy: no"]


def test_the_deployment_stream_folds_into_champion_approvals_and_verdicts():
    events = [
        ("ApprovalRequested", 1, {"model_version": 1}),
        ("ApprovalGranted", 2, {"model_version": 1, "by": "ann", "reason": "ok"}),
        ("ModelPromoted", 3, {"model_version": 1, "artifact_sha256": "a"}),
        ("PromotionRefused", 4, {"model_version": 2}),
        ("ApprovalRejected", 5, {"model_version": 3, "by": "bob", "reason": "drift"}),
        ("ModelRolledBack", 6, {"model_version": 1, "artifact_sha256": "a"}),
    ]
    state = DeploymentState.fold(events)
    assert (state.champion, state.stream_version) == (1, 6)
    assert state.approvals == {1: ["ann"]} and state.rejections == {3: ["bob: drift"]}
    assert state.decided(1) and state.decided(2) and not state.decided(3)


def test_a_models_status_comes_from_its_newest_decision_unless_it_is_the_champion():
    assert model_status(3, 3, ["PromotionRefused"]) == "champion"
    assert model_status(2, 3, ["ModelPromoted"]) == "retired"
    assert model_status(4, 3, ["ApprovalRequested", "ApprovalGranted"]) == "awaiting_approval"
    assert model_status(4, 3, ["ApprovalRequested", "ApprovalRejected"]) == "rejected"
    assert model_status(5, 3, []) == "candidate"
    assert model_status(6, 3, [], "challenger") == "challenger"
    assert model_status(6, 3, ["ShadowStarted", "ShadowStopped", "CanaryStarted"]) == "canary"
    promoted_then_ended = ["CanaryStarted", "ModelPromoted", "CanaryEnded"]
    assert model_status(6, 7, promoted_then_ended) == "retired"
    assert model_status(6, 6, promoted_then_ended) == "champion"
    assert model_status(2, 3, ["ModelPromoted", "CanaryStarted"]) == "canary"  # tried again
    assert model_status(2, 3, ["ModelPromoted", "CanaryStarted", "CanaryEnded"]) == "retired"


def test_keys_are_checked_by_hash_and_roles_include_viewer():
    key_id, key, digest = new_key()
    parsed_id, secret = parse_key(key)
    assert parsed_id == key_id and secret_matches(secret, digest)
    assert not secret_matches(secret + "x", digest) and digest == hash_secret(secret)
    assert secret not in digest
    for bad in ("", "cnt_xyz_secret", f"key_{key_id}_{secret}"):
        with pytest.raises(KeyFormatError):
            parse_key(bad)
    assert all(allows(role, Role.VIEWER) for role in Role)
    assert allows(Role.ADMIN, Role.APPROVER) and allows(Role.ADMIN, Role.OPERATOR)
    assert not allows(Role.OPERATOR, Role.APPROVER) and not allows(Role.APPROVER, Role.OPERATOR)
    assert GRANTS[Role.ADMIN] == frozenset(Role)


def test_bootstrap_keys_parse_and_refuse_malformed_entries_without_echoing_them():
    _, key, _ = new_key()
    assert parse_bootstrap(f"ci:admin:{key}\n# comment\n") == [("ci", Role.ADMIN, key)]
    with pytest.raises(KeyFormatError, match="unknown role") as caught:
        parse_bootstrap(f"ci:boss:{key}")
    assert key not in str(caught.value)
    with pytest.raises(KeyFormatError):
        parse_bootstrap("ci:admin:not-a-key")


def test_a_model_saw_the_events_whose_labels_fall_in_its_learned_range():
    models = [
        {"model_version": 1, "first_position": 10, "last_position": 100},
        {"model_version": 2, "first_position": 10, "last_position": 200},
    ]
    assert saw(models[0], 50, 50) and not saw(models[0], 150, 160)
    assert models_that_learned(models, [150]) == [2]
    assert models_that_learned(models, [5]) == []
    assert models_that_learned(models, [5, 60]) == [1, 2]
    assert models_that_learned(models, []) == []


def test_the_sensitive_attributes_may_not_be_model_features_unless_the_spec_allows_it():
    spec = TaskSpec(
        name="t",
        features=(Feature(name="x"),),
        sensitive=(Feature(name="race", type="category", categories=("a", "b")),),
        target=Target(name="y"),
    )
    assert [f.name for f in spec.model_features] == ["x"]
    assert sensitive_use(spec, ["x"]) == []
    assert sensitive_use(spec, ["x", "race"]) == [
        "model uses sensitive attribute 'race' as a feature"
    ]
    allowed = spec.model_copy(update={"sensitive_as_features": True})
    assert sensitive_use(allowed, ["x", "race"]) == []


def test_the_audits_gaps_equal_fairlearns_own_functions():
    rng = np.random.default_rng(3)
    n = 3000
    y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
    groups = rng.choice(["a", "b", "c", "tiny"], n, p=[0.5, 0.3, 0.19, 0.01])
    report = audit(y, p, {"g": groups}, AuditThresholds(min_group_size=50))
    judged = groups != "tiny"
    kwargs = {"y_true": y[judged], "y_pred": p[judged], "sensitive_features": groups[judged]}
    result = report.attributes["g"]
    assert result.excluded_groups == ("tiny",)
    assert result.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(**kwargs)
    )
    assert result.demographic_parity_ratio == pytest.approx(demographic_parity_ratio(**kwargs))
    assert result.equalized_odds_difference == pytest.approx(equalized_odds_difference(**kwargs))


def test_a_live_audit_reports_selection_rates_and_names_what_needs_outcomes():
    groups = ["a"] * 100 + ["b"] * 100
    predicted = [1] * 60 + [0] * 40 + [1] * 20 + [0] * 80
    limits = AuditThresholds(
        demographic_parity_difference_max=0.3, equalized_odds_difference_max=0.1
    )
    report = audit_selection(predicted, {"g": groups}, limits)
    result = report.attributes["g"]
    assert result.groups["a"].selection_rate == 0.6 and result.groups["b"].selection_rate == 0.2
    assert result.demographic_parity_difference == pytest.approx(0.4)
    assert result.equalized_odds_difference is None and result.groups["a"].accuracy is None
    assert not report.passed and report.reasons == ["g: demographic-parity difference 0.40 > 0.3"]
    assert "equalized_odds_difference" in report.unavailable
    assert any("equalized-odds limit was not checked" in note for note in report.notes)


def test_a_candidate_no_better_than_the_majority_class_on_the_same_rows_is_refused():
    from services.governance.policy import metric_check
    from shared.tasks import PromotionPolicy

    candidate = {
        "champion_version": 3.0,
        "window_n": 500.0,
        "window_accuracy": 0.61,
        "champion_window_accuracy": 0.64,
        "window_majority_accuracy": 0.62,
    }
    # Within the tolerance of the champion, but no better than a constant: refused.
    ok, reason = metric_check(PromotionPolicy(tolerance=0.05), candidate, {}, 3)
    assert not ok
    assert reason.startswith("accuracy 0.6100 <= 0.6200, what always answering the majority")


def test_where_the_champion_is_no_better_than_a_constant_a_candidate_at_least_as_good_replaces_it():
    # A task's first models: refusing the candidate would keep callers on the worse one.
    from services.governance.policy import metric_check
    from shared.tasks import PromotionPolicy

    candidate = {
        "champion_version": 3.0,
        "window_n": 500.0,
        "window_accuracy": 0.61,
        "champion_window_accuracy": 0.55,
        "window_majority_accuracy": 0.62,
    }
    ok, reason = metric_check(PromotionPolicy(), candidate, {}, 3)
    assert ok and reason == "accuracy 0.6100 >= champion 0.5500 on the same 500 rows"
    worse = {**candidate, "window_accuracy": 0.54}
    ok, reason = metric_check(PromotionPolicy(tolerance=0.05), worse, {}, 3)
    assert not ok and "no better than a constant" in reason


def test_a_candidate_compared_with_the_champion_before_the_newest_is_judged_on_those_same_rows():
    # The trainer had not heard of v4 yet: it compared with v3 on the same rows after a drift.
    # Each model's own accuracy at its training time would put post-drift against pre-drift.
    from services.governance.policy import metric_check
    from shared.tasks import PromotionPolicy

    candidate = {
        "champion_version": 3.0,
        "window_n": 400.0,
        "window_accuracy": 0.90,
        "champion_window_accuracy": 0.85,
        "recent_accuracy": 0.90,
    }
    ok, reason = metric_check(PromotionPolicy(), candidate, {"recent_accuracy": 0.99}, 4)
    assert ok and reason == "accuracy 0.9000 >= champion v3 0.8500 on the same 400 rows"
    worse = {**candidate, "window_accuracy": 0.80}
    ok, reason = metric_check(PromotionPolicy(), worse, {"recent_accuracy": 0.5}, 4)
    assert not ok and reason.startswith("accuracy 0.8000 < champion v3 0.8500")


def test_a_shortfall_within_noise_on_the_same_rows_is_promoted_and_a_shown_one_refused():
    # The candidate is the champion's line with more rows learned: 3 rows in 1,000 behind is
    # noise; 30 behind, with 40 of the 50 rows where they differ the champion's, is not.
    from services.governance.policy import metric_check, noise_p_value
    from shared.tasks import PromotionPolicy

    close = {
        "champion_version": 7.0,
        "window_n": 1000.0,
        "window_accuracy": 0.940,
        "champion_window_accuracy": 0.943,
        "window_only_candidate_right": 20.0,
        "window_only_champion_right": 23.0,
        "window_majority_accuracy": 0.55,
    }
    ok, reason = metric_check(PromotionPolicy(), close, {}, 7)
    assert ok and reason.startswith("accuracy 0.9400 < champion 0.9430 on the same 1000 rows")
    assert "within noise: McNemar p = 0.38 > 0.05" in reason
    # The exact one-sided test: P(X >= 23) for X ~ Binomial(43, 1/2).
    assert noise_p_value(close) == pytest.approx(
        sum(math.comb(43, k) for k in range(23, 44)) / 2**43
    )
    shown = {
        **close,
        "window_accuracy": 0.913,
        "window_only_candidate_right": 10.0,
        "window_only_champion_right": 40.0,
    }
    ok, reason = metric_check(PromotionPolicy(), shown, {}, 7)
    assert not ok and reason.startswith("accuracy 0.9130 < champion 0.9430 - tolerance 0.0")
    assert reason.endswith("(McNemar p = 1.19e-05 <= 0.05)")
    # significance 1.0: any shortfall refuses, as before the test existed.
    ok, _ = metric_check(PromotionPolicy(significance=1.0), close, {}, 7)
    assert not ok
