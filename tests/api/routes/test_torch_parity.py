"""PyTorch's own test inputs for cross-entropy, through /v1/cross-entropy: the OpInfo samples of
`nn.functional.cross_entropy` and the module inputs of `nn.CrossEntropyLoss` (K-dimensional
inputs, inputs without a batch axis, any finite weights), float64, several seeds. Every sample
is answered with torch's shapes and values, and the service's numeric gradient passes torch's
gradcheck tolerance against torch's analytic gradient. torch is never a dependency of the
service: the test skips without it (and fails under GRADCHECK_REQUIRE_ALL=1)."""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import optional_module, require_module

torch = optional_module("torch")
"""Importing torch's test inputs needs the `expecttest` package too."""
methods = optional_module("torch.testing._internal.common_methods_invocations")
modules = optional_module("torch.testing._internal.common_modules")

SEEDS = (0, 1, 2)
RTOL_NORMWISE = 1e-10
GRADCHECK_ATOL, GRADCHECK_RTOL = 1e-5, 1e-3


def torch_samples(seed: int) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """(input, target, keyword arguments) of every OpInfo sample and module input."""
    torch.manual_seed(seed)
    (op,) = [o for o in methods.op_db if o.name == "nn.functional.cross_entropy"]
    for sample in op.sample_inputs("cpu", torch.float64, requires_grad=True):
        yield sample.input, sample.args[0], dict(sample.kwargs)
    (module,) = [m for m in modules.module_db if m.module_cls is torch.nn.CrossEntropyLoss]
    for module_input in module.module_inputs_func(
        module, device="cpu", dtype=torch.float64, requires_grad=True, training=True
    ):
        args = module_input.forward_input.args
        yield args[0], args[1], dict(module_input.constructor_input.kwargs)


def request_body(logits: Any, target: Any, options: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "logits": logits.detach().tolist(),
        "labels": target.detach().tolist(),
        "include": ["probabilities", "loss", "gradient", "numeric_gradient"],
    }
    for name in ("reduction", "ignore_index", "label_smoothing"):
        if name in options:
            body[name] = options[name]
    if options.get("weight") is not None:
        body["weight"] = options["weight"].detach().tolist()
    return body


def normwise_error(got: Any, expected: Any) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(float(np.linalg.norm(expected)), 1e-300)
    return float(np.linalg.norm(got - expected)) / scale


@pytest.mark.torch
@pytest.mark.parametrize("seed", SEEDS)
async def test_torch_samples_get_torch_shapes_and_values(
    asgi_client: httpx.AsyncClient, seed: int
) -> None:
    require_module("torch.testing._internal.common_methods_invocations")
    answered = refused = 0
    for logits, target, options in torch_samples(seed):
        logits = logits.detach().clone().requires_grad_(True)
        reduction = options.get("reduction", "mean")
        loss = torch.nn.functional.cross_entropy(logits, target, **options)
        body = request_body(logits, target, options)
        response = await asgi_client.post(
            "/v1/cross-entropy",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
        total = loss.sum() if reduction == "none" else loss
        if not torch.isfinite(total):  # torch's NaN for a mean over nothing: a 422 here
            assert response.status_code == 422, response.text
            assert "reduction 'mean' divides" in response.json()["detail"][0]["msg"]
            refused += 1
            continue
        assert response.status_code == 200, (tuple(logits.shape), options, response.text)
        answered += 1
        answer = response.json()
        (gradient,) = torch.autograd.grad(loss, logits, torch.ones_like(loss))
        assert np.shape(answer["loss"]) == tuple(loss.shape)
        assert normwise_error(answer["loss"], loss.detach()) <= RTOL_NORMWISE
        assert normwise_error(answer["gradient"], gradient) <= RTOL_NORMWISE
        probabilities = torch.softmax(logits.detach(), dim=1 if logits.dim() > 1 else 0)
        assert normwise_error(answer["probabilities"], probabilities) <= RTOL_NORMWISE
        numeric = np.asarray(answer["numeric_gradient"])
        bound = GRADCHECK_ATOL + GRADCHECK_RTOL * np.abs(gradient.numpy())
        assert np.all(np.abs(numeric - gradient.numpy()) <= bound)
        assert answer["gradient_check"]["passed"] is True
    assert answered >= 100 and refused <= 6, (answered, refused)


async def test_k_dimensional_outputs_have_torch_shapes(asgi_client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 4, 3, 2)).round(3)
    labels = rng.integers(0, 4, size=(2, 3, 2))
    body = {
        "logits": logits.tolist(),
        "labels": labels.tolist(),
        "reduction": "none",
        "include": ["probabilities", "loss", "gradient", "jacobian"],
    }
    answer = (await asgi_client.post("/v1/cross-entropy", json=body)).json()
    assert (answer["batch_size"], answer["num_classes"], answer["spatial_shape"]) == (2, 4, [3, 2])
    assert np.shape(answer["probabilities"]) == (2, 4, 3, 2)
    assert np.shape(answer["gradient"]) == (2, 4, 3, 2)
    assert np.shape(answer["loss"]) == (2, 3, 2)
    assert np.shape(answer["losses"]) == (2, 3, 2)
    assert np.shape(answer["jacobian"]) == (2, 3, 2, 4, 4)
    a = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # an independent softmax
    np.testing.assert_allclose(answer["probabilities"], a, rtol=1e-13)
    picked = np.take_along_axis(a, labels[:, None], axis=1)[:, 0]
    np.testing.assert_allclose(answer["losses"], -np.log(picked), rtol=1e-13)
    block = np.asarray(answer["jacobian"])[1, 2, 0]
    column = a[1, :, 2, 0]
    np.testing.assert_allclose(block, np.diag(column) - np.outer(column, column), atol=1e-16)


async def test_a_k_dimensional_refusal_names_the_callers_position(
    asgi_client: httpx.AsyncClient,
) -> None:
    logits = np.zeros((2, 3, 4)).tolist()
    logits[1][2][3] = float("nan")
    body = {"logits": logits, "labels": [[0] * 4, [1] * 4]}
    response = await asgi_client.post(
        "/v1/cross-entropy", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "logits", 1, 2, 3]
    bad_label = {"logits": np.zeros((2, 3, 4)).tolist(), "labels": [[0] * 4, [0, 0, 7, 0]]}
    response = await asgi_client.post("/v1/cross-entropy", json=bad_label)
    assert response.json()["detail"][0]["loc"] == ["body", "labels", 1, 2]


async def test_softmax_takes_any_dim(asgi_client: httpx.AsyncClient) -> None:
    logits = np.random.default_rng(2).normal(size=(3, 2, 4))
    for dim in (0, 1, 2, -1):
        body = {"logits": logits.tolist(), "dim": dim, "include": ["probabilities", "jacobian"]}
        answer = (await asgi_client.post("/v1/softmax", json=body)).json()
        e = np.exp(logits)
        np.testing.assert_allclose(
            answer["probabilities"], e / e.sum(axis=dim, keepdims=True), rtol=1e-13
        )
        classes = logits.shape[dim]
        positions = tuple(n for axis, n in enumerate(logits.shape) if axis != dim % 3)
        assert np.shape(answer["jacobian"]) == (*positions, classes, classes)
    response = await asgi_client.post("/v1/softmax", json={"logits": logits.tolist(), "dim": 3})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "dim"]


async def test_k_dimensional_problems_are_graded_in_their_own_shape(
    asgi_client: httpx.AsyncClient,
) -> None:
    rng = np.random.default_rng(8)
    problem = {
        "logits": rng.normal(size=(2, 3, 4)).round(3).tolist(),
        "labels": rng.integers(0, 3, size=(2, 4)).tolist(),
        "reduction": "none",
    }
    reference = (
        await asgi_client.post(
            "/v1/cross-entropy", json={**problem, "include": ["loss", "gradient"]}
        )
    ).json()
    right = {"loss": reference["loss"], "gradient": reference["gradient"]}
    graded = await asgi_client.post("/v1/grade", json={"problem": problem, "submission": right})
    assert graded.status_code == 200, graded.text
    assert all(part["passed"] for part in graded.json()["parts"])
    wrong = {"gradient": (-np.asarray(reference["gradient"])).tolist(), "loss": right["loss"]}
    body = {"problem": problem, "submission": wrong, "feedback": "full"}
    parts = (await asgi_client.post("/v1/grade", json=body)).json()["parts"]
    gradient = next(part for part in parts if part["name"] == "gradient")
    assert gradient["passed"] is False
    assert gradient["diagnosis"] == "sign_flipped"
    assert len(gradient["mismatches"][0]["index"]) == 3  # a position in the (2, 3, 4) shape
