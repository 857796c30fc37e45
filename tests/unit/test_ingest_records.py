"""Ingest's pure rules: bodies become records, records become events, or every error is listed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from services.ingest import records
from services.ingest.records import (
    BodyError,
    RecordsInvalid,
    TooManyRecords,
    UnsupportedMediaType,
    label_event_id,
    label_events,
    labelled_observations,
    observation_events,
    parse_records,
    resolve_id,
)
from shared.events.envelope import Producer
from shared.events.types import LabelRecorded, ObservationRecorded
from shared.settings import REPO_ROOT
from shared.tasks import TaskSpec, load_spec

PRODUCER = Producer(service="ingest", version="test")
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FEATURES = {
    "period": 0.5,
    "nswprice": 0.06,
    "nswdemand": 0.4,
    "vicprice": 0.003,
    "vicdemand": 0.42,
    "transfer": 0.41,
}


@pytest.fixture(scope="module")
def spec() -> TaskSpec:
    return load_spec(REPO_ROOT / "tasks" / "elec.yaml")


def record(**overrides) -> dict:
    return {"entity_id": "nsw", "features": dict(FEATURES), **overrides}


def observe(spec: TaskSpec, rows: list[dict]):
    return observation_events(spec, rows, producer=PRODUCER, now=NOW)


def issues_of(spec: TaskSpec, rows: list[dict]) -> dict[int, str]:
    with pytest.raises(RecordsInvalid) as caught:
        observe(spec, rows)
    assert str(caught.value).endswith(f"of {len(rows)} records are invalid; nothing was stored")
    return {issue.index: issue.error for issue in caught.value.issues}


# -- bodies ----------------------------------------------------------------------------------------


def test_a_json_array_of_objects_is_read_in_order():
    body = orjson.dumps([{"a": 1}, {"a": 2}])
    assert parse_records(body, "application/json", max_records=10) == [{"a": 1}, {"a": 2}]


def test_ndjson_is_read_one_object_per_line_skipping_blank_lines():
    body = b'{"a": 1}\r\n\n  \n{"a": 2}\n'
    assert parse_records(body, "application/x-ndjson", max_records=10) == [{"a": 1}, {"a": 2}]


def test_without_a_content_type_the_body_is_sniffed():
    assert parse_records(b' [{"a": 1}]', None, max_records=10) == [{"a": 1}]
    assert parse_records(b'{"a": 1}\n{"a": 2}', "", max_records=10) == [{"a": 1}, {"a": 2}]
    assert parse_records(b'{"a": 1}', "text/plain; charset=utf-8", max_records=10) == [{"a": 1}]


def test_bad_json_is_reported_with_its_line():
    with pytest.raises(BodyError, match="line 3"):
        parse_records(b'[{"a": 1},\n{"a": 2},\n{"a" 3}]', "application/json", max_records=10)
    with pytest.raises(BodyError, match="line 2"):
        parse_records(b'{"a": 1}\n{"a": \n{"a": 3}', "application/x-ndjson", max_records=10)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "application/json", "empty"),
        (b"  \n ", None, "empty"),
        (b"[]", "application/json", "no records"),
        (b'{"a": 1}', "application/json", "expected a JSON array"),
        (b'[{"a": 1}, 2]', "application/json", "record 1: expected a JSON object"),
        (b'{"a": 1}\n[1]', "application/x-ndjson", "line 2: expected a JSON object"),
        (b"\xff\xfe", "application/json", "invalid JSON"),
    ],
)
def test_a_body_that_is_not_records_is_refused_with_the_reason(body, content_type, message):
    with pytest.raises(BodyError, match=message):
        parse_records(body, content_type, max_records=10)


def test_more_records_than_allowed_are_refused_in_both_formats():
    with pytest.raises(TooManyRecords, match="limit is 2"):
        parse_records(orjson.dumps([{}, {}, {}]), "application/json", max_records=2)
    with pytest.raises(TooManyRecords, match="limit is 2"):
        parse_records(b"{}\n{}\n{}\n", "application/x-ndjson", max_records=2)


@pytest.mark.parametrize(
    "content_type", ["text/csv", "multipart/form-data; boundary=x", "image/png"]
)
def test_a_content_type_that_is_not_json_is_unsupported(content_type):
    with pytest.raises(UnsupportedMediaType, match="unsupported content type"):
        parse_records(b"[{}]", content_type, max_records=10)


# -- observations ----------------------------------------------------------------------------------


def test_valid_records_become_observations_of_the_task(spec: TaskSpec):
    rows = [record(), record(label=1, event_time="2024-01-02T03:04:05+02:00", event_id="row-7")]
    first, second = observe(spec, rows)
    assert first.stream_id == "data-elec" and first.producer == PRODUCER
    assert first.occurred_at == NOW
    data = second.data()
    assert isinstance(data, ObservationRecorded)
    assert data.pipeline_version == spec.version and data.label == 1 and data.entity_id == "nsw"
    assert data.features == FEATURES
    assert second.occurred_at == datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert first.data().label is None


def test_a_time_without_an_offset_is_taken_as_utc(spec: TaskSpec):
    (event,) = observe(spec, [record(event_time="2024-01-02T03:04:05")])
    assert event.occurred_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_every_invalid_record_is_listed_by_index(spec: TaskSpec):
    nan = dict(FEATURES, nswprice=float("nan"))
    rows = [
        record(),
        record(features=dict(FEATURES, colour=1.0)),
        record(features={k: v for k, v in FEATURES.items() if k != "period"}),
        record(features=dict(FEATURES, vicprice="high")),
        record(features=nan),
        record(label=2),
        {"features": dict(FEATURES)},
        record(event_time="yesterday"),
        record(extra=1),
        {"entity_id": "nsw"},
        record(label=True),
        record(event_id=""),
        record(entity_id="e" * 201),
        record(label="x" * 100_000),
    ]
    issues = issues_of(spec, rows)
    assert sorted(issues) == list(range(1, len(rows)))
    assert "unknown feature(s): colour" in issues[1]
    assert "period: is required" in issues[2]
    assert "vicprice: expected a number" in issues[3]
    assert "nswprice: must be finite" in issues[4]
    assert "label: 2 is not one of 0, 1" in issues[5]
    assert "entity_id" in issues[6]
    assert "event_time" in issues[7]
    assert "unknown field(s): extra" in issues[8]
    assert "features: is required" in issues[9]
    assert "label: True" in issues[10]
    assert "event_id" in issues[11]
    assert issues[12] == "entity_id: longer than 200 characters"
    assert issues[13].startswith("label: 'xxx") and len(issues[13]) < 100  # never echoed in full


def test_a_request_may_not_name_the_same_event_twice(spec: TaskSpec):
    issues = issues_of(spec, [record(event_id="a"), record(event_id="b"), record(event_id="a")])
    assert issues == {2: "event_id: repeats the event_id of record 0"}


def test_a_client_key_always_derives_the_same_event_id(spec: TaskSpec):
    (first,) = observe(spec, [record(event_id="row-1")])
    (again,) = observe(spec, [record(event_id="row-1")])
    assert first.event_id == again.event_id == resolve_id("elec", "row-1")
    assert resolve_id("elec", "row-1") == uuid.uuid5(records.ID_NAMESPACE, "elec/row-1")
    assert resolve_id("other", "row-1") != resolve_id("elec", "row-1")
    assert resolve_id("elec", 17) == resolve_id("elec", "17")


def test_a_client_uuid_is_used_as_the_event_id(spec: TaskSpec):
    key = uuid.uuid4()
    (event,) = observe(spec, [record(event_id=str(key))])
    assert event.event_id == key


def test_records_without_a_key_get_fresh_ids(spec: TaskSpec):
    first, second = observe(spec, [record(), record()])
    assert first.event_id != second.event_id


# -- labels ----------------------------------------------------------------------------------------


def test_a_label_refers_to_a_stored_observation_and_has_a_derived_id(spec: TaskSpec):
    observation, other = observe(spec, [record(entity_id="e1", event_id="o-1"), record()])
    stored = {observation.event_id: observation, other.event_id: other}
    rows = [
        {"observation_id": "o-1", "label": 0},
        {"observation_id": str(other.event_id), "label": 1},
    ]
    assert labelled_observations("elec", rows) == set(stored)
    first, second = label_events(spec, rows, stored, producer=PRODUCER, now=NOW)
    data = first.data()
    assert isinstance(data, LabelRecorded)
    assert data.observation_id == observation.event_id and data.entity_id == "e1"
    assert data.label == 0 and first.stream_id == "data-elec"
    assert first.event_id == label_event_id(observation.event_id)
    assert second.data().label == 1


def test_labels_for_unknown_observations_or_bad_values_are_listed(spec: TaskSpec):
    (observation,) = observe(spec, [record(event_id="o-1")])
    foreign = observation.model_copy(update={"payload": {**observation.payload, "task": "x"}})
    rows = [
        {"observation_id": "o-1", "label": 1},
        {"observation_id": "never-seen", "label": 1},
        {"observation_id": "o-1", "label": "up"},
        {"label": 1},
        {"observation_id": "o-1", "label": 0},
        {"observation_id": "o-2", "label": 1},
    ]
    stored = {observation.event_id: observation, resolve_id("elec", "o-2"): foreign}
    with pytest.raises(RecordsInvalid) as caught:
        label_events(spec, rows, stored, producer=PRODUCER, now=NOW)
    issues = {i.index: i.error for i in caught.value.issues}
    assert sorted(issues) == [1, 2, 3, 4, 5]
    assert issues[1].startswith("unknown observation 'never-seen'")
    assert "label: 'up'" in issues[2]
    assert "observation_id (or prediction_id): is required" in issues[3]
    assert "record 0 labels it already" in issues[4]
    assert issues[5].startswith("unknown observation 'o-2'")


def test_a_late_label_for_an_observation_recorded_with_its_label_is_refused(spec: TaskSpec):
    (observation,) = observe(spec, [record(event_id="o-1", label=1)])
    with pytest.raises(RecordsInvalid) as caught:
        label_events(
            spec,
            [{"observation_id": "o-1", "label": 0}],
            {observation.event_id: observation},
            producer=PRODUCER,
            now=NOW,
        )
    assert "was recorded with its label" in caught.value.issues[0].error


def test_an_observation_payload_is_exactly_what_its_event_type_dumps(spec: TaskSpec):
    for row in (record(), record(label=0)):
        (event,) = observe(spec, [row])
        assert event.payload == ObservationRecorded.model_validate(event.payload).model_dump(
            mode="json"
        )
        assert event.type == "ObservationRecorded" and event.schema_version == 2
