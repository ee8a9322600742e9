"""The exact contract that a client generated from /openapi.json and a new user found wrong
(issue 13, item 9), each fixed and kept so."""

from typing import Any

import httpx
import pytest

LOGITS = [[1.0, 2.0, 0.5]]


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/cross-entropy", json=body)


async def test_a_huge_complex_step_reports_finite_error_estimates(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = {"logits": LOGITS, "labels": [0], "numeric": {"method": "complex_step", "step": 1e200}}
    check = (await post(asgi_client, body)).json()["gradient_check"]
    assert isinstance(check["estimated_truncation_error"], float)
    assert isinstance(check["estimated_rounding_error"], float)


@pytest.mark.parametrize(("dtype", "step"), [("float64", 1e-311), ("float32", 1e-39)])
async def test_a_step_the_precision_cannot_hold_is_refused_by_name(
    asgi_client: httpx.AsyncClient, dtype: str, step: float
) -> None:
    body = {"logits": LOGITS, "labels": [0], "dtype": dtype, "numeric": {"step": step}}
    response = await post(asgi_client, body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "numeric", "step"]
    assert dtype in error["msg"] and "logits" not in error["msg"]


async def test_huge_weights_get_their_own_reason(asgi_client: httpx.AsyncClient) -> None:
    body = {"logits": LOGITS, "labels": [0], "weight": [1.0, 1e16, 1.0], "dtype": "float32"}
    (error,) = (await post(asgi_client, body)).json()["detail"]
    assert error["loc"] == ["body", "weight", 1]
    assert "one-hot" not in error["msg"] and "float64" not in error["msg"]


@pytest.mark.parametrize(
    ("method", "advice"),
    [("forward", "eps^(1/2)"), ("central", "eps^(2/3)"), ("five_point", "eps^(4/5)")],
)
async def test_the_float32_advice_names_the_method_used(
    asgi_client: httpx.AsyncClient, method: str, advice: str
) -> None:
    body = {
        "logits": [[2.0, -1.0, 0.5, 3.0]],
        "labels": [3],
        "dtype": "float32",
        "numeric": {"method": method, "step": 1e-5},
    }
    message = (await post(asgi_client, body)).json()["gradient_check"]["message"]
    assert f"a {method} difference cannot be much better than {advice}" in message


async def test_a_complex_step_check_gets_no_difference_advice(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = {
        "logits": [[2.0, -1.0, 0.5, 3.0]],
        "labels": [3],
        "dtype": "float32",
        "numeric": {"method": "complex_step"},
        "tolerance": {"atol": 0, "rtol": 0},
    }
    message = (await post(asgi_client, body)).json()["gradient_check"]["message"]
    assert "cannot be much better" not in message


async def test_the_schema_states_defaults_and_enums(asgi_client: httpx.AsyncClient) -> None:
    spec = (await asgi_client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    include = schemas["CrossEntropyRequest"]["properties"]["include"]
    assert include["default"] == [
        "probabilities",
        "loss",
        "gradient",
        "numeric_gradient",
        "jacobian",
    ]
    reduction = schemas["ProblemResponse"]["properties"]["reduction"]
    assert reduction == {"$ref": "#/components/schemas/Reduction"}
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


async def test_metrics_answers_head_as_text(asgi_client: httpx.AsyncClient) -> None:
    head = await asgi_client.head("/metrics")
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/plain")


async def test_an_overflowing_literal_is_refused_where_the_mask_literal_is_not(
    asgi_client: httpx.AsyncClient,
) -> None:
    headers = {"content-type": "application/json"}
    mask = b'{"logits": [[1.0, -Infinity, 0.5]], "labels": [0]}'
    assert (await asgi_client.post("/v1/cross-entropy", content=mask, headers=headers)).is_success
    overflow = b'{"logits": [[1.0, -1e999999, 0.5]], "labels": [0]}'
    response = await asgi_client.post("/v1/cross-entropy", content=overflow, headers=headers)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "logits", 0, 1]
    assert "-1e999999" in error["msg"]


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "iso-8859-1"])
async def test_a_body_not_in_utf8_is_415(asgi_client: httpx.AsyncClient, charset: str) -> None:
    headers = {"content-type": f"application/json; charset={charset}"}
    body = b'{"logits": [[1.0, 2.0]], "labels": [0]}'
    response = await asgi_client.post("/v1/cross-entropy", content=body, headers=headers)
    assert response.status_code == 415
    assert "UTF-8" in response.json()["detail"]
    utf8 = {"content-type": "application/json; charset=UTF-8"}
    assert (await asgi_client.post("/v1/cross-entropy", content=body, headers=utf8)).is_success


async def test_a_huge_label_is_not_echoed(asgi_client: httpx.AsyncClient) -> None:
    huge = "9" * 400
    body = f'{{"logits": [[1.0, 2.0], [0.5, 0.1]], "labels": [0, {huge}]}}'.encode()
    response = await asgi_client.post(
        "/v1/cross-entropy", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "labels", 1]
    assert "9" * 30 not in response.text
