"""The .npz response format: `Accept: application/x-npz` on /v1/softmax and /v1/cross-entropy.

Contract: a zip of `.npy` members, one per array of the JSON response (the reduced loss as a
0-d array), in the request's dtype, plus `metadata.json` with every other field; readable with
`np.load(..., allow_pickle=False)`; the same numbers as the JSON response, bit for bit.
"""

import io
import json
import zipfile
from typing import Any

import httpx
import numpy as np
import pytest

NPZ = "application/x-npz"
LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [-3.0, 0.0, 40.0]]
LABELS = [0, 1, 2]
JSON_HEADERS = {"content-type": "application/json"}
NPZ_HEADERS = {**JSON_HEADERS, "accept": NPZ}


async def post(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(url, content=json.dumps(body), headers={**JSON_HEADERS, **headers})


def read_npz(content: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays by member name without .npy, decoded metadata.json)."""
    with np.load(io.BytesIO(content), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "metadata.json"}
        metadata = json.loads(archive["metadata.json"])
    return arrays, metadata


async def test_cross_entropy_npz_holds_the_json_response_bit_for_bit(
    client: httpx.AsyncClient,
) -> None:
    body = {"logits": LOGITS, "labels": LABELS}
    as_json = (await post(client, "/v1/cross-entropy", body)).json()
    response = await post(client, "/v1/cross-entropy", body, accept=NPZ)
    assert response.status_code == 200
    assert response.headers["content-type"] == NPZ
    arrays, metadata = read_npz(response.content)

    assert set(arrays) == {
        "probabilities",
        "loss",
        "losses",
        "gradient",
        "numeric_gradient",
        "jacobian",
    }
    assert set(arrays) | set(metadata) == set(as_json)
    assert not set(arrays) & set(metadata)
    for name, array in arrays.items():
        assert array.dtype == np.float64, name
        np.testing.assert_array_equal(array, np.asarray(as_json[name]), err_msg=name)
    assert arrays["loss"].shape == ()
    assert arrays["jacobian"].shape == (3, 3, 3)
    assert metadata == {name: value for name, value in as_json.items() if name not in arrays}
    assert metadata["gradient_check"]["passed"] is True


async def test_every_member_is_a_plain_npy_or_the_metadata(client: httpx.AsyncClient) -> None:
    response = await post(client, "/v1/softmax", {"logits": LOGITS}, accept=NPZ)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
    assert sorted(names) == ["jacobian.npy", "metadata.json", "probabilities.npy"]


async def test_float32_request_gives_float32_members(client: httpx.AsyncClient) -> None:
    body = {"logits": LOGITS, "dtype": "float32", "include": ["probabilities", "log_probabilities"]}
    arrays, metadata = read_npz((await post(client, "/v1/softmax", body, accept=NPZ)).content)
    assert {name: array.dtype for name, array in arrays.items()} == {
        "probabilities": np.float32,
        "log_probabilities": np.float32,
    }
    assert metadata == {"batch_size": 3, "num_classes": 3, "dtype": "float32"}


async def test_masked_logit_is_minus_infinity_in_npz_and_null_in_json(
    client: httpx.AsyncClient,
) -> None:
    body = {"logits": [[0.0, "-Infinity", 1.0]], "include": ["log_probabilities"]}
    raw = json.dumps(body).replace('"-Infinity"', "-Infinity")
    as_json = (await client.post("/v1/softmax", content=raw, headers=JSON_HEADERS)).json()
    response = await client.post("/v1/softmax", content=raw, headers=NPZ_HEADERS)
    arrays, _ = read_npz(response.content)
    assert as_json["log_probabilities"][0][1] is None
    assert arrays["log_probabilities"][0, 1] == -np.inf
    assert np.isfinite(arrays["log_probabilities"][0, [0, 2]]).all()


@pytest.mark.parametrize(
    "accept",
    ["application/x-npz;q=1.0, application/json;q=0.5", "application/json, application/x-npz"],
)
async def test_npz_is_chosen_whenever_accept_names_it(
    client: httpx.AsyncClient, accept: str
) -> None:
    response = await post(client, "/v1/softmax", {"logits": LOGITS}, accept=accept)
    assert response.headers["content-type"] == NPZ


async def test_errors_stay_json_when_npz_is_asked_for(client: httpx.AsyncClient) -> None:
    response = await post(
        client, "/v1/cross-entropy", {"logits": LOGITS, "labels": [0, 1]}, accept=NPZ
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"][0]["loc"][:2] == ["body", "labels"]
