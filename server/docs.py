"""/docs (Swagger UI) served from an installed package, never a CDN, so the API docs render with no network.

vLLM ships Swagger UI's bundle and stylesheet for its own offline docs (`vllm/entrypoints/serve/instrumentator/
static`); both the `cpu` and the `cuda` extra install vLLM. Where they are missing, /docs says so instead of
loading from the internet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_PATH = "/docs-static"


def swagger_assets_dir() -> Path | None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "entrypoints" / "serve" / "instrumentator" / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() and (folder / "swagger-ui.css").is_file() else None


def install_offline_docs(app: FastAPI) -> None:
    """Add /docs backed by the local assets. The app must be created with docs_url=None."""
    assets = swagger_assets_dir()
    if assets is not None:
        app.mount(STATIC_PATH, StaticFiles(directory=str(assets)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse("<h1>API docs unavailable</h1><p>Swagger UI's files come from the installed vllm "
                                "package, which is missing; the schema is at <a href='/openapi.json'>/openapi.json"
                                "</a>.</p>", status_code=503)
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC_PATH}/swagger-ui.css", swagger_favicon_url="data:,")
