"""Clients that go away, through a real uvicorn and raw sockets: hanging up mid-body is counted
as 499 (never a 5xx), and a response the client does not read is cut off at the send timeout,
logged as the client's, while the server keeps serving."""

import json
import socket
import time

import httpx
import pytest

from tests.live.conftest import ServerFactory, metric_value

pytestmark = pytest.mark.live

FIVE_XX = ("500", "502", "503", "504")


def five_xx_count(metrics_text: str) -> float:
    """Every gradcheck_http_requests_total sample with a 5xx status, summed."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("gradcheck_http_requests_total{") and any(
            f'status="{code}"' in line for code in FIVE_XX
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for_metric(url: str, name: str, value: float, **labels: str) -> str:
    """Poll /metrics until sample `name` with `labels` reaches `value` (at most 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        if metric_value(text, name, **labels) >= value or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_clients_hanging_up_mid_body_are_499_not_5xx(start_server: ServerFactory) -> None:
    server = start_server()
    body = json.dumps({"logits": [[0.5] * 1000] * 20, "labels": [1] * 20}).encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/cross-entropy HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body[: len(body) // 2])
            )
            time.sleep(0.2)  # the route is reading the body when the client hangs up
    labels = {"method": "POST", "route": "/v1/cross-entropy", "status": "499"}
    text = wait_for_metric(server.url, "gradcheck_http_requests_total", 3, **labels)
    assert metric_value(text, "gradcheck_http_requests_total", **labels) == 3
    assert five_xx_count(text) == 0
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_response_never_read_is_cut_off_at_the_send_timeout(
    start_server: ServerFactory,
) -> None:
    """A 20 MB Jacobian requested by a client with a tiny receive buffer that never reads."""
    server = start_server(GRADCHECK_SEND_TIMEOUT_SECONDS="1")
    body = json.dumps({"logits": [[0.01 * c for c in range(250)]] * 16, "include": ["jacobian"]})
    request = (
        b"POST /v1/softmax HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
    )
    labels = {"method": "POST", "route": "/v1/softmax", "status": "499"}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request)
        started = time.monotonic()
        text = wait_for_metric(server.url, "gradcheck_http_requests_total", 1, **labels)
        cut_after = time.monotonic() - started
        assert metric_value(text, "gradcheck_http_requests_total", **labels) == 1
        assert cut_after < 10
        # the connection is gone: reading now ends (reset or EOF) before the whole body
        sock.settimeout(5)
        received = 0
        try:
            while chunk := sock.recv(1 << 16):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < 16 * 250 * 250 * 10
    assert five_xx_count(text) == 0
    healthz = httpx.get(f"{server.url}/healthz", timeout=5)
    assert healthz.status_code == 200
