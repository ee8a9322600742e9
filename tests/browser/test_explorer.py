"""The explorer page at / in real headless Chromium: it draws, reacts to edits, shows API errors."""

import json
import re
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from app.api.examples import FLOAT32_FAILS
from tests.browser.conftest import Traffic
from tests.helpers import free_port, start_uvicorn

pytestmark = [pytest.mark.browser, pytest.mark.live]

TIMEOUT_MS = 60_000
PLOTS = ["bars", "jacobian", "gradient", "numeric-gradient", "gradient-error"]
LEGENDS = ["jacobian-legend", "gradient-legend", "error-legend"]

# Distinct colours in a canvas: a blank or single-colour canvas has at most one.
DISTINCT_COLOURS = """id => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const seen = new Set();
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  }
  return seen.size;
}"""


async def wait_for_update(page: Page, count: int) -> None:
    """Wait until the page has drawn its `count`-th API answer and is not waiting for another.

    Functions, not expression strings: the page's CSP forbids eval."""
    await page.wait_for_function(
        "n => Number(document.body.dataset.updates) >= n"
        " && document.body.dataset.state === 'ready'",
        arg=count,
        timeout=TIMEOUT_MS,
    )


async def updates(page: Page) -> int:
    return int(await page.evaluate("() => Number(document.body.dataset.updates)"))


async def canvas_image(page: Page, canvas_id: str) -> str:
    return str(await page.evaluate("id => document.getElementById(id).toDataURL()", canvas_id))


@pytest.fixture
async def explorer(page: Page, live_url: str) -> Page:
    """The explorer after its first answer from the API."""
    await page.goto(f"{live_url}/", wait_until="networkidle")
    await wait_for_update(page, 1)
    return page


async def test_explorer_draws_every_plot_with_a_legend(
    explorer: Page, traffic: Traffic, artifacts: Path
) -> None:
    for canvas_id in PLOTS + LEGENDS:
        colours = await explorer.evaluate(DISTINCT_COLOURS, canvas_id)
        assert colours > 3, f"{canvas_id} looks blank ({colours} colours)"
    await expect(explorer.locator("#gradient-verdict")).to_contain_text("Gradient check passed")
    await expect(explorer.locator("#loss")).to_contain_text("loss (mean) =")
    await explorer.screenshot(path=artifacts / "explorer.png", full_page=True)
    assert traffic.outbound == []
    assert traffic.page_errors == []
    assert traffic.console_errors == []


async def test_explorer_redraws_after_an_edit(explorer: Page, traffic: Traffic) -> None:
    before = {canvas_id: await canvas_image(explorer, canvas_id) for canvas_id in PLOTS}
    loss_before = await explorer.locator("#loss").inner_text()
    seen = await updates(explorer)
    await explorer.locator('[data-loc="logits.0.1"]').fill("6")
    await wait_for_update(explorer, seen + 1)
    await expect(explorer.locator("#loss")).not_to_have_text(loss_before)
    changed = [c for c in PLOTS if await canvas_image(explorer, c) != before[c]]
    assert changed == PLOTS
    assert traffic.page_errors == []


async def test_explorer_shows_the_api_error_next_to_the_field(
    explorer: Page, traffic: Traffic, artifacts: Path
) -> None:
    cell = explorer.locator('[data-loc="logits.1.2"]')
    await cell.fill("inf")
    await explorer.wait_for_function(
        "() => document.body.dataset.state === 'invalid'", timeout=TIMEOUT_MS
    )
    message = explorer.locator('[data-error-for="logits"]')
    await expect(message).to_contain_text("sample 1, class 2")
    await expect(message).to_contain_text("+Infinity")
    await expect(cell).to_have_class("invalid")
    await explorer.screenshot(path=artifacts / "explorer-422.png")
    seen = await updates(explorer)
    await cell.fill("-1")
    await wait_for_update(explorer, seen + 1)
    await expect(message).to_be_empty()
    assert traffic.page_errors == []


async def test_explorer_float32_preset_fails_its_check(
    explorer: Page, traffic: Traffic, artifacts: Path
) -> None:
    seen = await updates(explorer)
    await explorer.locator("#preset").select_option(FLOAT32_FAILS)
    await wait_for_update(explorer, seen + 1)
    await expect(explorer.locator("#dtype")).to_have_value("float32")
    verdict = explorer.locator("#gradient-verdict")
    await expect(verdict).to_have_class("verdict fail")
    await expect(verdict).to_contain_text("Gradient check failed")
    await explorer.screenshot(path=artifacts / "explorer-float32.png", full_page=True)
    assert traffic.page_errors == []


async def test_explorer_sends_a_minus_infinity_mask(explorer: Page, traffic: Traffic) -> None:
    """`-inf` in a logit cell goes out as the JSON literal -Infinity: the class is masked."""
    seen = await updates(explorer)
    await explorer.locator('[data-loc="logits.0.2"]').fill("-inf")
    await wait_for_update(explorer, seen + 1)
    await expect(explorer.locator("#gradient-verdict")).to_contain_text("Gradient check passed")
    await expect(explorer.locator('[data-error-for="logits"]')).to_be_empty()
    assert traffic.page_errors == []


async def test_explorer_asks_for_the_api_key_a_service_requires(
    page: Page, traffic: Traffic, artifacts: Path
) -> None:
    """With GRADCHECK_API_KEYS set, the page shows its API key field, says why the API refused
    it (401), and computes once the key is typed; the key goes out as X-API-Key."""
    port = free_port()
    server = start_uvicorn(port, {"GRADCHECK_API_KEYS": "explorer-test-key"})
    try:
        await page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
        await page.wait_for_function(
            "() => document.body.dataset.state === 'invalid'", timeout=TIMEOUT_MS
        )
        key = page.locator("#api-key")
        await expect(key).to_be_visible()
        await expect(page.locator("#api-key-error")).to_contain_text("needs an API key")
        await expect(page.locator("#status")).to_contain_text("An API key is needed")
        await expect(page.locator("#status")).not_to_contain_text("refused the input")
        await expect(page.locator('[data-error-for=""]')).to_be_empty()
        await expect(key).to_have_class("invalid")
        await page.screenshot(path=artifacts / "explorer-key-needed.png")
        async with page.expect_request(lambda r: r.url.endswith("/v1/cross-entropy")) as sent:
            await key.fill("explorer-test-key")
        assert (await sent.value).headers.get("x-api-key") == "explorer-test-key"
        await wait_for_update(page, 1)
        await expect(page.locator("#api-key-error")).to_be_empty()
        await page.screenshot(path=artifacts / "explorer-api-key.png")
        assert traffic.page_errors == []
        assert traffic.outbound == []
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_explorer_names_the_mistake_in_your_own_gradient(
    explorer: Page, traffic: Traffic, artifacts: Path
) -> None:
    """A pasted gradient twice the right one (the sum over N = 2 samples, not the mean): the
    panel shows the not_divided message and outlines every entry on both heatmaps."""
    exact = await explorer.evaluate(
        "() => fetch('v1/cross-entropy', {method: 'POST', headers: {'Content-Type':"
        " 'application/json'}, body: JSON.stringify({logits: [[2, 1, 0.1], [0.5, 2.5, -1]],"
        " labels: [0, 1], include: ['gradient']})}).then(r => r.json()).then(b => b.gradient)"
    )
    doubled = [[2 * v for v in row] for row in exact]
    seen = await updates(explorer)
    await explorer.locator("#candidate-gradient").fill(json.dumps(doubled))
    await wait_for_update(explorer, seen + 1)
    result = explorer.locator("#candidate-result")
    await expect(result).to_be_visible()
    await expect(result).to_have_attribute("data-passed", "false")
    diagnosis = explorer.locator("#candidate-diagnoses li").first
    await expect(diagnosis).to_have_attribute("data-code", "not_divided")
    await expect(diagnosis).to_contain_text("your gradient is the sum, not divided")
    await expect(diagnosis.locator("a")).to_have_count(0)  # docs/maths.md#… is not a URL
    await expect(explorer.locator("#candidate-verdict")).to_contain_text("6 of 6 entries")
    await expect(explorer.locator("#candidate-verdict")).to_contain_text("(atol ")  # applied
    await expect(explorer.locator("#candidate-plot-gradient")).to_have_attribute(
        "data-outlined", "6"
    )
    await expect(explorer.locator("#gradient")).to_have_attribute("data-outlined", "6")
    await explorer.locator("#candidate-panel").screenshot(path=artifacts / "explorer-candidate.png")
    await explorer.screenshot(path=artifacts / "explorer-candidate-page.png", full_page=True)

    seen = await updates(explorer)
    await explorer.locator("#candidate-gradient").fill(json.dumps(exact))
    await wait_for_update(explorer, seen + 1)
    await expect(result).to_have_attribute("data-passed", "true")
    await expect(explorer.locator("#candidate-diagnoses li")).to_have_count(0)
    await expect(explorer.locator("#candidate-plot-gradient")).to_have_attribute(
        "data-outlined", "0"
    )
    assert traffic.page_errors == []
    assert traffic.console_errors == []
    assert traffic.outbound == []


async def test_explorer_names_both_mistakes_of_a_pair(explorer: Page, traffic: Traffic) -> None:
    """Gradient ascent pasted as the gradient (y − a summed over the 2 samples): the panel lists
    the two codes of the pair, sign_flipped then not_divided, each with its message."""
    exact = await explorer.evaluate(
        "() => fetch('v1/cross-entropy', {method: 'POST', headers: {'Content-Type':"
        " 'application/json'}, body: JSON.stringify({logits: [[2, 1, 0.1], [0.5, 2.5, -1]],"
        " labels: [0, 1], include: ['gradient']})}).then(r => r.json()).then(b => b.gradient)"
    )
    ascent = [[-2 * v for v in row] for row in exact]
    seen = await updates(explorer)
    await explorer.locator("#candidate-gradient").fill(json.dumps(ascent))
    await wait_for_update(explorer, seen + 1)
    items = explorer.locator("#candidate-diagnoses li")
    await expect(items).to_have_count(2)
    await expect(items.nth(0)).to_have_attribute("data-code", "sign_flipped")
    await expect(items.nth(1)).to_have_attribute("data-code", "not_divided")
    await expect(items.nth(0)).to_contain_text("together with not_divided")
    assert traffic.page_errors == []
    assert traffic.console_errors == []


async def test_explorer_links_a_diagnosis_only_to_an_http_docs_url(
    page: Page, traffic: Traffic
) -> None:
    """With GRADCHECK_DOCS_URL set the message's docs link is a clickable http(s) link, and
    unreadable pasted text is said under its box."""
    port = free_port()
    server = start_uvicorn(port, {"GRADCHECK_DOCS_URL": "https://gradcheck.example.org"})
    try:
        await page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
        await wait_for_update(page, 1)
        seen = await updates(page)
        flipped = "[[0.170499, -0.121216, -0.049283], [-0.058057, 0.071012, -0.012954]]"
        await page.locator("#candidate-gradient").fill(flipped)  # y − a instead of a − y
        await wait_for_update(page, seen + 1)
        await expect(page.locator("#candidate-diagnoses li").first).to_have_attribute(
            "data-code", "sign_flipped"
        )
        link = page.locator("#candidate-diagnoses li a").first
        await expect(link).to_have_attribute(
            "href", re.compile(r"^https://gradcheck\.example\.org/")
        )
        seen = await updates(page)
        await page.locator("#candidate-jacobian").fill("[[1, 2")
        await wait_for_update(page, seen + 1)
        await expect(page.locator('[data-error-for="candidate.jacobian"]')).to_contain_text(
            "Not read"
        )
        assert traffic.page_errors == []
        assert traffic.outbound == []
    finally:
        server.terminate()
        server.wait(timeout=10)
