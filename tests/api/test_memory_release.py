"""Memory is released when a request ends, however it ends (issue 26, item 5): 200, 422 from
a body parsed in a worker thread, 422 from the computation, 503, 499 and 504.

The garbage collector is disabled while the requests run: what they allocated must be freed
by reference counting alone, so a reference cycle through a traceback, a frame or a closure
(which would keep the request's arrays until some later collection, unseen by the memory
budget) makes the test fail. The budget must show nothing in flight afterwards."""

import asyncio
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from app.core.budget import MemoryBudget
from app.core.config import Settings
from app.main import create_app
from tests.helpers import npz_body

NPZ = "application/x-npz"
SETTLE_SECONDS = 10.0
"""Longest wait for an abandoned request's worker to stop at its deadline."""
LEFT_BYTES = 10 << 20
"""What may remain traced after the requests: the allocator's and the app's own small caches."""
REPEATS = 10


RNG = np.random.default_rng(26)
SLOW_BODY = npz_body(
    {"logits": RNG.standard_normal((256, 2000)), "labels": RNG.integers(0, 2000, 256)},
    {"include": ["loss", "numeric_gradient"], "numeric": {"method": "five_point"}},
)
"""Loss and an element-wise five-point numeric gradient of 256 × 2000 logits: about 0.1 s of
work on a quiet machine (so its 504 case gives it a deadline of 5 ms, passed whatever the
machine's speed), and tens of MB of arrays."""
FAST_BODY = npz_body(
    {"logits": RNG.standard_normal((256, 2000)), "labels": RNG.integers(0, 2000, 256)},
    {"include": ["loss", "gradient", "probabilities"]},
)
MASKED = np.zeros((256, 2000))
MASKED[7] = -np.inf
INVALID_COMPUTE_BODY = npz_body(
    {"logits": MASKED, "labels": RNG.integers(0, 2000, 256)}, {"include": ["loss"]}
)
"""A row of logits all -inf: refused (422) once the arrays are read, in the worker thread."""
INVALID_JSON_BODY = json.dumps({"logits": [[0.5, 1.5]] * 20_000, "labels": ["x"] * 20_000})
"""A large body parsed in a worker thread and refused there (422)."""


def _scope(content_type: str, length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/cross-entropy",
        "raw_path": b"/v1/cross-entropy",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", content_type.encode()),
            (b"content-length", str(length).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _status(app: Any, body: bytes, content_type: str, disconnect_after: int = 0) -> int:
    """The status `app` answers to a POST of `body` (the response body discarded; a client
    that sends `disconnect_after` bytes and hangs up: 499). Called as the server would, without
    an HTTP client whose own objects could keep the response alive."""
    sent = body[:disconnect_after] if disconnect_after else body
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": sent, "more_body": False}]
    if disconnect_after:
        messages = [{**messages[0], "more_body": True}, {"type": "http.disconnect"}]
    stream = iter(messages)
    status: list[int] = []

    async def receive() -> Any:
        return next(stream, {"type": "http.disconnect"})

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(_scope(content_type, len(body)), receive, send)
    return status[0] if status else 499


@asynccontextmanager
async def _served(**settings: Any) -> AsyncIterator[tuple[Any, MemoryBudget]]:
    """The app as the server calls it (its lifespan run), and its memory budget."""
    app = create_app(Settings(**settings))
    async with LifespanManager(app) as manager:
        yield manager.app, app.state.budget


async def _settled(budget: MemoryBudget, held: int) -> None:
    """Wait until only `held` bytes are in flight (an abandoned worker stopped)."""
    for _ in range(int(SETTLE_SECONDS / 0.05)):
        if budget.in_flight_bytes == held:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the worker's frames unwind after the budget is released
    assert budget.in_flight_bytes == held


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


async def _without_gc(
    budget: MemoryBudget, send: Callable[[], Awaitable[int]], status: int, held: int = 0
) -> tuple[int, list[int]]:
    """Traced bytes left after REPEATS requests (the collector off), and RSS after each."""
    assert await send() == status  # warm: imports, caches, the thread pool
    await _settled(budget, held)
    gc.collect()
    gc.disable()
    tracemalloc.start()
    rss = []
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(REPEATS):
            assert await send() == status
            await _settled(budget, held)
            rss.append(_rss_bytes())
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    return left, rss


BUSY = {
    "admission_queue_size": 0,
    "admission_small_bytes": 0,
    "memory_budget_bytes": 1 << 30,
    "max_request_memory_bytes": 0,
}
"""With the budget held by another request, the next one is refused at once (503)."""


@pytest.mark.parametrize(
    ("body", "content_type", "status", "settings"),
    [
        pytest.param(FAST_BODY, NPZ, 200, {}, id="200"),
        pytest.param(INVALID_COMPUTE_BODY, NPZ, 422, {}, id="422-compute"),
        pytest.param(INVALID_JSON_BODY.encode(), "application/json", 422, {}, id="422-parse"),
        pytest.param(SLOW_BODY, NPZ, 504, {"request_timeout_seconds": 0.005}, id="504"),
        pytest.param(FAST_BODY, NPZ, 503, BUSY, id="503"),
    ],
)
async def test_a_request_s_memory_is_freed_without_a_garbage_collection(
    body: bytes, content_type: str, status: int, settings: dict[str, Any]
) -> None:
    async with _served(**settings) as (app, budget):
        held = budget.total_bytes - 1 if settings is BUSY else 0
        if held:
            await budget.acquire(held)
        try:
            left, rss = await _without_gc(
                budget, lambda: _status(app, body, content_type), status, held
            )
        finally:
            if held:
                budget.release(held)
    assert left < LEFT_BYTES, f"{left:,} bytes still allocated after {REPEATS} × {status}"
    # the allocator may keep pages (docs/performance.md); what must not happen is growth
    assert rss[-1] <= rss[0] + LEFT_BYTES, [f"{value / 2**20:.0f} MiB" for value in rss]


async def test_a_client_that_disconnects_mid_body_frees_what_was_read() -> None:
    async with _served() as (app, budget):
        left, _ = await _without_gc(
            budget, lambda: _status(app, FAST_BODY, NPZ, disconnect_after=100_000), 499
        )
    assert left < LEFT_BYTES
