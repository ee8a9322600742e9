"""The one body dependency (`RequestBody`): 415 unless UTF-8 JSON, 422 naming each bad field,
overflowing literals refused while `-Infinity` masks, large bodies parsed off the event loop
once the memory budget admits what their parse takes (counted from the body)."""

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api import deps
from app.api.deps import (
    CROSS_ENTROPY_BODY,
    INLINE_PARSE_BYTES,
    RequestBody,
    json_parse_bytes,
    overflowing_literal,
    three_digit_exponents,
)
from app.api.schemas.compute import CrossEntropyRequest
from app.core.errors import RequestError
from tests.conftest import ClientFactory

URL = "/v1/cross-entropy"
LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]


async def post_text(
    client: httpx.AsyncClient, text: str, content_type: str = "application/json"
) -> httpx.Response:
    return await client.post(URL, content=text.encode(), headers={"content-type": content_type})


async def test_invalid_json_is_a_422(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.post(
        URL, content=b'{"logits": [[1, 2]', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_non_json_content_type_is_a_415(
    asgi_client: httpx.AsyncClient, content_type: str
) -> None:
    body = json.dumps({"logits": LOGITS, "labels": [0, 1]})
    response = await asgi_client.post(URL, content=body, headers={"content-type": content_type})
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


async def test_json_with_charset_is_accepted(asgi_client: httpx.AsyncClient) -> None:
    body = json.dumps({"logits": LOGITS, "labels": [0, 1]})
    response = await asgi_client.post(
        URL, content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=UTF8", "application/vnd.gradcheck+json", "Application/JSON"],
)
async def test_json_media_types_and_utf8_spellings_are_accepted(
    asgi_client: httpx.AsyncClient, content_type: str
) -> None:
    body = json.dumps({"logits": LOGITS, "labels": [0, 1]})
    response = await post_text(asgi_client, body, content_type)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("charset", "encoding"), [("utf-16", "utf-16"), ("latin-1", "latin-1")])
async def test_json_in_another_charset_is_a_415(
    asgi_client: httpx.AsyncClient, charset: str, encoding: str
) -> None:
    """RFC 8259: JSON exchanged between systems is UTF-8; other charsets are refused, not
    guessed at."""
    body = json.dumps({"logits": LOGITS, "labels": [0, 1]}).encode(encoding)
    response = await asgi_client.post(
        URL, content=body, headers={"content-type": f"application/json; charset={charset}"}
    )
    assert response.status_code == 415
    assert response.json()["detail"] == (
        f'Send the body as UTF-8 JSON: charset "{charset}" is not read (RFC 8259 requires UTF-8).'
    )


async def test_an_overflowing_literal_is_a_422_while_minus_infinity_masks(
    asgi_client: httpx.AsyncClient,
) -> None:
    """pydantic reads both `-1e999999` and `-Infinity` as −∞; only the literal masks."""
    overflowing = await post_text(asgi_client, '{"logits": [[0.0, -1e999999, 1.0]], "labels": [0]}')
    assert overflowing.status_code == 422, overflowing.text
    (error,) = overflowing.json()["detail"]
    assert error["loc"] == ["body", "logits", 0, 1]
    assert error["type"] == "finite_number"
    assert error["msg"] == (
        "the number -1e999999 is beyond float64's range (±1.8e308); send a finite number, or "
        "the literal -Infinity to mask a class"
    )
    masked = await post_text(
        asgi_client,
        '{"logits": [[0.0, -Infinity, 1.0]], "labels": [0], "include": ["log_probabilities"]}',
    )
    assert masked.status_code == 200, masked.text
    assert masked.json()["log_probabilities"][0][1] is None  # −∞ is written as null


def test_overflowing_literals_are_found_where_they_are() -> None:
    error = overflowing_literal(b'{"weight": [1.0, 2.0, 1e309], "logits": [[1e400]]}')
    assert isinstance(error, RequestError)
    assert error.errors[0]["loc"] == ["body", "weight", 2]
    long = "1" * 30 + "e999"
    error = overflowing_literal(f'{{"logits": [[{long}]]}}'.encode())
    assert isinstance(error, RequestError)
    assert "the number 11111111111111111111… is beyond" in error.errors[0]["msg"]
    assert overflowing_literal(b'{"logits": [[1e308, -1.7e308, 1e-999]]}') is None  # finite
    assert overflowing_literal(b'{"logits": [[1e100]], "note": "1e999"}') is None  # in a string


def test_an_answer_may_hold_an_overflowing_literal() -> None:
    """A student's submission or a caller's candidate is judged, not refused."""
    answers = b'{"submission": {"loss": 1e999}, "candidate": [-1e999]}'
    assert overflowing_literal(answers) is None
    assert isinstance(overflowing_literal(b'{"problem": {"submission": 1e999}}'), RequestError)


@pytest.mark.parametrize(
    ("text", "may_overflow"),
    [("1e999", True), ("-2.5E+308", True), (".5e1000", True), ("1e99", False), ("-1e-999", False)],
)
def test_only_three_digit_exponents_send_a_body_to_the_slow_parser(
    text: str, may_overflow: bool
) -> None:
    assert (next(three_digit_exponents(text.encode()), None) is not None) is may_overflow


def test_the_body_is_documented_by_its_model_and_examples() -> None:
    document = CROSS_ENTROPY_BODY.openapi()
    content = document["content"]["application/json"]
    assert document["required"] is True
    assert content["schema"] == {"$ref": "#/components/schemas/CrossEntropyRequest"}
    assert content["examples"] is CROSS_ENTROPY_BODY.examples and content["examples"]
    bare = RequestBody(CrossEntropyRequest, {}).openapi()["content"]["application/json"]
    assert bare == {"schema": {"$ref": "#/components/schemas/CrossEntropyRequest"}}


@pytest.mark.parametrize(("rows", "off_the_loop"), [(2, False), (2000, True)])
async def test_a_large_body_is_parsed_off_the_event_loop(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, rows: int, off_the_loop: bool
) -> None:
    threads: list[threading.Thread] = []
    parse = RequestBody.parse

    def recording_parse(self: RequestBody[Any], body: bytes) -> Any:
        threads.append(threading.current_thread())
        return parse(self, body)

    monkeypatch.setattr(deps.BodyReader, "parse", recording_parse)
    body = json.dumps({"logits": [[0.25, -1.5, 3.0]] * rows, "labels": [0] * rows})
    assert (len(body) > INLINE_PARSE_BYTES) is off_the_loop
    loop_thread = threading.current_thread()
    async with make_client() as client:
        response = await post_text(client, body)
    assert response.status_code == 200, response.text
    assert len(threads) == 1
    assert (threads[0] is not loop_thread) is off_the_loop


RSS_PROBE = """
import sys
from app.api.deps import CROSS_ENTROPY_BODY, json_parse_bytes
from app.core.errors import RequestError

def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))

value = sys.argv[1]
row = "[" + ",".join([value] * 1000) + "]"
body = ('{"labels": [0], "logits": [' + ",".join([row] * 300) + "]}").encode()
before = peak()
try:
    CROSS_ENTROPY_BODY.parse(body)
except RequestError:
    pass
print(peak() - before, json_parse_bytes(body))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    "value", ["0", "-1.2345678901234567", "[0]", "[[[0]]]", '{"a":0}', '"abcdefgh"', "[0,0]"]
)
def test_what_parsing_a_json_body_takes_is_bounded_before_it_is_parsed(value: str) -> None:
    """300,000 values of each shape, parsed in a fresh process: its peak resident memory grows
    by no more than `json_parse_bytes` counted from the body (measured: 31 % of it for
    full-precision numbers, 72 % for `0,`, 78–86 % for lists and objects)."""
    probe = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, value], capture_output=True, text=True, check=True
    )
    grown, bound = (int(number) for number in probe.stdout.split())
    assert 0 < grown <= bound


def test_the_bound_counts_values_arrays_objects_and_bytes() -> None:
    body = b'{"a": [[0, 1], [2]], "b": "xyz"}'
    values, arrays, objects = 3 + 1, 3, 1
    assert json_parse_bytes(body) == (
        values * deps.JSON_PARSE_BYTES_PER_VALUE
        + arrays * deps.JSON_PARSE_BYTES_PER_ARRAY
        + objects * deps.JSON_PARSE_BYTES_PER_OBJECT
        + len(body) * deps.JSON_PARSE_BYTES_PER_BODY_BYTE
    )
    long = b"[" + b",".join([b"[0]"] * 400_000) + b"]"  # several blocks of the count
    assert len(long) > deps.COUNT_BLOCK_BYTES
    assert json_parse_bytes(long) == (
        400_000 * deps.JSON_PARSE_BYTES_PER_VALUE
        + 400_001 * deps.JSON_PARSE_BYTES_PER_ARRAY
        + len(long) * deps.JSON_PARSE_BYTES_PER_BODY_BYTE
    )


async def test_a_body_whose_parse_would_exceed_the_request_limit_is_a_413_unparsed(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nested one-number lists (77 bytes of memory a byte of body) are refused from their
    count, before pydantic sees them."""
    parsed: list[bytes] = []
    parse = RequestBody.parse

    def recording_parse(self: RequestBody[Any], body: bytes) -> Any:
        parsed.append(body)
        return parse(self, body)

    monkeypatch.setattr(deps.BodyReader, "parse", recording_parse)
    body = '{"labels": [0], "logits": [' + ",".join(["[[[0]]]"] * 20_000) + "]}"
    limit = 16 * len(body)  # the old bound of 16 bytes a byte of body would have let it in
    assert json_parse_bytes(body.encode()) > limit
    async with make_client(max_request_memory_bytes=limit, memory_budget_bytes=4 * limit) as client:
        response = await post_text(client, body)
    assert response.status_code == 413, response.text
    assert "GRADCHECK_MAX_REQUEST_MEMORY_BYTES" in response.json()["detail"]
    assert parsed == []
