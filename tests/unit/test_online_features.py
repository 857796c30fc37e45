"""Online features: what each kind computes, point in time, per entity, what a spec may declare."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from pydantic import ValidationError

from shared.features import OnlineFold
from shared.tasks import LABEL_KINDS, MAX_ABS_FLOAT, TaskSpec


def spec(*online: dict, sensitive: bool = False) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": "t",
            "features": [{"name": "x"}, {"name": "n", "type": "int"}],
            "target": {"name": "y"},
            "sensitive": [{"name": "g", "type": "category", "categories": ["a", "b"]}]
            if sensitive
            else [],
            "online_features": list(online),
        }
    )


ALL = spec(
    {"name": "last", "kind": "last_label"},
    {"name": "mean2", "kind": "label_mean", "window": 2},
    {"name": "age", "kind": "label_age"},
    {"name": "count", "kind": "count"},
    {"name": "x_mean3", "kind": "mean", "source": "x", "window": 3},
    {"name": "x_dev3", "kind": "deviation", "source": "x", "window": 3},
    {"name": "task_count", "kind": "count", "scope": "task"},
)


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


def named(fold: OnlineFold, values: list[float]) -> dict[str, float]:
    return dict(zip(fold.names, values, strict=True))


def test_before_any_history_label_features_are_uninformed_and_counts_zero():
    fold = OnlineFold(ALL)
    assert named(fold, fold.values("e", {"x": 2.0, "n": 1})) == {
        "last": 0.5,
        "mean2": 0.5,
        "age": 0.0,
        "count": 0.0,
        "x_mean3": 2.0,
        "x_dev3": 0.0,
        "task_count": 0.0,
    }


def test_each_kind_reads_the_history_before_the_row():
    fold = OnlineFold(ALL)
    a, b, c = ids(3)
    for oid, x in zip((a, b, c), (1.0, 2.0, 6.0), strict=True):
        fold.observe(oid, "e", {"x": x, "n": 0})
    fold.label(a, "e", 1)
    fold.label(b, "e", 0)  # c has no label yet: the newest known label is b's, one row back
    values = named(fold, fold.values("e", {"x": 9.0, "n": 0}))
    assert values == {
        "last": 0.0,
        "mean2": 0.5,
        "age": 1.0,
        "count": 3.0,
        "x_mean3": 3.0,
        "x_dev3": 6.0,
        "task_count": 3.0,
    }


def test_the_residual_is_how_far_off_servings_recent_answers_were():
    fold = OnlineFold(spec({"name": "resid", "kind": "residual", "window": 2}))
    a, b, c, d = ids(4)
    fold.observe(a, "e", {"x": 0.0, "n": 0}, served=0.9)
    fold.observe(b, "e", {"x": 0.0, "n": 0}, served=0.2)
    fold.observe(c, "e", {"x": 0.0, "n": 0})  # not served (from ingest): no residual
    fold.observe(d, "e", {"x": 0.0, "n": 0}, served=0.5)
    assert fold.values("e", {"x": 0.0, "n": 0}) == [0.0]
    fold.label(a, "e", 1)  # off by +0.1
    fold.label(b, "e", 1)  # off by +0.8
    fold.label(c, "e", 0)
    assert fold.values("e", {"x": 0.0, "n": 0}) == [pytest.approx(0.45)]
    fold.label(d, "e", 0)  # off by -0.5; the window keeps the last two
    assert fold.values("e", {"x": 0.0, "n": 0}) == [pytest.approx(0.15)]


def test_a_late_label_of_an_older_row_does_not_replace_a_newer_rows_label():
    fold = OnlineFold(spec({"name": "last", "kind": "last_label"}))
    old, new = ids(2)
    fold.observe(old, "e", {"x": 0.0, "n": 0})
    fold.observe(new, "e", {"x": 0.0, "n": 0})
    fold.label(new, "e", 1)
    fold.label(old, "e", 0)
    assert fold.values("e", {"x": 0.0, "n": 0}) == [1.0]


def test_entities_do_not_see_each_others_history_but_the_task_scope_sees_all():
    fold = OnlineFold(ALL)
    oid = uuid.uuid4()
    fold.observe(oid, "alice", {"x": 5.0, "n": 0})
    fold.label(oid, "alice", 1)
    bob = named(fold, fold.values("bob", {"x": 1.0, "n": 0}))
    assert bob["last"] == 0.5 and bob["count"] == 0.0 and bob["x_dev3"] == 0.0
    assert bob["task_count"] == 1.0


def test_a_label_folded_after_a_prediction_never_changes_that_predictions_values():
    fold = OnlineFold(ALL)
    oid = uuid.uuid4()
    before = fold.values("e", {"x": 1.0, "n": 0})
    fold.observe(oid, "e", {"x": 1.0, "n": 0})
    fold.label(oid, "e", 1)
    assert before == OnlineFold(ALL).values("e", {"x": 1.0, "n": 0})
    assert fold.values("e", {"x": 1.0, "n": 0}) != before


def test_preview_reads_each_row_as_if_the_rows_before_it_were_folded_and_changes_nothing():
    fold = OnlineFold(ALL)
    rows = [("e", {"x": float(i), "n": i}) for i in range(5)] + [("f", {"x": 1.0, "n": 0})]
    previewed = fold.preview(rows)
    assert fold.values("e", {"x": 0.0, "n": 0}) == previewed[0]  # nothing was folded
    stepwise = OnlineFold(ALL)
    for (entity, features), expected in zip(rows, previewed, strict=True):
        assert stepwise.values(entity, features) == expected
        stepwise.observe(uuid.uuid4(), entity, features)


def test_the_same_events_in_the_same_order_give_the_same_values_bit_for_bit():
    events = []
    for i in range(300):
        oid = uuid.uuid4()
        events.append(("observe", oid, f"e{i % 7}", {"x": (i * 0.37) % 5, "n": i}))
        if i % 3:
            events.append(("label", oid, f"e{i % 7}", i % 2))
    one, two = OnlineFold(ALL), OnlineFold(ALL)
    for fold in (one, two):
        for kind, oid, entity, payload in events:
            if kind == "observe":
                fold.observe(oid, entity, payload)
            else:
                fold.label(oid, entity, payload)
    probe = {"x": 1.234567, "n": 3}
    assert [one.values(f"e{k}", probe) for k in range(7)] == [
        two.values(f"e{k}", probe) for k in range(7)
    ]


def test_a_task_about_people_refuses_task_wide_label_features():
    with pytest.raises(ValidationError, match="describes people"):
        spec({"name": "last", "kind": "last_label", "scope": "task"}, sensitive=True)
    # Per person, or derived from observations only: allowed.
    spec(
        {"name": "last", "kind": "last_label"},
        {"name": "c", "kind": "count", "scope": "task"},
        sensitive=True,
    )


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "m", "kind": "mean", "window": 3}, "needs a `source`"),
        ({"name": "m", "kind": "mean", "source": "x"}, "needs a `window`"),
        ({"name": "m", "kind": "mean", "source": "nope", "window": 3}, "not a numeric"),
        ({"name": "c", "kind": "count", "window": 3}, "takes no `window`"),
        ({"name": "x", "kind": "count"}, "already taken"),
    ],
)
def test_a_malformed_online_feature_is_refused_with_the_reason(feature, message):
    with pytest.raises(ValidationError, match=message):
        spec(feature)


def test_declaring_no_online_features_keeps_a_specs_version():
    plain = {"name": "t", "features": [{"name": "x"}], "target": {"name": "y"}}
    assert (
        TaskSpec.model_validate(plain).version
        == TaskSpec.model_validate(
            {**plain, "online_features": [], "serving": {"record": False}}
        ).version
    )


def test_a_compas_row_never_sees_another_defendants_outcome():
    """Every defendant's inputs are the same whatever the other defendants' outcomes were, with
    the shipped spec and with a variant that adds every label feature a people task may have."""
    from services.trainer.core import TaskTraining
    from shared.features import DataEvent
    from shared.settings import REPO_ROOT
    from shared.tasks import load_spec

    shipped = load_spec(REPO_ROOT / "tasks" / "compas.yaml")
    assert not any(f.scope == "task" and f.kind in LABEL_KINDS for f in shipped.online_features)
    variant = shipped.model_copy(
        update={
            "online_features": [
                {"name": "last", "kind": "last_label"},
                {"name": "mean", "kind": "label_mean", "window": 3},
                {"name": "label_age", "kind": "label_age"},
                {"name": "seen", "kind": "count", "scope": "task"},
            ]
        }
    )
    people = [
        {
            "age": 20 + i,
            "priors_count": i % 4,
            "juv_fel_count": 0,
            "juv_misd_count": 0,
            "juv_other_count": 0,
            "c_charge_degree": "FM"[i % 2],
            "race": "Caucasian",
            "sex": "Male",
        }
        for i in range(60)
    ]

    def inputs(spec: TaskSpec, outcomes: list[int]) -> list[list[float]]:
        learned: list[list[float]] = []

        class Spy:
            n_updates = 0

            def predict_proba(self, X):
                return np.full(len(X), 0.5)

            def predict_on_arrival(self, X):
                return self.predict_proba(X), None

            def learn(self, X, y, proba, configs=None):
                learned.extend(X.tolist())

            def test_then_train(self, X, y):
                raise AssertionError("every outcome here comes late")

            def model_bytes(self, learned_through=0, residuals=None):
                return b""

            def champion_config(self):
                return "spy"

            metrics: dict[str, float] = {}

        core = TaskTraining(spec, Spy())  # type: ignore[arg-type]
        events, version = [], 0
        ids = [uuid.UUID(int=i + 1) for i in range(len(people))]
        for i, person in enumerate(people):  # each screened, then (two years on) labelled
            version += 1
            events.append(DataEvent(version, version, ids[i], f"p{i}", None, person, spec.version))
            if i >= 10:  # outcomes of earlier defendants arrive while later ones are screened
                version += 1
                j = i - 10
                events.append(
                    DataEvent(
                        version, version, uuid.uuid4(), f"p{j}", outcomes[j], observation_id=ids[j]
                    )
                )
        core.apply(events)
        return learned

    for spec in (shipped, variant):
        ones, flipped = [1] * 60, [0] * 60
        assert inputs(spec, ones) == inputs(spec, flipped)


def test_the_largest_values_a_record_may_hold_keep_every_feature_finite():
    """Values at the bound validation allows (|x| <= 1e100), a full window of them: sums and
    deviations stay finite (at 1.7e308, two of them made the window mean inf)."""
    fold = OnlineFold(ALL)
    for oid, sign in zip(ids(6), (-1, -1, -1, 1, 1, 1), strict=True):
        fold.observe(oid, "e", {"x": sign * MAX_ABS_FLOAT, "n": 0})
    assert np.isfinite(fold.values("e", {"x": -MAX_ABS_FLOAT, "n": 0})).all()
