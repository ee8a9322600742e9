"""The explorer's Hessian panel in real headless Chromium: the heatmap of the selected sample's
C × C block, its eigenvalues (Jacobi rotations in linalg.js), the sentence on definiteness, the
numeric Hessian check and a pasted candidate Hessian."""

import json
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import Traffic
from tests.browser.test_explorer import (
    DISTINCT_COLOURS,
    updates,
    wait_for_update,
)

pytestmark = [pytest.mark.browser, pytest.mark.live]

EIGENVALUES = "#hessian-eigenvalues"


@pytest.fixture
async def explorer(page: Page, live_url: str) -> Page:
    """The explorer after its first answer from the API."""
    await page.goto(f"{live_url}/", wait_until="networkidle")
    await wait_for_update(page, 1)
    return page


async def eigenvalues(page: Page) -> list[float]:
    text = await page.locator(EIGENVALUES).get_attribute("data-eigenvalues")
    assert text is not None, "no eigenvalues listed"
    values: list[float] = json.loads(text)
    return values


async def exact(page: Page, body: dict[str, object]) -> dict[str, object]:
    """The API's answer to `body`, asked from the page (same origin, no key)."""
    answer: dict[str, object] = await page.evaluate(
        """body => fetch('v1/cross-entropy', {method: 'POST', headers: {'Content-Type':
        'application/json'}, body: JSON.stringify(body)}).then(r => r.json())""",
        body,
    )
    return answer


async def test_hessian_heatmap_and_psd_eigenvalues_for_the_default_problem(
    explorer: Page, traffic: Traffic, artifacts: Path
) -> None:
    """Default problem (no weights): the heatmap is drawn, the eigenvalues are one ≈ 0 along
    (1, …, 1) and C − 1 positive ones, all ≥ −1e-12, and the sentence says it is PSD."""
    for canvas_id in ("hessian", "hessian-legend"):
        colours = await explorer.evaluate(DISTINCT_COLOURS, canvas_id)
        assert colours > 3, f"{canvas_id} looks blank ({colours} colours)"
    # The drawn block is the API's hessian of sample 0, and it is (Σq/D)·J = J/2 here.
    drawn = await explorer.evaluate("() => document.getElementById('hessian').plotGeometry.matrix")
    answer = await exact(
        explorer,
        {"logits": [[2, 1, 0.1], [0.5, 2.5, -1]], "labels": [0, 1], "include": ["hessian"]},
    )
    hessian = answer["hessian"]
    assert isinstance(hessian, list)
    assert drawn == hessian[0]

    values = await eigenvalues(explorer)
    assert len(values) == 3
    assert all(v >= -1e-12 for v in values), values
    assert min(abs(v) for v in values) < 1e-12, values
    assert sorted(values)[1] > 1e-3  # rank C − 1 = 2
    # Jacobi's eigenvalues sum to the trace of the block.
    assert sum(values) == pytest.approx(sum(hessian[0][i][i] for i in range(3)), abs=1e-14)
    await expect(explorer.locator(f"{EIGENVALUES} li.zero")).to_have_count(1)
    await expect(explorer.locator(f"{EIGENVALUES} li.negative")).to_have_count(0)
    await expect(explorer.locator("#hessian-eigen-note")).to_contain_text("= 1.000000")
    explanation = explorer.locator("#hessian-explanation")
    await expect(explanation).to_contain_text("zero eigenvalue along (1, …, 1)")
    await expect(explanation).to_contain_text("This problem has no negative class weights")
    await expect(explanation).to_contain_text("positive semi-definite.")

    # The other sample's block, chosen in the Hessian panel, moves the Jacobian panel too.
    seen = await updates(explorer)
    await explorer.locator("#hessian-sample").select_option("1")
    await expect(explorer.locator(EIGENVALUES)).to_have_attribute("data-sample", "1")
    await expect(explorer.locator("#jacobian-sample")).to_have_value("1")
    drawn = await explorer.evaluate("() => document.getElementById('hessian').plotGeometry.matrix")
    assert drawn == hessian[1]
    assert await updates(explorer) == seen  # a redraw, not a new request

    await explorer.locator("#hessian-panel").screenshot(path=artifacts / "explorer-hessian.png")
    await explorer.screenshot(path=artifacts / "explorer-hessian-page.png", full_page=True)
    assert traffic.outbound == []
    assert traffic.page_errors == []
    assert traffic.console_errors == []


async def test_a_negative_class_weight_gives_negative_eigenvalues(
    explorer: Page, traffic: Traffic, artifacts: Path
) -> None:
    """w0 = -1 with reduction sum: sample 0 (label 0) has s = Σq/D = -1, so its block is −J:
    two negative eigenvalues, one ≈ 0, and the sentence names the negative weight."""
    seen = await updates(explorer)
    await explorer.locator("#reduction").select_option("sum")
    await wait_for_update(explorer, seen + 1)
    await explorer.locator("#use-weight").check()
    await wait_for_update(explorer, seen + 2)
    await explorer.locator('[data-loc="weight.0"]').fill("-1")
    await wait_for_update(explorer, seen + 3)
    await expect(explorer.locator("#hessian-explanation")).to_have_attribute(
        "data-negative-weights", "true"
    )
    values = await eigenvalues(explorer)
    negatives = [v for v in values if v < -1e-12]
    assert len(negatives) == 2, values
    assert min(abs(v) for v in values) < 1e-12, values
    await expect(explorer.locator(f"{EIGENVALUES} li.negative")).to_have_count(2)
    explanation = explorer.locator("#hessian-explanation")
    await expect(explanation).to_contain_text("negative class weights (w0 = -1)")
    await expect(explanation).to_contain_text("s = -1 < 0")
    await expect(explanation).to_contain_text("2 negative eigenvalues")
    await explorer.locator("#hessian-panel").screenshot(
        path=artifacts / "explorer-hessian-negative-weight.png"
    )

    # Sample 1 (label 1, weight 1) keeps s = 1 ≥ 0: PSD although the problem has a negative weight.
    await explorer.locator("#hessian-sample").select_option("1")
    await expect(explorer.locator(f"{EIGENVALUES} li.negative")).to_have_count(0)
    assert all(v >= -1e-12 for v in await eigenvalues(explorer))
    await expect(explanation).to_contain_text("for sample 1, s = 1 ≥ 0")
    assert traffic.page_errors == []
    assert traffic.console_errors == []


async def test_a_saturated_row_has_a_zero_block(explorer: Page, traffic: Traffic) -> None:
    """The extreme_logits preset: sample 0's probabilities are exactly one-hot, its Hessian block
    is 0, every eigenvalue is ≈ 0 and the sentence says why."""
    seen = await updates(explorer)
    await explorer.locator("#preset").select_option("extreme_logits")
    await wait_for_update(explorer, seen + 1)
    values = await eigenvalues(explorer)
    assert all(abs(v) < 1e-12 for v in values), values
    await expect(explorer.locator(f"{EIGENVALUES} li.zero")).to_have_count(3)
    await expect(explorer.locator("#hessian-eigen-note")).to_contain_text("3 eigenvalues ≈ 0")
    await expect(explorer.locator("#hessian-explanation")).to_contain_text(
        "probabilities are saturated (a one-hot), so its block is 0: every eigenvalue"
    )
    assert traffic.page_errors == []
    assert traffic.console_errors == []


async def test_the_numeric_hessian_check_and_a_candidate_hessian(
    explorer: Page, traffic: Traffic, artifacts: Path
) -> None:
    """The Hessian check is shown like the Jacobian's; a pasted Hessian twice the right one is
    diagnosed hessian_not_divided and outlined on the heatmap."""
    seen = await updates(explorer)
    async with explorer.expect_request(lambda r: r.url.endswith("/v1/cross-entropy")) as sent:
        await explorer.locator("#check-hessian").check()
    request = json.loads((await sent.value).post_data or "{}")
    assert "hessian" in request["include"]
    assert "numeric_hessian" in request["include"]
    await wait_for_update(explorer, seen + 1)
    await expect(explorer.locator("#hessian-verdict")).to_contain_text("Hessian check passed")

    answer = await exact(
        explorer,
        {"logits": [[2, 1, 0.1], [0.5, 2.5, -1]], "labels": [0, 1], "include": ["hessian"]},
    )
    hessian = answer["hessian"]
    assert isinstance(hessian, list)
    doubled = [[[2 * v for v in row] for row in block] for block in hessian]
    seen = await updates(explorer)
    await explorer.locator("#candidate-hessian").fill(json.dumps(doubled))
    await wait_for_update(explorer, seen + 1)
    await expect(explorer.locator("#candidate-result")).to_have_attribute("data-passed", "false")
    diagnosis = explorer.locator("#candidate-diagnoses li").first
    await expect(diagnosis).to_have_attribute("data-code", "hessian_not_divided")
    await expect(explorer.locator("#candidate-verdict")).to_contain_text("Hessian: 18 of 18")
    await expect(explorer.locator("#hessian")).to_have_attribute("data-outlined", "9")
    await expect(explorer.locator("#candidate-plot-hessian")).to_have_attribute(
        "data-outlined", "9"
    )
    await explorer.locator("#candidate-panel").screenshot(
        path=artifacts / "explorer-candidate-hessian.png"
    )
    assert traffic.page_errors == []
    assert traffic.console_errors == []
    assert traffic.outbound == []


async def test_eigenvalue_routine_refuses_a_large_matrix(explorer: Page) -> None:
    """linalg.js directly: eigenvalues of a known symmetric matrix, and 'too-large' above
    EIGEN_MAX_SIZE (the explorer's own inputs stop at 12 classes, so the panel never gets there)."""
    result = await explorer.evaluate(
        """async () => {
          const { symmetricEigen, EIGEN_MAX_SIZE } = await import('./static/linalg.js');
          const n = EIGEN_MAX_SIZE + 1;
          const big = Array.from({ length: n }, () => Array(n).fill(0));
          const small = symmetricEigen([[2, 1, 0], [1, 2, 0], [0, 0, -3]]);
          return { big: symmetricEigen(big).status, small: small.values, max: EIGEN_MAX_SIZE };
        }"""
    )
    assert result["big"] == "too-large"
    assert result["small"] == pytest.approx([-3, 1, 3], abs=1e-15)
    assert 24 <= result["max"] <= 64
