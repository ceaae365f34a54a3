"""/docs (Swagger UI) and /redoc render from assets the service ships: the pages name no outside host, and a
headless Chromium whose every request to anything but the app is refused still shows the API's operations."""

from __future__ import annotations

import re
import shutil
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import Harness, api_settings, harness

CHROMIUM = shutil.which("chromium")  # Debian's package: /usr/bin/chromium
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


async def test_pages_reference_only_packaged_assets(api: Harness) -> None:
    c = api.client
    for path in ("/docs", "/redoc"):
        r = await c.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
        assert urls, path
        assert all(u.startswith("/") for u in urls), (path, urls)  # nothing from a CDN or font service
        assert "/openapi.json" in r.text
        for u in urls:
            asset = await c.get(u)
            assert asset.status_code == 200 and len(asset.content) > 500, u
    assert (await c.get("/static/docs/swagger-ui-bundle.js")).headers["content-type"].startswith("text/javascript")
    assert (await c.get("/static/docs/redoc.standalone.js")).status_code == 200
    assert (await c.get("/static/docs/swagger-ui.LICENSE")).status_code == 404  # only the listed files
    assert (await c.get("/static/docs/..%2Fapp.js")).status_code == 404
    paths = (await c.get("/openapi.json")).json()["paths"]
    assert not any(p.startswith(("/docs", "/redoc", "/static")) for p in paths)


@pytest.mark.integration
async def test_docs_and_redoc_render_with_the_network_blocked(redis_url: str, unique: str) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    async with harness(api_settings(redis_url, unique), serve=True) as h:
        schema = (await h.client.get("/openapi.json")).json()
        operation_ids = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
        app_host = urlsplit(h.base_url).netloc
        refused: list[tuple[str, str]] = []

        async def only_the_app(route: object) -> None:
            request = route.request  # type: ignore[attr-defined]
            if urlsplit(request.url).netloc == app_host or request.url.startswith("data:"):
                await route.continue_()  # type: ignore[attr-defined]
            else:
                refused.append((request.resource_type, request.url))
                await route.abort("internetdisconnected")  # type: ignore[attr-defined]

        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                context = await browser.new_context()
                await context.route("**/*", only_the_app)
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))

                await page.goto(f"{h.base_url}/docs")
                await page.locator(".opblock").first.wait_for(timeout=30_000)
                # each operation is shown under each of its tags, as `id="operations-<tag>-<operationId>"`
                ids = await page.eval_on_selector_all(".opblock", "els => els.map(e => e.id)")
                assert all(any(i.endswith(f"-{op}") for i in ids) for op in operation_ids), (ids, operation_ids)
                assert await page.locator(".opblock-summary-path", has_text="/v1/score/transaction").count() >= 1
                assert await page.locator(".info .title", has_text="rmad-crypto").count() == 1

                await page.goto(f"{h.base_url}/redoc")
                await page.locator("[data-section-id*='operation/']").first.wait_for(timeout=30_000)
                shown = await page.eval_on_selector_all(
                    "[data-section-id*='operation/']", "els => els.map(e => e.dataset.sectionId)"
                )
                assert {s.rsplit("operation/", 1)[1] for s in shown} == set(operation_ids)
                assert not errors, errors
                # ReDoc's sidebar footer asks its CDN for the Redocly logo and hides the image when that fails;
                # nothing the pages need (script, style, font, the schema) may come from outside
                assert all(kind == "image" for kind, _ in refused), f"the pages reached outside the app: {refused}"
            finally:
                await browser.close()
