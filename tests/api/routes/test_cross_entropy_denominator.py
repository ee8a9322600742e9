"""`denominator` on /v1/cross-entropy: the mean's divisor given by the caller (HF's
num_items_in_batch), which makes row blocks independent: blocks sent apart give the whole
batch's gradient rows, bit for bit, and its loss from the fsum of their per-row losses."""

import math

import httpx
import numpy as np

from app.numerics.cross_entropy import Reduction


def batch(seed: int = 0, n: int = 40, c: int = 7) -> tuple[list[list[float]], list[int]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    labels[rng.random(n) < 0.25] = -100
    return rng.normal(size=(n, c)).tolist(), labels.tolist()


async def test_row_blocks_give_the_whole_batch(asgi_client: httpx.AsyncClient) -> None:
    logits, labels = batch()
    common = {"denominator": 123.0, "include": ["loss", "gradient"], "weight": [1.5] * 7}

    async def ask(rows: slice) -> dict[str, object]:
        body = {"logits": logits[rows], "labels": labels[rows], **common}
        response = await asgi_client.post("/v1/cross-entropy", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, object] = response.json()
        return answer

    whole = await ask(slice(None))
    parts = [await ask(slice(0, 13)), await ask(slice(13, 40))]
    gradient = np.concatenate([np.asarray(part["gradient"]) for part in parts])
    np.testing.assert_array_equal(gradient, whole["gradient"])
    losses = [value for part in parts for value in part["losses"]]  # type: ignore[attr-defined]
    assert math.fsum(losses) / 123.0 == whole["loss"]
    weighted = math.fsum(np.asarray(whole["losses"]).tolist())
    assert whole["loss"] == weighted / 123.0  # the divisor replaced, not Σ w_y


async def test_denominator_needs_mean(asgi_client: httpx.AsyncClient) -> None:
    logits, labels = batch(1)
    body = {
        "logits": logits,
        "labels": labels,
        "reduction": str(Reduction.SUM),
        "denominator": 3.0,
    }
    response = await asgi_client.post("/v1/cross-entropy", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "denominator"]


async def test_not_divided_names_the_given_denominator(asgi_client: httpx.AsyncClient) -> None:
    logits, labels = batch(2)
    body = {"logits": logits, "labels": labels, "denominator": 50.0, "include": ["gradient"]}
    reference = (await asgi_client.post("/v1/cross-entropy", json=body)).json()
    candidate = {"gradient": (np.asarray(reference["gradient"]) * 50.0).tolist()}
    answer = (
        await asgi_client.post("/v1/cross-entropy", json={**body, "candidate": candidate})
    ).json()
    (diagnosis,) = answer["candidate_check"]["diagnoses"]
    assert diagnosis["code"] == "not_divided" and "50" in diagnosis["evidence"]
