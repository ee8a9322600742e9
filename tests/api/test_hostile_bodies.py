"""Bodies small on the wire that would cost the server much (issue 26): each is refused with a
4xx before it is decompressed, allocated or scanned in quadratic time, with a small error body.

The mechanism is asserted — the status, the member named, the bytes the server allocated while
answering (tracemalloc's peak, in-process), the size of the error body — with time bounds of
about 10 s that hold on a busy machine; wall-clock figures are measured apart (issue 26's table).
"""

import asyncio
import json
import time
import tracemalloc
import zipfile
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.api import encoding
from app.api.encoding import JSON_PIECE_NUMBERS
from app.api.errors import MAX_ERRORS
from app.api.schemas.compute import LOGITS_NOT_AN_ARRAY
from app.api.submissions import too_many_elements
from tests import hostile_bodies as hostile
from tests.helpers import npy
from tests.hostile_bodies import NPZ, PROBLEM, archive

GENEROUS_SECONDS = 10.0
SMALL_ERROR_BYTES = 4096


async def _measured(
    send: Callable[[], Awaitable[httpx.Response]],
) -> tuple[httpx.Response, int, float]:
    """The response, tracemalloc's peak (bytes) while it was served in-process, the seconds."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.monotonic()
    try:
        response = await send()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return response, peak, time.monotonic() - started


def _assert_refused(
    response: httpx.Response, status: int, seconds: float, member: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert len(response.content) < SMALL_ERROR_BYTES
    assert seconds < GENEROUS_SECONDS
    body: dict[str, Any] = response.json()
    if member is not None:
        assert body["detail"][0]["loc"] == ["body", member], body
    return body


async def _post_npz(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post("/v1/cross-entropy", content=body, headers={"content-type": NPZ})


# ----- archives -----


@pytest.mark.parametrize(
    ("method", "name"), [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")]
)
async def test_a_bzip2_or_lzma_bomb_is_refused_by_its_method_before_decompressing(
    asgi_client: httpx.AsyncClient, method: int, name: str
) -> None:
    body = hostile.bomb(method, declared=1000)
    assert len(body) < 64 << 10  # 320 MiB of zeros
    response, peak, seconds = await _measured(lambda: _post_npz(asgi_client, body))
    detail = _assert_refused(response, 422, seconds, "logits.npy")["detail"][0]
    assert f"method {method} ({name})" in detail["msg"]
    assert peak < 8 << 20  # nothing was decompressed


async def test_a_deflate_member_inflating_past_its_declared_size_stops_there(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = hostile.bomb(zipfile.ZIP_DEFLATED, declared=1000)
    response, peak, seconds = await _measured(lambda: _post_npz(asgi_client, body))
    detail = _assert_refused(response, 422, seconds, "logits.npy")["detail"][0]
    assert "more than the 1000 bytes it declares" in detail["msg"]
    assert peak < 2 * len(body) + (8 << 20)  # at most 1001 bytes inflated, not 320 MiB


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"crc": 0}, "CRC-32"),
        ({"method": 99}, "method 99"),
        ({"flags": 1}, "encrypted"),
    ],
)
async def test_a_forged_header_is_a_422_naming_the_member(
    asgi_client: httpx.AsyncClient, fields: dict[str, int], words: str
) -> None:
    body = hostile.forged(**fields)
    response, _, seconds = await _measured(lambda: _post_npz(asgi_client, body))
    detail = _assert_refused(response, 422, seconds, "logits.npy")["detail"][0]
    assert words in detail["msg"]


@pytest.mark.parametrize("shape", [(4_000_000_000,), (200_000, 200_000), (10**30,)])
async def test_an_npy_header_is_checked_against_the_member_s_size_before_allocating(
    asgi_client: httpx.AsyncClient, shape: tuple[int, ...]
) -> None:
    body = hostile.header_only(shape)
    response, peak, seconds = await _measured(lambda: _post_npz(asgi_client, body))
    detail = _assert_refused(response, 422, seconds, "logits")["detail"][0]
    assert "but the member holds 0 bytes" in detail["msg"]
    assert peak < 8 << 20


async def test_a_deeply_nested_request_json_is_a_422_naming_it(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = hostile.nested_request_json(3000)
    response, _, seconds = await _measured(lambda: _post_npz(asgi_client, body))
    detail = _assert_refused(response, 422, seconds, "request.json")["detail"][0]
    assert "nested more than" in detail["msg"]


async def test_a_member_sent_twice_is_a_422_not_the_last_one_silently(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = hostile.member_twice()
    response, _, seconds = await _measured(lambda: _post_npz(asgi_client, body))
    detail = _assert_refused(response, 422, seconds, "logits.npy")["detail"][0]
    assert "twice" in detail["msg"]


async def test_random_corruptions_of_an_archive_are_4xx_never_500(
    asgi_client: httpx.AsyncClient,
) -> None:
    members = [
        ("logits.npy", npy(np.arange(12.0).reshape(3, 4))),
        ("labels.npy", npy(np.array([0, 1, 3]))),
        ("request.json", b'{"include": ["loss"]}'),
    ]
    rng = np.random.default_rng(26)
    statuses: dict[int, int] = {}
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        body = archive(members, method)
        for _ in range(150):
            corrupted = bytearray(body)
            for position in rng.integers(0, len(body), size=int(rng.integers(1, 4))):
                corrupted[position] = int(rng.integers(0, 256))
            response = await _post_npz(asgi_client, bytes(corrupted))
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, response.text
    assert set(statuses) - {200}, statuses  # the corruptions were noticed


# ----- JSON bodies -----

HEALTHZ_BOUND_SECONDS = 5.0
"""/healthz while a hostile body is served in-process: under 1 s on a quiet machine (measured
apart); here only bounded well below the 13 s a quadratic scan held the loop."""


async def _with_healthz(
    client: httpx.AsyncClient, send: Callable[[], Awaitable[httpx.Response]]
) -> tuple[httpx.Response, float, float]:
    """The response, the seconds it took, and the longest /healthz answer meanwhile."""
    done = asyncio.Event()
    longest = 0.0

    async def poll() -> None:
        nonlocal longest
        for _ in range(10_000):
            started = time.monotonic()
            answer = await client.get("/healthz")
            assert answer.status_code == 200
            longest = max(longest, time.monotonic() - started)
            if done.is_set():
                return
            await asyncio.sleep(0.02)

    poller = asyncio.create_task(poll())
    started = time.monotonic()
    try:
        response = await send()
    finally:
        done.set()
    seconds = time.monotonic() - started
    await poller
    return response, seconds, longest


def _json(client: httpx.AsyncClient, path: str, body: bytes) -> Awaitable[httpx.Response]:
    return client.post(path, content=body, headers={"content-type": "application/json"})


async def test_an_unterminated_string_of_escaped_quotes_is_scanned_once(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = hostile.unterminated_escaped_quotes(32_000)
    response, seconds, healthz = await _with_healthz(
        asgi_client, lambda: _json(asgi_client, "/v1/grade/batch", body)
    )
    _assert_refused(response, 422, seconds)
    assert healthz < HEALTHZ_BOUND_SECONDS
    # linear: 1 MB of the same (about 50 min when each quote restarted the scan)
    started = time.monotonic()
    assert not too_many_elements(hostile.unterminated_escaped_quotes(500_000), 1000)
    assert time.monotonic() - started < GENEROUS_SECONDS / 10


async def test_an_escaped_key_does_not_bypass_the_submission_count(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = hostile.escaped_items_key(500_000)
    assert len(body) < 1_600_000
    response, peak, seconds = await _measured(lambda: _json(asgi_client, "/v1/grade/batch", body))
    assert response.status_code == 413
    assert len(response.content) < SMALL_ERROR_BYTES
    assert "GRADCHECK_MAX_SUBMISSIONS" in response.json()["detail"]
    assert peak < 4 * len(body)  # refused from the scan: nothing parsed
    assert seconds < GENEROUS_SECONDS


async def test_three_hundred_thousand_bad_labels_make_a_small_422(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = hostile.boolean_labels(300_000)
    response, peak, seconds = await _measured(lambda: _json(asgi_client, "/v1/cross-entropy", body))
    content = _assert_refused(response, 422, seconds)
    assert content["detail"][0]["loc"][:3] == ["body", "labels", 0]
    assert len(content["detail"]) <= MAX_ERRORS
    assert peak < 16 * len(body)  # what parsing is admitted for; no list of 300,000 errors


async def test_a_body_with_a_million_problems_lists_twenty_and_counts_the_rest(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = ("{" + ",".join(f'"k{i}": 0' for i in range(100_000)) + "}").encode()
    response, _, seconds = await _measured(lambda: _json(asgi_client, "/v1/softmax", body))
    content = _assert_refused(response, 422, seconds)
    assert len(content["detail"]) == MAX_ERRORS
    assert content["detail"][0]["loc"] == ["body", "logits"]
    assert content["errors_omitted"] == 100_001 - MAX_ERRORS  # the extra keys and logits


@pytest.mark.parametrize("depth", [250, 3000])
async def test_a_student_s_deeply_nested_answer_is_graded_zero_not_refused(
    asgi_client: httpx.AsyncClient, depth: int
) -> None:
    response = await _json(asgi_client, "/v1/grade", hostile.deep_student_answer(depth))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["score"] == 0
    assert not result["gradable"]
    assert result["format_errors"][0].startswith("your answer could not be read: ")


async def test_in_a_batch_only_the_deep_answers_are_unreadable(
    asgi_client: httpx.AsyncClient,
) -> None:
    deep = "[" * 300 + "]" * 300
    roster = (
        f'{{"items": [{{"problem": {json.dumps(PROBLEM)}, "submission": {{"loss": 1.0}}}}, '
        f'{{"problem": {json.dumps(PROBLEM)}, "submission": {deep}}}]}}'
    )
    many = f'{{"problem": {json.dumps(PROBLEM)}, "submissions": [{deep}, {{"loss": 1.0}}]}}'
    for body, unreadable in ((roster, 1), (many, 0)):
        response = await _json(asgi_client, "/v1/grade/batch", body.encode())
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [result["gradable"] for result in results] == [
            index != unreadable for index in range(2)
        ]
        assert "could not be read" in results[unreadable]["format_errors"][0]


async def test_the_caller_s_own_deep_field_stays_a_422(asgi_client: httpx.AsyncClient) -> None:
    deep = "[" * 300 + "]" * 300
    body = f'{{"problem": {{"logits": {deep}, "labels": [0]}}, "submission": {{"loss": 1}}}}'
    response = await _json(asgi_client, "/v1/grade", body.encode())
    assert response.status_code == 422
    assert "recursion limit" in response.json()["detail"][0]["msg"]


# ----- the minor items -----


async def test_a_nan_weight_in_an_npz_is_named_as_the_weight(
    asgi_client: httpx.AsyncClient,
) -> None:
    members = [
        ("logits.npy", npy(np.zeros((2, 3)))),
        ("labels.npy", npy(np.array([0, 1]))),
        ("weight.npy", npy(np.array([1.0, np.nan, 1.0]))),
    ]
    response = await _post_npz(asgi_client, archive(members))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "weight", 1]


async def test_a_uint64_label_beyond_int64_is_not_label_minus_one(
    asgi_client: httpx.AsyncClient,
) -> None:
    members = [
        ("logits.npy", npy(np.zeros((2, 3)))),
        ("labels.npy", npy(np.array([0, 2**64 - 1], dtype=np.uint64))),
    ]
    response = await _post_npz(asgi_client, archive(members))
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "labels", 1]
    assert "int64" in detail["msg"]
    assert "-1" not in detail["msg"]


async def test_zero_dimensional_logits_are_told_to_be_an_array(
    asgi_client: httpx.AsyncClient,
) -> None:
    as_json = await asgi_client.post("/v1/cross-entropy", json={"logits": 1.5, "labels": 0})
    members = [("logits.npy", npy(np.array(1.5))), ("labels.npy", npy(np.array(0)))]
    as_npz = await _post_npz(asgi_client, archive(members))
    for response in (as_json, as_npz):
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "logits"]
        assert detail["msg"] == LOGITS_NOT_AN_ARRAY


# ----- /healthz during large responses -----


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(1).standard_normal((79, 40, 40)),
        np.random.default_rng(2).standard_normal((300, 500)),
        np.random.default_rng(3).standard_normal(200_001),
        np.full((70_000,), np.nan),
    ],
    ids=["jacobian", "matrix", "flat", "nan"],
)
def test_a_large_array_is_written_to_json_in_pieces_with_orjson_s_own_text(
    array: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {"batch_size": 3, "values": array, "message": "ok", "loss": np.float64(0.5)}
    expected = orjson.dumps(fields, option=orjson.OPT_SERIALIZE_NUMPY)
    sizes: list[int] = []
    dumps = orjson.dumps

    def recorded(value: Any, option: int | None = None) -> bytes:
        if isinstance(value, np.ndarray):
            sizes.append(value.size)
        return dumps(value, option=option)

    monkeypatch.setattr(orjson, "dumps", recorded)
    assert encoding.encode_json(fields) == expected
    # no single orjson call (which holds the GIL, and so the event loop) takes the whole array
    assert sizes and max(sizes) <= max(JSON_PIECE_NUMBERS, array[0].size)
    assert max(sizes) < array.size
