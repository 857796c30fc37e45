"""The serving model table follows deployment events in stream order, idempotently; pure."""

from __future__ import annotations

import uuid
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from services.serving.models import (
    InvalidRecords,
    ModelTable,
    NoChampion,
    Outcome,
    UnknownTask,
    newest_deployment,
    predict,
    validate_records,
)
from shared import model_codec
from shared.artifacts import sha256
from shared.events.envelope import Envelope, Payload, new_event
from shared.events.types import (
    ModelPromoted,
    ModelRolledBack,
    PromotionRefused,
    TaskRegistered,
    deployment_stream,
    task_stream,
)
from shared.tasks import Feature, Target, TaskSpec, feature_vector
from tests.support import TEST_PRODUCER

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


def promoted(model_version: int, digest: str, at: int, task: str = "loans") -> Envelope:
    payload = ModelPromoted(
        task=task,
        model_version=model_version,
        artifact_sha256=digest,
        previous_version=None,
        reason="test",
        decided_by="tests",
    )
    return stored(payload, deployment_stream(task), at)


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
def table(artifacts: Artifacts) -> ModelTable:
    table = ModelTable(load=artifacts.load)
    assert table.apply(registered()) is Outcome.APPLIED
    return table


def test_a_promotion_makes_its_model_the_champion(table, artifacts, models):
    digest = artifacts.put(models[0])
    assert table.apply(promoted(1, digest, at=1)) is Outcome.APPLIED
    champion = table.serving("loans")
    assert (champion.model_version, champion.artifact_sha256) == (1, digest)
    assert champion.spec == SPEC
    rows = validate_records(
        SPEC, [{"income": 2.0, "colour": "red"}, {"income": -2.0, "colour": "blue"}]
    )
    high, low = predict(champion.predictor, champion.spec, rows, [None, "e2"], [[], []])
    assert high.probability > 0.5 > low.probability
    assert (high.label, low.label) == ("yes", "no")
    assert low.entity_id == "e2" and high.prediction_id != low.prediction_id


def test_the_same_promotion_applied_twice_is_applied_once(table, artifacts, models):
    event = promoted(1, artifacts.put(models[0]), at=1)
    assert table.apply(event) is Outcome.APPLIED
    assert table.apply(event) is Outcome.STALE
    assert artifacts.loads == 1 and table.deployed_version("loans") == 1


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


def test_re_promoting_the_same_artifact_reuses_the_decoded_model(table, artifacts, models):
    digest = artifacts.put(models[0])
    table.apply(promoted(1, digest, at=1))
    table.apply(rolled_back(1, digest, at=2))
    assert artifacts.loads == 1 and table.deployed_version("loans") == 2


def test_a_request_keeps_the_model_it_started_with_across_a_swap(table, artifacts, models):
    table.apply(promoted(1, artifacts.put(models[0]), at=1))
    in_flight = table.serving("loans")
    table.apply(promoted(2, artifacts.put(models[1]), at=2))
    assert in_flight.model_version == 1
    X = np.asarray([feature_vector(SPEC, {"income": 2.0, "colour": "red"})])
    assert in_flight.predictor.predict_proba(X)[0] > 0.5  # still the old model's answer
    assert table.serving("loans").predictor.predict_proba(X)[0] < 0.5


def test_a_promotion_before_its_task_spec_waits_for_the_spec(artifacts, models):
    table = ModelTable(load=artifacts.load)
    digest = artifacts.put(models[0])
    assert table.apply(promoted(1, digest, at=1)) is Outcome.PENDING
    with pytest.raises(UnknownTask):
        table.serving("loans")
    assert table.apply(registered()) is Outcome.APPLIED
    assert table.serving("loans").model_version == 1


def test_a_model_that_fails_to_load_leaves_the_old_champion_serving(table, artifacts, models):
    table.apply(promoted(1, artifacts.put(models[0]), at=1))
    with pytest.raises(KeyError):
        table.apply(promoted(2, "0" * 64, at=2))
    assert table.serving("loans").model_version == 1
    assert table.deployed_version("loans") == 1


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
    assert table.serving("loans").spec == SPEC and table.spec("loans") == newer
    table.apply(promoted(2, artifacts.put(models[1]), at=2))
    assert table.serving("loans").spec == newer


def test_other_events_and_other_streams_are_ignored(table, artifacts, models):
    refused = PromotionRefused(task="loans", model_version=3, reasons=["x"], decided_by="tests")
    assert table.apply(stored(refused, deployment_stream("loans"), 5)) is Outcome.IGNORED
    misplaced = promoted(1, artifacts.put(models[0]), at=1).model_copy(
        update={"stream_id": "elsewhere"}
    )
    assert table.apply(misplaced) is Outcome.IGNORED
    assert table.champion("loans") is None


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


def test_the_newest_deployment_decision_wins_on_load(artifacts):
    digest = "a" * 64
    refused = PromotionRefused(task="loans", model_version=4, reasons=["x"], decided_by="tests")
    events = [
        promoted(1, digest, at=1),
        rolled_back(1, digest, at=3),
        promoted(2, digest, at=2),
        stored(refused, deployment_stream("loans"), 4),
    ]
    newest = newest_deployment(events)
    assert newest is not None and newest.stream_version == 3
    assert newest_deployment([]) is None


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
