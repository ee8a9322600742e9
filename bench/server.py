"""A live uvicorn serving `bench.app:app` on 127.0.0.1 at a free port, and its memory readings."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.client import Connection, build_request

ROOT = Path(__file__).resolve().parent.parent
UVICORN = [sys.executable, "-m", "uvicorn", "bench.app:app", "--host", "127.0.0.1"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running server: its port and the pid of the process that serves requests."""

    port: int
    pid: int

    def peak_rss_bytes(self) -> int:
        """The serving process's peak resident memory so far (VmHWM)."""
        return _status_kib(self.pid, "VmHWM") * 1024

    def rss_bytes(self) -> int:
        """The serving process's resident memory now (VmRSS)."""
        return _status_kib(self.pid, "VmRSS") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


@contextmanager
def running_server(env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[Server]:
    """One uvicorn process with the service's default settings (no --workers: it serves
    requests itself, so its pid is the one whose memory is read), stopped on exit."""
    port = free_port()
    process = subprocess.Popen(
        [*UVICORN, "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_healthy(process, port, timeout)
        yield Server(port, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"uvicorn exited with {process.returncode}: {error}")
        try:
            connection = Connection(port, timeout=2)
        except OSError:
            time.sleep(0.1)
            continue
        try:
            if connection.request(build_request("GET", "/healthz")).status == 200:
                return
        finally:
            connection.close()
    raise RuntimeError(f"uvicorn did not answer /healthz within {timeout:g} s")
