"""SIGTERM: the request in flight finishes with 200, new connections are refused, and the
server exits once it is done."""

import asyncio
import signal
import socket

import httpx
import pytest

from tests.live.conftest import (
    ServerFactory,
    slow_problem,
    wait_until_a_post_is_in_progress,
)

pytestmark = [pytest.mark.live, pytest.mark.slow]


def connection_refused(port: int) -> bool:
    """True if a new TCP connection to 127.0.0.1:port is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=120) as worker,
        httpx.AsyncClient(base_url=server.url, timeout=5) as prober,
    ):
        in_flight = asyncio.create_task(worker.post("/v1/cross-entropy", json=slow_problem()))
        await wait_until_a_post_is_in_progress(prober)

        server.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            while not connection_refused(server.port):
                await asyncio.sleep(0.05)
        refused_while_in_flight = not in_flight.done()
        response = await in_flight

    assert refused_while_in_flight, "the request ended before new connections were refused"
    assert response.status_code == 200
    assert len(response.json()["numeric_jacobian"]) == 48
    # After its graceful shutdown uvicorn re-raises the signal, so the exit is by SIGTERM.
    assert await asyncio.to_thread(server.process.wait, 30) == -signal.SIGTERM
