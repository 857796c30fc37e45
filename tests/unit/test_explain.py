"""Explanations of every task kind: the terms add up to what serving answered, in its unit."""

from __future__ import annotations

import math

import lightgbm as lgb
import numpy as np
import pytest

from services.governance.explain import (
    CLIPPED,
    ONLINE_LEARNING,
    UnknownClass,
    global_importance,
    prediction_contributions,
)
from shared import model_codec
from shared.tasks import TaskSpec

PARAMS = {"verbose": -1, "num_threads": 1, "deterministic": True, "min_data_in_leaf": 5}


def spec(kind: str = "binary", **target: object) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": "t",
            "features": [{"name": "x"}, {"name": "z"}],
            "target": {"name": "y", "kind": kind, **target},
            "online_features": [{"name": "last", "kind": "last_label", "default": -1.0}],
        }
    )


def linear(*coef: float) -> model_codec.LinearMember:
    n = len(coef)
    return model_codec.LinearMember(tuple(coef), 0.0, (0.0,) * n, (1.0,) * n, 5.0)


NAMES = ["x", "z", "last"]


def class_model(seed: int) -> bytes:
    """A binary model of a tree and a linear member over x, z, last."""
    rng = np.random.default_rng(seed)
    X = rng.random((200, 3))
    y = (X[:, seed % 2] > 0.5).astype(float)
    tree = lgb.train({**PARAMS, "objective": "binary"}, lgb.Dataset(X, y), num_boost_round=5)
    members: list[tuple[float, model_codec.Member]] = [
        (0.8, tree),
        (0.5, linear(seed * 0.1, -0.3, 0.2)),
    ]
    return model_codec.encode(n_features=3, members=members, feature_names=NAMES)


def test_a_binary_explanation_adds_what_the_model_learned_online_since_it_was_published():
    binary = spec()
    predictor = model_codec.decode(
        model_codec.encode(
            n_features=3, members=[(1.0, linear(1.0, 0.0, 2.0))], feature_names=NAMES
        )
    )
    published = prediction_contributions(binary, predictor, {"x": 0.5, "z": 1.0}, {"last": 1.0})
    assert published["logit"] == 2.5 and published["unit"] == "log-odds of class 1"
    assert {c["feature"] for c in published["contributions"]} == set(NAMES)
    served = 1 / (1 + math.exp(-3.0))  # serving's model had moved on: logit 3.0
    explained = prediction_contributions(
        binary, predictor, {"x": 0.5, "z": 1.0}, {"last": 1.0}, served
    )
    extra = [c for c in explained["contributions"] if c["feature"] == ONLINE_LEARNING]
    assert extra and math.isclose(extra[0]["contribution"], 0.5)
    assert math.isclose(explained["sum_of_contributions"], 3.0)
    assert math.isclose(explained["probability"], served)


def test_what_a_bound_took_off_a_clipped_score_is_a_term_so_the_terms_still_add_up():
    """A member's raw score past its bound (a pure leaf, a huge input) is clipped in the answer
    but not in its TreeSHAP or linear terms: the difference is a term of its own."""
    binary = spec()
    member = linear(100.0, 0.0, 0.0)  # a raw score of 100 at x = 1, clipped to 8
    data = model_codec.encode(n_features=3, members=[(1.0, member)], feature_names=NAMES, clip=8.0)
    predictor = model_codec.decode(data)
    served = 1 / (1 + math.exp(-9.0))  # serving's copy had moved on to 9
    explained = prediction_contributions(binary, predictor, {"x": 1.0, "z": 0.0}, {}, served)
    by_name = {c["feature"]: c["contribution"] for c in explained["contributions"]}
    assert by_name["x"] == pytest.approx(100.0)
    assert by_name[CLIPPED] == pytest.approx(8.0 - 100.0)
    assert by_name[ONLINE_LEARNING] == pytest.approx(1.0)
    total = sum(by_name.values()) + explained["bias"]
    assert total == pytest.approx(9.0) and explained["logit"] == pytest.approx(9.0)


def test_a_regression_explanation_is_in_the_targets_units_and_adds_up_to_the_served_value():
    rng = np.random.default_rng(3)
    X = rng.random((300, 3))
    scale = model_codec.TargetScale(center=120.0, scale=40.0)
    y = 2.0 * X[:, 0] - X[:, 1]  # the standardised target
    tree = lgb.train({**PARAMS, "objective": "regression"}, lgb.Dataset(X, y), num_boost_round=8)
    members: list[tuple[float, model_codec.Member]] = [(0.6, tree), (0.4, linear(1.5, -0.5, 0.1))]
    predictor = model_codec.decode(
        model_codec.encode(
            n_features=3, members=members, feature_names=NAMES, target=scale, bias=0.1
        )
    )
    regression = spec("regression")
    row, online = {"x": 0.9, "z": 0.2}, {"last": 130.0}
    value = float(predictor.predict(np.array([[0.9, 0.2, 130.0]]))[0])
    published = prediction_contributions(regression, predictor, row, online)
    assert published["kind"] == "regression" and "y" in published["unit"]
    assert math.isclose(published["value"], value, rel_tol=1e-9)
    terms = sum(c["contribution"] for c in published["contributions"])
    assert math.isclose(terms + published["bias"], value, rel_tol=1e-9)
    assert ONLINE_LEARNING not in {c["feature"] for c in published["contributions"]}
    # Serving's copy had learned on: its value differs by one more term, in the same units.
    served = prediction_contributions(regression, predictor, row, online, value + 7.5)
    extra = [c for c in served["contributions"] if c["feature"] == ONLINE_LEARNING]
    assert extra and math.isclose(extra[0]["contribution"], 7.5, rel_tol=1e-6)
    assert math.isclose(served["value"], value + 7.5)
    terms = sum(c["contribution"] for c in served["contributions"])
    assert math.isclose(terms + served["bias"], value + 7.5, rel_tol=1e-9)


def test_a_multiclass_explanation_explains_the_served_class_or_the_one_asked_for():
    multiclass = spec("multiclass", classes=["low", "mid", "high"])
    predictor = model_codec.decode_any(
        model_codec.encode_one_vs_rest([class_model(seed) for seed in (1, 2, 3)])
    )
    assert isinstance(predictor, model_codec.OneVsRestPredictor)
    row, online = {"x": 0.8, "z": 0.1}, {"last": 2.0}
    published = predictor.predict_proba(np.array([[0.8, 0.1, 2.0]]))[0]
    served = [0.2, 0.1, 0.7]  # serving's copy had moved on: it answered "high"
    explained = prediction_contributions(multiclass, predictor, row, online, served)
    assert explained["class"] == "high" and "high against the rest" in explained["unit"]
    terms = sum(c["contribution"] for c in explained["contributions"])
    high = predictor.per_class[2]
    own = float(high.logits(np.array([[0.8, 0.1, 2.0]]))[0])
    assert math.isclose(terms + explained["bias"], own, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(explained["probability"], published[2])
    assert [c["served_probability"] for c in explained["classes"]] == served
    assert math.isclose(sum(c["probability"] for c in explained["classes"]), 1.0)
    # Another class on request; without a served answer, the published version's class.
    asked = prediction_contributions(multiclass, predictor, row, online, served, class_name="low")
    assert asked["class"] == "low"
    alone = prediction_contributions(multiclass, predictor, row, online)
    assert alone["class"] == ["low", "mid", "high"][int(np.argmax(published))]
    with pytest.raises(UnknownClass, match="'urgent' is not a class"):
        prediction_contributions(multiclass, predictor, row, online, served, class_name="urgent")


def test_a_multiclass_models_importance_sums_its_classes_and_keeps_each():
    per_class = [model_codec.decode(class_model(seed)) for seed in (1, 2, 3)]
    predictor = model_codec.decode_any(
        model_codec.encode_one_vs_rest([class_model(seed) for seed in (1, 2, 3)])
    )
    importance = global_importance(predictor, ("low", "mid", "high"))
    assert [c["class"] for c in importance["classes"]] == ["low", "mid", "high"]
    assert "notes" not in importance
    summed = {f["feature"]: f["gain"] for f in importance["features"]}
    for name in NAMES:
        expected = sum(p.feature_importance()[name] for p in per_class)
        assert math.isclose(summed[name], expected)
    assert math.isclose(sum(f["share"] for f in importance["features"]), 1.0)
    # The classes of seeds 1 and 3 learn z, seed 2's learns x: z leads the sum, x class 1's.
    assert importance["features"][0]["feature"] == "z"
    assert [c["features"][0]["feature"] for c in importance["classes"]] == ["z", "x", "z"]


def test_a_model_without_trees_says_why_its_importance_is_zero():
    binary = model_codec.decode(
        model_codec.encode(
            n_features=3, members=[(1.0, linear(1.0, 0.0, 2.0))], feature_names=NAMES
        )
    )
    importance = global_importance(binary)
    assert all(f["gain"] == 0 for f in importance["features"])
    assert "no tree member" in importance["notes"]
    linear_class = model_codec.encode(
        n_features=3, members=[(1.0, linear(1.0, 0.0, 2.0))], feature_names=NAMES
    )
    mixed = model_codec.decode_any(
        model_codec.encode_one_vs_rest([class_model(1), linear_class, class_model(3)])
    )
    assert "classes [2]" in global_importance(mixed, (1, 2, 3))["notes"]
