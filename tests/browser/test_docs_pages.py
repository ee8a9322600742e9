"""/docs (Swagger UI) and /redoc in real headless Chromium, with all traffic off 127.0.0.1 cut."""

from pathlib import Path

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from app.api.examples import FLOAT32_FAILS
from tests.browser.conftest import Traffic

pytestmark = [pytest.mark.browser, pytest.mark.live]

RENDER_TIMEOUT_MS = 60_000


def operations(live_url: str) -> list[tuple[str, str, str]]:
    """(method, path, operationId) of every operation in the live OpenAPI document."""
    spec = httpx.get(f"{live_url}/openapi.json", timeout=30).json()
    return [
        (method, path, operation["operationId"])
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]


def assert_stayed_local(traffic: Traffic) -> None:
    """No request left 127.0.0.1, none was refused by the Content-Security-Policy (which would
    hide an outbound attempt from the count), and no script failed."""
    assert traffic.outbound == [], f"requests left the host: {traffic.outbound}"
    assert [m for m in traffic.console_errors if "Content Security Policy" in m] == []
    assert traffic.page_errors == []


async def test_swagger_ui_renders_every_operation_offline(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    expected = operations(live_url)
    await page.goto(f"{live_url}/docs", wait_until="networkidle")
    await expect(page.locator(".opblock")).to_have_count(len(expected), timeout=RENDER_TIMEOUT_MS)
    for method, path, _ in expected:
        block = page.locator(f".opblock-{method}").filter(
            has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
        )
        await expect(block).to_have_count(1)
    await page.screenshot(path=artifacts / "docs.png", full_page=True)
    assert_stayed_local(traffic)


async def test_redoc_renders_every_operation_offline(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    expected = operations(live_url)
    await page.goto(f"{live_url}/redoc", wait_until="networkidle")
    for _, _, operation_id in expected:
        section = page.locator(f'[data-section-id="operation/{operation_id}"]')
        await expect(section).to_have_count(1, timeout=RENDER_TIMEOUT_MS)
    await expect(page.get_by_alt_text("redocly logo")).to_be_visible()
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=artifacts / "redoc.png")
    assert_stayed_local(traffic)


async def try_cross_entropy(page: Page, live_url: str) -> Locator:
    """Open POST /v1/cross-entropy in Swagger UI and press "Try it out"; the operation's block."""
    await page.goto(f"{live_url}/docs", wait_until="networkidle")
    block = page.locator(".opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/v1/cross-entropy"]')
    )
    await block.locator(".opblock-summary").click()
    await block.get_by_role("button", name="Try it out").click()
    return block


async def execute(block: Locator) -> Locator:
    """Press Execute, wait for a 200, and return the response body's cell."""
    await block.get_by_role("button", name="Execute").click()
    response = block.locator(".live-responses-table tr.response")
    await expect(response.locator(".response-col_status")).to_have_text(
        "200", timeout=RENDER_TIMEOUT_MS
    )
    return response.locator(".response-col_description")


async def test_try_it_out_execute_cross_entropy_shows_200(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    block = await try_cross_entropy(page, live_url)
    body = await execute(block)
    await expect(body).to_contain_text('"gradient_check"')
    await expect(body).to_contain_text('"passed": true')
    await block.screenshot(path=artifacts / "docs-try-it-out.png")
    assert_stayed_local(traffic)


async def test_try_it_out_float32_example_shows_a_failed_check(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    block = await try_cross_entropy(page, live_url)
    await block.locator(".opblock-section-request-body .examples-select select").select_option(
        FLOAT32_FAILS
    )
    body = await execute(block)
    await expect(body).to_contain_text('"passed": false')
    await block.screenshot(path=artifacts / "docs-float32-example.png")
    assert_stayed_local(traffic)
