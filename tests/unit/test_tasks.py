"""Task specs: content-hash versions, and record validation against a spec."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.tasks import (
    RecordError,
    SpecFileError,
    TaskSpec,
    feature_vector,
    load_specs,
    validate_features,
    validate_label,
)

SPEC = TaskSpec.model_validate(
    {
        "name": "t",
        "features": [
            {"name": "n", "type": "int"},
            {"name": "x", "type": "float"},
            {"name": "c", "type": "category", "categories": ["a", "b"]},
        ],
        "target": {"name": "y"},
        "sensitive": [{"name": "s", "type": "category", "categories": ["p", "q"]}],
    }
)


def test_a_spec_version_is_its_content_hash():
    same = TaskSpec.model_validate(SPEC.model_dump())
    changed = TaskSpec.model_validate({**SPEC.model_dump(), "description": "other"})
    assert same.version == SPEC.version != changed.version


def test_shipped_specs_load():
    assert {"elec", "compas"} <= set(load_specs("tasks"))


def test_valid_features_are_coerced_and_sensitive_attributes_kept_out_of_the_model():
    features = validate_features(SPEC, {"n": 3.0, "x": 1, "c": "b", "s": "q"})
    assert features == {"n": 3, "x": 1.0, "c": "b", "s": "q"}
    assert feature_vector(SPEC, features) == [3.0, 1.0, 1.0]  # no "s": not a model feature


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"n": 1e300, "x": 1.0, "c": "a", "s": "p"}, "out of range"),
        ({"n": 1, "x": 1.7e308, "c": "a", "s": "p"}, r"x: 1.7e\+308 is out of range"),
        ({"n": 1, "x": -1e101, "c": "a", "s": "p"}, r"out of range \(\|x\| <= 1e100\)"),
        ({"n": 2**60, "x": 1.0, "c": "a", "s": "p"}, "out of range"),
        ({"n": 1.5, "x": 1.0, "c": "a", "s": "p"}, "expected an integer"),
        ({"n": 1, "x": float("nan"), "c": "a", "s": "p"}, "finite"),
        ({"n": 1, "x": "1", "c": "a", "s": "p"}, "expected a number"),
        ({"n": 1, "x": 1.0, "c": "z", "s": "p"}, "not one of"),
        ({"n": 1, "x": 1.0, "c": "a"}, "s: is required"),
        ({"n": 1, "x": 1.0, "c": "a", "s": "p", "extra": 1}, "unknown feature"),
    ],
)
def test_a_record_that_does_not_fit_is_refused_with_the_field_and_why(features, message):
    with pytest.raises(RecordError, match=message):
        validate_features(SPEC, features)


def test_floats_up_to_the_bound_are_taken_as_they_are():
    features = validate_features(SPEC, {"n": 1, "x": -1e100, "c": "a", "s": "p"})
    assert features["x"] == -1e100


def test_a_missing_sensitive_attribute_is_refused_saying_what_it_is_kept_for():
    row = {"n": 1, "x": 0.5, "c": "a"}
    with pytest.raises(RecordError) as refused:
        validate_features(SPEC, row)
    assert str(refused.value) == (
        "s: is required: a sensitive attribute the model does not use, kept with every row and "
        "prediction for the task's bias audits"
    )
    used = SPEC.model_copy(update={"sensitive_as_features": True})
    with pytest.raises(RecordError, match=r"^s: is required \(a sensitive attribute, a model"):
        validate_features(used, row)
    with pytest.raises(RecordError, match=r"^x: is required$"):
        validate_features(SPEC, {"n": 1, "c": "a", "s": "p"})


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ([{"min_data_in_leaf": 40}], "min_data_in_leaf"),  # not a setting the search changes
        ([{"rounds": 0}], "rounds"),
        ([{"num_leaves": 1}], "num_leaves"),
        ([{"window": 1}], "window"),
        ([{"learning_rate": 0}], "learning_rate"),
        (250, "must be a list of changes"),
        ({"window": 250}, "must be a list of changes"),
    ],
)
def test_a_learner_search_that_cannot_run_is_refused_when_the_spec_is_loaded(search, message):
    learner = {"params": {"short_search": search}}
    with pytest.raises(ValueError, match=message):
        TaskSpec.model_validate({**SPEC.model_dump(), "learner": learner})
    good = {"params": {"short_search": [{"window": 250}, {"learning_rate": 0.3}]}}
    assert TaskSpec.model_validate({**SPEC.model_dump(), "learner": good}).learner.params


REGRESSION = TaskSpec.model_validate(
    {
        "name": "demand",
        "features": [{"name": "x", "type": "float"}],
        "target": {"name": "units", "kind": "regression"},
    }
)


def test_a_binary_target_keeps_the_version_it_had_before_task_kinds_existed():
    # The hashes of the shipped specs before `target.kind` was added (2026-11-29).
    specs = load_specs("tasks")
    assert specs["elec"].version.startswith("88124e8b9074")
    assert specs["compas"].version.startswith("bc4fee1e1118")
    explicit = {**SPEC.model_dump(), "target": {"name": "y", "kind": "binary"}}
    assert TaskSpec.model_validate(explicit).version == SPEC.version != REGRESSION.version


def test_a_regression_target_takes_finite_numbers_and_no_classes():
    assert validate_label(REGRESSION, 3) == 3.0 and validate_label(REGRESSION, -2.5) == -2.5
    bad_labels = [
        (True, "expected a number"),
        ("7", "expected a number"),
        (float("nan"), "finite"),
        (1e300, "out of range"),
        (10**400, "out of range"),
    ]
    for bad, why in bad_labels:
        with pytest.raises(RecordError, match=why):
            validate_label(REGRESSION, bad)
    with pytest.raises(ValueError, match="takes no `classes`"):
        TaskSpec.model_validate(
            {
                **REGRESSION.model_dump(),
                "target": {"name": "u", "kind": "regression", "classes": [1, 2]},
            }
        )
    with pytest.raises(RecordError, match="not one of"):
        validate_label(SPEC, 2.5)


def _multiclass(online: list[dict], classes: list | None = None) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": "triage",
            "features": [{"name": "x"}],
            "target": {
                "name": "level",
                "kind": "multiclass",
                "classes": classes or ["a", "b", "c"],
            },
            "online_features": online,
        }
    )


@pytest.mark.parametrize("kind", ["residual", "label_mean"])
def test_a_multiclass_spec_refuses_online_features_that_read_labels_as_numbers(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"a {kind} reads labels"):
        _multiclass([{"name": "f", "kind": kind, "window": 5}])


def test_a_multiclass_last_label_default_must_not_be_a_class_index() -> None:
    with pytest.raises(ValidationError, match="default 0 is the index of class 'a'"):
        _multiclass([{"name": "f", "kind": "last_label", "default": 0.0}])
    assert _multiclass([{"name": "f", "kind": "last_label", "default": -1.0}]).online_features
    assert _multiclass([{"name": "f", "kind": "last_label"}]).online_features  # 0.5


def test_multiclass_classes_must_be_distinct_as_text() -> None:
    with pytest.raises(ValidationError, match="distinct as text"):
        _multiclass([], classes=[1, "1", 2])


@pytest.mark.parametrize(
    "classes, message",
    [
        ([1, 1.0, 2], "1.0 repeats a class"),
        ([2, 3, 2.0], "2.0 repeats a class"),
        (["a", "b", "a"], "'a' repeats a class"),
        ([float("nan"), 1, 2], "not nan"),
        ([float("inf"), 1, 2], "not inf"),
        ([None, 1, 2], "not None"),
        (["", "a", "b"], "not ''"),
        ([[1], 2, 3], r"not \[1\]"),
        ([{"a": 1}, 2, 3], "not {'a': 1}"),
    ],
)
def test_multiclass_classes_are_plain_values_that_no_label_could_confuse(classes, message) -> None:
    """Two classes a label could both name (1 and 1.0) leave the second never learned; a NaN
    class equals no label; None or a list is no class a caller could send."""
    with pytest.raises(ValidationError, match=message):
        _multiclass([], classes=classes)


def test_a_boolean_class_and_a_number_are_different_classes() -> None:
    spec = _multiclass([], classes=[True, 1, 2])
    assert [validate_label(spec, v) for v in (True, 1, 1.0, 2)] == [0, 1, 1, 2]
    with pytest.raises(RecordError, match="not one of"):
        validate_label(spec, False)


def test_a_refused_spec_file_is_named_with_every_reason(tmp_path) -> None:
    bad = tmp_path / "triage.yaml"
    bad.write_text(
        "name: triage\nfeatures: [{name: x, type: text}]\n"
        "target: {name: c, kind: multiclass, classes: [1, 1.0, 2]}\n"
    )
    with pytest.raises(SpecFileError) as refused:
        load_specs(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{bad}: ") and "\n" not in message
    assert "features.0.type" in message and "1.0 repeats a class" in message
    (tmp_path / "triage.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecFileError, match="not YAML"):
        load_specs(tmp_path)
