"""Ingest's rules, pure: parse a request body into records and turn records into events.

Nothing here does I/O. The HTTP layer reads the body, calls these functions, appends the envelopes
they return, and maps their exceptions to status codes (400, 413, 415, 422).

Event ids make re-sending safe: a client's `event_id` is used as is when it is a UUID, otherwise it
is hashed with the task name into a UUID (uuid5), so the same key always names the same event and a
retried record is a duplicate. A label's id is derived from its observation's id, so re-sending a
label is a duplicate too (the first label recorded for an observation stands).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from shared.events.envelope import Envelope, Producer, new_event
from shared.events.types import LabelRecorded, ObservationRecorded, data_stream
from shared.ids import new_uuid
from shared.tasks import (
    MAX_ENTITY_ID,
    RecordError,
    TaskSpec,
    shown,
    storable,
    validate_features,
    validate_label,
)

# Client keys become event ids under this namespace; changing it would break idempotency.
ID_NAMESPACE = uuid.UUID("e5c13712-6dfb-4ad7-a611-1c220a672aef")

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
# No content type (or a generic one): look at the body to tell a JSON array from NDJSON.
SNIFF_TYPES = frozenset({"", "text/plain", "application/octet-stream"})

OBSERVATION_FIELDS = ("entity_id", "event_time", "features", "label", "event_id")
LABEL_FIELDS = ("observation_id", "prediction_id", "label", "event_time")

BodyFormat = Literal["json", "ndjson", "sniff"]


class UnsupportedMediaType(ValueError):
    """The request's content type is neither JSON nor NDJSON."""


class BodyError(ValueError):
    """The body is not a JSON array of objects nor NDJSON objects; the message says where."""


class TooManyRecords(ValueError):
    """The body holds more records than one request may."""


@dataclass(frozen=True, slots=True)
class RecordIssue:
    """Why the record at `index` (0-based, in request order) was refused."""

    index: int
    error: str


class RecordsInvalid(ValueError):
    """Some records do not fit the task; none of the request's records may be stored."""

    status = 422

    def __init__(
        self, issues: Sequence[RecordIssue], total: int, what: str = "are invalid"
    ) -> None:
        super().__init__(f"{len(issues)} of {total} records {what}; nothing was stored")
        self.issues = list(issues)
        self.total = total


class RecordsConflict(RecordsInvalid):
    """Some records name an event id already recorded with other content (409)."""

    status = 409


# -- bodies ----------------------------------------------------------------------------------------


def body_format(content_type: str | None) -> BodyFormat:
    """How to read a body of this content type (parameters such as charset are ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    if media in SNIFF_TYPES:
        return "sniff"
    raise UnsupportedMediaType(
        f"unsupported content type {media!r}: send application/json (an array of records) "
        "or application/x-ndjson (one record per line)"
    )


def parse_records(
    body: bytes, content_type: str | None, *, max_records: int
) -> list[dict[str, Any]]:
    """The records of a body: a JSON array of objects, or NDJSON (one object per line)."""
    fmt = body_format(content_type)
    start = body.lstrip()[:1]
    if not start:
        raise BodyError("the body is empty: send a JSON array of records or NDJSON")
    if fmt == "sniff":
        fmt = "json" if start == b"[" else "ndjson"
    records = _json_array(body) if fmt == "json" else _ndjson(body, max_records)
    if not records:
        raise BodyError("the body holds no records")
    if len(records) > max_records:
        raise TooManyRecords(_too_many(len(records), max_records))
    return records


def _too_many(count: int | str, limit: int) -> str:
    return f"{count} records in one request; the limit is {limit}: send smaller batches"


def _json_array(body: bytes) -> list[dict[str, Any]]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(value, list):
        raise BodyError(f"expected a JSON array of records, got a JSON {_kind(value)}")
    for index, record in enumerate(value):
        if not isinstance(record, dict):
            raise BodyError(f"record {index}: expected a JSON object, got a JSON {_kind(record)}")
    return value


def _ndjson(body: bytes, max_records: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        if len(records) == max_records:
            raise TooManyRecords(_too_many(f"more than {max_records}", max_records))
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BodyError(
                f"invalid JSON at line {number}, column {exc.colno}: {exc.msg}"
            ) from None
        if not isinstance(record, dict):
            raise BodyError(f"line {number}: expected a JSON object, got a JSON {_kind(record)}")
        records.append(record)
    return records


def _kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


# -- ids and fields --------------------------------------------------------------------------------


def resolve_id(task: str, key: Any) -> uuid.UUID:
    """A client's key as an event id: the UUID it spells, else a stable uuid5 of task and key."""
    if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
        raise RecordError(f"expected a non-empty string id, got {shown(key)}")
    text = storable(key, "id") if isinstance(key, str) else str(key)
    if len(text) >= 32:  # shorter keys cannot spell a UUID: skip the costly failed parse
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
    return uuid.uuid5(ID_NAMESPACE, f"{task}/{text}")


def label_event_id(observation_id: uuid.UUID) -> uuid.UUID:
    """The id of the label of an observation: one label per observation, re-sending is a no-op."""
    return uuid.uuid5(ID_NAMESPACE, f"label/{observation_id}")


def _event_time(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    if not isinstance(value, str):
        raise RecordError(f"event_time: expected an ISO-8601 date-time string, got {shown(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(f"event_time: {shown(value)} is not an ISO-8601 date-time") from None
    # A time without an offset is taken as UTC.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 moved past the calendar's ends by its offset
        raise RecordError(f"event_time: {shown(value)} is out of range in UTC") from None


def _check_fields(record: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [k for k in record if k not in allowed]
    if unknown:
        raise RecordError(
            f"unknown field(s): {', '.join(sorted(unknown))}; a record takes {', '.join(allowed)}"
        )


# -- observations ----------------------------------------------------------------------------------


def observation_events(
    spec: TaskSpec,
    records: Sequence[Mapping[str, Any]],
    *,
    producer: Producer,
    now: datetime,
    correlation_id: uuid.UUID | None = None,
) -> list[Envelope]:
    """One ObservationRecorded per record, in order; or RecordsInvalid listing every bad record.

    `now` is the occurred_at of records without an event_time.
    """
    # The version hashes the whole spec: once per request, not once per record.
    version = spec.version
    return _events_or_issues(
        records,
        lambda record: _observation(spec, version, record, producer, now, correlation_id),
        lambda first: f"event_id: repeats the event_id of record {first}",
    )


def _observation(
    spec: TaskSpec,
    version: str,
    record: Mapping[str, Any],
    producer: Producer,
    now: datetime,
    correlation_id: uuid.UUID | None,
) -> Envelope:
    _check_fields(record, OBSERVATION_FIELDS)
    entity_id = record.get("entity_id")
    if not isinstance(entity_id, str) or not entity_id:
        raise RecordError(f"entity_id: expected a non-empty string, got {shown(entity_id)}")
    if len(entity_id) > MAX_ENTITY_ID:
        raise RecordError(f"entity_id: longer than {MAX_ENTITY_ID} characters")
    storable(entity_id, "entity_id")
    if "features" not in record:
        raise RecordError("features: is required")
    features = validate_features(spec, record["features"])
    label = record.get("label")
    key = record.get("event_id")
    # The payload is what ObservationRecorded(...).model_dump() gives (every field is checked
    # above); skipping that model saves a third of the per-record cost. A unit test keeps the
    # two equal.
    return Envelope(
        event_id=new_uuid() if key is None else _field_id("event_id", spec.name, key),
        type=ObservationRecorded.type_name,
        schema_version=ObservationRecorded.schema_version,
        stream_id=data_stream(spec.name),
        occurred_at=_event_time(record.get("event_time"), now),
        correlation_id=correlation_id,
        producer=producer,
        payload={
            "task": spec.name,
            "pipeline_version": version,
            "entity_id": entity_id,
            "features": features,
            "label": None if label is None else validate_label(spec, label),
            "online": None,
            "served": None,
        },
    )


def _field_id(field: str, task: str, key: Any) -> uuid.UUID:
    try:
        return resolve_id(task, key)
    except RecordError as exc:
        raise RecordError(f"{field}: {exc}") from None


# -- labels ----------------------------------------------------------------------------------------


def _labelled_key(record: Mapping[str, Any]) -> tuple[str, Any]:
    """Which field a label record names its row by: `observation_id` or `prediction_id`."""
    has_observation = record.get("observation_id") is not None
    has_prediction = record.get("prediction_id") is not None
    if has_observation and has_prediction:
        raise RecordError("give either observation_id or prediction_id, not both")
    if has_prediction:
        return "prediction_id", record["prediction_id"]
    if has_observation:
        return "observation_id", record["observation_id"]
    raise RecordError("observation_id (or prediction_id): is required")


def labelled_observations(task: str, records: Iterable[Mapping[str, Any]]) -> set[uuid.UUID]:
    """The observation ids a batch of label records refers to (malformed ids are skipped)."""
    ids = set()
    for record in records:
        try:
            field, key = _labelled_key(record)
            ids.add(_row_id(field, task, key))
        except RecordError:
            continue
    return ids


def _row_id(field: str, task: str, key: Any) -> uuid.UUID:
    """A label's observation id: a prediction id is the id of the row serving recorded (a UUID,
    never a client key), an observation id is resolved as ingest resolves event ids."""
    if field == "prediction_id":
        try:
            return uuid.UUID(str(key))
        except ValueError:
            raise RecordError(
                f"prediction_id: {shown(key)} is not a prediction id (a UUID)"
            ) from None
    return _field_id(field, task, key)


def label_events(
    spec: TaskSpec,
    records: Sequence[Mapping[str, Any]],
    observations: Mapping[uuid.UUID, Envelope],
    *,
    producer: Producer,
    now: datetime,
    correlation_id: uuid.UUID | None = None,
) -> list[Envelope]:
    """One LabelRecorded per record, each for a stored observation of this task; or RecordsInvalid.

    `observations` are the stored events the records refer to (see `labelled_observations`).
    """
    return _events_or_issues(
        records,
        lambda record: _label(spec, record, observations, producer, now, correlation_id),
        lambda first: f"observation_id: record {first} labels it already",
    )


def _events_or_issues(
    records: Sequence[Mapping[str, Any]],
    make: Callable[[Mapping[str, Any]], Envelope],
    repeats: Callable[[int], str],
) -> list[Envelope]:
    """An event per record, or RecordsInvalid listing every record that failed and why
    (including a record whose event id repeats an earlier record's, named by `repeats`)."""
    events: list[Envelope] = []
    issues: list[RecordIssue] = []
    first_index: dict[uuid.UUID, int] = {}
    for index, record in enumerate(records):
        try:
            event = make(record)
        except RecordError as exc:
            issues.append(RecordIssue(index, str(exc)))
            continue
        first = first_index.setdefault(event.event_id, index)
        if first != index:
            issues.append(RecordIssue(index, repeats(first)))
        events.append(event)
    if issues:
        raise RecordsInvalid(issues, len(records))
    return events


def _label(
    spec: TaskSpec,
    record: Mapping[str, Any],
    observations: Mapping[uuid.UUID, Envelope],
    producer: Producer,
    now: datetime,
    correlation_id: uuid.UUID | None,
) -> Envelope:
    _check_fields(record, LABEL_FIELDS)
    field, key = _labelled_key(record)
    if "label" not in record or record["label"] is None:
        raise RecordError("label: is required")
    observation_id = _row_id(field, spec.name, key)
    label = validate_label(spec, record["label"])
    observation = observations.get(observation_id)
    if (
        observation is None
        or observation.type != ObservationRecorded.type_name
        or observation.payload.get("task") != spec.name
    ):
        if field == "prediction_id":
            raise RecordError(
                f"unknown prediction {shown(key)}: serving recorded no row of task {spec.name!r} "
                "under this id (only predictions made with `record` can be labelled by id)"
            )
        raise RecordError(
            f"unknown observation {shown(key)} ({observation_id}): "
            f"no observation of task {spec.name!r} has this id"
        )
    if observation.payload.get("label") is not None:
        raise RecordError(
            f"observation {shown(key)} ({observation_id}) was recorded with its label; "
            "a label is recorded once"
        )
    payload = LabelRecorded(
        task=spec.name,
        observation_id=observation_id,
        entity_id=observation.payload["entity_id"],
        label=label,
    )
    return new_event(
        payload,
        stream_id=data_stream(spec.name),
        producer=producer,
        event_id=label_event_id(observation_id),
        occurred_at=_event_time(record.get("event_time"), now),
        correlation_id=correlation_id,
    )
