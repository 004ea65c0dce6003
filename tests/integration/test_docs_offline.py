"""/docs and /redoc load nothing from outside the app: every asset they name is a local URL that answers."""

from __future__ import annotations

import re

import httpx

from faultmaven.web.docs_assets import DOCS_ASSETS_PATH

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""")


def _assets(html: str) -> list[str]:
    return [a or b for a, b in _ASSET.findall(html)]


async def test_docs_reference_only_local_assets_that_answer(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text
    urls = _assets(page.text)
    assert {f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js", f"{DOCS_ASSETS_PATH}/swagger-ui.css", "/openapi.json"} <= set(
        urls
    )
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        response = await client.get(url)
        assert response.status_code == 200, url
    js = await client.get(f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js")
    assert "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
    css = await client.get(f"{DOCS_ASSETS_PATH}/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css") and ".swagger-ui" in css.text


async def test_redoc_and_oauth2_redirect_are_local_too(client: httpx.AsyncClient) -> None:
    page = await client.get("/redoc")
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text
    urls = _assets(page.text)
    assert f"{DOCS_ASSETS_PATH}/redoc.standalone.js" in urls
    for url in urls:
        assert (await client.get(url)).status_code == 200, url
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200
