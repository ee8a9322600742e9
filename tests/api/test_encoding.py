"""Report → response bytes (`app.api.encoding`): JSON straight from the arrays, and the .npz
response format: `Accept: application/x-npz` on /v1/softmax and /v1/cross-entropy.

Contract: a zip of `.npy` members, one per array of the JSON response (the reduced loss as a
0-d array), in the request's dtype, plus `metadata.json` with every other field; readable with
`np.load(..., allow_pickle=False)`; the same numbers as the JSON response, bit for bit.
"""

import io
import json
import zipfile
from collections.abc import MutableMapping
from typing import Any

import httpx
import numpy as np
import pytest

from app.api.encoding import (
    NpzResponse,
    check_fields,
    encode_json,
    encode_npz,
    report_fields,
    wants_npz,
)
from app.numerics.cross_entropy import Reduction, index_targets
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import NumericOptions, Output, analyse_cross_entropy
from app.numerics.layout import Layout
from tests.helpers import read_npz

NPZ = "application/x-npz"
LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [-3.0, 0.0, 40.0]]
LABELS = [0, 1, 2]
JSON_HEADERS = {"content-type": "application/json"}
NPZ_HEADERS = {**JSON_HEADERS, "accept": NPZ}


async def post(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(url, content=json.dumps(body), headers={**JSON_HEADERS, **headers})


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
    assert metadata == {"batch_size": 3, "num_classes": 3, "spatial_shape": [], "dtype": "float32"}


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


# ---------------------------------------------------------------- the encoders alone


@pytest.mark.parametrize(
    ("accept", "npz"),
    [
        (None, False),
        ("", False),
        ("application/json", False),
        ("application/x-npz", True),
        ("application/json;q=0.5, application/x-npz", True),
    ],
)
def test_wants_npz_reads_the_accept_header(accept: str | None, npz: bool) -> None:
    assert wants_npz(accept) is npz


def test_json_is_written_from_the_arrays_with_minus_infinity_as_null() -> None:
    fields = {
        "loss": np.array(0.25),
        "log_probabilities": np.array([[-np.inf, 0.0]]),
        "columns": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "dtype": "float64",
    }
    assert json.loads(bytes(encode_json(fields))) == {
        "loss": 0.25,
        "log_probabilities": [[None, 0.0]],
        "columns": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
        "dtype": "float64",
    }


def test_npz_members_are_the_arrays_and_metadata_the_rest() -> None:
    jacobian = np.arange(8, dtype=np.float32).reshape(2, 2, 2).transpose(0, 2, 1)
    arrays, metadata = read_npz(
        encode_npz({"jacobian": jacobian, "loss": np.array(1.5), "batch_size": 2})
    )
    assert metadata == {"batch_size": 2}
    assert arrays["jacobian"].dtype == np.float32
    np.testing.assert_array_equal(arrays["jacobian"], jacobian)
    assert arrays["loss"].shape == () and arrays["loss"] == 1.5


async def test_an_npz_response_sends_each_array_from_its_own_buffer() -> None:
    """NpzResponse sends encode_npz's bytes, in pieces: the large array's own buffer (no copy
    of it is made) between the small pieces joined, under a Content-Length of the whole."""
    jacobian = np.arange(3 * 100 * 100, dtype=np.float64).reshape(3, 100, 100)
    fields = {"jacobian": jacobian, "loss": np.array(0.5), "batch_size": 3}
    response = NpzResponse(fields)
    sent: list[bytes] = []
    more: list[bool] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(bytes(message["body"]))
            more.append(message["more_body"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await response({"type": "http"}, receive, send)
    assert b"".join(sent) == encode_npz(fields)
    assert int(response.headers["content-length"]) == len(encode_npz(fields))
    assert more == [True] * (len(sent) - 1) + [False]
    shared = [
        part for part in response.parts if np.shares_memory(np.frombuffer(part, np.uint8), jacobian)
    ]
    assert len(shared) == 1 and len(shared[0]) == jacobian.nbytes
    assert len(sent) == 3  # zip and .npy headers; the array; the rest joined


def test_report_fields_hold_only_what_is_asked_and_every_check_number_is_finite() -> None:
    """A complex step with a large fixed step: h**order overflows in the estimate, yet every
    number of the check is finite (the schema declares numbers, never null)."""
    logits = np.array(LOGITS)
    targets = index_targets(
        np.array(LABELS),
        3,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    report = analyse_cross_entropy(
        logits,
        targets,
        Reduction.MEAN,
        frozenset({Output.LOSS, Output.NUMERIC_GRADIENT}),
        NumericOptions(Method.COMPLEX_STEP, step=1e200),
    )
    fields = report_fields(report, frozenset({"loss"}), "float64", Layout.of(logits.shape))
    assert set(fields) == {
        "batch_size", "num_classes", "spatial_shape", "dtype", "loss", "losses", "gradient_check"
    }  # fmt: skip
    assert report.gradient_check is not None
    check = check_fields(report.gradient_check, lambda index: index)
    numbers = [v for v in check.values() if isinstance(v, float)]
    assert numbers and all(np.isfinite(numbers))
    assert check["method"] == "complex_step" and check["message"]
