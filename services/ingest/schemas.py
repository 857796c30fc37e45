"""Ingest's request bodies, for its OpenAPI document, with examples.

Routes read the raw body (a JSON array or NDJSON, one record a line) and validate each record
against the task's spec (`records.py`), so these schemas describe the records rather than
parse them. The examples are the shipped tasks' (`tasks/*.yaml`).
"""

from __future__ import annotations

from typing import Any

from shared.examples import COMPAS_FEATURES, ELEC_FEATURES

ELEC_OBSERVATION: dict[str, Any] = {
    "entity_id": "nsw",
    "features": ELEC_FEATURES,
    "event_time": "1996-05-07T12:00:00+00:00",
    "event_id": "elec-1234",
    "label": 1,
}

# A task with sensitive attributes: `race` and `sex` are required with every row although the
# model never learns from them, because audits group rows by them.
COMPAS_OBSERVATION: dict[str, Any] = {
    "entity_id": "defendant-1",
    "features": COMPAS_FEATURES,
    "event_time": "2013-08-14T00:00:00+00:00",
    "event_id": "compas-1",
}

OBSERVATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["entity_id", "features"],
    "additionalProperties": False,
    "properties": {
        "entity_id": {"type": "string", "minLength": 1, "description": "whose row this is"},
        "features": {
            "type": "object",
            "description": "every feature and sensitive attribute of the task, by name "
            "(GET /v1/tasks/{task} lists them and their types). Sensitive attributes (COMPAS: "
            "race, sex) are required although the model does not use them: the bias audits "
            "group rows by them",
        },
        "label": {
            "description": "the row's class (a regression's number), when it is known at once "
            "(else post it later)"
        },
        "event_time": {
            "type": "string",
            "format": "date-time",
            "description": "when it happened (ISO 8601; UTC if no offset); default: now",
        },
        "event_id": {
            "type": "string",
            "minLength": 1,
            "description": "your key: a UUID, or any string (hashed with the task into one); "
            "re-sending it is a no-op",
        },
    },
}

LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["label"],
    "additionalProperties": False,
    "properties": {
        "observation_id": {
            "type": "string",
            "description": "the row's event id (the id ingest returned, or your event_id key)",
        },
        "prediction_id": {
            "type": "string",
            "format": "uuid",
            "description": "or: the prediction id serving returned for a row it recorded "
            "(`record`, log and wait)",
        },
        "label": {"description": "one of the task's classes, or a regression task's number"},
        "event_time": {"type": "string", "format": "date-time"},
    },
}

OBSERVATION_EXAMPLES: dict[str, Any] = {
    "elec": {"summary": "a labelled elec row", "value": [ELEC_OBSERVATION]},
    "compas": {
        "summary": "a COMPAS row: sensitive attributes included, label posted later",
        "value": [COMPAS_OBSERVATION],
    },
}

LABEL_EXAMPLES: dict[str, Any] = {
    "by_prediction": {
        "summary": "the label of a row serving recorded (log and wait)",
        "value": [{"prediction_id": "6f1c2b3a-8d4e-4f5a-9b6c-7d8e9f0a1b2c", "label": 1}],
    },
    "by_observation": {
        "summary": "the label of a row posted to ingest, by your event_id",
        "value": [{"observation_id": "compas-1", "label": 0}],
    },
}


def request_body(
    record: dict[str, Any], what: str, examples: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The OpenAPI request body of a records endpoint: a JSON array of `record`, or NDJSON."""
    as_json: dict[str, Any] = {"schema": {"type": "array", "minItems": 1, "items": record}}
    if examples:
        as_json["examples"] = examples
    return {
        "requestBody": {
            "required": True,
            "description": f"{what}: a JSON array of records, or NDJSON (one record a line)",
            "content": {
                "application/json": as_json,
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "one JSON record a line"}
                },
            },
        }
    }
