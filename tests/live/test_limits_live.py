"""Limits through a real uvicorn and raw sockets: an oversized body is refused with 413 before
the client has sent it (by Content-Length, or mid-way through a chunked body), and a request
past the compute timeout gets 504 while its computation stops and the worker keeps serving."""

import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.live.conftest import ServerFactory, slow_problem

pytestmark = pytest.mark.live

LIMIT = 4096


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of the HTTP/1.1 response on `sock` (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), body


def request_head(port: int, framing: str) -> bytes:
    return (
        f"POST /v1/softmax HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(
    start_server: ServerFactory,
) -> None:
    server = start_server(GRADCHECK_MAX_BODY_BYTES=str(LIMIT))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(server.port, "Content-Length: 1000000000"))
        status, body = read_response(sock)
    assert status == 413
    assert f"GRADCHECK_MAX_BODY_BYTES = {LIMIT}" in json.loads(body)["detail"]


def test_chunked_body_over_the_limit_is_refused_before_it_ends(
    start_server: ServerFactory,
) -> None:
    server = start_server(GRADCHECK_MAX_BODY_BYTES=str(LIMIT))
    piece = b"[" + b"0," * 499 + b"0"  # 1,000 bytes of an unfinished JSON array
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(server.port, "Transfer-Encoding: chunked"))
        for _ in range(LIMIT // len(piece) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, body = read_response(sock)  # the final 0-length chunk was never sent
    assert status == 413
    assert f"GRADCHECK_MAX_BODY_BYTES = {LIMIT}" in json.loads(body)["detail"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_compute_timeout_answers_504_stops_the_work_and_keeps_serving(
    start_server: ServerFactory,
) -> None:
    """The abandoned computation stops at its next checkpoint: the server's CPU use falls to
    idle (an unstopped one would burn a full core for a second or more). The deadline is set
    well inside the numeric Jacobian, which is where the checkpoints are."""
    server = start_server(GRADCHECK_REQUEST_TIMEOUT_SECONDS="0.25")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/v1/cross-entropy", json=slow_problem())
        health = client.get("/healthz")
        time.sleep(0.5)  # the checkpoint comes at most one column group later
        before = cpu_seconds(server.process.pid)
        time.sleep(2)
        busy = cpu_seconds(server.process.pid) - before
        quick = client.post("/v1/softmax", json={"logits": [[0.0, 1.0]]})
    assert response.status_code == 504
    assert "GRADCHECK_REQUEST_TIMEOUT_SECONDS = 0.25 s" in response.json()["detail"]
    assert health.status_code == 200
    assert quick.status_code == 200
    assert busy < 0.5, f"the server used {busy:.2f} CPU-seconds in 2 s after the timeout"
