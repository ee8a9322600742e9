"""The client's request bodies and helpers, without a server."""

import io
import json
import math
import zipfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import numpy as np
from gradcheck_client.client import retry_delay
from gradcheck_client.errors import GradcheckError
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
    ml_dtypes = require_module("ml_dtypes")
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
    error = GradcheckError(422, detail, "http://127.0.0.1:1/v1/cross-entropy")
    assert error.errors[0].where == "candidate.gradient[2][0]"
    assert str(error) == (
        "HTTP 422 from http://127.0.0.1:1/v1/cross-entropy: candidate.gradient[2][0]: bad"
    )
    assert str(GradcheckError(413, "too large")) == "HTTP 413: too large"
