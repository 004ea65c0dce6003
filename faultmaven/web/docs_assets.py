"""/docs and /redoc that work without internet: the Swagger UI and ReDoc files are served by the app.

FastAPI's own pages load their JavaScript and CSS from a CDN, so an operator on a closed network gets a
blank page. The files here come from the fastapi-offline package, which ships them; only its static
folder is used, through FastAPI's own get_swagger_ui_html and get_redoc_html.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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
    app.mount(assets_path, StaticFiles(packages=[_PACKAGE]), name="docs-assets")
    _add_page(app, docs_url, _swagger_ui(app, app.openapi_url, assets_path))
    if app.swagger_ui_oauth2_redirect_url:
        _add_page(app, app.swagger_ui_oauth2_redirect_url, swagger_ui_redirect)
    if redoc_url is not None:
        _add_page(app, redoc_url, _redoc(app, app.openapi_url, assets_path))


Page = Callable[..., Awaitable[HTMLResponse]]


def _add_page(app: FastAPI, path: str, page: Page) -> None:
    app.add_api_route(path, page, methods=["GET"], include_in_schema=False)


def _swagger_ui(app: FastAPI, openapi_url: str, assets_path: str) -> Page:
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

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

    return swagger_ui


async def swagger_ui_redirect() -> HTMLResponse:
    """The page Swagger UI returns to after an OAuth2 sign-in."""
    return get_swagger_ui_oauth2_redirect_html()


def _redoc(app: FastAPI, openapi_url: str, assets_path: str) -> Page:
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{assets_path}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{assets_path}/favicon.png",
            with_google_fonts=False,
        )

    return redoc
