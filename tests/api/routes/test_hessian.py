"""Second order through /v1/cross-entropy: the Hessian blocks (Σq/D)·(diag a − a·aᵀ), their
numeric check (gradgradcheck's tolerance), Hessian-vector products (with z-loss and soft-capping
too, against torch), and a candidate Hessian's classic mistakes named."""

import json
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import optional_module, require_module

torch = optional_module("torch")

LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.0, -3.0, 4.0]]
LABELS = [0, 1, 2]
WEIGHT = [1.0, 2.0, 0.5]


def closed_form(logits: Any, labels: list[int], weight: list[float], reduction: str) -> np.ndarray:
    """(Σ_c q_c / D)·(diag a − a·aᵀ) per row, from an independent softmax."""
    z = np.asarray(logits)
    a = np.exp(z - z.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    sums = np.asarray(weight)[labels]
    divisor = sums.sum() if reduction == "mean" else 1.0
    blocks = np.stack([np.diag(row) - np.outer(row, row) for row in a])
    result: np.ndarray = (sums / divisor)[:, None, None] * blocks
    return result


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/v1/cross-entropy", content=json.dumps(body), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
async def test_hessian_numeric_check_and_products(
    asgi_client: httpx.AsyncClient, reduction: str
) -> None:
    v = np.random.default_rng(1).normal(size=(3, 3))
    body = {
        "logits": LOGITS,
        "labels": LABELS,
        "weight": WEIGHT,
        "reduction": reduction,
        "include": ["hessian", "numeric_hessian", "hessian_vector_product"],
        "vector": v.tolist(),
    }
    answer = (await post(asgi_client, body)).json()
    expected = closed_form(LOGITS, LABELS, WEIGHT, reduction)
    np.testing.assert_allclose(answer["hessian"], expected, rtol=1e-13, atol=1e-17)
    assert answer["hessian_check"]["passed"] is True
    np.testing.assert_allclose(
        answer["hessian_vector_product"],
        np.einsum("nij,nj->ni", expected, v),
        rtol=1e-12,
        atol=1e-17,
    )
    hessian = np.asarray(answer["hessian"])
    np.testing.assert_allclose(hessian @ np.ones(3), 0, atol=1e-16)  # (1, …, 1) is in the kernel
    assert np.all(np.linalg.eigvalsh(hessian) >= -1e-16)  # PSD for non-negative targets


@pytest.mark.torch
async def test_the_hessian_matches_torch(asgi_client: httpx.AsyncClient) -> None:
    require_module("torch")
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    weight = torch.tensor(WEIGHT, dtype=torch.float64)

    def loss(z: Any) -> Any:
        return torch.nn.functional.cross_entropy(z, torch.tensor(LABELS), weight=weight)

    full = torch.autograd.functional.hessian(loss, logits).numpy()  # (N, C, N, C)
    blocks = np.stack([full[n, :, n, :] for n in range(3)])
    body = {"logits": LOGITS, "labels": LABELS, "weight": WEIGHT, "include": ["hessian"]}
    answer = (await post(asgi_client, body)).json()
    np.testing.assert_allclose(answer["hessian"], blocks, rtol=1e-12, atol=1e-17)
    off_diagonal = full.copy()
    for n in range(3):
        off_diagonal[n, :, n, :] = 0
    assert np.all(off_diagonal == 0)  # block-diagonal across samples


async def test_k_dimensional_hessian_shapes(asgi_client: httpx.AsyncClient) -> None:
    logits = np.random.default_rng(4).normal(size=(2, 3, 5))
    body = {
        "logits": logits.tolist(),
        "labels": [[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]],
        "include": ["hessian", "hessian_vector_product"],
        "vector": np.ones_like(logits).tolist(),
    }
    answer = (await post(asgi_client, body)).json()
    assert np.shape(answer["hessian"]) == (2, 5, 3, 3)
    assert np.shape(answer["hessian_vector_product"]) == (2, 3, 5)
    np.testing.assert_allclose(answer["hessian_vector_product"], 0, atol=1e-17)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("z_loss", "softcap"), [(1e-4, None), (0.0, 2.5), (0.3, 4.0)])
async def test_z_loss_and_softcap_second_order_match_torch(
    asgi_client: httpx.AsyncClient, reduction: str, z_loss: float, softcap: float | None
) -> None:
    """The Hessian blocks and H·v of Liger's formula (F.cross_entropy of c·tanh(z/c) plus
    λ·lse² per non-ignored position, for `mean` over their number) by the raw logits, with
    weights, smoothing and ignore_index, and the numeric Hessian's check passing."""
    require_module("torch")
    rng = np.random.default_rng(20)
    weights = [*WEIGHT, 1.5]
    logits = (3 * rng.normal(size=(5, 4))).round(3)
    labels = [0, 3, -100, 2, 1]
    v = rng.normal(size=logits.shape)
    options = {"reduction": reduction, "ignore_index": -100, "label_smoothing": 0.1}
    target = torch.tensor(labels)
    active = (target != -100).double()

    def loss(z: Any) -> Any:
        capped = softcap * torch.tanh(z / softcap) if softcap else z
        ce = torch.nn.functional.cross_entropy(
            capped, target, weight=torch.tensor(weights, dtype=torch.float64), **options
        )
        z_terms = z_loss * torch.logsumexp(capped, dim=1) ** 2 * active
        if reduction == "mean":
            return ce + z_terms.sum() / active.sum()
        return ce.sum() + z_terms.sum()  # `none`: the blocks of Σ_n loss_n are each loss_n's

    full = torch.autograd.functional.hessian(loss, torch.tensor(logits)).numpy()
    blocks = np.stack([full[n, :, n, :] for n in range(5)])
    _, product = torch.autograd.functional.hvp(loss, torch.tensor(logits), torch.tensor(v))
    body = {
        "logits": logits.tolist(),
        "labels": labels,
        "weight": weights,
        **options,
        "z_loss": z_loss,
        "softcap": softcap,
        "include": ["hessian", "numeric_hessian", "hessian_vector_product"],
        "vector": v.tolist(),
    }
    response = await post(asgi_client, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    for ours, theirs in zip(answer["hessian"], blocks, strict=True):
        error = float(np.linalg.norm(np.asarray(ours) - theirs)) / max(
            float(np.linalg.norm(theirs)), 1e-300
        )
        assert error <= 1e-10
    for ours, theirs in zip(answer["hessian_vector_product"], product.numpy(), strict=True):
        error = float(np.linalg.norm(np.asarray(ours) - theirs)) / max(
            float(np.linalg.norm(theirs)), 1e-300
        )
        assert error <= 1e-10
    assert answer["hessian_check"]["passed"] is True


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"include": ["hessian_vector_product"]}, ["body", "vector"]),
        ({"include": ["hessian"], "vector": [[1, 2, 3]] * 3}, ["body", "vector"]),
        ({"include": ["hessian_vector_product"], "vector": [[1, 2]] * 3}, ["body", "vector"]),
    ],
)
async def test_second_order_refusals_name_the_field(
    asgi_client: httpx.AsyncClient, body: dict[str, Any], where: list[str]
) -> None:
    response = await post(asgi_client, {"logits": LOGITS, "labels": LABELS, **body})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == where


@pytest.mark.parametrize(
    ("mistake", "code"),
    [
        ("right", None),
        ("no_target_sum", "hessian_missing_target_sum"),
        ("not_divided", "hessian_not_divided"),
    ],
)
async def test_a_candidate_hessian_s_mistake_is_named(
    asgi_client: httpx.AsyncClient, mistake: str, code: str | None
) -> None:
    right = closed_form(LOGITS, LABELS, WEIGHT, "mean")
    divisor = float(np.asarray(WEIGHT)[LABELS].sum())
    blocks = right / (np.asarray(WEIGHT)[LABELS][:, None, None] / divisor)
    candidate = {
        "right": right,
        "no_target_sum": blocks / divisor,
        "not_divided": right * divisor,
    }[mistake]
    body = {
        "logits": LOGITS,
        "labels": LABELS,
        "weight": WEIGHT,
        "include": ["loss"],
        "candidate": {"hessian": candidate.tolist()},
    }
    check = (await post(asgi_client, body)).json()["candidate_check"]
    assert check["passed"] is (code is None)
    assert [d["code"] for d in check["diagnoses"][:1]] == ([code] if code else [])


async def test_the_hessian_is_a_gradable_part(asgi_client: httpx.AsyncClient) -> None:
    right = closed_form(LOGITS, LABELS, WEIGHT, "mean")
    divisor = float(np.asarray(WEIGHT)[LABELS].sum())
    problem = {"logits": LOGITS, "labels": LABELS, "weight": WEIGHT}
    for submitted, passed, code in (
        (right, True, None),
        (right * divisor, False, "hessian_not_divided"),
    ):
        body = {
            "problem": problem,
            "points": {"hessian": 2},
            "submission": {"hessian": submitted.tolist()},
        }
        (part,) = (await asgi_client.post("/v1/grade", json=body)).json()["parts"]
        assert part["name"] == "hessian" and part["passed"] is passed
        assert part.get("diagnosis") == code
