"""Running deploy/nginx/gradcheck.conf.template with Debian's nginx on loopback, and raw clients.

Used by tests/docker/test_nginx.py. nginx runs as a plain process (the official image cannot be
pulled here) with an nginx.conf that includes the rendered template, as the official image's
conf.d/ does. The clients below speak HTTP over raw sockets to 127.0.0.1 only, so that they can
do what no well-behaved HTTP library does: send headers slowly or without end, or a body larger
than announced. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.docker.conftest import ROOT, run, wait_for_http

TEMPLATE = ROOT / "deploy" / "nginx" / "gradcheck.conf.template"
PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
LOOPBACK = "127.0.0.1"


def render(template: str, values: dict[str, str]) -> str:
    """Fill ${NAME} placeholders as the nginx image's envsubst does; all must be given."""
    missing = set(PLACEHOLDER.findall(template)) - set(values)
    assert not missing, f"template placeholders without a value: {sorted(missing)}"
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def directives(config: str) -> dict[str, list[str]]:
    """Each simple directive of an nginx config (comments removed) -> its arguments' text.

    Enough for the template's flat syntax: `name args;` statements, blocks opened by `{`.
    A directive given more than once keeps every value, in order.
    """
    text = "\n".join(line.split("#", 1)[0] for line in config.splitlines())
    # Placeholders' braces are not blocks: hide them while splitting statements.
    text = PLACEHOLDER.sub(lambda match: f"\0{match.group(1)}\0", text)
    found: dict[str, list[str]] = {}
    for statement in re.split(r"[;{}]", text):
        words = statement.split(None, 1)
        if words:
            value = words[1].strip() if len(words) > 1 else ""
            value = re.sub(r"\0(\w+)\0", r"${\1}", value)
            found.setdefault(words[0], []).append(value)
    return found


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started (and only that one), bounded in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_uvicorn(
    port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`uvicorn app.main:app` from this venv on 127.0.0.1:port, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app",
             "--host", LOOPBACK, "--port", str(port)],
            cwd=ROOT,
            # PYTHONUNBUFFERED: access log lines at once.
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


@dataclass
class Nginx:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    access_log: Path
    error_log: Path


def start_nginx(
    nginx_bin: str,
    workdir: Path,
    values: dict[str, str],
    *,
    port: int,
    worker_connections: int = 512,
    error_level: str = "notice",
) -> Nginx:
    """nginx on 127.0.0.1:port with the rendered template; checked with `nginx -t` first."""
    (workdir / "gradcheck.conf").write_text(render(TEMPLATE.read_text(), values))
    temp = workdir / "temp"
    temp.mkdir(exist_ok=True)
    # A root master would run its workers as `nobody`, who cannot enter pytest's 0700
    # temporary directories; keep them as the current user.
    user = "user root;" if os.geteuid() == 0 else ""
    error_log = workdir / "error.log"
    (workdir / "nginx.conf").write_text(
        f"""
{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {error_log} {error_level};
events {{ worker_connections {worker_connections}; }}
http {{
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {workdir}/gradcheck.conf;
}}
"""
    )
    conf = ["-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr"]
    run([nginx_bin, "-t", *conf])
    access_log = workdir / "nginx.log"
    with access_log.open("wb") as out:
        process = subprocess.Popen(
            [nginx_bin, *conf], cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for_http(f"{url}/nginx-health", timeout=30)
    except BaseException:
        stop(process, signal.SIGQUIT)
        raise
    return Nginx(url=url, port=port, process=process, access_log=access_log, error_log=error_log)


# ------------------------------------------------------------------------------ raw clients


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP/1.x response, or None if there is no status line."""
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(match.group(1)) if match else None


@dataclass
class Exchange:
    """What a raw client sent and got back."""

    sent: int  # bytes written before the server answered or closed
    response: bytes
    seconds: float

    @property
    def status(self) -> int | None:
        return status_of(self.response)


def send_until_answered(
    port: int, head: bytes, chunks: Iterable[bytes] = (), *, seconds: float = 15.0
) -> Exchange:
    """Send `head` then each of `chunks`, stopping as soon as the server answers (or closes);
    then read its answer. Bounded by `seconds` overall, however much is left to send."""
    started = time.monotonic()
    deadline = started + seconds
    pieces = iter(chunks)
    pending: memoryview | None = memoryview(head)
    sent = 0
    response = b""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline:
            writable = [sock] if pending is not None else []
            readable, ready, _ = select.select([sock], writable, [], 0.2)
            if readable:
                break
            if ready and pending is not None:
                try:
                    count = sock.send(pending[: 1 << 20])
                except BlockingIOError:
                    continue
                except OSError:  # reset or broken pipe: the server gave up on us
                    break
                sent += count
                pending = pending[count:]
                if not pending:
                    piece = next(pieces, None)
                    pending = memoryview(piece) if piece is not None else None
        # The answer (if any): read until the end of its headers, EOF or the deadline.
        sock.setblocking(True)
        while b"\r\n\r\n" not in response:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(min(remaining, 3.0))
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            response += data
    return Exchange(sent=sent, response=response, seconds=time.monotonic() - started)


@dataclass
class SlowClient:
    """One slowloris connection; times in seconds since the attack began."""

    opened: float | None = None
    closed: float | None = None  # when the server closed (EOF or reset) it, if it did
    lines_sent: int = 0
    received: int = 0  # bytes the server sent (nginx sends none before closing)

    def open_at(self, moment: float) -> bool:
        return (
            self.opened is not None
            and self.opened <= moment
            and (self.closed is None or self.closed > moment)
        )


async def _slow_client(
    port: int, index: int, started: float, stop_at: float, interval: tuple[float, float]
) -> SlowClient:
    record = SlowClient()
    jitter = random.Random(index)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 5)
    except (OSError, TimeoutError):
        return record
    record.opened = time.monotonic() - started

    async def watch() -> None:
        # Anything nginx sends is counted; EOF or a reset means it closed the connection.
        try:
            for _ in range(1000):
                data = await reader.read(65536)
                if not data:
                    break
                record.received += len(data)
        except OSError:
            pass
        record.closed = time.monotonic() - started

    watcher = asyncio.ensure_future(watch())
    lines = [f"Host: {LOOPBACK}\r\n".encode()]
    lines += [f"X-Slow-{index}-{n}: {n}\r\n".encode() for n in range(1000)]
    try:
        # A request line, then one header line every 1-2 s, and never the blank line.
        writer.write(f"GET /healthz?slowloris={index} HTTP/1.1\r\n".encode())
        await writer.drain()
        for line in lines:
            remaining = stop_at - time.monotonic()
            if remaining <= 0:
                break
            done, _ = await asyncio.wait(
                {watcher}, timeout=min(jitter.uniform(*interval), remaining)
            )
            if done or time.monotonic() >= stop_at:
                break
            writer.write(line)
            await writer.drain()
            record.lines_sent += 1
    except OSError:
        if record.closed is None:
            record.closed = time.monotonic() - started
    finally:
        if not watcher.done():
            # Give a reset that is already on its way a moment to be seen, then give up.
            await asyncio.wait({watcher}, timeout=0.05)
            watcher.cancel()
        writer.transport.abort()
    return record


async def slowloris(
    port: int,
    connections: int,
    *,
    seconds: float,
    interval: tuple[float, float] = (1.0, 2.0),
    started: float | None = None,
) -> list[SlowClient]:
    """Open `connections` connections to 127.0.0.1:port, each sending a request's header
    lines slowly and never finishing; stop after `seconds`, or once every one is closed."""
    started = time.monotonic() if started is None else started
    stop_at = started + seconds
    return list(
        await asyncio.gather(
            *(_slow_client(port, index, started, stop_at, interval) for index in range(connections))
        )
    )


@dataclass
class Probe:
    at: float  # seconds since the attack began
    status: int | None
    seconds: float
    error: str = ""


def get(port: int, path: str, *, timeout: float = 5.0) -> bytes:
    """A whole `GET path` on a fresh connection (Connection: close): the raw response.

    Raw rather than httpx so that the time measured is the server's, not the building of a
    client (an SSL context each time) in a process whose other thread runs an attack."""
    request = f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n"
    response = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        for _ in range(1000):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                break
            response += data
    return response


@dataclass
class Prober:
    """GET `path` on a fresh connection every `every` seconds in a thread, until stopped."""

    port: int
    path: str
    started: float
    every: float = 0.5
    limit: int = 200
    probes: list[Probe] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        for _ in range(self.limit):
            if self._stop.is_set():
                return
            began = time.monotonic()
            try:
                status, error = status_of(get(self.port, self.path)), ""
            except OSError as exc:
                status, error = None, repr(exc)
            ended = time.monotonic()
            self.probes.append(Probe(began - self.started, status, ended - began, error))
            self._stop.wait(max(0.0, self.every - (ended - began)))

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
