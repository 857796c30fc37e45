"""The envelope and payload registry: typed round trips, and upcasting stored old versions."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from shared.events.envelope import (
    Envelope,
    Payload,
    Producer,
    UnknownEventType,
    event_type,
    new_event,
    upcaster,
)
from shared.events.types import ConfigChosen, ObservationRecorded, PredictionServed, Served

PRODUCER = Producer(service="tests", version="0")


@event_type("ThermometerRead", version=2)
class ThermometerRead(Payload):
    """v1 stored `fahrenheit`; v2 stores `celsius`."""

    celsius: float


@upcaster("ThermometerRead", from_version=1)
def _fahrenheit_to_celsius(data: dict) -> dict:
    return {"celsius": round((data["fahrenheit"] - 32) * 5 / 9, 2)}


def _stored_v1() -> Envelope:
    """What a v1 producer wrote, as read back from the store (never rewritten)."""
    current = new_event(ThermometerRead(celsius=0.0), stream_id="t", producer=PRODUCER)
    return current.model_copy(update={"schema_version": 1, "payload": {"fahrenheit": 212.0}})


def test_a_stored_v1_event_is_read_as_the_current_version():
    event = _stored_v1()
    assert event.data() == ThermometerRead(celsius=100.0)
    assert event.payload == {"fahrenheit": 212.0}  # the stored event itself is unchanged


def test_an_event_newer_than_the_code_is_refused_not_misread():
    event = _stored_v1().model_copy(update={"schema_version": 3})
    with pytest.raises(UnknownEventType, match="newer than this code"):
        event.data()


def test_an_envelope_round_trips_through_json_with_its_typed_payload():
    event = new_event(
        ObservationRecorded(
            task="t", pipeline_version="v", entity_id="e", features={"x": 1.0}, label=1
        ),
        stream_id="data-t",
        producer=PRODUCER,
    )
    again = Envelope.from_json(event.to_json())
    assert again == event and again.data() == event.data()
    stored = event.model_copy(
        update={"position": 7, "stream_version": 2, "recorded_at": event.occurred_at}
    )
    stored = stored.model_copy(update={"correlation_id": event.event_id})
    raw = orjson.loads(stored.to_json())
    assert list(raw) == list(Envelope.model_fields)
    assert Envelope.from_json(stored.to_json()) == stored
    assert raw == orjson.loads(orjson.dumps(stored.model_dump(mode="json"))) | {
        "occurred_at": raw["occurred_at"],
        "recorded_at": raw["recorded_at"],
    }


def test_causation_carries_the_correlation_of_the_causing_event():
    cause = new_event(ThermometerRead(celsius=1.0), stream_id="t", producer=PRODUCER)
    cause = cause.model_copy(update={"correlation_id": cause.event_id})
    effect = new_event(
        ThermometerRead(celsius=2.0), stream_id="t", producer=PRODUCER, causation=cause
    )
    assert effect.causation_id == cause.event_id and effect.correlation_id == cause.event_id


def test_stored_one_prediction_events_read_as_batches_of_one():
    """PredictionServed v1 and v2 held one prediction per event; v3 holds a batch."""
    pid = "0b5a6a52-4f0e-4c1b-9a57-3e7d0c0471e0"
    v2 = {
        "task": "elec",
        "prediction_id": pid,
        "model_version": 3,
        "entity_id": "nsw",
        "features": {"x": 1.0},
        "probability": 0.8,
        "label": 1,
        "online": {"last_label": 1.0},
        "recorded": True,
        "learned_through": 41,
        "role": "shadow",
    }
    v1 = {k: v2[k] for k in ("task", "prediction_id", "model_version", "entity_id")} | {
        "features": {"x": 1.0},
        "probability": 0.8,
        "label": 1,
    }
    current = new_event(
        PredictionServed.one("elec", **{k: v for k, v in v2.items() if k != "task"}),
        stream_id="predictions-elec",
        producer=PRODUCER,
    )
    for version, payload in ((2, v2), (1, v1)):
        stored = current.model_copy(update={"schema_version": version, "payload": payload})
        data = stored.data()
        assert isinstance(data, PredictionServed) and data.task == "elec"
        [row] = data.predictions
        assert str(row.prediction_id) == pid and row.served_at is None
        if version == 2:
            assert row == current.data().predictions[0]
        else:
            assert (row.role, row.online, row.recorded) == ("champion", {}, False)


def test_a_config_chosen_of_version_1_reads_as_an_entrants_choice_keyed_by_its_version():
    v1 = {
        "task": "t",
        "pipeline_version": "abc",
        "config": "blend-slow",
        "model_version": 7,
        "reason": "entrant v7 (blend-slow) was promoted: the race runs blend-slow",
    }
    current = new_event(
        ConfigChosen(**v1, decided_at=3, rollback=True), stream_id="data-t", producer=PRODUCER
    )
    stored = current.model_copy(update={"schema_version": 1, "payload": v1})
    assert stored.data() == ConfigChosen(**v1, decided_at=None, rollback=False)
    assert current.schema_version == 2


def test_a_served_row_holds_one_answer_and_a_binary_row_keeps_its_payload():
    binary = Served(model_version=3, probability=0.8)
    # Exactly the keys a binary row had before regressions: readers from before still read it.
    assert set(binary.model_dump(mode="json")) == {
        "model_version",
        "probability",
        "learned_through",
        "role",
    }
    regression = Served(model_version=3, value=41.5)
    assert regression.answer == 41.5 and binary.answer == 0.8
    with pytest.raises(ValidationError, match="exactly one of probability"):
        Served(model_version=3)
    with pytest.raises(ValidationError, match="exactly one of probability"):
        Served(model_version=3, probability=0.5, value=1.0)
