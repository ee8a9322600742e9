"""uvicorn keeps idle keep-alive connections open long enough for a slow client (issue 24).

uvicorn counts a connection idle from the moment it wrote its last response. A client on a busy
machine may read that response seconds later and then, as every connection pool does, send its
next request on the same connection at once; were the server to close it at uvicorn's default
5 s, that request would be reset (the `ReadError('')` seen under load). Here a client stalls
6 s before reading and then reuses the connection: the service as started everywhere answers;
uvicorn's default does not (so the test can tell the two apart). And every place that starts
the service sets the same value."""

import re
import socket
import time

import pytest

from tests.helpers import (
    MAKE_STARTS,
    ROOT,
    SERVER_ENV,
    compose_env,
    dockerfile_final_env_words,
    kubernetes_container_env,
    make_command_words,
)
from tests.live.conftest import ServerFactory

STALL_SECONDS = 6.0
"""Longer than uvicorn's default keep-alive (5 s) and httpx's pool expiry (5 s)."""

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body); b"" if the connection ended."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        body += chunk
    return head


def reuse_after_a_stall(port: int) -> bytes:
    """Send, read the response only after STALL_SECONDS, then reuse the connection at once:
    the status line of the second answer, or b"" when the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(REQUEST)
        time.sleep(STALL_SECONDS)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        try:
            sock.sendall(REQUEST)
            return read_response(sock).split(b"\r\n")[0]
        except (ConnectionResetError, BrokenPipeError):
            return b""


@pytest.mark.live
def test_a_connection_reused_after_a_slow_read_is_answered(start_server: ServerFactory) -> None:
    server = start_server()  # with SERVER_ENV, as the service is started everywhere
    assert reuse_after_a_stall(server.port) == b"HTTP/1.1 200 OK"


@pytest.mark.live
def test_uvicorns_default_keep_alive_closes_it(start_server: ServerFactory) -> None:
    server = start_server(UVICORN_TIMEOUT_KEEP_ALIVE="5")
    assert reuse_after_a_stall(server.port) == b""


def test_the_value_outlasts_the_stall_and_nginx_upstream_keep_alive() -> None:
    seconds = int(SERVER_ENV["UVICORN_TIMEOUT_KEEP_ALIVE"])
    assert seconds > STALL_SECONDS
    assert seconds > 60  # nginx's keepalive_timeout for upstream connections (its default)


def keep_alive_in(words: list[str]) -> str | None:
    """The UVICORN_TIMEOUT_KEEP_ALIVE among KEY=VALUE words."""
    values = [w.split("=", 1)[1] for w in words if w.startswith("UVICORN_TIMEOUT_KEEP_ALIVE=")]
    return values[-1] if values else None


def test_every_place_that_starts_the_service_sets_it() -> None:
    expected = SERVER_ENV["UVICORN_TIMEOUT_KEEP_ALIVE"]
    for target, program in MAKE_STARTS:
        words = make_command_words(target, program)
        assert keep_alive_in(words) == expected, words

    assert keep_alive_in(dockerfile_final_env_words()) == expected

    entrypoint = (ROOT / "deploy" / "docker" / "entrypoint.sh").read_text()
    assert f'UVICORN_TIMEOUT_KEEP_ALIVE="${{UVICORN_TIMEOUT_KEEP_ALIVE:-{expected}}}"' in entrypoint

    compose_value = compose_env()["UVICORN_TIMEOUT_KEEP_ALIVE"]
    assert compose_value == f"${{UVICORN_TIMEOUT_KEEP_ALIVE:-{expected}}}"

    assert kubernetes_container_env()["UVICORN_TIMEOUT_KEEP_ALIVE"] == expected
