"""Memory admission for real, through uvicorn on 127.0.0.1, with a small budget (a setting).

The service's routes are wired to the budget separately (app/api); until then these tests run a
tiny app, built here, whose route uses `MemoryBudget` exactly as a computing route does:

    cost = <estimate from app.numerics.cost>
    async with budget.admit(cost):
        result = await run_in_threadpool(compute)

with the shared error types answered as the service answers them (OverBudget 413, Overloaded 503
with Retry-After) and the service's own middleware and metrics. The request says its cost and
how long it computes. Concurrent large requests show the queue (in /metrics) and 503s with
Retry-After, a request over the whole budget gets 413, and /healthz and small requests answer
throughout without waiting in the queue. Nothing here depends on elapsed times: the order of
events is read from /metrics.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.core.budget import MemoryBudget
from app.core.config import Settings
from app.core.errors import LimitExceeded, Overloaded
from app.core.metrics import HttpMetrics
from app.core.middleware import install_middleware
from tests.helpers import SERVER_ENV, free_port
from tests.live.conftest import metric_value

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
BUDGET = 100 * MiB
LARGE = 60 * MiB
"""Two large requests do not fit together."""
HOLD_SECONDS = 5.0
"""How long the first large request computes: well beyond WAIT_SECONDS, so that the queued
requests time out behind it even when a busy machine delays them by seconds."""
WAIT_SECONDS = 1.0
QUEUE = 2
OBSERVE_SECONDS = 30
"""Bound on waiting to see a state in /metrics (reached at once on a quiet machine)."""


def admission_app() -> FastAPI:
    """The tiny app (a uvicorn factory): /compute?cost=…&seconds=…, /healthz, /metrics."""
    settings = Settings()
    metrics = HttpMetrics()
    budget = MemoryBudget.from_settings(settings, observer=metrics)
    app = FastAPI()
    install_middleware(app, settings, metrics)

    @app.post("/compute")
    async def compute(cost: int, seconds: float) -> dict[str, int]:
        async with budget.admit(cost):
            await run_in_threadpool(time.sleep, seconds)
        return {"cost": cost}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def exposition() -> Response:
        body, media_type = metrics.exposition()
        return Response(body, media_type=media_type)

    async def limit_exceeded(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LimitExceeded)
        return JSONResponse({"detail": exc.message}, status_code=413)

    async def overloaded(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Overloaded)
        return JSONResponse({"detail": exc.message}, status_code=503, headers=exc.headers)

    app.add_exception_handler(LimitExceeded, limit_exceeded)
    app.add_exception_handler(Overloaded, overloaded)
    return app


@pytest.fixture
def server_url() -> Iterator[str]:
    """uvicorn running `admission_app` with a 100 MiB budget, a queue of 2 and a 1 s wait."""
    port = free_port()
    env = {
        **os.environ,
        **SERVER_ENV,
        "GRADCHECK_MEMORY_BUDGET_BYTES": str(BUDGET),
        "GRADCHECK_ADMISSION_QUEUE_SIZE": str(QUEUE),
        "GRADCHECK_ADMISSION_WAIT_SECONDS": str(WAIT_SECONDS),
        "GRADCHECK_ADMISSION_SMALL_BYTES": str(MiB),
    }
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tests.live.test_admission_live:admission_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "uvicorn exited"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def gauge(client: httpx.AsyncClient, name: str) -> float:
    """The value of a sample without labels in the server's /metrics now."""
    return metric_value((await client.get("/metrics")).text, name)


async def test_large_requests_queue_then_get_503_with_retry_after(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:

        async def large() -> httpx.Response:
            return await client.post("/compute", params={"cost": LARGE, "seconds": HOLD_SECONDS})

        first = asyncio.create_task(large())
        async with asyncio.timeout(OBSERVE_SECONDS):  # the first one is admitted, computing
            while await gauge(client, "gradcheck_memory_in_flight_bytes") < LARGE:
                await asyncio.sleep(0.05)
        others = [asyncio.create_task(large()) for _ in range(5)]

        # the queue shows in /metrics; /healthz and small requests answer without waiting
        # behind it: the queue is still full once they are answered
        async with asyncio.timeout(OBSERVE_SECONDS):
            while await gauge(client, "gradcheck_admission_queued_requests") < QUEUE:
                await asyncio.sleep(0.05)
        text = (await client.get("/metrics")).text
        assert metric_value(text, "gradcheck_memory_in_flight_bytes") == LARGE
        assert metric_value(text, "gradcheck_memory_budget_bytes") == BUDGET
        for _ in range(5):
            health = await client.get("/healthz")
            small = await client.post("/compute", params={"cost": MiB // 2, "seconds": 0})
            assert (health.status_code, small.status_code) == (200, 200)
        assert await gauge(client, "gradcheck_admission_queued_requests") == QUEUE

        answers = [await first, *await asyncio.gather(*others)]
        too_large = await client.post("/compute", params={"cost": BUDGET + 1, "seconds": 0})
        text = (await client.get("/metrics")).text

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 503, 503, 503, 503, 503]
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1"
            assert "busy" in answer.json()["detail"]
    assert too_large.status_code == 413
    assert "GRADCHECK_MEMORY_BUDGET_BYTES" in too_large.json()["detail"]
    # 3 refused at once (queue full), 2 after waiting 1 s behind the first (5 s of work)
    assert metric_value(text, "gradcheck_admission_refusals_total", reason="queue_full") == 3
    assert metric_value(text, "gradcheck_admission_refusals_total", reason="timeout") == 2
    assert metric_value(text, "gradcheck_admission_refusals_total", reason="too_large") == 1
    assert metric_value(text, "gradcheck_memory_in_flight_bytes") == 0
    assert metric_value(text, "gradcheck_admission_queued_requests") == 0


async def test_a_queued_request_is_admitted_when_memory_frees(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        first = asyncio.create_task(
            client.post("/compute", params={"cost": LARGE, "seconds": WAIT_SECONDS / 2})
        )
        async with asyncio.timeout(OBSERVE_SECONDS):  # the first one is admitted, computing
            while await gauge(client, "gradcheck_memory_in_flight_bytes") < LARGE:
                await asyncio.sleep(0.05)
        second = await client.post("/compute", params={"cost": LARGE, "seconds": 0})
        assert (await first).status_code == 200
        text = (await client.get("/metrics")).text
    assert second.status_code == 200  # admitted once the first freed its memory: not refused
    assert metric_value(text, "gradcheck_admission_refusals_total", reason="timeout") == 0
