"""Serving's recorder builds its PredictionServed payloads field by field (a hot path): they must be
exactly what validating the typed payload and dumping it as JSON gives; pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.serving.models import Prediction
from services.serving.recorder import ROWS_PER_EVENT, PredictionRecorder, rfc3339, served_row
from shared.events.envelope import new_event
from shared.events.types import PredictionServed, ServedPrediction, prediction_stream
from tests.support import TEST_PRODUCER


def _prediction(i: int, **overrides: object) -> Prediction:
    fields = {
        "prediction_id": uuid.UUID(int=i + 1),
        "entity_id": f"e{i % 7}" if i % 5 else None,
        "features": {"income": 1.5 * i, "colour": "red" if i % 2 else "blue"},
        "online": {"last_label": float(i % 2)} if i % 3 else {},
        "probability": i / 1000,
        "label": ["no", "yes", None][i % 3],
        "model_version": 3 + i % 2,
        "role": ["champion", "canary", "shadow"][i % 3],
    }
    fields.update(overrides)
    return Prediction(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "served_at",
    [
        datetime(2026, 11, 28, 10, 6, 43, 4822, tzinfo=UTC),
        datetime(2026, 11, 28, 10, 6, 43, tzinfo=UTC),  # no fraction of a second
    ],
)
@pytest.mark.parametrize("recorded, learned", [(True, 12), (False, None)])
def test_a_served_row_is_the_json_dump_of_its_validated_prediction(
    served_at: datetime, recorded: bool, learned: int | None
):
    multiclass = {"probability": None, "probabilities": [0.2, 0.5, 0.3], "label": "mid"}
    for p in [_prediction(i) for i in range(6)] + [_prediction(6, **multiclass)]:
        typed = ServedPrediction(
            prediction_id=p.prediction_id,
            model_version=p.model_version,
            entity_id=p.entity_id,
            features=p.features,
            probability=p.probability,
            label=p.label,
            probabilities=p.probabilities,
            online=p.online,
            recorded=recorded,
            learned_through=learned,
            role=p.role,
            served_at=served_at,
        )
        assert served_row(p, learned, recorded, rfc3339(served_at)) == typed.model_dump(mode="json")


def test_the_recorders_events_validate_and_equal_new_events_of_typed_payloads():
    recorder = PredictionRecorder(None, TEST_PRODUCER)  # type: ignore[arg-type]  # never appends
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    taken = [("loans", _prediction(i), i, i % 2 == 0, now) for i in range(ROWS_PER_EVENT + 3)]
    events = recorder._by_stream(taken)[prediction_stream("loans")]
    assert [len(e.payload["predictions"]) for e in events] == [ROWS_PER_EVENT, 3]
    for event, start in zip(events, (0, ROWS_PER_EVENT), strict=True):
        typed = PredictionServed.model_validate(event.payload)  # what every reader does
        expected = new_event(typed, stream_id=event.stream_id, producer=TEST_PRODUCER)
        assert event.type == expected.type and event.schema_version == expected.schema_version
        assert event.payload == expected.payload
        assert event.occurred_at == now
        assert [r.prediction_id for r in typed.predictions] == [
            uuid.UUID(int=i + 1) for i in range(start, start + len(typed.predictions))
        ]
