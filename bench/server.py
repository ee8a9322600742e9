"""A live uvicorn serving `bench.app:app` (or another app) on 127.0.0.1 at a free port, and
its memory readings."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port, start_uvicorn


@dataclass(frozen=True)
class Server:
    """A running server: its port and the pid of the process that serves requests."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        """http://127.0.0.1:port"""
        return f"http://127.0.0.1:{self.port}"

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
def running_server(
    env: dict[str, str] | None = None, timeout: float = 60.0, app: str = "bench.app:app"
) -> Iterator[Server]:
    """One uvicorn process of `app` with the service's default settings (no --workers: it
    serves requests itself, so its pid is the one whose memory is read), stopped on exit."""
    port = free_port()
    process = start_uvicorn(port, env, app=app, timeout=timeout)
    try:
        yield Server(port, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
