"""The service's OpenAPI schema as a client needs it: the bearer-token scheme, and the error body
the server really sends (``{"error": ..., "details": [...]}``) in place of FastAPI's default
``HTTPValidationError``, which this service never returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

OPEN_PATHS = ("/v1/health", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")
"""Paths that answer without the token: health (which then says only ``{"status": "ok"}``) for
load balancers, and the API description and its pages, which hold no data and no model."""
OPEN_PREFIXES = ("/docs-assets/",)


class ErrorDetail(BaseModel):
    field: str = Field(description="the form field, as location.name (e.g. body.classes)")
    problem: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the service."""

    error: str = Field(description="what is wrong, in one sentence a user can act on")
    details: list[ErrorDetail] | None = Field(
        default=None, description="one entry per malformed field (422 only)"
    )


def error_response(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_response("missing or wrong bearer token (when the server has one)"),
    413: error_response("request body or image larger than the server's limits"),
    415: error_response("a JSON body where multipart/form-data is expected"),
    422: error_response("a form field is missing, malformed or over a limit"),
    500: error_response("internal error (a bug: the server logs its traceback)"),
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error_response("the upload is not a readable image, or the request cannot be served"),
    **COMMON_ERRORS,
}


def add_openapi(app: FastAPI, token_required: bool) -> None:
    """Replace ``app.openapi`` with one that declares ``bearerAuth`` (required on every
    endpoint but health when the server has a token) and drops FastAPI's validation schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "the server's --token (or DOMAINVLM_TOKEN), as "
            "'Authorization: Bearer <token>'",
        }
        for name in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(name, None)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if token_required and path not in OPEN_PATHS:
                    operation["security"] = [{"bearerAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
