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


def test_every_operation_declares_its_errors_in_one_shape_and_governance_its_keys():
    from services.governance.app import create_app as governance_app

    for app, errors in (
        (ingest_app(), {"400", "404", "409", "413", "415", "422", "503"}),
        (serving_app(), {"404", "413", "422"}),
        (governance_app(), {"401", "403", "404", "409", "413", "422"}),
    ):
        document = app.openapi()
        problem = document["components"]["schemas"]["Problem"]
        assert problem["required"] == ["detail"]
        for path, operations in document["paths"].items():
            if path in ("/healthz", "/readyz"):
                continue
            for method, operation in operations.items():
                declared = set(operation["responses"])
                assert errors <= declared, (app.title, method, path, errors - declared)
    schemes = governance_app().openapi()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    ready = ingest_app().openapi()["paths"]["/readyz"]["get"]["responses"]
    assert {"200", "503"} <= set(ready)


def test_the_trainer_documents_its_health_readiness_and_status_pages():
    from services.trainer.openapi import document

    paths = document()["paths"]
    assert set(paths) == {"/healthz", "/readyz", "/v1/status"}
    assert "503" in paths["/readyz"]["get"]["responses"]
    status = document()["components"]["schemas"]["Status"]
    assert {"tasks", "models_emitted", "dead_letters"} <= set(status["properties"])
