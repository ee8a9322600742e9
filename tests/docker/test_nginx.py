"""The load balancer for real: nginx from deploy/nginx/ in front of three local uvicorns.

nginx runs as a plain process on loopback with a config rendered from the template that the
compose `scale` profile uses; the replicas are `uvicorn app.main:app` from this venv on
127.0.0.1. Which replica answered each request is read from nginx's access log (the template's
`gradcheck_upstream` format: the last address of `upstream=` answered); that every replica
really served is also seen in the replicas' own logs.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.docker.conftest import ROOT, free_port, run, wait_for_http

pytestmark = [pytest.mark.docker, pytest.mark.live]

TEMPLATE = ROOT / "deploy" / "nginx" / "gradcheck.conf.template"
PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
SOFTMAX_BODY = {"logits": [[0.0, math.log(2.0)]], "include": ["probabilities"]}
REPLICAS = 3
# '"POST /v1/softmax HTTP/1.1" 200 108 upstream=127.0.0.1:1, 127.0.0.1:2 upstream_status=502, 200'
ANSWERED = re.compile(
    r'"POST /v1/softmax HTTP/1\.1" 200 \d+ upstream=(?:[^ ]+, )*127\.0\.0\.1:(\d+) '
)


def render(template: str, values: dict[str, str]) -> str:
    """Fill ${NAME} placeholders as the nginx image's envsubst does; all must be given."""
    missing = set(PLACEHOLDER.findall(template)) - set(values)
    assert not missing, f"template placeholders without a value: {sorted(missing)}"
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


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


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def balancer(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balancer]:
    workdir = tmp_path_factory.mktemp("nginx")
    replicas: list[Replica] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for index in range(REPLICAS):
            port = free_port()
            log = workdir / f"replica-{index}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "app.main:app",
                     "--host", "127.0.0.1", "--port", str(port)],
                    cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},  # access log lines at once
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            replicas.append(Replica(port=port, log=log, process=process))
        for replica in replicas:
            wait_for_http(f"http://127.0.0.1:{replica.port}/healthz", timeout=60)

        nginx_port = free_port()
        values = {
            "NGINX_PORT": f"127.0.0.1:{nginx_port}",
            "NGINX_MAX_BODY": "1m",
            **{f"UPSTREAM_{i + 1}": f"127.0.0.1:{r.port}" for i, r in enumerate(replicas)},
        }
        (workdir / "gradcheck.conf").write_text(render(TEMPLATE.read_text(), values))
        temp = workdir / "temp"
        temp.mkdir()
        # A root master would run its workers as `nobody`, who cannot enter pytest's 0700
        # temporary directories; keep them as the current user.
        user = "user root;" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"""
{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log notice;
events {{ worker_connections 512; }}
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
        nginx_log = workdir / "nginx.log"
        with nginx_log.open("wb") as out:
            nginx = subprocess.Popen(
                [nginx_bin, *conf], cwd=workdir, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{nginx_port}"
        wait_for_http(f"{url}/nginx-health", timeout=30)
        yield Balancer(url=url, replicas=replicas, nginx_log=nginx_log)
    finally:
        if nginx is not None:
            stop(nginx, signal.SIGQUIT)
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
