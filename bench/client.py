"""A minimal HTTP/1.1 keep-alive client for 127.0.0.1, cheap enough not to be what is measured.

`Connection` (blocking) receives a body with `recv_into` straight into a buffer it keeps from
one request to the next (a large reply allocates nothing after the first: the floors that run
in this process between requests are not made to page-fault by the client's memory);
`requests_per_second` drives a fixed number of concurrent connections with asyncio for a fixed
time. Bodies must come with Content-Length (every response of the service does).
"""

import asyncio
import socket
import time
from dataclasses import dataclass

import uvloop

HEADER_END = b"\r\n\r\n"


def build_request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one HTTP/1.1 request with a Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


@dataclass
class Reply:
    """One response: status, lower-cased headers and the body."""

    status: int
    headers: dict[str, str]
    body: memoryview
    """The connection's receive buffer: valid until its next request (decode it before)."""

    def raise_for_status(self) -> "Reply":
        """This reply, or RuntimeError with the start of the body unless the status is 200."""
        if self.status != 200:
            raise RuntimeError(f"{self.status}: {bytes(self.body[:300])!r}")
        return self


class _ClosedBeforeResponse(ConnectionError):
    """The server closed the connection before sending any byte of a response."""


class Connection:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock = self._connect()
        self._body = bytearray()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def request(self, raw_request: bytes) -> Reply:
        """Send a request built by `build_request` and read the whole response.

        If the server has closed the idle connection (uvicorn's keep-alive timeout) before
        answering, reconnect and send once more, as HTTP client libraries do.
        """
        try:
            return self._exchange(raw_request)
        except ConnectionError as error:
            if not isinstance(error, _ClosedBeforeResponse):
                raise
            self.sock.close()
            self.sock = self._connect()
            return self._exchange(raw_request)

    def _exchange(self, raw_request: bytes) -> Reply:
        try:
            self.sock.sendall(raw_request)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise _ClosedBeforeResponse from error
        buffer = bytearray()
        while HEADER_END not in buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as error:
                raise _ClosedBeforeResponse from error
            if not chunk:
                if buffer:
                    raise ConnectionError("the server closed the connection mid-response")
                raise _ClosedBeforeResponse
            buffer += chunk
        head_length = buffer.index(HEADER_END)
        status, headers = _parse_head(bytes(buffer[:head_length]))
        length = int(headers["content-length"])
        if len(self._body) < length:
            self._body = bytearray(length)
        view = memoryview(self._body)[:length]
        received = buffer[head_length + len(HEADER_END) :]
        view[: len(received)] = received
        filled = len(received)
        while filled < length:
            count = self.sock.recv_into(view[filled:], min(length - filled, 1 << 22))
            if not count:
                raise ConnectionError("the server closed the connection mid-body")
            filled += count
        return Reply(status, headers, view)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


async def _drive(port: int, raw_request: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            writer.write(raw_request)
            head = await reader.readuntil(HEADER_END)
            status, headers = _parse_head(head[: -len(HEADER_END)])
            await reader.readexactly(int(headers["content-length"]))
            if status != 200:
                raise RuntimeError(f"status {status} during the throughput run")
            counts[0] += 1
    finally:
        writer.close()


def requests_per_second(port: int, raw_request: bytes, concurrency: int, seconds: float) -> float:
    """Completed requests per second with `concurrency` connections kept busy for `seconds`."""

    async def run() -> float:
        counts = [0]
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(
            *(_drive(port, raw_request, stop_at, counts) for _ in range(concurrency))
        )
        return counts[0] / (time.perf_counter() - started)

    return uvloop.run(run())
