"""Binary request bodies (`Content-Type: application/x-npz`): the same problem as JSON gets the
same answer; bfloat16, float16 and float32 members are read exactly; a candidate in its own
precision gets that precision's default tolerance; hostile archives are refused by name."""

import io
import zipfile
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest

from app.numerics.candidate import DEFAULT_TOLERANCE
from tests.helpers import npz_body

NPZ = "application/x-npz"
rng = np.random.default_rng(7)
LOGITS = rng.normal(size=(6, 5)).round(3)
LABELS = np.array([0, 4, 2, 2, 1, 3])


async def post_npz(
    client: httpx.AsyncClient, body: bytes, path: str = "/v1/cross-entropy"
) -> httpx.Response:
    return await client.post(path, content=body, headers={"content-type": NPZ})


def right_gradient(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    a = np.exp(logits - logits.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    gradient: np.ndarray = (a - np.eye(logits.shape[1])[labels]) / len(labels)
    return gradient


async def test_an_npz_request_gets_the_json_request_s_answer(
    asgi_client: httpx.AsyncClient,
) -> None:
    options = {"reduction": "sum", "label_smoothing": 0.1, "include": ["loss", "gradient"]}
    as_json = await asgi_client.post(
        "/v1/cross-entropy",
        json={
            "logits": LOGITS.tolist(),
            "labels": LABELS.tolist(),
            "weight": [1, 2, 1, 0.5, 1],
            **options,
        },
    )
    arrays = {"logits": LOGITS, "labels": LABELS, "weight": np.array([1, 2, 1, 0.5, 1.0])}
    as_npz = await post_npz(asgi_client, npz_body(arrays, options))
    assert as_npz.status_code == 200, as_npz.text
    assert as_npz.content == as_json.content


@pytest.mark.parametrize("dtype", [np.float16, np.float32, ml_dtypes.bfloat16])
async def test_low_precision_logits_are_read_exactly(
    asgi_client: httpx.AsyncClient, dtype: Any
) -> None:
    low = LOGITS.astype(dtype)
    exact = low.astype(np.float64)
    as_npz = await post_npz(asgi_client, npz_body({"logits": low, "labels": LABELS}))
    as_json = await asgi_client.post(
        "/v1/cross-entropy", json={"logits": exact.tolist(), "labels": LABELS.tolist()}
    )
    assert as_npz.status_code == 200, as_npz.text
    assert as_npz.content == as_json.content


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(np.float32, "float32"), (ml_dtypes.bfloat16, "bfloat16"), (np.float16, "float16")],
)
async def test_a_right_low_precision_candidate_passes_at_its_own_tolerance(
    asgi_client: httpx.AsyncClient, dtype: Any, name: str
) -> None:
    candidate = right_gradient(LOGITS, LABELS).astype(dtype)
    body = npz_body(
        {"logits": LOGITS, "labels": LABELS, "candidate.gradient": candidate}, {"include": ["loss"]}
    )
    check = (await post_npz(asgi_client, body)).json()["candidate_check"]
    assert check["passed"] is True, check
    assert check["diagnoses"] == []
    output = check["outputs"]["gradient"]
    assert output["max_ulp_error"] is not None and output["max_ulp_error"] <= 1.0
    assert DEFAULT_TOLERANCE[name][1] >= 1e-5


async def test_a_summed_bfloat16_gradient_is_named(asgi_client: httpx.AsyncClient) -> None:
    candidate = (len(LABELS) * right_gradient(LOGITS, LABELS)).astype(ml_dtypes.bfloat16)
    body = npz_body(
        {"logits": LOGITS, "labels": LABELS, "candidate.gradient": candidate}, {"include": ["loss"]}
    )
    check = (await post_npz(asgi_client, body)).json()["candidate_check"]
    assert check["passed"] is False
    assert check["diagnoses"][0]["code"] == "not_divided"


async def test_a_given_tolerance_overrides_the_precision_s(asgi_client: httpx.AsyncClient) -> None:
    candidate = right_gradient(LOGITS, LABELS).astype(ml_dtypes.bfloat16)
    fields = {"include": ["loss"], "tolerance": {"atol": 0, "rtol": 1e-9}}
    body = npz_body({"logits": LOGITS, "labels": LABELS, "candidate.gradient": candidate}, fields)
    check = (await post_npz(asgi_client, body)).json()["candidate_check"]
    assert check["passed"] is False
    assert check["diagnoses"] == []  # precision is not a mistake


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        (b"not a zip", 422, []),
        (npz_body({"logits": LOGITS, "labels": LABELS, "extra": LOGITS}), 422, ["extra"]),
        (npz_body({"logits": LOGITS.astype(np.complex128), "labels": LABELS}), 422, ["logits"]),
        (
            npz_body({"logits": LOGITS}, {"labels": [0] * 6, "reduction": "median"}),
            422,
            ["reduction"],
        ),
        (npz_body({"logits": LOGITS, "labels": LABELS}, {"labels": [0] * 6}), 422, ["labels"]),
        (npz_body({"logits": LOGITS, "labels": LABELS[:5]}), 422, ["labels"]),
    ],
)
async def test_bad_archives_are_refused_by_member(
    asgi_client: httpx.AsyncClient, body: bytes, status: int, where: list[str]
) -> None:
    response = await post_npz(asgi_client, body)
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"][1:2] == where[:1]


async def test_a_pickled_member_is_refused(asgi_client: httpx.AsyncClient) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        member = io.BytesIO()
        np.save(member, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        archive.writestr("logits.npy", member.getvalue())
    response = await post_npz(asgi_client, buffer.getvalue())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "logits"]


async def test_a_zip_bomb_is_a_413_before_decompressing(asgi_client: httpx.AsyncClient) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        member = io.BytesIO()
        np.save(member, np.zeros((4096, 4096)))
        archive.writestr("logits.npy", member.getvalue())
    body = buffer.getvalue()
    assert len(body) < 1 << 20  # 128 MiB of zeros in well under a megabyte
    response = await post_npz(asgi_client, body)
    assert response.status_code == 413
    assert "expands" in response.json()["detail"]


async def test_too_many_members_are_a_413(asgi_client: httpx.AsyncClient) -> None:
    arrays = {f"candidate.x{i}": np.zeros(1) for i in range(40)}
    response = await post_npz(asgi_client, npz_body(arrays))
    assert response.status_code == 413


async def test_json_only_bodies_refuse_npz(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.post(
        "/v1/grade", content=npz_body({"logits": LOGITS}), headers={"content-type": NPZ}
    )
    assert response.status_code == 415
