"""POST /v1/cross-entropy: values, options, and every kind of bad input."""

import json
import math
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ClientFactory
from tests.numerics import reference

URL = "/v1/cross-entropy"
LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]


def strict_json(response: httpx.Response) -> Any:
    """The body parsed as strict JSON: a NaN or Infinity literal anywhere fails the test."""

    def refuse(literal: str) -> None:
        raise AssertionError(f"response carries the non-JSON literal {literal}")

    return json.loads(response.text, parse_constant=refuse)


async def post(client: httpx.AsyncClient, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    """POST a body serialised by Python's json (which writes NaN / -Infinity literals)."""
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return await client.post(URL, content=json.dumps(body), headers=headers, **kwargs)


async def test_default_response_has_every_default_output(client: httpx.AsyncClient) -> None:
    response = await post(client, {"logits": LOGITS, "labels": [0, 1]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["batch_size"] == 2 and body["num_classes"] == 3 and body["dtype"] == "float64"
    assert set(body) == {
        "batch_size", "num_classes", "spatial_shape", "dtype", "reduction", "probabilities",
        "loss", "losses", "gradient", "numeric_gradient", "jacobian", "gradient_check",
    }  # fmt: skip
    assert body["spatial_shape"] == []
    np.testing.assert_array_equal(np.shape(body["jacobian"]), (2, 3, 3))
    exact_losses = reference.losses_index(LOGITS, [0, 1])
    assert body["losses"] == pytest.approx([float(x) for x in exact_losses], rel=1e-15)
    assert body["loss"] == pytest.approx(float(sum(exact_losses) / 2), rel=1e-15)
    for row, probabilities in zip(LOGITS, body["probabilities"], strict=True):
        assert reference.relative_row_error(probabilities, reference.softmax(row)) <= 1e-15
    a = np.array(body["probabilities"])
    np.testing.assert_allclose(body["gradient"], (a - np.eye(3)[[0, 1]]) / 2, atol=1e-16)
    check = body["gradient_check"]
    assert check["passed"] is True and check["mismatches"] == 0 and check["checked"] == 6
    assert check["method"] == "central" and check["atol"] == 1e-5 and check["rtol"] == 1e-3
    assert check["step"] == pytest.approx(np.finfo(float).eps ** (1 / 3))
    assert check["max_rel_error"] < 1e-7
    assert check["message"].startswith("passed")


async def test_probability_labels_that_do_not_sum_to_one(client: httpx.AsyncClient) -> None:
    labels = [[0.2, 0.5, 0.3], [1.0, 1.0, 0.0]]  # the second row sums to 2
    response = await post(client, {"logits": LOGITS, "labels": labels, "reduction": "sum"})
    assert response.status_code == 200
    body = response.json()
    a = np.array(body["probabilities"])
    q = np.array(labels)
    np.testing.assert_allclose(body["gradient"], a * q.sum(axis=1, keepdims=True) - q, atol=1e-15)
    assert not np.allclose(body["gradient"][1], a[1] - q[1])


async def test_weights_smoothing_and_ignored_samples(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {
        "logits": [*LOGITS, [0.0, 0.0, 9.0]],
        "labels": [2, -1, 1],
        "weight": [1.0, 3.0, 0.5],
        "ignore_index": -1,
        "label_smoothing": 0.2,
        "reduction": "mean",
    }
    response = await post(client, body)
    assert response.status_code == 200, response.text
    result = response.json()
    rows = body["logits"]
    losses = reference.losses_index(
        rows, [2, -1, 1], weight=[1.0, 3.0, 0.5], ignore_index=-1, smoothing=0.2
    )
    expected = reference.reduce_index(
        losses, [2, -1, 1], "mean", weight=[1.0, 3.0, 0.5], ignore_index=-1
    )
    assert not isinstance(expected, list)  # "mean" reduces to one number
    assert result["loss"] == pytest.approx(float(expected), rel=1e-14)
    assert result["losses"][1] == 0.0
    assert result["gradient"][1] == [0.0, 0.0, 0.0]
    assert result["gradient_check"]["passed"]


async def test_reduction_none_returns_per_sample_losses(client: httpx.AsyncClient) -> None:
    response = await post(client, {"logits": LOGITS, "labels": [0, 2], "reduction": "none"})
    body = response.json()
    assert body["loss"] == body["losses"] and len(body["loss"]) == 2
    a = np.array(body["probabilities"])
    np.testing.assert_allclose(body["gradient"], a - np.eye(3)[[0, 2]], atol=1e-16)


async def test_one_sample_without_a_batch_axis(asgi_client: httpx.AsyncClient) -> None:
    """As torch: logits (C,) with a scalar index, or probabilities of shape (C,); outputs
    (C,), (C, C) and a number (contract change: a flat list was one sample of shape (1, C))."""
    for labels in (1, [0.0, 1.0, 0.0]):
        response = await post(asgi_client, {"logits": [1.0, 2.0, 3.0], "labels": labels})
        assert response.status_code == 200, (labels, response.text)
        body = response.json()
        assert body["batch_size"] == 1 and body["spatial_shape"] == []
        exact = reference.losses_index([[1.0, 2.0, 3.0]], [1])[0]
        assert body["loss"] == pytest.approx(float(exact), rel=1e-15)
        assert body["losses"] == pytest.approx(float(exact), rel=1e-15)
        assert np.shape(body["probabilities"]) == (3,)
        assert np.shape(body["gradient"]) == (3,)
        assert np.shape(body["jacobian"]) == (3, 3)
    response = await post(asgi_client, {"logits": [1.0, 2.0, 3.0], "labels": [1]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "labels"]


async def test_masked_logits_and_log_probabilities(asgi_client: httpx.AsyncClient) -> None:
    logits = [[0.0, float("-inf"), 1.0], [2.0, 1.0, float("-inf")]]
    response = await post(
        asgi_client,
        {
            "logits": logits,
            "labels": [2, 0],
            "include": ["probabilities", "log_probabilities", "gradient", "numeric_gradient"],
        },
    )
    assert response.status_code == 200, response.text
    body = strict_json(response)
    assert body["log_probabilities"][0][1] is None
    assert body["probabilities"][0][1] == 0.0
    assert body["gradient_check"]["passed"]
    assert body["numeric_gradient"][1][2] == 0.0


async def test_extreme_logits_are_exact_and_finite(asgi_client: httpx.AsyncClient) -> None:
    logits = [[1e4, -1e4, 0.0], [-1e4, 1e4, 9999.0]]
    response = await post(asgi_client, {"logits": logits, "labels": [1, 1], "reduction": "none"})
    assert response.status_code == 200
    body = response.json()
    for row, loss in zip(logits, body["losses"], strict=True):
        exact = reference.losses_index([row], [1])[0]
        assert loss == pytest.approx(float(exact), rel=1e-14)
    assert all(math.isfinite(x) for row in body["gradient"] for x in row)


@pytest.mark.parametrize("method", ["central", "five_point", "complex_step"])
@pytest.mark.parametrize("scale", [1.2e8, 1e12, 1e15])
async def test_huge_logits_get_finite_numeric_derivatives(
    asgi_client: httpx.AsyncClient, method: str, scale: float
) -> None:
    """Steps of h = ∛eps·|z| (≈ 700 at |z| = 1e8) move a logit far above or below the others;
    the numeric derivatives stay finite (no overflow) and the response is a 200."""
    logits = [[0.0, scale], [scale, scale * (1 - 1e-9), -np.inf], [-scale, 0.0, 1.0]]
    body = {
        "logits": [row + [0.0] * (3 - len(row)) for row in logits],
        "labels": [1, 0, 2],
        "include": ["gradient", "numeric_gradient", "numeric_jacobian"],
        "numeric": {"method": method},
    }
    response = await post(asgi_client, body)
    assert response.status_code == 200, response.text
    result = strict_json(response)
    for name in ("gradient", "numeric_gradient", "numeric_jacobian"):
        assert np.isfinite(np.asarray(result[name], float)).all(), name
    assert result["gradient_check"]["checked"] == 9


async def test_optional_outputs_and_numeric_jacobian(asgi_client: httpx.AsyncClient) -> None:
    response = await post(
        asgi_client,
        {
            "logits": LOGITS,
            "labels": [0, 1],
            "include": ["loss", "numeric_jacobian"],
            "numeric": {"method": "complex_step"},
        },
    )
    body = response.json()
    assert set(body) >= {"loss", "losses", "numeric_jacobian", "jacobian_check"}
    assert "gradient" not in body and "jacobian" not in body and "gradient_check" not in body
    assert body["jacobian_check"]["passed"] and body["jacobian_check"]["max_rel_error"] < 1e-13
    assert body["jacobian_check"]["step"] == 1e-20


@pytest.mark.parametrize(
    ("method", "ceiling"), [("complex_step", 1e-13), ("central", 1e-7), ("five_point", 1e-8)]
)
async def test_numeric_methods_agree_in_float64(
    asgi_client: httpx.AsyncClient, method: str, ceiling: float
) -> None:
    rng = np.random.default_rng(3)
    body = {
        "logits": rng.normal(size=(20, 6)).tolist(),
        "labels": rng.integers(0, 6, 20).tolist(),
        "numeric": {"method": method},
    }
    check = (await post(asgi_client, body)).json()["gradient_check"]
    assert check["passed"] and check["max_rel_error"] <= ceiling
    assert check["method"] == method


async def test_float32_is_clearly_worse_and_the_response_says_so(
    asgi_client: httpx.AsyncClient,
) -> None:
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=(32, 10)) * 4).tolist()
    labels = rng.integers(0, 10, 32).tolist()
    strict = {"atol": 1e-7, "rtol": 1e-5}
    f64 = (
        await post(asgi_client, {"logits": logits, "labels": labels, "tolerance": strict})
    ).json()
    f32 = (
        await post(
            asgi_client,
            {"logits": logits, "labels": labels, "tolerance": strict, "dtype": "float32"},
        )
    ).json()
    assert f32["dtype"] == "float32"
    assert f64["gradient_check"]["passed"]
    assert not f32["gradient_check"]["passed"]
    assert f32["gradient_check"]["max_rel_error"] > 100 * f64["gradient_check"]["max_rel_error"]
    assert "float32" in f32["gradient_check"]["message"]
    assert f32["gradient_check"]["worst_mismatches"]


async def test_fixed_step_is_used_and_reported(asgi_client: httpx.AsyncClient) -> None:
    body = {"logits": LOGITS, "labels": [0, 1], "numeric": {"method": "forward", "step": 0.5}}
    check = (await post(asgi_client, body)).json()["gradient_check"]
    assert check["step"] == 0.5 and check["step_rule"] == "h = 0.5"
    assert not check["passed"]  # a huge forward step is visibly wrong
    assert "own estimated error" in check["message"]


NAN, INF = float("nan"), float("inf")
BAD_INPUTS = [
    ("NaN logit", {"logits": [[1.0, NAN]], "labels": [0]}, ["body", "logits", 0, 1]),
    (
        "+Infinity logit",
        {"logits": [[1.0, 2.0], [INF, 0.0]], "labels": [0, 1]},
        ["body", "logits", 1, 0],
    ),
    ("huge literal", {"logits": [[1.0, 1e999]], "labels": [0]}, ["body", "logits", 0, 1]),
    ("huge logit", {"logits": [[0.0, 2.5e224]], "labels": [0]}, ["body", "logits", 0, 1]),
    (
        "huge probability",
        {"logits": [[0.0, 1.0]], "labels": [[0.0, 7e83]]},
        ["body", "labels", 0, 1],
    ),
    (
        "huge weight",
        {"logits": LOGITS, "labels": [0, 1], "weight": [1.0, 1e300, 1.0]},
        ["body", "weight", 1],
    ),
    (
        "all masked row",
        {"logits": [[0.0, 1.0], [-INF, -INF]], "labels": [0, 1], "reduction": "sum"},
        ["body", "logits", 1],
    ),
    ("mass on mask", {"logits": [[0.0, -INF]], "labels": [1]}, ["body", "logits", 0, 1]),
    (
        "smoothing on mask",
        {"logits": [[0.0, -INF]], "labels": [0], "label_smoothing": 0.1},
        ["body", "logits", 0, 1],
    ),
    ("ragged", {"logits": [[1.0, 2.0], [3.0]], "labels": [0, 0]}, ["body", "logits", 1]),
    ("empty", {"logits": [], "labels": []}, ["body", "logits"]),
    ("empty row", {"logits": [[]], "labels": [0]}, ["body", "logits", 0]),
    ("one class", {"logits": [[1.0]], "labels": [0]}, ["body", "logits", 0]),
    ("string", {"logits": [[1.0, "2"]], "labels": [0]}, ["body", "logits", 0, 1]),
    ("bool", {"logits": [[1.0, True]], "labels": [0]}, ["body", "logits", 0, 1]),
    ("not an array", {"logits": 3, "labels": [0]}, ["body", "logits"]),
    ("label out of range", {"logits": LOGITS, "labels": [0, 3]}, ["body", "labels", 1]),
    ("label beyond int64", {"logits": LOGITS, "labels": [0, 2**64]}, ["body", "labels", 1]),
    (
        "ignore_index beyond int64",
        {"logits": LOGITS, "labels": [0, 1], "ignore_index": -(2**70)},
        ["body", "ignore_index"],
    ),
    ("negative label", {"logits": LOGITS, "labels": [-2, 0]}, ["body", "labels", 0]),
    ("fractional label", {"logits": LOGITS, "labels": [0, 1.5]}, ["body", "labels", 1]),
    ("too few labels", {"logits": LOGITS, "labels": [0]}, ["body", "labels"]),
    (
        "negative probability",
        {"logits": LOGITS, "labels": [[0.5, 0.5, 0.0], [1.0, -0.1, 0.1]]},
        ["body", "labels", 1, 1],
    ),
    (
        "NaN probability",
        {"logits": LOGITS, "labels": [[0.5, 0.5, 0.0], [1.0, NAN, 0.1]]},
        ["body", "labels", 1, 1],
    ),
    (
        "narrow probability row",
        {"logits": LOGITS, "labels": [[0.5, 0.5, 0.0], [1.0, 0.0]]},
        ["body", "labels", 1],
    ),
    (
        "too few probability rows",
        {"logits": LOGITS, "labels": [[0.5, 0.5, 0.0]]},
        ["body", "labels"],
    ),
    (
        "weight length",
        {"logits": LOGITS, "labels": [0, 1], "weight": [1.0, 2.0]},
        ["body", "weight"],
    ),
    (
        "-Infinity weight",
        {"logits": LOGITS, "labels": [0, 1], "weight": [1.0, -INF, 1.0]},
        ["body", "weight", 1],
    ),
    (
        "smoothing above 1",
        {"logits": LOGITS, "labels": [0, 1], "label_smoothing": 1.5},
        ["body", "label_smoothing"],
    ),
    (
        "smoothing below 0",
        {"logits": LOGITS, "labels": [0, 1], "label_smoothing": -0.1},
        ["body", "label_smoothing"],
    ),
    (
        "NaN smoothing",
        {"logits": LOGITS, "labels": [0, 1], "label_smoothing": NAN},
        ["body", "label_smoothing"],
    ),
    (
        "unknown include",
        {"logits": LOGITS, "labels": [0, 1], "include": ["loss", "third_derivative"]},
        ["body", "include", 1],
    ),
    (
        "unknown reduction",
        {"logits": LOGITS, "labels": [0, 1], "reduction": "max"},
        ["body", "reduction"],
    ),
    (
        "unknown method",
        {"logits": LOGITS, "labels": [0, 1], "numeric": {"method": "magic"}},
        ["body", "numeric", "method"],
    ),
    (
        "zero step",
        {"logits": LOGITS, "labels": [0, 1], "numeric": {"step": 0}},
        ["body", "numeric", "step"],
    ),
    (
        "negative atol",
        {"logits": LOGITS, "labels": [0, 1], "tolerance": {"atol": -1}},
        ["body", "tolerance", "atol"],
    ),
    ("unknown dtype", {"logits": LOGITS, "labels": [0, 1], "dtype": "float16"}, ["body", "dtype"]),
    ("unknown field", {"logits": LOGITS, "labels": [0, 1], "label": 3}, ["body", "label"]),
    ("missing labels", {"logits": LOGITS}, ["body", "labels"]),
    ("all ignored under mean", {"logits": LOGITS, "labels": [-100, -100]}, ["body", "labels"]),
    (
        "float32 overflow",
        {"logits": [[1e39, 0.0]], "labels": [0], "dtype": "float32"},
        ["body", "logits", 0, 0],
    ),
]


@pytest.mark.parametrize(
    ("body", "location"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
async def test_bad_input_is_a_422_naming_field_and_position(
    asgi_client: httpx.AsyncClient, body: dict[str, Any], location: list[str | int]
) -> None:
    response = await post(asgi_client, body)
    assert response.status_code == 422, response.text
    detail = strict_json(response)["detail"]
    assert isinstance(detail, list) and detail
    assert detail[0]["loc"] == location, detail
    assert detail[0]["msg"] and detail[0]["type"]


async def test_body_over_the_limit_is_a_413(make_client: ClientFactory) -> None:
    async with make_client(max_body_bytes=2048) as small:
        body = {"logits": [[0.123456789] * 50] * 10, "labels": [0] * 10}
        response = await post(small, body)
    assert response.status_code == 413
    assert "GRADCHECK_MAX_BODY_BYTES = 2048" in response.json()["detail"]


@pytest.mark.parametrize(
    ("settings", "body", "phrase"),
    [
        (
            {"max_batch_size": 2},
            {"logits": [[0.0, 1.0]] * 3, "labels": [0, 0, 0]},
            "GRADCHECK_MAX_BATCH_SIZE = 2",
        ),
        ({"max_classes": 3}, {"logits": [[0.0] * 4], "labels": [0]}, "GRADCHECK_MAX_CLASSES = 3"),
        (
            {"max_output_entries": 100},
            {"logits": [[0.0] * 5] * 3, "labels": [0, 0, 0]},
            "drop 'jacobian' from include",
        ),
    ],
)
async def test_size_limits_are_a_413_saying_how_to_stay_under(
    make_client: ClientFactory, settings: dict[str, int], body: dict[str, Any], phrase: str
) -> None:
    async with make_client(**settings) as limited:
        response = await post(limited, body)
        assert response.status_code == 413
        assert phrase in response.json()["detail"]
        if "max_output_entries" in settings:
            smaller = await post(
                limited, {**body, "include": ["loss", "gradient", "numeric_gradient"]}
            )
            assert smaller.status_code == 200
