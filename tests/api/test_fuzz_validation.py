"""Property fuzzing of the validation layer: whatever bytes arrive as a body (random JSON shapes,
huge and tiny numbers, NaN and Infinity literals, deep nesting, unicode, invalid UTF-8), every
POST operation answers one of its documented statuses with a documented, strictly-JSON body,
and never raises."""

import json
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.config import Settings
from app.main import create_app

EXAMPLES = 150
TIMEOUT_STATUS = 504
"""Documented, but not expected of these small bodies within the default timeout."""

OPENAPI = create_app(Settings()).openapi()
POST_PATHS = sorted(path for path, item in OPENAPI["paths"].items() if "post" in item)

numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats()
    | st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308])
)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
number_rows = st.lists(st.lists(numbers, min_size=0, max_size=5), min_size=0, max_size=4)
rectangular_rows = st.integers(1, 3).flatmap(
    lambda n: st.integers(2, 4).flatmap(
        lambda c: st.lists(st.lists(numbers, min_size=c, max_size=c), min_size=n, max_size=n)
    )
)
huge_integers = st.integers(min_value=-(2**70), max_value=2**70)
options = {
    "dtype": st.sampled_from(["float64", "float32", "float16", ""]) | json_values,
    "include": st.lists(
        st.sampled_from(
            ["probabilities", "log_probabilities", "jacobian", "numeric_jacobian", "loss"]
        )
        | st.text(max_size=8),
        max_size=4,
    ),
    "numeric": st.fixed_dictionaries(
        {},
        optional={
            "method": st.sampled_from(["central", "forward", "five_point", "complex_step"])
            | json_values,
            "step": numbers | json_values,
        },
    ),
    "tolerance": st.dictionaries(st.sampled_from(["atol", "rtol", "x"]), numbers),
    "weight": st.lists(numbers, max_size=5) | json_values,
    "ignore_index": huge_integers | json_values,
    "reduction": st.sampled_from(["mean", "sum", "none", "avg"]) | json_values,
    "label_smoothing": numbers | json_values,
}
any_shape_requests = st.fixed_dictionaries(
    {"logits": number_rows | st.lists(numbers, max_size=5) | json_values},
    optional={"labels": json_values | st.lists(huge_integers, max_size=4) | number_rows, **options},
)
rectangular_requests = st.fixed_dictionaries(
    {
        "logits": rectangular_rows | st.lists(numbers, min_size=2, max_size=4),
        "labels": huge_integers
        | st.lists(huge_integers, min_size=1, max_size=3)
        | rectangular_rows,
    },
    optional=options,
)
with_unknown_keys = st.tuples(
    any_shape_requests, st.dictionaries(st.text(max_size=8), json_values, max_size=2)
).map(lambda pair: {**pair[0], **pair[1]})


def encode(value: Any) -> bytes:
    """JSON as Python writes it: NaN and ±Infinity as bare literals, unicode unescaped."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


nested = st.integers(min_value=1, max_value=20_000).map(lambda depth: b"[" * depth + b"]" * depth)
bodies = (
    rectangular_requests.map(encode)
    | any_shape_requests.map(encode)
    | with_unknown_keys.map(encode)
    | json_values.map(encode)
    | nested
    | st.binary(max_size=64)
    | st.text(max_size=64).map(lambda text: text.encode("utf-8", "surrogatepass"))
)


def documented_statuses(path: str) -> set[int]:
    """The statuses the OpenAPI document lists for POST `path`."""
    return {int(code) for code in OPENAPI["paths"][path]["post"]["responses"]} - {TIMEOUT_STATUS}


def assert_documented(response: httpx.Response, path: str) -> None:
    """A documented status, strict JSON (no NaN or Infinity), and the documented error shape."""
    assert response.status_code in documented_statuses(path), response.text[:500]
    body = orjson.loads(response.content)
    if response.status_code == 422:
        assert body["detail"], body
        for item in body["detail"]:
            assert set(item) == {"loc", "msg", "type"}, item
            assert item["loc"][0] == "body", item
            assert isinstance(item["msg"], str) and item["msg"], item
    elif response.status_code != 200:
        assert isinstance(body["detail"], str) and body["detail"], body


@pytest.mark.parametrize("path", POST_PATHS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
async def test_any_json_body_gets_a_documented_answer(
    asgi_client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    """Random bodies sent as JSON: documented status and shape, never an exception."""
    response = await asgi_client.post(
        path, content=body, headers={"Content-Type": "application/json"}
    )
    assert_documented(response, path)


@pytest.mark.parametrize("path", POST_PATHS)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    content_type=st.sampled_from(["text/plain", "application/xml", "", "application/jsonx"])
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
    body=st.binary(max_size=32),
)
async def test_non_json_content_type_is_refused_with_415(
    asgi_client: httpx.AsyncClient, path: str, content_type: str, body: bytes
) -> None:
    """A body not declared as JSON is refused before parsing, with the documented 415."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    is_json = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    response = await asgi_client.post(path, content=body, headers={"Content-Type": content_type})
    assert_documented(response, path)
    if not is_json:
        assert response.status_code == 415
