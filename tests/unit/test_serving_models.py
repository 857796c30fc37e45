"""Serving's routing table follows task and deployment events in stream order, idempotently, and
routes rows to the champion, the canary (sticky by entity) and shadows; pure."""

from __future__ import annotations

import uuid
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from services.serving.models import InvalidRecords, predict, validate_records
from services.serving.routing import NoChampion, Outcome, Role, RoutingTable, UnknownTask
from services.trainer.learner import OnlineLearner
from shared import model_codec
from shared.artifacts import sha256
from shared.events.envelope import Envelope, Payload, new_event
from shared.events.types import (
    CanaryEnded,
    CanaryStarted,
    FlagChanged,
    ModelPromoted,
    ModelRolledBack,
    PromotionRefused,
    ShadowStarted,
    TaskRegistered,
    deployment_stream,
    task_stream,
)
from shared.online_models import LiveModel
from shared.tasks import Feature, Target, TaskSpec, feature_vector
from tests.support import FAST_LEARNER, TEST_PRODUCER

SPEC = TaskSpec(
    name="loans",
    features=(
        Feature(name="income"),
        Feature(name="colour", type="category", categories=("red", "blue")),
    ),
    target=Target(name="default", classes=("no", "yes")),
)


def tiny_model(spec: TaskSpec, flip: bool = False) -> bytes:
    """A small LightGBM model of `spec`, encoded by the codec (`flip` learns the opposite)."""
    rng = np.random.default_rng(7)
    income = rng.normal(size=400)
    colour = rng.integers(0, 2, size=400)
    X = np.column_stack([income, colour]).astype(np.float64)
    y = (income > 0).astype(int)
    if flip:
        y = 1 - y
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1, "seed": 7},
        lgb.Dataset(X, y),
        num_boost_round=10,
    )
    return model_codec.encode(
        n_features=X.shape[1],
        members=[(1.0, booster.model_to_string())],
        bias=0.0,
        feature_names=list(spec_names(spec)),
    )


def spec_names(spec: TaskSpec) -> tuple[str, ...]:
    return tuple(f.name for f in spec.model_features)


class Artifacts:
    """An in-memory artifact store that counts decodes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.loads = 0

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def load(self, digest: str) -> Any:
        self.loads += 1
        return model_codec.decode(self.blobs[digest])


def stored(payload: Payload, stream_id: str, version: int) -> Envelope:
    """An envelope as the store returns it: with its stream version and a position."""
    event = new_event(payload, stream_id=stream_id, producer=TEST_PRODUCER)
    return event.model_copy(update={"stream_version": version, "position": version})


def registered(spec: TaskSpec = SPEC, version: int = 1) -> Envelope:
    payload = TaskRegistered(
        task=spec.name, version=spec.version, spec=spec.model_dump(mode="json")
    )
    return stored(payload, task_stream(spec.name), version)


def promoted(
    model_version: int,
    digest: str,
    at: int,
    task: str = "loans",
    by: str = "tests",
    pipeline: str | None = None,
) -> Envelope:
    payload = ModelPromoted(
        task=task,
        model_version=model_version,
        artifact_sha256=digest,
        previous_version=None,
        reason="test",
        decided_by=by,
        pipeline_version=pipeline,
    )
    return stored(payload, deployment_stream(task), at)


def decided(payload: Payload, at: int) -> Envelope:
    return stored(payload, deployment_stream("loans"), at)


def rolled_back(model_version: int, digest: str, at: int, task: str = "loans") -> Envelope:
    payload = ModelRolledBack(
        task=task,
        model_version=model_version,
        artifact_sha256=digest,
        from_version=None,
        reason="test",
        decided_by="tests",
    )
    return stored(payload, deployment_stream(task), at)


@pytest.fixture(scope="module")
def models() -> tuple[bytes, bytes]:
    return tiny_model(SPEC), tiny_model(SPEC, flip=True)


@pytest.fixture
def artifacts() -> Artifacts:
    return Artifacts()


@pytest.fixture
def table(artifacts: Artifacts) -> RoutingTable:
    table = RoutingTable(load=artifacts.load)
    assert table.apply(registered()) is Outcome.APPLIED
    return table


X_HIGH = np.asarray([feature_vector(SPEC, {"income": 2.0, "colour": "red"})])


def test_a_promotion_makes_its_model_the_champion(table, artifacts, models):
    digest = artifacts.put(models[0])
    assert table.apply(promoted(1, digest, at=1)) is Outcome.APPLIED
    champion = table.serving("loans")
    assert (champion.model_version, champion.artifact_sha256) == (1, digest)
    assert champion.role is Role.CHAMPION and table.routes("loans").spec == SPEC
    rows = validate_records(
        SPEC, [{"income": 2.0, "colour": "red"}, {"income": -2.0, "colour": "blue"}]
    )
    high, low = predict(champion.predictor, SPEC, rows, [None, "e2"], [[], []], model_version=1)
    assert high.probability > 0.5 > low.probability
    assert (high.label, low.label) == ("yes", "no")
    assert low.entity_id == "e2" and high.prediction_id != low.prediction_id
    assert high.model_version == 1 and high.role == "champion"


def test_two_tasks_with_the_same_artifact_each_get_their_own_model_and_spec(artifacts, models):
    # Two tasks whose specs differ only by name publish byte-identical first models: each must
    # answer with its own spec (its rows recorded under its own name) and learn its own labels
    # (a LiveModel per task, as the app loads them).
    table = RoutingTable(load=lambda digest: LiveModel(artifacts.blobs[digest]))
    twin = SPEC.model_copy(update={"name": "loans-twin"})
    assert table.apply(registered()) is Outcome.APPLIED
    assert table.apply(registered(twin)) is Outcome.APPLIED
    digest = artifacts.put(models[0])
    assert table.apply(promoted(1, digest, at=1)) is Outcome.APPLIED
    assert table.apply(promoted(1, digest, at=1, task="loans-twin")) is Outcome.APPLIED
    loans, other = table.routes("loans"), table.routes("loans-twin")
    assert (loans.spec.name, other.spec.name) == ("loans", "loans-twin")
    assert loans.champion is not None and other.champion is not None
    assert loans.champion.predictor is not other.champion.predictor


def test_the_same_promotion_applied_twice_is_applied_once(table, artifacts, models):
    event = promoted(1, artifacts.put(models[0]), at=1)
    assert table.apply(event) is Outcome.APPLIED
    assert table.apply(event) is Outcome.STALE
    assert artifacts.loads == 1 and table.stream_version("loans") == 1


def test_an_older_decision_arriving_after_a_newer_one_changes_nothing(table, artifacts, models):
    first, second = artifacts.put(models[0]), artifacts.put(models[1])
    assert table.apply(promoted(2, second, at=2)) is Outcome.APPLIED
    assert table.apply(promoted(1, first, at=1)) is Outcome.STALE
    assert table.serving("loans").model_version == 2


def test_a_rollback_sets_the_champion_back_to_the_earlier_version(table, artifacts, models):
    first, second = artifacts.put(models[0]), artifacts.put(models[1])
    table.apply(promoted(1, first, at=1))
    table.apply(promoted(2, second, at=2))
    assert table.apply(rolled_back(1, first, at=3)) is Outcome.APPLIED
    champion = table.serving("loans")
    assert (champion.model_version, champion.artifact_sha256) == (1, first)
    assert table.apply(promoted(2, second, at=2)) is Outcome.STALE  # a replay does not undo it


def test_re_promoting_the_same_artifact_reuses_the_loaded_model(table, artifacts, models):
    digest = artifacts.put(models[0])
    table.apply(promoted(1, digest, at=1))
    table.apply(rolled_back(1, digest, at=2))
    assert artifacts.loads == 1 and table.stream_version("loans") == 2


def test_a_request_keeps_the_routes_it_started_with_across_a_swap(table, artifacts, models):
    table.apply(promoted(1, artifacts.put(models[0]), at=1))
    in_flight = table.routes("loans")
    table.apply(promoted(2, artifacts.put(models[1]), at=2))
    assert in_flight.champion is not None and in_flight.champion.model_version == 1
    assert in_flight.champion.predictor.predict_proba(X_HIGH)[0] > 0.5  # the old model's answer
    assert table.serving("loans").predictor.predict_proba(X_HIGH)[0] < 0.5


def test_a_promotion_before_its_task_spec_waits_for_the_spec(artifacts, models):
    table = RoutingTable(load=artifacts.load)
    digest = artifacts.put(models[0])
    assert table.apply(promoted(1, digest, at=1)) is Outcome.PENDING
    with pytest.raises(UnknownTask):
        table.serving("loans")
    assert table.apply(registered()) is Outcome.APPLIED
    assert table.serving("loans").model_version == 1


def test_a_model_that_fails_to_load_leaves_the_old_routes_serving(table, artifacts, models):
    table.apply(promoted(1, artifacts.put(models[0]), at=1))
    with pytest.raises(KeyError):
        table.apply(promoted(2, "0" * 64, at=2))
    assert table.serving("loans").model_version == 1
    assert table.stream_version("loans") == 1


def test_a_registered_task_without_a_model_has_no_champion_and_others_are_unknown(table):
    with pytest.raises(NoChampion, match="has no promoted model yet"):
        table.serving("loans")
    with pytest.raises(UnknownTask):
        table.serving("nope")


def test_a_newer_spec_applies_to_later_models_not_the_serving_one(table, artifacts, models):
    table.apply(promoted(1, artifacts.put(models[0]), at=1))
    newer = SPEC.model_copy(update={"description": "v2"})
    assert table.apply(registered(newer, version=2)) is Outcome.APPLIED
    assert table.apply(registered(SPEC, version=1)) is Outcome.STALE
    assert table.routes("loans").spec == SPEC and table.spec("loans") == newer
    table.apply(promoted(2, artifacts.put(models[1]), at=2))
    assert table.routes("loans").spec == newer


def test_decisions_that_do_not_route_move_the_stream_on_and_other_streams_are_ignored(
    table, artifacts, models
):
    refused = PromotionRefused(task="loans", model_version=3, reasons=["x"], decided_by="tests")
    assert table.apply(decided(refused, 1)) is Outcome.APPLIED
    assert table.stream_version("loans") == 1
    misplaced = promoted(1, artifacts.put(models[0]), at=2).model_copy(
        update={"stream_id": "elsewhere"}
    )
    assert table.apply(misplaced) is Outcome.IGNORED
    assert table.routes("loans").champion is None


def test_an_event_that_was_never_stored_is_refused(table, artifacts, models):
    unstored = new_event(
        ModelPromoted(
            task="loans",
            model_version=1,
            artifact_sha256=artifacts.put(models[0]),
            previous_version=None,
            reason="x",
            decided_by="tests",
        ),
        stream_id=deployment_stream("loans"),
        producer=TEST_PRODUCER,
    )
    with pytest.raises(ValueError, match="no stream version"):
        table.apply(unstored)


def test_a_whole_stream_restored_at_start_up_loads_only_what_routes_now(artifacts, models):
    first, second = artifacts.put(models[0]), artifacts.put(models[1])
    table = RoutingTable(load=artifacts.load)
    table.apply(registered())
    events = [promoted(1, first, at=1), promoted(2, second, at=2), rolled_back(1, first, at=3)]
    assert table.restore_needs(events) == [first]
    table.restore("loans", events)
    assert table.serving("loans").model_version == 1 and artifacts.loads == 1


def canary(version: int, digest: str, weight: float, at: int) -> Envelope:
    return decided(
        CanaryStarted(
            task="loans",
            model_version=version,
            artifact_sha256=digest,
            weight=weight,
            reason="try it",
            decided_by="tests",
        ),
        at,
    )


def test_a_canary_answers_its_share_of_entities_always_the_same_ones(table, artifacts, models):
    first, second = artifacts.put(models[0]), artifacts.put(models[1])
    table.apply(promoted(1, first, at=1))
    table.apply(canary(2, second, weight=25.0, at=2))
    routes = table.routes("loans")
    arms = {f"user-{i}": routes.arm(f"user-{i}") for i in range(2000)}
    on_canary = {e for e, arm in arms.items() if arm is not None and arm.role is Role.CANARY}
    assert 0.22 < len(on_canary) / 2000 < 0.28
    # Another replica (another table) and a restart route every entity the same way.
    again = RoutingTable(load=artifacts.load)
    again.apply(registered())
    again.restore("loans", [promoted(1, first, at=1), canary(2, second, weight=25.0, at=2)])
    assert {e for e in arms if again.routes("loans").arm(e).role is Role.CANARY} == on_canary
    assert routes.arm(None) is routes.champion  # no entity: the champion
    # The canary promoted keeps its model: no reload, and what it learned online is kept.
    # (Governance records the promotion, then the canary's end, in one append.)
    loads = artifacts.loads
    table.apply(promoted(2, second, at=3))
    ended = CanaryEnded(
        task="loans", model_version=2, outcome="promoted", reason="better", decided_by="tests"
    )
    table.apply(decided(ended, 4))
    assert table.serving("loans").predictor is routes.canary.predictor
    assert artifacts.loads == loads and table.routes("loans").canary is None


def test_shadows_are_routed_but_never_answer(table, artifacts, models):
    first, second = artifacts.put(models[0]), artifacts.put(models[1])
    table.apply(promoted(1, first, at=1))
    table.apply(
        decided(
            ShadowStarted(
                task="loans",
                model_version=2,
                artifact_sha256=second,
                sample_rate=0.5,
                reason="watch it",
                decided_by="tests",
            ),
            2,
        )
    )
    routes = table.routes("loans")
    assert [(s.model_version, s.share) for s in routes.shadows] == [(2, 0.5)]
    assert all(routes.arm(f"e{i}") is routes.champion for i in range(200))


def test_the_kill_switch_answers_with_the_last_approved_champion_only(table, artifacts, models):
    first, second = artifacts.put(models[0]), artifacts.put(models[1])
    table.apply(promoted(1, first, at=1, by="ann"))  # a person promoted it
    table.apply(promoted(2, second, at=2, by="governance/policy"))
    table.apply(canary(3, first, weight=50.0, at=3))
    kill = FlagChanged(
        task="loans",
        key="kill_switch",
        flag={"type": "boolean", "value": True},
        reason="incident 42",
        decided_by="tests",
    )
    table.apply(decided(kill, 4))
    routes = table.routes("loans")
    assert routes.killed and routes.champion is not None and routes.champion.model_version == 1
    assert routes.canary is None and routes.shadows == ()
    assert routes.flags["kill_switch"].value is True


def test_invalid_records_are_reported_by_index():
    records: list[Any] = [
        {"income": 1.0, "colour": "red"},
        {"income": "lots", "colour": "red"},
        {"income": 1.0, "colour": "green"},
        {"income": 1.0, "colour": "red", "extra": 1},
    ]
    with pytest.raises(InvalidRecords) as caught:
        validate_records(SPEC, records)
    assert sorted(caught.value.errors) == [1, 2, 3]
    assert "income" in caught.value.errors[1] and "extra" in caught.value.errors[3]


def test_predicting_no_rows_returns_no_predictions(table, artifacts, models):
    table.apply(promoted(1, artifacts.put(models[0]), at=1))
    assert predict(table.serving("loans").predictor, SPEC, [], [], []) == []


def test_prediction_ids_are_fresh_uuids(table, artifacts, models):
    table.apply(promoted(1, artifacts.put(models[0]), at=1))
    rows = validate_records(SPEC, [{"income": 0.0, "colour": "red"}] * 3)
    ids = {
        p.prediction_id
        for p in predict(table.serving("loans").predictor, SPEC, rows, [None] * 3, [[]] * 3)
    }
    assert len(ids) == 3 and all(isinstance(i, uuid.UUID) for i in ids)


def test_each_model_takes_its_own_pipelines_inputs_and_an_arm_that_cannot_be_answered_waits(
    table, artifacts, models
):
    # Versions of the spec registered later: the newest, but models name their own.
    other = SPEC.model_copy(update={"description": "another pipeline"})
    wider = SPEC.model_copy(update={"features": (*SPEC.features, Feature(name="age"))})
    assert table.apply(registered(other, version=2)) is Outcome.APPLIED
    assert table.apply(registered(wider, version=3)) is Outcome.APPLIED
    first, second = artifacts.put(models[0]), artifacts.put(models[1])
    third = artifacts.put(tiny_model(SPEC, flip=True) + b" ")  # another artifact, same model

    table.apply(promoted(1, first, at=1, pipeline=SPEC.version))
    routes = table.routes("loans")
    assert routes.spec.version == SPEC.version  # the champion's, not the newest
    assert list(routes.specs()) == [SPEC.version]

    def canary(version: int, digest: str, pipeline: str) -> CanaryStarted:
        return CanaryStarted(
            task="loans",
            model_version=version,
            artifact_sha256=digest,
            weight=50.0,
            reason="try it",
            decided_by="tests",
            pipeline_version=pipeline,
        )

    # A canary of another pipeline answers with its own inputs (its fold: `routes.specs()`).
    table.apply(decided(canary(2, second, other.version), 2))
    routes = table.routes("loans")
    assert routes.canary is not None and routes.spec_of(routes.canary).version == other.version
    assert list(routes.specs()) == [SPEC.version, other.version]
    # One that reads a feature requests are not validated for is left out, until a champion
    # of its pipeline validates them.
    table.apply(
        decided(
            CanaryEnded(
                task="loans", model_version=2, outcome="stopped", reason="r", decided_by="tests"
            ),
            3,
        )
    )
    table.apply(decided(canary(3, third, wider.version), 4))
    assert table.routes("loans").canary is None
    table.apply(promoted(2, second, at=5, pipeline=other.version))
    routes = table.routes("loans")
    assert routes.spec.version == other.version and routes.champion is not None
    assert routes.champion.model_version == 2


def test_a_decision_naming_a_pipeline_not_registered_here_yet_fails_and_changes_nothing(
    table, artifacts, models
):
    other = SPEC.model_copy(update={"description": "registered later"})
    digest = artifacts.put(models[0])
    decision = promoted(1, digest, at=1, pipeline=other.version)
    with pytest.raises(LookupError, match="not registered here yet"):
        table.apply(decision)  # retried by the follower until its TaskRegistered comes
    with pytest.raises(NoChampion):
        table.serving("loans")
    table.apply(registered(other, version=2))
    assert table.apply(decision) is Outcome.APPLIED
    assert table.routes("loans").spec.version == other.version


def test_a_regression_model_answers_values_as_the_learner_does():
    spec = TaskSpec.model_validate(
        {
            "name": "demand",
            "features": [{"name": "x"}],
            "target": {"name": "units", "kind": "regression"},
            "learner": {"params": FAST_LEARNER},
        }
    )
    rng = np.random.default_rng(5)
    X = rng.uniform(0, 1, (600, 1))
    learner = OnlineLearner.from_spec(spec)
    learner.test_then_train(X, 100.0 + 50.0 * X[:, 0])
    model = LiveModel(learner.model_bytes(learned_through=600))
    rows = validate_records(spec, [{"x": 0.1}, {"x": 0.9}])
    low, high = predict(model, spec, rows, ["a", "b"], [[], []], model_version=4)
    assert low.probability is None and high.probability is None
    assert low.label == low.value == low.answer and high.label == high.value
    assert [low.value, high.value] == pytest.approx(learner.predict(np.array([[0.1], [0.9]])))
    assert 100.0 < low.value < high.value < 150.0
    # With its 90% prediction interval around it, as wide on either side as the model says.
    reach = model.interval_half_width()
    assert reach is not None and reach > 0
    assert low.interval == pytest.approx((low.value - reach, low.value + reach))
