"""The per-request compute timeout: 504 with a clear message, the app keeps serving, and the
numeric derivatives stop at their next checkpoint."""

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from app.api.encoding import respond
from app.core.middleware import ComputeTimeoutMiddleware
from app.numerics.deadline import NEVER, Deadline, DeadlinePassed
from app.numerics.finite_diff import (
    LossColumns,
    Method,
    SoftmaxColumns,
    choose_steps,
    derivative_by_column,
)
from tests.conftest import ClientFactory


def slow_cross_entropy() -> dict[str, object]:
    """A five-point numeric Jacobian of 48 × 400 logits: a second or more of work."""
    rng = np.random.default_rng(7)
    return {
        "logits": rng.normal(size=(48, 400)).round(3).tolist(),
        "labels": rng.integers(0, 400, 48).tolist(),
        "include": ["loss", "numeric_jacobian"],
        "numeric": {"method": "five_point"},
    }


async def test_slow_request_gets_504_and_the_app_keeps_serving(
    make_client: ClientFactory,
) -> None:
    async with make_client(request_timeout_seconds=0.2) as client:
        response = await client.post("/v1/cross-entropy", json=slow_cross_entropy())
        health = await client.get("/healthz")
        quick = await client.post("/v1/softmax", json={"logits": [[0.0, 1.0]]})
    assert response.status_code == 504
    assert "GRADCHECK_REQUEST_TIMEOUT_SECONDS = 0.2 s" in response.json()["detail"]
    assert health.status_code == 200
    assert quick.status_code == 200


class PassesAtCall(Deadline):
    """A deadline that passes at its `calls`-th check, counting them."""

    __slots__ = ("calls", "last")

    def __init__(self, last: int) -> None:
        super().__init__(0.0)
        self.calls = 0
        self.last = last

    def check(self) -> None:
        self.calls += 1
        if self.calls >= self.last:
            raise DeadlinePassed


def test_the_deadline_stops_the_numeric_derivative_early() -> None:
    """The deadline is checked before each group of columns; raising from it ends the work."""
    deadline = PassesAtCall(3)
    logits = np.random.default_rng(0).normal(size=(512, 600))
    targets = np.full_like(logits, 1 / 600)
    steps = choose_steps(logits, Method.CENTRAL, None)
    with pytest.raises(DeadlinePassed):
        derivative_by_column(LossColumns(logits, targets), logits, steps, Method.CENTRAL, deadline)
    assert deadline.calls == 3


def test_a_late_result_is_not_encoded() -> None:
    """Past the deadline, `respond` stops before serialising (the deadline is checked once)."""
    deadline = PassesAtCall(1)
    fields = {"loss": np.zeros(3)}
    assert respond(fields, None).body == b'{"loss":[0.0,0.0,0.0]}'
    with pytest.raises(DeadlinePassed):
        respond(fields, "application/x-npz", deadline)
    assert deadline.calls == 1
    with pytest.raises(DeadlinePassed):
        respond(fields, None, Deadline.after(-1.0))


def test_the_deadline_is_optional() -> None:
    logits = np.array([[0.0, 1.0, 2.0]])
    steps = choose_steps(logits, Method.CENTRAL, None)
    NEVER.check()
    assert derivative_by_column(SoftmaxColumns(logits), logits, steps, Method.CENTRAL).shape == (
        1,
        3,
        3,
    )


async def test_work_without_checkpoints_is_abandoned_and_its_late_output_dropped() -> None:
    """A thread that ignores the deadline: the client still gets its 504 at the deadline."""
    finished = threading.Event()

    def blocking_work() -> str:
        finished.wait(timeout=10)
        return "late"

    async def slow(_: Request) -> PlainTextResponse:
        return PlainTextResponse(await run_in_threadpool(blocking_work))

    app = ComputeTimeoutMiddleware(Starlette(routes=[Route("/", slow)]), seconds=0.2)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/")
        finished.set()
        await asyncio.sleep(0.1)  # let the abandoned task try to send its response
    assert response.status_code == 504


async def test_response_started_before_the_deadline_is_not_cut() -> None:
    async def stream(_: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"first "
            await asyncio.sleep(0.4)
            yield b"second"

        return StreamingResponse(parts(), media_type="text/plain")

    app = ComputeTimeoutMiddleware(Starlette(routes=[Route("/", stream)]), seconds=0.2)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.content == b"first second"
