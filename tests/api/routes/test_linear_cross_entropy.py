"""POST /v1/linear-cross-entropy: JSON and .npz (float64, float32, float16 and bfloat16
members), torch's shapes, the numeric check, candidates and their diagnoses, refusals naming
the field, and the size limits."""

import json
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest

from app.numerics.cross_entropy import Reduction
from app.numerics.linear import LinearOutput, LinearProblem, analyse_linear
from tests.helpers import npz_body, read_npz

NPZ = "application/x-npz"
ALL = frozenset(LinearOutput)


def head(seed: int = 0, n: int = 96, d: int = 6, c: int = 9) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    labels[rng.random(n) < 0.3] = -100
    return {
        "input": rng.normal(size=(n, d)),
        "linear_weight": rng.normal(size=(c, d)),
        "linear_bias": rng.normal(size=c),
        "labels": labels,
    }


def as_json(arrays: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**{k: np.asarray(v).tolist() for k, v in arrays.items()}, **fields}


def reference(arrays: dict[str, Any], **options: Any) -> Any:
    problem = LinearProblem(
        arrays["input"],
        arrays["linear_weight"],
        np.asarray(arrays["labels"]),
        arrays.get("linear_bias"),
        **options,
    )
    return analyse_linear(problem, ALL)


async def test_json_defaults_and_asked_outputs(asgi_client: httpx.AsyncClient) -> None:
    arrays = head()
    exact = reference(arrays)
    response = await asgi_client.post("/v1/linear-cross-entropy", json=as_json(arrays))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) >= {"loss", "losses", "input_gradient", "linear_bias_gradient"}
    assert "linear_weight_gradient" not in answer and "logits" not in answer
    assert (answer["batch_size"], answer["num_classes"], answer["in_features"]) == (96, 9, 6)
    assert answer["loss"] == float(exact.loss)
    np.testing.assert_array_equal(answer["input_gradient"], exact.input_gradient)
    body = as_json(arrays, include=["linear_weight_gradient", "logits", "probabilities"])
    answer = (await asgi_client.post("/v1/linear-cross-entropy", json=body)).json()
    assert set(answer) >= {"linear_weight_gradient", "logits", "probabilities"}
    assert "loss" not in answer
    np.testing.assert_array_equal(answer["linear_weight_gradient"], exact.linear_weight_gradient)
    np.testing.assert_allclose(np.sum(answer["probabilities"], axis=1), 1, rtol=1e-15)


async def test_npz_members_of_every_float_dtype(asgi_client: httpx.AsyncClient) -> None:
    arrays = head(1)
    for dtype in (np.float64, np.float32, np.float16, ml_dtypes.bfloat16):
        sent = {
            "input": arrays["input"].astype(dtype),
            "linear_weight": arrays["linear_weight"].astype(dtype),
            "labels": arrays["labels"],
        }
        body = npz_body(sent, {"include": ["loss", "input_gradient"]})
        response = await asgi_client.post(
            "/v1/linear-cross-entropy",
            content=body,
            headers={"content-type": NPZ, "accept": NPZ},
        )
        assert response.status_code == 200, (dtype, response.text)
        got, metadata = read_npz(response.content)
        exact = reference(
            {k: np.asarray(v).astype(np.float64) if k != "labels" else v for k, v in sent.items()}
        )  # the members taken as exact
        assert metadata["dtype"] == "float64"
        assert float(got["loss"]) == float(exact.loss)
        np.testing.assert_array_equal(got["input_gradient"], exact.input_gradient)


async def test_npz_candidate_at_its_dtypes_tolerance_with_a_named_mistake(
    asgi_client: httpx.AsyncClient,
) -> None:
    arrays = head(2)
    exact = reference(arrays)
    g = exact.logits_gradient
    last_chunk = g[64:].T @ arrays["input"][64:]
    sent = {
        **arrays,
        "candidate.input_gradient": exact.input_gradient.astype(np.float32),
        "candidate.linear_weight_gradient": last_chunk.astype(ml_dtypes.bfloat16),
    }
    response = await asgi_client.post(
        "/v1/linear-cross-entropy",
        content=npz_body(sent, {}),
        headers={"content-type": NPZ},
    )
    assert response.status_code == 200, response.text
    check = response.json()["candidate_check"]
    assert check["outputs"]["input_gradient"]["passed"] is True
    assert check["outputs"]["linear_weight_gradient"]["passed"] is False
    (diagnosis,) = check["diagnoses"]
    assert (diagnosis["code"], diagnosis["output"]) == (
        "weight_gradient_not_accumulated",
        "linear_weight_gradient",
    )
    worst = check["outputs"]["linear_weight_gradient"]["worst"][0]
    assert len(worst["index"]) == 2  # a (c, i) position of the weight


async def test_numeric_check_of_the_three_gradients(asgi_client: httpx.AsyncClient) -> None:
    body = as_json(
        head(3),
        include=["loss", "numeric_gradient"],
        numeric={"directions": 3, "method": "complex_step"},
        z_loss=1e-3,
        softcap=5.0,
    )
    answer = (await asgi_client.post("/v1/linear-cross-entropy", json=body)).json()
    check = answer["gradient_check"]
    assert check["passed"] is True and check["directions"] == 3 and check["checked"] == 3
    directional = answer["directional_derivatives"]
    np.testing.assert_allclose(directional["numeric"], directional["analytic"], rtol=1e-12)


async def test_causal_shift_and_denominator(asgi_client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(2, 5, 3)), rng.normal(size=(4, 3))
    labels = rng.integers(0, 4, size=(2, 5))
    body = as_json(
        {"input": x, "linear_weight": w, "labels": labels},
        causal_shift=True,
        denominator=100.0,
        include=["loss", "losses", "input_gradient", "logits"],
    )
    answer = (await asgi_client.post("/v1/linear-cross-entropy", json=body)).json()
    assert np.shape(answer["input_gradient"]) == (2, 5, 3)
    assert np.shape(answer["losses"]) == (2, 5) and np.shape(answer["logits"]) == (2, 5, 4)
    summed = reference(
        {"input": x.reshape(10, 3), "linear_weight": w, "labels": _shifted(labels)},
        reduction=Reduction.SUM,
    )
    assert answer["loss"] == pytest.approx(float(summed.loss) / 100, rel=1e-15)


def _shifted(labels: np.ndarray) -> np.ndarray:
    shifted = np.full_like(labels, -100)
    shifted[:, :-1] = labels[:, 1:]
    return shifted.reshape(-1)


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"input": [[0.0, 1.0]] * 96}, ["body", "input"]),
        ({"linear_bias": [0.0] * 3}, ["body", "linear_bias"]),
        ({"labels": [11] + [0] * 95}, ["body", "labels", 0]),
        ({"reduction": "sum", "denominator": 4.0}, ["body", "denominator"]),
        ({"causal_shift": True}, ["body", "input"]),
    ],
)
async def test_refusals_name_the_field(
    asgi_client: httpx.AsyncClient, change: dict[str, Any], location: list[Any]
) -> None:
    body = {**as_json(head(5)), **change}
    response = await asgi_client.post("/v1/linear-cross-entropy", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == location


async def test_a_non_finite_input_is_refused_at_its_position(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = as_json(head(6))
    body["input"][3][2] = float("nan")
    response = await asgi_client.post(
        "/v1/linear-cross-entropy",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input", 3, 2]
    assert "NaN" not in response.text.replace('"NaN"', "")


async def test_limits_answer_413(make_client: Any) -> None:
    async with make_client(max_output_entries=100) as client:
        body = as_json(head(7), include=["linear_weight_gradient", "logits"])
        response = await client.post("/v1/linear-cross-entropy", json=body)
        assert response.status_code == 413
        assert "GRADCHECK_MAX_OUTPUT_ENTRIES" in response.text


async def test_openapi_documents_the_route(asgi_client: httpx.AsyncClient) -> None:
    spec = (await asgi_client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/linear-cross-entropy"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("LinearCrossEntropyRequest")
    assert {"lm_head", "causal_shift"} <= set(body["examples"])


async def test_admission_counts_the_head(make_client: Any) -> None:
    """A head whose estimated peak (`cost.linear_cost`) is over the request limit is refused
    with 413 before it computes, whatever include says; a smaller one is computed."""
    big = {
        "input": np.zeros((64, 32)),
        "linear_weight": np.zeros((100_000, 32), np.float32),
        "labels": np.zeros(64, np.int64),
    }
    async with make_client(max_request_memory_bytes=64 << 20, inline_max_entries=0) as client:
        body = npz_body(big, {"include": []})
        response = await client.post(
            "/v1/linear-cross-entropy", content=body, headers={"content-type": NPZ}
        )
        assert response.status_code == 413, response.text
        small = {**big, "linear_weight": np.zeros((100, 32))}
        response = await client.post(
            "/v1/linear-cross-entropy",
            content=npz_body(small, {"include": []}),
            headers={"content-type": NPZ},
        )
        assert response.status_code == 200, response.text
