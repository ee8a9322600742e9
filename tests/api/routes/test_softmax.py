"""POST /v1/softmax."""

import math

import httpx
import numpy as np
import pytest

from tests.numerics import reference


async def test_softmax_of_zero_and_log_two(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/softmax", json={"logits": [0.0, math.log(2.0)]})
    assert response.status_code == 200
    body = response.json()
    assert body["probabilities"] == pytest.approx([1 / 3, 2 / 3], rel=1e-15)
    assert np.array(body["jacobian"]).shape == (2, 2)  # one axis: no batch axis, as torch
    np.testing.assert_allclose(body["jacobian"], [[2 / 9, -2 / 9], [-2 / 9, 2 / 9]], rtol=1e-14)
    assert "log_probabilities" not in body and "jacobian_check" not in body


async def test_every_output_with_a_numeric_check(asgi_client: httpx.AsyncClient) -> None:
    logits = [[1.0, -2.0, 0.5, 3.0], [100.0, 0.0, -100.0, 50.0]]
    include = ["probabilities", "log_probabilities", "jacobian", "numeric_jacobian"]
    response = await asgi_client.post(
        "/v1/softmax",
        json={"logits": logits, "include": include, "numeric": {"method": "five_point"}},
    )
    body = response.json()
    for row, log_a in zip(logits, body["log_probabilities"], strict=True):
        assert reference.relative_row_error(log_a, reference.log_softmax(row)) <= 1e-15
    for row, block in zip(logits, body["jacobian"], strict=True):
        exact = [x for r in reference.jacobian(row) for x in r]
        assert reference.relative_row_error(np.ravel(block).tolist(), exact) <= 1e-14
    check = body["jacobian_check"]
    assert check["passed"] and check["method"] == "five_point" and check["checked"] == 32


async def test_softmax_rejects_bad_logits(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.post("/v1/softmax", json={"logits": [[1.0, 2.0], [1.0]]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "logits", 1]
    response = await asgi_client.post(
        "/v1/softmax", json={"logits": [[1.0, 2.0]], "include": ["loss"]}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "include", 0]
