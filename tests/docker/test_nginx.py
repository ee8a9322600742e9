"""The production front for real: nginx from deploy/nginx/ in front of local uvicorns.

nginx runs as a plain process on loopback with a config rendered from the template that the
compose `scale` profile uses (tests/docker/nginx_front.py); the replicas are
`uvicorn app.main:app` from this venv on 127.0.0.1.

Load balancing: three replicas. Which replica answered each request is read from nginx's access
log (the template's `gradcheck_upstream` format: the last address of `upstream=` answered); that
every replica really served is also seen in the replicas' own logs.

Hardening: one replica behind nginx with the template's shipped limits (and compose's default
body limit, 64m), attacked over raw sockets: 300 slowloris connections, a 200 MB header line,
bodies over the limit, more requests at once than `limit_conn` allows.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from tests.docker.conftest import ROOT, free_port, wait_for_http
from tests.docker.nginx_front import (
    TEMPLATE,
    Nginx,
    Prober,
    directives,
    send_until_answered,
    slowloris,
    start_nginx,
    start_uvicorn,
    stop,
)

pytestmark = [pytest.mark.docker, pytest.mark.live]

SOFTMAX_BODY = {"logits": [[0.0, math.log(2.0)]], "include": ["probabilities"]}
REPLICAS = 3
# '"POST /v1/softmax HTTP/1.1" 200 108 upstream=127.0.0.1:1, 127.0.0.1:2 upstream_status=502, 200'
ANSWERED = re.compile(
    r'"POST /v1/softmax HTTP/1\.1" 200 \d+ upstream=(?:[^ ]+, )*127\.0\.0\.1:(\d+) '
)
MIB = 1 << 20


@dataclass
class Replica:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def mentions_softmax(self) -> bool:
        """The replica's own log shows it handled a /v1/softmax request."""
        return "/v1/softmax" in self.log.read_text(errors="replace")


@dataclass
class Balancer:
    url: str
    replicas: list[Replica]
    nginx_log: Path

    def answered(self) -> list[int]:
        """How many POST /v1/softmax each replica answered with 200, per nginx's log."""
        ports = [int(port) for port in ANSWERED.findall(self.nginx_log.read_text())]
        return [ports.count(replica.port) for replica in self.replicas]


@pytest.fixture(scope="module")
def balancer(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancer]:
    workdir = tmp_path_factory.mktemp("nginx")
    replicas: list[Replica] = []
    nginx: Nginx | None = None
    try:
        for index in range(REPLICAS):
            port = free_port()
            log = workdir / f"replica-{index}.log"
            replicas.append(Replica(port=port, log=log, process=start_uvicorn(port, log)))
        for replica in replicas:
            wait_for_http(f"http://127.0.0.1:{replica.port}/healthz", timeout=60)

        nginx_port = free_port()
        values = {
            "NGINX_PORT": f"127.0.0.1:{nginx_port}",
            "NGINX_MAX_BODY": "1m",
            **{f"UPSTREAM_{i + 1}": f"127.0.0.1:{r.port}" for i, r in enumerate(replicas)},
        }
        nginx = start_nginx(nginx_bin, workdir, values, port=nginx_port)
        yield Balancer(url=nginx.url, replicas=replicas, nginx_log=nginx.access_log)
    finally:
        if nginx is not None:
            stop(nginx.process, signal.SIGQUIT)
        for replica in replicas:
            stop(replica.process)


def post_softmax(client: httpx.Client, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        response = client.post("/v1/softmax", json=SOFTMAX_BODY)
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert response.json()["probabilities"][0] == pytest.approx([1 / 3, 2 / 3])
    return statuses


def test_template_renders_and_nginx_accepts_it(balancer: Balancer) -> None:
    response = httpx.get(f"{balancer.url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_requests_spread_over_every_replica(balancer: Balancer) -> None:
    before = balancer.answered()
    with httpx.Client(base_url=balancer.url, timeout=30) as client:
        statuses = post_softmax(client, 60)
    assert statuses == [200] * 60
    time.sleep(0.5)  # let nginx and the replicas write their logs
    served = [now - then for now, then in zip(balancer.answered(), before, strict=True)]
    assert sum(served) == 60, served
    assert min(served) >= 10, f"round robin should reach every replica: {served}"
    assert all(replica.mentions_softmax() for replica in balancer.replicas)


def test_body_limit_is_enforced_by_nginx(balancer: Balancer) -> None:
    before = [replica.log.stat().st_size for replica in balancer.replicas]
    big = b'{"logits": [[' + b"0.5, " * 400_000 + b"0.5]]}"  # about 2 MB > 1m
    response = httpx.post(
        f"{balancer.url}/v1/softmax",
        content=big,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    time.sleep(0.3)
    after = [replica.log.stat().st_size for replica in balancer.replicas]
    assert after == before, "a body over client_max_body_size must not reach a replica"


def test_a_killed_replica_fails_no_request(balancer: Balancer) -> None:
    """Kill one replica outright: nginx retries on the others (proxy_next_upstream) and then
    takes it out of rotation (max_fails/fail_timeout); all 100 requests succeed."""
    victim = balancer.replicas[0]
    with httpx.Client(base_url=balancer.url, timeout=30) as client:
        assert post_softmax(client, 6) == [200] * 6  # warm keepalive connections to all three
        victim.process.kill()
        victim.process.wait(timeout=10)
        time.sleep(0.5)
        before = balancer.answered()
        statuses = post_softmax(client, 100)
    assert statuses == [200] * 100
    time.sleep(0.5)
    after = balancer.answered()
    assert after[0] == before[0], "the killed replica cannot have answered"
    served = [now - then for now, then in zip(after[1:], before[1:], strict=True)]
    assert sum(served) == 100, served
    assert min(served) >= 20, f"the two survivors should share the load: {served}"
    # The failover really happened in nginx: a refused attempt, retried on another replica.
    assert "upstream_status=502, 200" in balancer.nginx_log.read_text(errors="replace")


# ------------------------------------------------------------------ the front's hardening

SHIPPED = directives(TEMPLATE.read_text())
SLOW_CONNECTIONS = 300
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def seconds(value: str) -> float:
    """An nginx time such as `10s`, `500ms` or `1m` (only the forms the template uses)."""
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert match, f"not an nginx time: {value!r}"
    return int(match.group(1)) * {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0}[match.group(2)]


def size(value: str) -> int:
    """An nginx size such as `8k` or `64m`."""
    match = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert match, f"not an nginx size: {value!r}"
    return int(match.group(1)) * UNITS[match.group(2)]


def shipped(name: str) -> str:
    values = SHIPPED.get(name)
    assert values, f"deploy/nginx/gradcheck.conf.template does not set {name}"
    assert len(values) == 1, f"{name} is set more than once: {values}"
    return values[0]


def test_template_bounds_slow_and_oversized_clients() -> None:
    """The shipped values themselves (the live tests below run with exactly these)."""
    service = Settings.model_fields
    assert 1 <= seconds(shipped("client_header_timeout")) <= 15
    assert 1 <= seconds(shipped("client_body_timeout")) <= 30
    assert 1 <= seconds(shipped("send_timeout")) <= 60
    assert 1 <= seconds(shipped("keepalive_timeout")) <= 75
    assert shipped("reset_timedout_connection") == "on"

    count, each = shipped("large_client_header_buffers").split()
    assert int(count) * size(each) <= 64 << 10, "headers may take at most 64 KiB in all"
    assert size(each) <= 16 << 10, "a single header line may take at most 16 KiB"
    assert size(shipped("client_header_buffer_size")) <= size(each)

    zone = re.fullmatch(r"\$binary_remote_addr zone=(\w+):(\d+[km])", shipped("limit_conn_zone"))
    assert zone, "limit_conn_zone must count per client address"
    name, limit = shipped("limit_conn").split()
    assert name == zone.group(1)
    assert 8 <= int(limit) <= 1024
    assert shipped("limit_conn_status") == "429"
    rate_zone = re.fullmatch(
        r"\$binary_remote_addr zone=(\w+):(\d+[km]) rate=(\d+)r/s", shipped("limit_req_zone")
    )
    assert rate_zone, "limit_req_zone must count per client address, in requests a second"
    assert 1 <= int(rate_zone.group(3)) <= 100
    rate = re.fullmatch(r"zone=(\w+) burst=(\d+) nodelay", shipped("limit_req"))
    assert rate and rate.group(1) == rate_zone.group(1)
    assert shipped("limit_req_status") == "429"

    # The body limit is the deployment's (compose passes NGINX_MAX_BODY, 64m by default);
    # bodies are read whole by nginx before a replica sees them, responses read whole from it.
    assert shipped("client_max_body_size") == "${NGINX_MAX_BODY}"
    assert shipped("proxy_request_buffering") == "on"
    assert shipped("proxy_buffering") == "on"
    compose = (ROOT / "docker-compose.yml").read_text()
    default = re.search(r"NGINX_MAX_BODY:-(\w+)", compose)
    if default is not None:
        assert size(default.group(1)) == service["max_body_bytes"].default, (
            "compose's default NGINX_MAX_BODY should match GRADCHECK_MAX_BODY_BYTES' default"
        )

    # A little above the service's compute timeout, so that its 504 (not nginx's) answers.
    compute = service["request_timeout_seconds"].default
    assert compute < seconds(shipped("proxy_read_timeout")) <= compute + 15


@dataclass
class Front:
    nginx: Nginx
    replica_log: Path

    def replica_saw(self, marker: str) -> bool:
        return marker in self.replica_log.read_text(errors="replace")

    def softmax_requests(self) -> int:
        """How many POST /v1/softmax reached the replica, per its access log."""
        return self.replica_log.read_text(errors="replace").count('"path": "/v1/softmax"')


@pytest.fixture(scope="module")
def front(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """One replica behind nginx with the shipped template and compose's default body limit,
    nginx allowed as many connections as the official image's (worker_connections 1024)."""
    workdir = tmp_path_factory.mktemp("front")
    replica_port = free_port()
    replica_log = workdir / "replica.log"
    replica = start_uvicorn(replica_port, replica_log)
    nginx: Nginx | None = None
    try:
        wait_for_http(f"http://127.0.0.1:{replica_port}/healthz", timeout=60)
        port = free_port()
        upstream = f"127.0.0.1:{replica_port}"
        values = {
            "NGINX_PORT": f"127.0.0.1:{port}",
            "NGINX_MAX_BODY": "64m",
            **{f"UPSTREAM_{i}": upstream for i in (1, 2, 3)},
        }
        nginx = start_nginx(
            nginx_bin, workdir, values, port=port, worker_connections=1024, error_level="info"
        )
        yield Front(nginx=nginx, replica_log=replica_log)
    finally:
        if nginx is not None:
            stop(nginx.process, signal.SIGQUIT)
        stop(replica)


def test_slowloris_is_cut_off_and_healthz_keeps_answering(front: Front) -> None:
    """300 connections each send a header line every 1-2 s and never finish their headers.
    nginx holds them without a replica seeing anything, answers /healthz in well under a second
    throughout, and closes every one of them once client_header_timeout has passed."""
    header_timeout = seconds(shipped("client_header_timeout"))
    attack = header_timeout + 5  # bounded: every connection gives up by then
    assert attack <= 20
    started = time.monotonic()
    with Prober(front.nginx.port, "/healthz", started, every=0.4) as prober:
        clients = asyncio.run(
            slowloris(front.nginx.port, SLOW_CONNECTIONS, seconds=attack, started=started)
        )
    elapsed = time.monotonic() - started
    probes = prober.probes

    opened = [client for client in clients if client.opened is not None]
    closed = [client for client in opened if client.closed is not None]
    before_timeout = header_timeout - 2
    held = sum(client.open_at(before_timeout) for client in clients)
    close_times = sorted(client.closed for client in closed if client.closed is not None)
    worst = max((probe.seconds for probe in probes), default=float("nan"))
    print(
        f"\nslowloris: {len(opened)} opened, {held} open at {before_timeout:.0f}s, "
        f"{len(closed)} closed by nginx between {close_times[0] if close_times else 0:.1f}s "
        f"and {close_times[-1] if close_times else 0:.1f}s; attack over after {elapsed:.1f}s; "
        f"{len(probes)} /healthz probes, slowest {worst * 1000:.0f} ms"
    )

    # The attack was real: every connection was accepted and still held well into it.
    assert len(opened) == SLOW_CONNECTIONS
    assert held >= 0.95 * SLOW_CONNECTIONS, f"only {held} slow connections were held"
    assert min(client.lines_sent for client in opened) >= 2

    # /healthz through the front: 200 in under a second, every time, while they were held.
    assert probes, "no probe ran"
    bad = [probe for probe in probes if probe.status != 200 or probe.seconds >= 1.0]
    assert not bad, f"slow or failed /healthz probes during the attack: {bad}"
    during = [
        probe
        for probe in probes
        if sum(client.open_at(probe.at) for client in clients) >= 0.9 * SLOW_CONNECTIONS
    ]
    assert len(during) >= 5, f"only {len(during)} probes ran while the slow connections were held"

    # nginx closed (almost) all of them itself, at client_header_timeout and not before,
    # although each kept sending: the header timer is not restarted by each line.
    assert len(closed) >= 0.95 * SLOW_CONNECTIONS, f"nginx closed only {len(closed)}"
    assert close_times[0] >= header_timeout - 0.5, close_times[:5]
    assert close_times[int(0.95 * SLOW_CONNECTIONS) - 1] <= header_timeout + 3, close_times[-5:]
    timed_out = front.nginx.error_log.read_text(errors="replace").count(
        "client timed out (110: Connection timed out) while reading client request headers"
    )
    assert timed_out >= 0.95 * SLOW_CONNECTIONS, timed_out

    # None of it reached the replica.
    time.sleep(0.3)
    assert not front.replica_saw("slowloris="), "a slow request was forwarded to the replica"


def test_a_header_line_over_the_buffer_is_refused(front: Front) -> None:
    line = size(shipped("large_client_header_buffers").split()[1]) + 1024
    head = (
        b"GET /healthz?header-over-buffer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"X-Big: " + b"a" * line + b"\r\n\r\n"
    )  # fmt: skip
    exchange = send_until_answered(front.nginx.port, head, seconds=10)
    assert exchange.status in (400, 494), exchange.response[:300]
    assert b"Request Header Or Cookie Too Large" in exchange.response
    time.sleep(0.3)
    assert not front.replica_saw("header-over-buffer")


def test_a_200_mb_header_line_is_refused_early(front: Front) -> None:
    """nginx answers 400 after a few KiB of an endless header line; the client sees the answer
    and stops long before its 200 MB are sent, and the replica never hears of it."""
    head = b"GET /healthz?header-200mb HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    exchange = send_until_answered(
        front.nginx.port, head, (b"a" * MIB for _ in range(200)), seconds=15
    )
    print(
        f"\n200 MB header: {exchange.status} after {exchange.sent / MIB:.1f} MiB sent, "
        f"{exchange.seconds:.2f}s"
    )
    assert exchange.status in (400, 494), exchange.response[:300]
    assert exchange.sent < 200 * MIB
    time.sleep(0.3)
    assert not front.replica_saw("header-200mb")


def test_a_request_line_over_the_buffer_is_refused(front: Front) -> None:
    target = "/healthz?request-line-over-buffer=" + "a" * (16 << 10)
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    exchange = send_until_answered(front.nginx.port, head, seconds=10)
    assert exchange.status == 414, exchange.response[:300]
    time.sleep(0.3)
    assert not front.replica_saw("request-line-over-buffer")


def test_a_body_announced_over_the_limit_gets_413_at_once(front: Front) -> None:
    """Content-Length one byte over 64m: 413 before a byte of the body is sent."""
    head = (
        b"POST /v1/softmax?announced-over HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {64 * MIB + 1}\r\n\r\n".encode()
    )  # fmt: skip
    exchange = send_until_answered(front.nginx.port, head, seconds=10)
    assert exchange.status == 413, exchange.response[:300]
    assert exchange.sent == len(head)
    time.sleep(0.3)
    assert not front.replica_saw("announced-over")


def test_a_chunked_body_over_the_limit_gets_413(front: Front) -> None:
    """A chunked body (no length announced) is refused once it passes 64m, never forwarded."""
    head = (
        b"POST /v1/softmax?chunked-over HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = f"{MIB:x}\r\n".encode() + b" " * MIB + b"\r\n"
    chunks = [chunk for _ in range(66)] + [b"0\r\n\r\n"]
    exchange = send_until_answered(front.nginx.port, head, chunks, seconds=20)
    print(f"\nchunked body: {exchange.status} after {exchange.sent / MIB:.1f} MiB sent")
    assert exchange.status == 413, exchange.response[:300]
    assert 64 * MIB <= exchange.sent <= 67 * MIB + 4096
    time.sleep(0.3)
    assert not front.replica_saw("chunked-over")


def test_limit_conn_caps_requests_in_progress_per_client(front: Front) -> None:
    """As many slow-body requests as limit_conn allows are held by nginx (none reaches the
    replica); one more request from the same address gets 429; once they hang up, 200 again."""
    limit = int(shipped("limit_conn").split()[1])
    held: list[socket.socket] = []
    try:
        for index in range(limit):
            sock = socket.create_connection(("127.0.0.1", front.nginx.port), timeout=5)
            held.append(sock)
            sock.sendall(
                f"POST /v1/softmax?held={index} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
            )
        time.sleep(0.5)  # let nginx read every header (each request then counts)
        over = send_until_answered(
            front.nginx.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", seconds=5
        )
        assert over.status == 429, over.response[:300]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    statuses: list[int | None] = []
    while time.monotonic() < deadline:
        answer = send_until_answered(
            front.nginx.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", seconds=5
        )
        statuses.append(answer.status)
        if answer.status == 200:
            break
        time.sleep(0.1)
    assert statuses[-1] == 200, statuses
    assert not front.replica_saw("held="), "a request whose body never came was forwarded"


def test_limit_req_caps_the_request_rate_per_client(front: Front) -> None:
    """More /v1 requests than the burst, sent from one address as fast as it can: the burst is
    served, and beyond what the rate refills in the time they took, nginx answers 429 itself
    (never reaching the replica); /healthz is not limited. The counts follow from the elapsed
    time, so a slow machine (which sends slower) asserts as much as a fast one."""
    limit = re.fullmatch(r"zone=\w+ burst=(\d+) nodelay", shipped("limit_req"))
    zone = re.search(r"rate=(\d+)r/s", shipped("limit_req_zone"))
    assert limit is not None and zone is not None
    burst, rate = int(limit.group(1)), int(zone.group(1))
    time.sleep(burst / rate)  # the bucket refills from earlier tests' requests
    sent = burst + 3 * rate
    url = f"http://127.0.0.1:{front.nginx.port}"
    before = front.softmax_requests()
    with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        started = time.monotonic()
        statuses = list(
            pool.map(
                lambda index: (
                    client.post(f"/v1/softmax?rate={index}", json=SOFTMAX_BODY).status_code
                ),
                range(sent),
            )
        )
        elapsed = time.monotonic() - started
        health = client.get("/healthz").status_code
    time.sleep(0.5)  # let the replica write its log
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= burst
    refilled = rate * elapsed
    assert statuses.count(429) >= sent - burst - refilled - 1, (elapsed, statuses.count(429))
    assert statuses.count(200) <= burst + refilled + 1
    assert front.softmax_requests() - before == statuses.count(200)  # no 429 reached it
    assert health == 200
