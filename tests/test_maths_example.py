"""The worked example of docs/maths.md ("The maths"), checked two ways: against
the API, and against a first-principles computation in plain Python (math only).

Each number in a results block must be the true value rounded to the digits it is printed with.
"""

import json
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "maths.md"
BLOCK = re.compile(r"<!-- (request|results): ([\w-]+) -->\s*```\w*\n(.*?)```", re.DOTALL)
NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")


def doc_blocks(kind: str) -> dict[str, str]:
    """{name: text} of the blocks marked `<!-- kind: name -->` in docs/maths.md."""
    return {name: text for k, name, text in BLOCK.findall(DOC.read_text()) if k == kind}


REQUESTS = {name: json.loads(text) for name, text in doc_blocks("request").items()}
RESULTS = doc_blocks("results")


def printed_values(text: str) -> dict[str, list[str]]:
    """{"a": ["0.6652", ...], "L": ["0.4076"]}: each line `key = number or [numbers]`."""
    values = {}
    for line in text.strip().splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = [m.group(0) for m in NUMBER.finditer(value)]
    return values


def assert_rounds_to(printed: list[str], actual: list[float], what: str) -> None:
    """Every printed number equals the actual one rounded to the printed decimals."""
    assert len(printed) == len(actual), what
    for text, value in zip(printed, actual, strict=True):
        decimals = len(text.partition(".")[2])
        assert abs(float(text) - value) <= 0.5 * 10.0**-decimals + 1e-12, (
            f"{what}: {text} vs {value}"
        )


def first_principles(request: dict[str, Any]) -> dict[str, list[float]]:
    """Softmax, its Jacobian, effective targets, loss and gradient (chain rule through the
    Jacobian, not the closed form) of a one-sample request, from the definitions alone."""
    (z,) = request["logits"]
    (y,) = request["labels"]
    num_classes = len(z)
    weight = request.get("weight", [1.0] * num_classes)
    eps = request.get("label_smoothing", 0.0)
    exps = [math.exp(v - max(z)) for v in z]
    a = [e / sum(exps) for e in exps]
    jacobian = [[a[i] * ((i == j) - a[j]) for j in range(num_classes)] for i in range(num_classes)]
    q = [
        (1 - eps) * weight[y] * (c == y) + eps / num_classes * weight[c] for c in range(num_classes)
    ]
    divisor = weight[y] if request.get("reduction", "mean") == "mean" else 1.0
    loss = -sum(q[i] * math.log(a[i]) for i in range(num_classes)) / divisor
    gradient = [
        sum(-q[i] / a[i] * jacobian[i][j] for i in range(num_classes)) / divisor
        for j in range(num_classes)
    ]
    values = {"a": a, "q": q, "L": [loss], "dL/dz": gradient}
    values.update({f"J[{i}]": row for i, row in enumerate(jacobian)})
    return values


def from_response(body: dict[str, Any]) -> dict[str, list[float]]:
    """The same quantities as the API returns them (sample 0)."""
    values = {"a": body["probabilities"][0], "L": [body["loss"]], "dL/dz": body["gradient"][0]}
    values.update({f"J[{i}]": row for i, row in enumerate(body["jacobian"][0])})
    return values


def test_every_request_has_its_results() -> None:
    assert len(REQUESTS) >= 3
    assert REQUESTS.keys() == RESULTS.keys()


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_printed_numbers_follow_from_the_definitions(name: str) -> None:
    reference = first_principles(REQUESTS[name])
    for key, printed in printed_values(RESULTS[name]).items():
        assert_rounds_to(printed, reference[key], f"{name} {key}")


@pytest.mark.parametrize("name", sorted(RESULTS))
async def test_printed_numbers_match_the_api(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/v1/cross-entropy", json=REQUESTS[name])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gradient_check"]["passed"] is True
    api = from_response(body)
    checked = [key for key in printed_values(RESULTS[name]) if key in api]
    assert "dL/dz" in checked
    for key in checked:
        assert_rounds_to(printed_values(RESULTS[name])[key], api[key], f"{name} {key}")


async def test_weighted_smoothed_gradient_is_neither_a_minus_y_nor_a_minus_q(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.post("/v1/cross-entropy", json=REQUESTS["smoothed-sum"])).json()
    a, gradient = body["probabilities"][0], body["gradient"][0]
    q = [float(v) for v in printed_values(RESULTS["smoothed-sum"])["q"]]
    y = [1.0, 0.0, 0.0]
    assert max(abs(g - (p - t)) for g, p, t in zip(gradient, a, y, strict=True)) > 0.05
    assert max(abs(g - (p - t)) for g, p, t in zip(gradient, a, q, strict=True)) > 0.05
    total = sum(q)
    assert gradient == pytest.approx([p * total - t for p, t in zip(a, q, strict=True)], abs=1e-12)
