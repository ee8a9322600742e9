"""Fixtures for the container and deployment tests: a Docker engine, the image, a container.

Everything here talks to 127.0.0.1 only. Missing tools (docker, dockerd, nginx, debootstrap)
make a test skip with the reason, or fail instead when GRADCHECK_REQUIRE_ALL=1 (as in CI).

Environment knobs:
  GRADCHECK_REQUIRE_ALL=1      fail instead of skipping when a tool is missing
  GRADCHECK_PYTHON_IMAGE       base image for the build (default: python:3.11-slim-bookworm
                               if the engine has it, else the stand-in that
                               scripts/local-base-image.sh builds from Debian packages)
  GRADCHECK_TEST_IMAGE         tag of the image the tests build (gradcheck:test)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port as free_port  # re-exported: test_nginx imports it here
from tests.helpers import require

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
OFFICIAL_PYTHON_IMAGE = "python:3.11-slim-bookworm"
STAND_IN_PYTHON_IMAGE = "gradcheck-python-base:bookworm"
TEST_IMAGE = os.environ.get("GRADCHECK_TEST_IMAGE", "gradcheck:test")
DOCKERD_PIDFILE = "/run/gradcheck-dockerd.pid"


def find_tool(name: str) -> str | None:
    """A program on PATH, or in /usr/sbin or /sbin (daemons live there; CI's PATH may lack it)."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def run(
    args: list[str], *, timeout: float = 120, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output as text, and fail with that output if it fails."""
    result: subprocess.CompletedProcess[str] = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result


def docker_answers() -> bool:
    """True if a Docker client is installed and an engine answers it."""
    if shutil.which("docker") is None:
        return False
    try:
        return run(["docker", "info"], timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_until_healthy(container: str, timeout: float = 120) -> dict[str, object]:
    """Poll Docker's own health status of `container` until it is healthy; fail otherwise."""
    deadline = time.monotonic() + timeout
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        out = run(["docker", "inspect", "--format", "{{json .State}}", container], check=False)
        if out.returncode == 0:
            state = json.loads(out.stdout)
            health = state.get("Health") or {}
            status = health.get("Status") if isinstance(health, dict) else None
            if status == "healthy":
                return state
            if not state.get("Running"):
                break
        time.sleep(0.5)
    logs = run(["docker", "logs", "--tail", "50", container], check=False)
    pytest.fail(
        f"container {container} did not become healthy within {timeout:.0f}s; "
        f"state: {json.dumps(state)[:2000]}\nlogs:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}",
        pytrace=False,
    )


def wait_for_http(url: str, timeout: float = 30) -> None:
    """Wait until `url` answers 200 (bounded); fail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f}s", pytrace=False)


@dataclass(frozen=True)
class RunningContainer:
    """A container of the test image, listening on 127.0.0.1:port (host network)."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_container(
    name: str, port: int, *extra: str, env: dict[str, str] | None = None
) -> RunningContainer:
    """`docker run -d` the test image on the host network, checking health every second."""
    run(["docker", "rm", "-f", name], check=False)
    environment = {"PORT": str(port), "HOST": "127.0.0.1", **(env or {})}
    args = ["docker", "run", "-d", "--name", name, "--network", "host"]
    for key, value in environment.items():
        args += ["-e", f"{key}={value}"]
    # The image's HEALTHCHECK command, probed every second instead of every 10 s.
    args += ["--health-interval", "1s", "--health-retries", "3", *extra, TEST_IMAGE]
    run(args, timeout=60)
    return RunningContainer(name=name, port=port)


def remove_container(name: str) -> None:
    run(["docker", "rm", "-f", name], check=False, timeout=60)


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A Docker engine that answers; started with scripts/start-dockerd.sh if none runs."""
    require(
        shutil.which("docker") is not None,
        "the docker client is not installed (apt-get install docker.io)",
    )
    started_pid: int | None = None
    if not docker_answers():
        require(
            find_tool("dockerd") is not None,
            "no Docker engine answers and dockerd is not installed",
        )
        require(os.geteuid() == 0, "no Docker engine answers and only root can start dockerd")
        run(["bash", str(SCRIPTS / "start-dockerd.sh")], timeout=120)
        started_pid = int(Path(DOCKERD_PIDFILE).read_text().strip())
    require(docker_answers(), "the Docker engine does not answer `docker info`")
    yield
    if started_pid is not None:
        # Stop the engine this session started (and only that one).
        try:
            os.kill(started_pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(started_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)


def _image_exists(image: str) -> bool:
    return run(["docker", "image", "inspect", image], check=False).returncode == 0


@pytest.fixture(scope="session")
def python_base_image(docker_engine: None) -> str:
    """The base image to build on: the official one if present, else the Debian stand-in."""
    wanted = os.environ.get("GRADCHECK_PYTHON_IMAGE")
    if wanted:
        require(_image_exists(wanted), f"GRADCHECK_PYTHON_IMAGE={wanted} is not in the engine")
        return wanted
    if _image_exists(OFFICIAL_PYTHON_IMAGE):
        return OFFICIAL_PYTHON_IMAGE
    if not _image_exists(STAND_IN_PYTHON_IMAGE):
        require(
            find_tool("debootstrap") is not None,
            "no Python base image in the engine and debootstrap is not installed to build one",
        )
        started = time.monotonic()
        run(["bash", str(SCRIPTS / "local-base-image.sh"), STAND_IN_PYTHON_IMAGE], timeout=900)
        print(f"\nbase image built in {time.monotonic() - started:.1f}s")
    return STAND_IN_PYTHON_IMAGE


@pytest.fixture(scope="session")
def app_image(python_base_image: str) -> str:
    """The service image, built from the repo's Dockerfile on the host network."""
    require((ROOT / "app" / "main.py").exists(), "app/main.py does not exist yet")
    started = time.monotonic()
    run(
        [
            "docker", "build", "--network", "host",
            "--build-arg", f"PYTHON_IMAGE={python_base_image}",
            "-t", TEST_IMAGE, str(ROOT),
        ],
        timeout=900,
    )  # fmt: skip
    print(f"\nimage {TEST_IMAGE} built in {time.monotonic() - started:.1f}s")
    return TEST_IMAGE


@pytest.fixture(scope="session")
def container(app_image: str) -> Iterator[RunningContainer]:
    """One container for the session: 2 workers, a 64 KiB body limit, healthy."""
    name = f"gradcheck-test-{os.getpid()}"
    running = start_container(
        name,
        free_port(),
        env={"WEB_CONCURRENCY": "2", "GRADCHECK_MAX_BODY_BYTES": "65536"},
    )
    try:
        wait_until_healthy(name)
        yield running
    finally:
        remove_container(name)


@pytest.fixture(scope="session")
def http(container: RunningContainer) -> Iterator[httpx.Client]:
    """An HTTP client with the container's base URL."""
    with httpx.Client(base_url=container.url, timeout=30) as client:
        yield client


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) if it works, else Debian's `docker-compose`, else None."""
    if shutil.which("docker"):
        probe = run(["docker", "compose", "version"], check=False, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="session")
def compose() -> list[str]:
    """The compose command line prefix; skips (or fails under REQUIRE_ALL) without one."""
    command = compose_command()
    require(command is not None, "neither `docker compose` nor `docker-compose` is installed")
    assert command is not None
    return command


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """Path of the nginx binary (Debian installs it in /usr/sbin)."""
    found = find_tool("nginx")
    require(found is not None, "nginx is not installed (apt-get install nginx)")
    assert found is not None
    return found
