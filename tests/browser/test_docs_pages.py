"""/docs (Swagger UI) and /redoc in real headless Chromium, with all traffic off 127.0.0.1 cut."""

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

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


def csp_refusals(traffic: Traffic) -> list[str]:
    """Console errors saying the Content-Security-Policy stopped a load (an outbound attempt)."""
    return [m for m in traffic.console_errors if "Content Security Policy" in m]


def assert_stayed_local(traffic: Traffic) -> None:
    assert traffic.outbound == [], f"requests left the host: {traffic.outbound}"
    assert csp_refusals(traffic) == []
    assert traffic.page_errors == []


def test_swagger_ui_renders_every_operation_offline(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    expected = operations(live_url)
    page.goto(f"{live_url}/docs", wait_until="networkidle")
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(expected), timeout=RENDER_TIMEOUT_MS)
    for method, path, _ in expected:
        block = page.locator(f".opblock-{method}").filter(
            has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
        )
        expect(block).to_have_count(1)
    page.screenshot(path=artifacts / "docs.png", full_page=True)
    assert_stayed_local(traffic)


def test_redoc_renders_every_operation_offline(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    expected = operations(live_url)
    page.goto(f"{live_url}/redoc", wait_until="networkidle")
    for _, _, operation_id in expected:
        section = page.locator(f'[data-section-id="operation/{operation_id}"]')
        expect(section).to_have_count(1, timeout=RENDER_TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=artifacts / "redoc.png")
    assert_stayed_local(traffic)


def try_cross_entropy(page: Page, live_url: str) -> Locator:
    """Open POST /v1/cross-entropy in Swagger UI and press "Try it out"; the operation's block."""
    page.goto(f"{live_url}/docs", wait_until="networkidle")
    block = page.locator(".opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/v1/cross-entropy"]')
    )
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    return block


def execute(block: Locator) -> Locator:
    """Press Execute, wait for a 200, and return the response body's cell."""
    block.get_by_role("button", name="Execute").click()
    response = block.locator(".live-responses-table tr.response")
    expect(response.locator(".response-col_status")).to_have_text("200", timeout=RENDER_TIMEOUT_MS)
    return response.locator(".response-col_description")


def test_try_it_out_execute_cross_entropy_shows_200(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    block = try_cross_entropy(page, live_url)
    body = execute(block)
    expect(body).to_contain_text('"gradient_check"')
    expect(body).to_contain_text('"passed": true')
    block.screenshot(path=artifacts / "docs-try-it-out.png")
    assert_stayed_local(traffic)


def test_try_it_out_float32_example_shows_a_failed_check(
    page: Page, traffic: Traffic, live_url: str, artifacts: Path
) -> None:
    block = try_cross_entropy(page, live_url)
    block.locator(".opblock-section-request-body .examples-select select").select_option(
        FLOAT32_FAILS
    )
    body = execute(block)
    expect(body).to_contain_text('"passed": false')
    block.screenshot(path=artifacts / "docs-float32-example.png")
    assert_stayed_local(traffic)
