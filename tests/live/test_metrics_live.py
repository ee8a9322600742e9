"""/metrics through a live uvicorn: one worker, and two workers sharing PROMETHEUS_MULTIPROC_DIR
(every scrape, whichever worker answers it, counts the requests of both)."""

from pathlib import Path

import httpx
import pytest

from tests.live.conftest import ServerFactory, metric_value

pytestmark = pytest.mark.live

REQUESTS = 40


def send_requests(url: str) -> None:
    """REQUESTS softmax requests, each on a new connection (so both workers get some)."""
    for _ in range(REQUESTS):
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/v1/softmax", json={"logits": [[0.0, 1.0]]}).status_code == 200


def softmax_count(url: str) -> float:
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    return metric_value(
        response.text,
        "gradcheck_http_requests_total",
        method="POST",
        route="/v1/softmax",
        status="200",
    )


def test_metrics_of_one_worker(start_server: ServerFactory) -> None:
    server = start_server()
    send_requests(server.url)
    assert softmax_count(server.url) == REQUESTS


@pytest.mark.slow
def test_metrics_summed_over_two_workers(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server(WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    send_requests(server.url)
    worker_files = {path.name.rsplit("_", 1)[1] for path in tmp_path.glob("counter_*.db")}
    assert len(worker_files) == 2
    assert [softmax_count(server.url) for _ in range(6)] == [REQUESTS] * 6
