"""The options of LLM cross-entropy kernels through /v1/cross-entropy: z-loss (PaLM, Liger-Kernel's
lse_square_scale) and logit soft-capping (Gemma 2) against torch float64 autograd of the same
formula; a 256 × 32,000 binary request with float32 and bfloat16 candidates, as a fused kernel's
test suite would send it; the directional check at that size."""

import io
import json
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest

from tests.helpers import npz_body, optional_module, require_module

torch = optional_module("torch")

IGNORE = -100


def torch_loss(
    logits: Any, labels: Any, *, z_loss: float, softcap: float | None, **options: Any
) -> Any:
    """Liger-Kernel's reference: F.cross_entropy of the capped logits plus z_loss·lse² per
    non-ignored position (for `mean`, over the number of non-ignored positions)."""
    capped = softcap * torch.tanh(logits / softcap) if softcap else logits
    reduction = options.get("reduction", "mean")
    loss = torch.nn.functional.cross_entropy(capped, labels, **options)
    active = labels != options.get("ignore_index", IGNORE)
    z_terms = z_loss * torch.logsumexp(capped, dim=1) ** 2 * active
    if reduction == "none":
        return loss + z_terms
    if reduction == "sum":
        return loss + z_terms.sum()
    return loss + z_terms.sum() / active.sum()


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("z_loss", "softcap"), [(1e-4, None), (0.0, 2.5), (0.3, 4.0)])
async def test_z_loss_and_softcap_match_torch(
    asgi_client: httpx.AsyncClient, reduction: str, z_loss: float, softcap: float | None
) -> None:
    require_module("torch")
    rng = np.random.default_rng(11)
    logits = (4 * rng.normal(size=(7, 5))).round(3)
    labels = np.array([0, 4, IGNORE, 2, 1, 3, 3])
    weight = [1.0, 2.0, 0.5, 1.5, 0.7]
    options = {"reduction": reduction, "ignore_index": IGNORE, "label_smoothing": 0.1}
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = torch_loss(
        z,
        torch.tensor(labels),
        z_loss=z_loss,
        softcap=softcap,
        weight=torch.tensor(weight, dtype=torch.float64),
        **options,
    )
    (gradient,) = torch.autograd.grad(loss, z, torch.ones_like(loss))
    body = {
        "logits": logits.tolist(),
        "labels": labels.tolist(),
        "weight": weight,
        "z_loss": z_loss,
        "softcap": softcap,
        "include": ["loss", "gradient", "numeric_gradient"],
        **options,
    }
    answer = (await asgi_client.post("/v1/cross-entropy", json=body)).json()
    np.testing.assert_allclose(answer["loss"], loss.detach().numpy(), rtol=1e-10, atol=0)
    np.testing.assert_allclose(answer["gradient"], gradient.numpy(), rtol=1e-10, atol=1e-16)
    assert answer["gradient_check"]["passed"] is True


def float64_gradient(
    logits: np.ndarray, labels: np.ndarray, z_loss: float, softcap: float | None
) -> np.ndarray:
    """The exact-enough gradient of the mean loss, from torch float64 autograd."""
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = torch_loss(z, torch.tensor(labels), z_loss=z_loss, softcap=softcap)
    (gradient,) = torch.autograd.grad(loss, z)
    result: np.ndarray = gradient.numpy()
    return result


@pytest.mark.torch
@pytest.mark.slow
async def test_a_32k_vocabulary_kernel_check(asgi_client: httpx.AsyncClient) -> None:
    require_module("torch")
    rng = np.random.default_rng(3)
    logits = (3 * rng.normal(size=(256, 32_000))).astype(np.float32)
    labels = rng.integers(0, 32_000, size=256)
    labels[rng.random(256) < 0.1] = IGNORE
    fields = {"z_loss": 1e-4, "softcap": 30.0, "include": ["loss"]}
    right = float64_gradient(logits.astype(np.float64), labels, 1e-4, 30.0)
    uncapped = float64_gradient(logits.astype(np.float64), labels, 1e-4, None)
    headers = {"content-type": "application/x-npz"}

    async def check(candidate: np.ndarray) -> dict[str, Any]:
        arrays = {"logits": logits, "labels": labels, "candidate.gradient": candidate}
        response = await asgi_client.post(
            "/v1/cross-entropy", content=npz_body(arrays, fields), headers=headers, timeout=120
        )
        assert response.status_code == 200, response.text[:300]
        result: dict[str, Any] = response.json()["candidate_check"]
        return result

    assert (await check(right.astype(np.float32)))["passed"] is True
    assert (await check(right.astype(ml_dtypes.bfloat16)))["passed"] is True
    assert (await check(uncapped.astype(np.float32)))["passed"] is False

    directional: dict[str, Any] = {
        **fields,
        "include": ["loss", "numeric_gradient"],
        "numeric": {"directions": 4},
    }
    response = await asgi_client.post(
        "/v1/cross-entropy",
        content=npz_body({"logits": logits, "labels": labels}, directional),
        headers=headers,
        timeout=120,
    )
    answer = response.json()
    assert answer["gradient_check"]["directions"] == 4
    assert answer["gradient_check"]["passed"] is True
    assert "numeric_gradient" not in answer
    assert len(answer["directional_derivatives"]["numeric"]) == 4


async def test_directional_derivatives_in_an_npz_response(asgi_client: httpx.AsyncClient) -> None:
    body = {
        "logits": [[2.0, 1.0, 0.0]],
        "labels": [0],
        "include": ["loss", "numeric_gradient"],
        "numeric": {"directions": 2},
    }
    response = await asgi_client.post(
        "/v1/cross-entropy", json=body, headers={"accept": "application/x-npz"}
    )
    assert response.status_code == 200
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        metadata = json.loads(archive["metadata.json"])
    assert len(metadata["directional_derivatives"]["numeric"]) == 2
    assert metadata["gradient_check"]["directions"] == 2


async def test_no_mistake_is_named_under_softcap(asgi_client: httpx.AsyncClient) -> None:
    """The known mistakes are modelled without z-loss and soft-capping: a gradient without the
    soft-cap's chain rule must not be named a − y (never a guess)."""
    body = {
        "logits": [[4.0, -2.0, 1.0], [0.5, 3.0, -1.0], [1.0, 2.0, 0.0]],
        "labels": [0, 1, IGNORE],
        "softcap": 2.0,
        "include": ["loss"],
        "candidate": {
            "gradient": [
                [-0.1423929429982853, 0.011338355899557624, 0.13105458709872778],
                [0.10023471107813701, -0.12460690544302172, 0.024372194364884636],
                [0.0, 0.0, 0.0],
            ]
        },
    }
    check = (await asgi_client.post("/v1/cross-entropy", json=body)).json()["candidate_check"]
    assert check["passed"] is False
    assert check["diagnoses"] == []
    assert any("softcap" in note for note in check["notes"])
