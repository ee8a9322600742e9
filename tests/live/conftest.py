"""Live uvicorn servers on 127.0.0.1 started per test (own settings, own process to signal)."""

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, start_uvicorn


@dataclass
class Server:
    """A running uvicorn: its process and base URL."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        """http://127.0.0.1:port"""
        return f"http://127.0.0.1:{self.port}"


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start uvicorn with GRADCHECK_* (or other) environment overrides; stopped after the test."""
    started: list[Server] = []

    def start(**env: str) -> Server:
        port = free_port()
        server = Server(start_uvicorn(port, env), port)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def cross_entropy_problem(samples: int, classes: int, seed: int = 0) -> dict[str, object]:
    """A cross-entropy request with its loss, gradient and numeric gradient."""
    rng = np.random.default_rng(seed)
    return {
        "logits": rng.normal(size=(samples, classes)).round(4).tolist(),
        "labels": rng.integers(0, classes, samples).tolist(),
        "include": ["loss", "gradient", "numeric_gradient"],
    }


def slow_problem() -> dict[str, object]:
    """A request that computes for about a second: a five-point numeric Jacobian of 48 × 400
    logits (7.7M entries, each costing four softmax evaluations), under the default output
    limit."""
    rng = np.random.default_rng(11)
    return {
        "logits": rng.normal(size=(48, 400)).round(4).tolist(),
        "labels": rng.integers(0, 400, 48).tolist(),
        "include": ["loss", "numeric_jacobian"],
        "numeric": {"method": "five_point"},
    }


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of sample `name` with exactly `labels` in a Prometheus exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def wait_until_a_post_is_in_progress(prober: httpx.AsyncClient) -> None:
    """Poll /metrics until the server reports a POST in progress (at most 60 s)."""
    async with asyncio.timeout(60):
        while not metric_value(
            (await prober.get("/metrics")).text,
            "gradcheck_http_requests_in_progress",
            method="POST",
        ):
            await asyncio.sleep(0.02)
