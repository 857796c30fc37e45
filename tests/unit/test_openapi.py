"""The OpenAPI documents say what a request carries (clients are generated from them)."""

from __future__ import annotations

from services.ingest.app import create_app as ingest_app
from services.serving.app import create_app as serving_app


def test_ingest_declares_its_request_bodies_in_json_and_ndjson():
    paths = ingest_app().openapi()["paths"]
    for path, required in (
        ("/v1/tasks/{task}/observations", ["entity_id", "features"]),
        ("/v1/tasks/{task}/labels", ["label"]),
    ):
        body = paths[path]["post"]["requestBody"]
        assert set(body["content"]) == {"application/json", "application/x-ndjson"}
        record = body["content"]["application/json"]["schema"]["items"]
        assert record["required"] == required
    label = paths["/v1/tasks/{task}/labels"]["post"]["requestBody"]
    fields = label["content"]["application/json"]["schema"]["items"]["properties"]
    assert {"observation_id", "prediction_id"} <= set(fields)


def test_serving_documents_log_and_wait_and_read_your_writes():
    schemas = serving_app().openapi()["components"]["schemas"]
    request = schemas["PredictRequest"]["properties"]
    assert {"record", "after_position"} <= set(request)
    assert "online_features" in schemas["PredictionOut"]["properties"]
