"""A caller's own outputs (`candidate`) on /v1/cross-entropy and /v1/softmax: checked against the
exact reference, the mistake named, nothing else of the response changed."""

import json
import math
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.api.examples import CROSS_ENTROPY_EXAMPLES

LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]
BODY: dict[str, Any] = {"logits": LOGITS, "labels": [0, 1]}


def softmax_rows(z: list[list[float]]) -> np.ndarray:
    """An independent softmax (rows here are small and never saturated)."""
    values = np.exp(np.array(z) - np.max(z, axis=1, keepdims=True))
    result: np.ndarray = values / values.sum(axis=1, keepdims=True)
    return result


def closed_form_gradient(z: list[list[float]], labels: list[int]) -> np.ndarray:
    """(a − y)/N: one-hot targets sum to one, so a·Σq − q = a − y."""
    a = softmax_rows(z)
    y = np.eye(a.shape[1])[labels]
    gradient: np.ndarray = (a - y) / len(labels)
    return gradient


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    """Post with the standard json module, which writes NaN and ±Infinity literals."""
    return await client.post(
        path, content=json.dumps(body), headers={"content-type": "application/json"}
    )


async def test_a_right_gradient_passes_with_no_diagnosis(asgi_client: httpx.AsyncClient) -> None:
    gradient = closed_form_gradient(LOGITS, [0, 1]).tolist()
    response = await post(
        asgi_client, "/v1/cross-entropy", {**BODY, "candidate": {"gradient": gradient}}
    )
    assert response.status_code == 200
    check = response.json()["candidate_check"]
    assert check["passed"] is True
    assert check["diagnoses"] == []
    assert check["outputs"]["gradient"]["mismatches"] == 0
    assert check["outputs"]["gradient"]["checked"] == 6


async def test_the_candidate_changes_no_other_output(asgi_client: httpx.AsyncClient) -> None:
    plain = (await post(asgi_client, "/v1/cross-entropy", BODY)).json()
    wrong = {"gradient": (3 * closed_form_gradient(LOGITS, [0, 1])).tolist()}
    checked = (await post(asgi_client, "/v1/cross-entropy", {**BODY, "candidate": wrong})).json()
    assert checked.pop("candidate_check")["passed"] is False
    assert checked == plain


async def test_a_summed_gradient_is_named_not_divided(asgi_client: httpx.AsyncClient) -> None:
    summed = (2 * closed_form_gradient(LOGITS, [0, 1])).tolist()
    response = await post(
        asgi_client, "/v1/cross-entropy", {**BODY, "candidate": {"gradient": summed}}
    )
    check = response.json()["candidate_check"]
    assert check["passed"] is False
    first = check["diagnoses"][0]
    assert (first["code"], first["output"]) == ("not_divided", "gradient")
    assert "docs/maths.md#" in first["message"]
    worst = check["outputs"]["gradient"]["worst"]
    assert worst and all(isinstance(entry["expected"], float) for entry in worst)


async def test_non_finite_values_are_diagnosed_and_quoted(asgi_client: httpx.AsyncClient) -> None:
    overflowed = softmax_rows(LOGITS).tolist()
    overflowed[0] = [math.nan, math.inf, -math.inf]
    response = await post(
        asgi_client, "/v1/cross-entropy", {**BODY, "candidate": {"probabilities": overflowed}}
    )
    assert response.status_code == 200
    orjson.loads(response.content)  # strict JSON: no NaN or Infinity literal anywhere
    output = response.json()["candidate_check"]["outputs"]["probabilities"]
    assert output["nonfinite"] == 3
    assert output["max_abs_error"] is None and output["max_rel_error"] is None
    assert {entry["got"] for entry in output["worst"]} >= {"NaN", "Infinity", "-Infinity"}
    # small logits: exp overflows nowhere, so these NaN/Infinity are no fact of overflow
    assert response.json()["candidate_check"]["diagnoses"] == []


@pytest.mark.parametrize(
    ("candidate", "defect_word"),
    [
        ({"gradient": [[0.1, 0.2]]}, "gradient"),
        ({"gradient": "not numbers"}, "gradient"),
        ({"loss": [[1.0, 2.0, 3.0]]}, "loss"),
    ],
)
async def test_unreadable_candidates_are_reported_in_the_check(
    asgi_client: httpx.AsyncClient, candidate: dict[str, Any], defect_word: str
) -> None:
    response = await post(asgi_client, "/v1/cross-entropy", {**BODY, "candidate": candidate})
    assert response.status_code == 200
    output = response.json()["candidate_check"]["outputs"][defect_word]
    assert output["passed"] is False
    assert defect_word in output["defect"]


async def test_an_unknown_candidate_output_is_a_422_naming_it(
    asgi_client: httpx.AsyncClient,
) -> None:
    response = await post(asgi_client, "/v1/softmax", {"logits": LOGITS, "candidate": {"loss": 1}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "candidate", "loss"]


async def test_a_float32_candidate_of_a_float64_problem_passes(
    asgi_client: httpx.AsyncClient,
) -> None:
    single = softmax_rows(LOGITS).astype(np.float32).astype(np.float64).tolist()
    response = await post(
        asgi_client, "/v1/softmax", {"logits": LOGITS, "candidate": {"probabilities": single}}
    )
    check = response.json()["candidate_check"]
    assert check["passed"] is True
    assert check["diagnoses"] == []


async def test_a_float32_request_is_checked_against_the_float64_reference(
    asgi_client: httpx.AsyncClient,
) -> None:
    exact = closed_form_gradient(LOGITS, [0, 1]).tolist()
    tight = {"atol": 1e-15, "rtol": 1e-13}
    body = {**BODY, "dtype": "float32", "tolerance": tight, "candidate": {"gradient": exact}}
    check = (await post(asgi_client, "/v1/cross-entropy", body)).json()["candidate_check"]
    assert check["passed"] is True


async def test_a_softmax_jacobian_without_its_diagonal_is_named(
    asgi_client: httpx.AsyncClient,
) -> None:
    a = softmax_rows(LOGITS)
    missing_diagonal = (-a[:, :, None] * a[:, None, :]).tolist()
    body = {"logits": LOGITS, "candidate": {"jacobian": missing_diagonal}}
    check = (await post(asgi_client, "/v1/softmax", body)).json()["candidate_check"]
    assert check["diagnoses"][0]["code"] == "jacobian_missing_diagonal"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("candidate_right", None),
        ("candidate_not_divided", "not_divided"),
        ("candidate_a_minus_y", "a_minus_y"),
        ("candidate_sign_flipped", "sign_flipped"),
    ],
)
async def test_the_swagger_candidate_examples_say_what_they_promise(
    asgi_client: httpx.AsyncClient, name: str, code: str | None
) -> None:
    response = await asgi_client.post(
        "/v1/cross-entropy", json=CROSS_ENTROPY_EXAMPLES[name]["value"]
    )
    check = response.json()["candidate_check"]
    assert check["passed"] is (code is None)
    assert [d["code"] for d in check["diagnoses"][:1]] == ([code] if code else [])
