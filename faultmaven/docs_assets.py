"""/docs and /redoc that work without internet: the Swagger UI and ReDoc files are served by the app.

FastAPI's own pages load their JavaScript and CSS from a CDN, so an operator on a closed network gets a
blank page. The files here come from the fastapi-offline package, which ships them; only its static
folder is used, through FastAPI's own get_swagger_ui_html and get_redoc_html.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS_ASSETS_PATH = "/docs-assets"
_PACKAGE = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png


def serve_docs_offline(
    app: FastAPI, *, docs_url: str = "/docs", redoc_url: str | None = "/redoc", assets_path: str = DOCS_ASSETS_PATH
) -> None:
    """Add `docs_url` (Swagger UI), `redoc_url` and the files they load at `assets_path`, all local.

    The app must be built with docs_url=None and redoc_url=None so FastAPI's CDN pages stay out.
    """
    if app.openapi_url is None:
        raise ValueError("the app has no OpenAPI schema (openapi_url=None) to show")
    openapi_url = app.openapi_url
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    app.mount(assets_path, StaticFiles(packages=[_PACKAGE]), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}" if oauth2_redirect_url else None,
            swagger_js_url=f"{root}{assets_path}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets_path}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets_path}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    app.add_api_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    if oauth2_redirect_url:

        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_api_route(oauth2_redirect_url, swagger_ui_redirect, methods=["GET"], include_in_schema=False)
    if redoc_url is not None:

        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{assets_path}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{assets_path}/favicon.png",
                with_google_fonts=False,
            )

        app.add_api_route(redoc_url, redoc, methods=["GET"], include_in_schema=False)
