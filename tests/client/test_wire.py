"""The client's request bodies and helpers, without a server."""

import io
import json
import math
import zipfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import ml_dtypes
import numpy as np
import pytest
from gradcheck_client import wire
from gradcheck_client.client import retry_delay
from gradcheck_client.errors import (
    GradcheckError,
    RefusedError,
    ServiceError,
    UnavailableError,
    status_error,
)
from gradcheck_client.wire import Body

from tests.helpers import require_module


def body() -> Body:
    return Body(
        {
            "logits": np.array([[1.0, -math.inf], [0.5, 2.0]]),
            "labels": np.array([0, 1], dtype=np.int32),
            "candidate.gradient": [[0.1, math.nan], [0.2, -0.2]],
            "candidate.loss": 0.5,
        },
        {"reduction": "sum", "include": []},
    )


def test_json_bodies_write_minus_infinity_and_nest_the_candidate() -> None:
    text = body().json().decode()
    assert "-Infinity" in text
    document = json.loads(text)
    assert document["logits"][0][1] == -math.inf
    assert document["labels"] == [0, 1]
    assert math.isnan(document["candidate"]["gradient"][0][1])
    assert document["candidate"]["loss"] == 0.5
    assert document["reduction"] == "sum"


def test_npz_bodies_hold_one_member_per_array_and_request_json() -> None:
    content = body().npz()
    assert content is not None
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = set(archive.namelist())
        request = json.loads(archive.read("request.json"))
    assert names == {
        "logits.npy",
        "labels.npy",
        "candidate.gradient.npy",
        "candidate.loss.npy",
        "request.json",
    }
    assert request == {"reduction": "sum", "include": []}
    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        assert arrays["labels"].dtype == np.int64
        assert arrays["logits"][0, 1] == -math.inf
        assert arrays["candidate.loss"].shape == ()


def test_reduced_precisions_stay_and_ragged_values_fall_back_to_json() -> None:
    values = np.array([[0.1, 0.2]]).astype(ml_dtypes.bfloat16)
    content = Body({"logits": values.astype(np.float16), "candidate.gradient": values}, {}).npz()
    assert content is not None
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        header = archive.read("candidate.gradient.npy")[:80]
    assert b"'<V2'" in header  # how numpy writes ml_dtypes.bfloat16
    assert json.loads(Body({"logits": values}, {}).json())["logits"] == [
        [float(v) for v in values.astype(np.float64)[0]]
    ]
    assert Body({"candidate.gradient": [[1.0], [1.0, 2.0]]}, {}).npz() is None


def test_retry_after_in_seconds_or_as_a_date_and_capped() -> None:
    def response(header: str | None) -> httpx.Response:
        return httpx.Response(503, headers={} if header is None else {"Retry-After": header})

    assert retry_delay(response("2"), 0, 30) == 2
    assert retry_delay(response("120"), 0, 30) == 30
    assert retry_delay(response(None), 2, 30) == 4
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15 <= retry_delay(response(later), 0, 30) <= 20
    assert retry_delay(response("soon"), 0, 30) == 1


def test_an_error_names_its_field_and_position() -> None:
    detail = [{"loc": ["body", "candidate", "gradient", 2, 0], "msg": "bad", "type": "x"}]
    error = status_error(422, detail, "http://127.0.0.1:1/v1/cross-entropy")
    assert isinstance(error, RefusedError)
    assert error.errors[0].where == "candidate.gradient[2][0]"
    assert str(error) == (
        "HTTP 422 from http://127.0.0.1:1/v1/cross-entropy: candidate.gradient[2][0]: bad"
    )
    assert str(RefusedError(413, "too large")) == "HTTP 413: too large"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, RefusedError),
        (401, RefusedError),
        (422, RefusedError),
        (500, UnavailableError),
        (503, UnavailableError),
        (504, UnavailableError),
    ],
)
def test_every_status_error_has_one_root(status: int, kind: type[ServiceError]) -> None:
    error = status_error(status, "detail", "http://127.0.0.1:1/v1/grade")
    assert type(error) is kind
    assert isinstance(error, GradcheckError)
    assert (error.status, error.detail, error.url) == (
        status,
        "detail",
        "http://127.0.0.1:1/v1/grade",
    )


def test_bfloat16_bits_go_as_bfloat16_without_ml_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What np.load returns for a bfloat16 .npy without ml_dtypes: 2-byte voids. They go in an
    .npz as '<V2' (the service reads bfloat16) and in JSON as their exact values."""
    values = np.array([[0.1, -3.0e-12], [1.5, -2.0]]).astype(ml_dtypes.bfloat16)
    bits = values.view("V2")
    monkeypatch.setattr(wire, "_bfloat16", lambda: None)
    assert wire.bfloat16(bits).dtype == np.dtype("V2")
    content = Body({"candidate.gradient": bits}, {}).npz()
    assert content is not None
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        member = np.lib.format.read_array(io.BytesIO(archive.read("candidate.gradient.npy")))
    assert member.dtype.str == "|V2"
    assert member.tobytes() == values.tobytes()
    sent = json.loads(Body({"candidate.gradient": bits}, {}).json())["candidate"]["gradient"]
    assert sent == values.astype(np.float64).tolist()


@pytest.mark.torch
@pytest.mark.parametrize("installed", [True, False], ids=["ml_dtypes", "no-ml_dtypes"])
def test_a_bfloat16_tensor_keeps_its_bits(monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    torch = require_module("torch")
    tensor = torch.tensor([[0.1, -3.0e-12], [1.5, -2.0]], dtype=torch.bfloat16)
    if not installed:
        monkeypatch.setattr(wire, "_bfloat16", lambda: None)
    array = wire.as_array(tensor)
    assert array.dtype == (ml_dtypes.bfloat16 if installed else np.dtype("V2"))
    assert array.tobytes() == tensor.view(torch.int16).numpy().tobytes()
    assert wire.bfloat16_as_float32(array).tolist() == tensor.float().tolist()
