"""Load against a live uvicorn on 127.0.0.1: 5,000 requests at concurrency 50 with no failure,
bitwise identical answers to identical requests, and /healthz answering during a large
computation. Latencies go to test-artifacts/load.json and the test output: they are figures for
a quiet machine, never asserted (these tests must hold while other jobs share the cores)."""

import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.live.conftest import (
    ServerFactory,
    cross_entropy_problem,
    metric_value,
    slow_problem,
    wait_until_a_post_is_in_progress,
)

pytestmark = [pytest.mark.live, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REQUESTS = 5_000
CONCURRENCY = 50
WALL_CLOCK_CAP_SECONDS = 300
MIN_PINGS = 5
MAX_PINGS = 15


def small_requests() -> list[tuple[str, dict[str, object]]]:
    """A mix of the two endpoints on small batches, as an autograder sends them."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 10)).round(4).tolist()
    return [
        ("/v1/softmax", {"logits": logits}),
        ("/v1/softmax", {"logits": logits, "include": ["probabilities", "numeric_jacobian"]}),
        ("/v1/cross-entropy", {"logits": logits, "labels": [0, 3, 9, 2]}),
        ("/v1/cross-entropy", {"logits": logits, "labels": [1, 1, 1, 1], "reduction": "sum"}),
    ]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation."""
    return float(np.percentile(values, q))


def record(name: str, results: dict[str, object]) -> None:
    """Print the results and store them in test-artifacts/<name>.json."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(results)}")


async def test_5000_requests_at_concurrency_50_without_failure(
    start_server: ServerFactory,
) -> None:
    """Every request answered 200, with no retry. On a busy machine a client may read a response
    seconds after the server wrote it and reuse the connection at once: the server keeps idle
    connections open far longer than that (UVICORN_TIMEOUT_KEEP_ALIVE, tests/core/
    test_keep_alive.py), so the reused connection is never closed under the request."""
    server = start_server()
    requests = small_requests()
    latencies: list[float] = []
    failures: list[str] = []
    next_index = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < REQUESTS:
            path, body = requests[next_index % len(requests)]
            next_index += 1
            started = time.perf_counter()
            try:
                response = await client.post(path, json=body)
            except httpx.HTTPError as error:
                failures.append(f"{path}: {error!r}")
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                failures.append(f"{path}: {response.status_code} {response.text[:200]}")

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        async with asyncio.timeout(WALL_CLOCK_CAP_SECONDS):
            await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        wall = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text

    record(
        "load",
        {
            "requests": REQUESTS,
            "concurrency": CONCURRENCY,
            "failed": len(failures),
            "wall_seconds": round(wall, 2),
            "requests_per_second": round(REQUESTS / wall, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2),
        },
    )
    assert failures == []
    assert len(latencies) == REQUESTS
    served = sum(
        metric_value(
            metrics, "gradcheck_http_requests_total", method="POST", route=path, status="200"
        )
        for path in {path for path, _ in requests}
    )
    assert served == REQUESTS


async def test_identical_requests_under_concurrency_get_bitwise_identical_answers(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    rng = np.random.default_rng(2)
    cases = [
        (
            "/v1/softmax",
            {
                "logits": rng.normal(size=(8, 40)).tolist(),
                "include": ["probabilities", "log_probabilities", "jacobian", "numeric_jacobian"],
                "numeric": {"method": "five_point"},
            },
        ),
        ("/v1/cross-entropy", {**cross_entropy_problem(32, 50, seed=3), "label_smoothing": 0.1}),
    ]
    async with httpx.AsyncClient(
        base_url=server.url, limits=httpx.Limits(max_connections=CONCURRENCY), timeout=120
    ) as client:
        for path, body in cases:
            reference = await client.post(path, json=body)
            assert reference.status_code == 200
            async with asyncio.timeout(WALL_CLOCK_CAP_SECONDS):
                burst = await asyncio.gather(*(client.post(path, json=body) for _ in range(200)))
            assert {r.status_code for r in burst} == {200}
            assert {r.content for r in burst} == {reference.content}


async def test_healthz_answers_while_a_large_request_computes(
    start_server: ServerFactory,
) -> None:
    """One worker (the default): the computation runs in a thread, so the event loop keeps
    answering: at least MIN_PINGS pings are answered while it computes (none would be, were the
    loop blocked). Their times are recorded, not asserted."""
    server = start_server()
    large = slow_problem()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=120) as worker,
        httpx.AsyncClient(base_url=server.url, timeout=5) as prober,
    ):
        computation = asyncio.create_task(worker.post("/v1/cross-entropy", json=large))
        await wait_until_a_post_is_in_progress(prober)
        pings: list[float] = []
        while len(pings) < MAX_PINGS and not computation.done():
            started = time.perf_counter()
            response = await prober.get("/healthz")
            assert response.status_code == 200
            if not computation.done():  # answered while the computation was still running
                pings.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)
        result = await computation

    record(
        "healthz_under_load",
        {
            "pings_during_computation": len(pings),
            "median_ms": round(statistics.median(pings) * 1000, 2) if pings else None,
            "max_ms": round(max(pings) * 1000, 2) if pings else None,
        },
    )
    assert len(pings) >= MIN_PINGS, "the large request ended before enough pings: enlarge it"
    assert result.status_code == 200
