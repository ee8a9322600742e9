"""The image, built with a real Docker engine, serving the API from a running container."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time

import httpx
import pytest

from tests.docker.conftest import (
    ROOT,
    RunningContainer,
    remove_container,
    run,
    start_container,
    wait_until_healthy,
)
from tests.helpers import SERVER_ENV, free_port

pytestmark = pytest.mark.docker

LN2 = math.log(2.0)


def test_container_is_healthy_by_its_own_healthcheck(container: RunningContainer) -> None:
    state = json.loads(
        run(["docker", "inspect", "--format", "{{json .State.Health}}", container.name]).stdout
    )
    assert state["Status"] == "healthy"
    assert state["Log"], "Docker ran no health probe"
    assert state["Log"][-1]["ExitCode"] == 0


def test_image_healthcheck_needs_no_curl(app_image: str) -> None:
    config = json.loads(
        run(["docker", "image", "inspect", "--format", "{{json .Config}}", app_image]).stdout
    )
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    assert test[1] == "python3"
    assert "/healthz" in " ".join(test)
    assert run(["docker", "run", "--rm", "--entrypoint", "sh", app_image, "-c",
                "command -v curl || echo none"]).stdout.strip() == "none"  # fmt: skip


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == "ok"


def test_readyz(http: httpx.Client) -> None:
    """deploy/kubernetes's readinessProbe asks /readyz."""
    response = http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"


def test_metrics_are_shared_by_the_workers(container: RunningContainer, http: httpx.Client) -> None:
    """WEB_CONCURRENCY=2: the entrypoint gave uvicorn a PROMETHEUS_MULTIPROC_DIR."""
    environ = run(["docker", "exec", container.name, "cat", "/proc/1/environ"]).stdout
    variables = dict(item.split("=", 1) for item in environ.split("\0") if "=" in item)
    directory = variables.get("PROMETHEUS_MULTIPROC_DIR", "")
    assert directory.startswith("/tmp/gradcheck-metrics."), variables
    listing = run(["docker", "exec", container.name, "ls", directory]).stdout
    assert listing.strip(), "no worker wrote its metrics there"
    response = http.get("/metrics")
    assert response.status_code == 200
    assert "gradcheck_http_requests" in response.text


def test_softmax_numbers(http: httpx.Client) -> None:
    # softmax([0, ln 2]) = [1/3, 2/3]; Jacobian a_i(δ_ij − a_j) = [[2/9, −2/9], [−2/9, 2/9]]
    response = http.post("/v1/softmax", json={"logits": [[0.0, LN2]]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["probabilities"][0] == pytest.approx([1 / 3, 2 / 3], rel=1e-12)
    assert body["jacobian"][0] == [
        pytest.approx([2 / 9, -2 / 9], rel=1e-12),
        pytest.approx([-2 / 9, 2 / 9], rel=1e-12),
    ]


def test_cross_entropy_numbers(http: httpx.Client) -> None:
    # label 1: loss = −log(2/3) = log 1.5; gradient a − y = [1/3, −1/3]
    response = http.post("/v1/cross-entropy", json={"logits": [[0.0, LN2]], "labels": [1]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["loss"] == pytest.approx(math.log(1.5), rel=1e-12)
    assert body["gradient"][0] == pytest.approx([1 / 3, -1 / 3], rel=1e-12)
    assert body["gradient_check"]["passed"] is True


def test_bad_body_is_422(http: httpx.Client) -> None:
    response = http.post("/v1/softmax", json={"logits": "not numbers"})
    assert response.status_code == 422
    assert response.json()["detail"]


def test_settings_reach_the_container(http: httpx.Client) -> None:
    """GRADCHECK_MAX_BODY_BYTES=65536 is set on the session container: a bigger body is 413."""
    logits = [[0.5] * 10] * 2000  # about 80 KB of JSON
    response = http.post("/v1/softmax", json={"logits": logits, "include": ["probabilities"]})
    assert response.status_code == 413, response.text[:500]


def test_runs_as_non_root(container: RunningContainer, app_image: str) -> None:
    assert run(["docker", "exec", container.name, "id", "-u"]).stdout.strip() != "0"
    user = run(["docker", "image", "inspect", "--format", "{{.Config.User}}", app_image]).stdout
    uid = user.strip().split(":")[0]
    assert uid.isdigit(), f"USER should be numeric for runAsNonRoot, got {user!r}"
    assert int(uid) != 0


def test_web_concurrency_sets_the_worker_count(container: RunningContainer) -> None:
    """WEB_CONCURRENCY=2 on the session container: a supervisor and two worker processes."""
    top = run(["docker", "top", container.name, "-o", "pid,args"]).stdout
    workers = [line for line in top.splitlines() if "spawn_main" in line]
    assert len(workers) == 2, top
    # uvicorn itself is PID 1 in the container (the entrypoint execs it): it gets SIGTERM.
    cmdline = run(["docker", "exec", container.name, "cat", "/proc/1/cmdline"]).stdout
    assert "uvicorn" in cmdline


def test_hardened_run_and_graceful_stop(app_image: str) -> None:
    """As Kubernetes runs it (deploy/kubernetes): read-only root, no capabilities, no privilege
    escalation, one worker; then `docker stop` ends it promptly with exit code 0."""
    name = f"gradcheck-test-hardened-{os.getpid()}"
    port = free_port()
    try:
        start_container(
            name,
            port,
            "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--user", "10001:10001",
            env={"WEB_CONCURRENCY": "1"},
        )  # fmt: skip
        wait_until_healthy(name)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/softmax", json={"logits": [0.0, LN2]}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["probabilities"] == pytest.approx([1 / 3, 2 / 3], rel=1e-12)  # (C,)
        started = time.monotonic()
        run(["docker", "stop", "--time", "20", name], timeout=60)
        assert time.monotonic() - started < 15, "SIGTERM did not stop uvicorn promptly"
        exit_code = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", name]).stdout
        assert exit_code.strip() == "0"
    finally:
        remove_container(name)


def healthz_on_a_new_connection(port: int) -> tuple[socket.socket, bytes]:
    """Open a connection, send GET /healthz and read the whole response; return the status code
    with the connection, which stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gradcheck\r\n\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(65536)
    head, body = response.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    assert length, head
    while len(body) < int(length.group(1)):
        body += sock.recv(65536)
    return sock, head.split(b" ", 2)[1]


def test_uvicorn_limits_come_from_the_environment(app_image: str) -> None:
    """UVICORN_LIMIT_CONCURRENCY (200 in the image) answers 503 beyond that many connections;
    UVICORN_TIMEOUT_KEEP_ALIVE (75) closes idle connections. Here 2 and 1, to see both."""
    name = f"gradcheck-test-limits-{os.getpid()}"
    port = free_port()
    image_env = run(["docker", "image", "inspect", "--format", "{{json .Config.Env}}", app_image])
    assert "UVICORN_LIMIT_CONCURRENCY=200" in json.loads(image_env.stdout)
    keep_alive = SERVER_ENV["UVICORN_TIMEOUT_KEEP_ALIVE"]
    assert f"UVICORN_TIMEOUT_KEEP_ALIVE={keep_alive}" in json.loads(image_env.stdout)
    try:
        start_container(
            name,
            port,
            env={
                "WEB_CONCURRENCY": "1",
                "UVICORN_LIMIT_CONCURRENCY": "2",
                "UVICORN_TIMEOUT_KEEP_ALIVE": "1",
            },
        )
        wait_until_healthy(name)
        first, status = healthz_on_a_new_connection(port)
        for _ in range(20):  # a health probe of Docker's may hold the second slot for a moment
            if status == b"200":
                break
            first.close()
            time.sleep(0.2)
            first, status = healthz_on_a_new_connection(port)
        assert status == b"200"
        second, status = healthz_on_a_new_connection(port)
        second.close()
        assert status == b"503", "a second connection while the first is open: over the limit"
        idle_since = time.monotonic()
        assert first.recv(1) == b"", "uvicorn closes an idle keep-alive connection"
        assert time.monotonic() - idle_since < 5
        first.close()
    finally:
        remove_container(name)


def test_the_api_test_suite_passes_against_the_container(container: RunningContainer) -> None:
    """The httpx API tests (their live half) with GRADCHECK_BASE_URL pointing at the container."""
    env = {**os.environ, "GRADCHECK_BASE_URL": container.url}
    env.pop("PYTEST_ADDOPTS", None)
    suite = ["tests/api/routes/test_cross_entropy.py", "tests/api/routes/test_softmax.py",
             "tests/api/routes/test_health.py"]  # fmt: skip
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "live", *suite],
        check=False,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
