"""The service as a team meets it: the OpenAPI schema says how to authenticate and what errors
look like, and a JSON body sent to a multipart endpoint is told so."""

from __future__ import annotations

import json

import pytest
from domainvlm.core.service import create_app
from fastapi.testclient import TestClient

from tests.plugins.colours import ColourSystem


@pytest.fixture(scope="module")
def schema() -> dict:
    app = create_app(ColourSystem().encoder(), token="s3cret", answerer=lambda *args: [])
    return TestClient(app).get("/openapi.json").json()


def test_the_schema_declares_the_bearer_scheme_where_it_is_needed(schema: dict):
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path in ("/v1/zeroshot", "/v1/search", "/v1/vqa"):
        assert schema["paths"][path]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in schema["paths"]["/v1/health"]["get"]
    without_token = TestClient(create_app(ColourSystem().encoder())).get("/openapi.json").json()
    assert "security" not in without_token["paths"]["/v1/zeroshot"]["post"]


def test_every_endpoint_is_described_with_the_real_error_body(schema: dict):
    for path, method in [("/v1/zeroshot", "post"), ("/v1/search", "post"),
                         ("/v1/vqa", "post"), ("/v1/health", "get")]:  # fmt: skip
        operation = schema["paths"][path][method]
        assert len(operation["description"]) > 40, path
        for status in ("422", "401", "413", "415") if method == "post" else ():
            ref = operation["responses"][status]["content"]["application/json"]["schema"]
            assert ref == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["properties"]) == {"error", "details"} and body["required"] == ["error"]
    assert "HTTPValidationError" not in json.dumps(schema)


def test_a_json_body_is_told_to_use_multipart():
    client = TestClient(create_app(ColourSystem().encoder()))
    response = client.post("/v1/zeroshot", json={"image": "tile.png", "classes": "red,blue"})
    assert response.status_code == 415
    error = response.json()["error"]
    assert "takes multipart/form-data" in error and "but got Content-Type application/json" in error
    assert "curl -F image=@tile.png -F classes=" in error
    # The error body really is what the schema says, for FastAPI's own validation too.
    malformed = client.post("/v1/zeroshot", data={"classes": "red"}, files={"x": ("a", b"")})
    assert malformed.status_code == 422
    assert malformed.json() == {
        "error": "malformed request",
        "details": [{"field": "body.image", "problem": "Field required"}],
    }
