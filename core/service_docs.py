"""The service's API pages (Swagger UI at ``/docs``, ReDoc at ``/redoc``), served offline.

FastAPI's own pages load their JavaScript and CSS from a CDN, so on an air-gapped network they stay
blank. Here every asset comes from the installed ``fastapi-offline`` package (Swagger UI 5, which
reads FastAPI's OpenAPI 3.1, and ReDoc) under ``/docs-assets``, and Swagger UI's online validator
badge is off: the pages make no request outside the server.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def assets_dir() -> Path:
    """swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def add_offline_docs(app: FastAPI) -> None:
    """Serve the API pages of ``app``, built with ``docs_url=None, redoc_url=None``."""
    if app.docs_url or app.redoc_url:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            # null turns off the badge that sends the spec to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )
