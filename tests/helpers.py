"""Helpers shared by the tests."""

import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

REQUIRE_ALL = os.environ.get("GRADCHECK_REQUIRE_ALL") == "1"

SERVER_ENV = {"UVICORN_TIMEOUT_KEEP_ALIVE": "75"}
"""uvicorn's settings wherever the service is started (Makefile's SERVER_ENV, the image,
Compose, the manifests): the tests' servers run as the service does (tests/live/
test_keep_alive.py checks that every place agrees)."""

RUNNING: list[pytest.Item] = []
"""The test being set up or run (kept by tests/conftest.py), for the checks that a test which
starts a server or imports an optional package carries the marker that selects it."""

OPTIONAL_PACKAGES = {
    "torch": ("torch", "torch is not installed: make torch"),
    "expecttest": (
        "torch",
        "expecttest (torch's test inputs need it) is not installed: make torch",
    ),
}
"""Packages that are no dependency of the project (not in uv.lock): the marker a test importing
one must carry (so that `-m torch` selects every such test) and how to install it."""


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` unless `condition`; under GRADCHECK_REQUIRE_ALL=1, fail instead."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"GRADCHECK_REQUIRE_ALL=1 but: {reason}")
    pytest.skip(reason)


def require_module(name: str) -> Any:
    """The module `name` for the running test; without it, skip saying how to install it (fail
    under GRADCHECK_REQUIRE_ALL=1). Every test that needs an optional import comes here, never
    to `pytest.importorskip`, which skips whatever GRADCHECK_REQUIRE_ALL says.

    A package of OPTIONAL_PACKAGES may only be required by a test carrying its marker: `.ci/run`
    runs `make test` as a newcomer would (where such tests skip), installs the packages, then
    runs just the marked tests again; an unmarked one would never run with them."""
    top = name.partition(".")[0]
    marker, how = OPTIONAL_PACKAGES.get(top, (None, f"{top} is not installed: make install-dev"))
    if marker is not None and RUNNING and RUNNING[-1].get_closest_marker(marker) is None:
        raise RuntimeError(f"{RUNNING[-1].nodeid} imports {top}: mark it `{marker}`")
    module = optional_module(name)
    require(module is not None, how)
    return module


def optional_module(name: str) -> Any:
    """The module `name` if it can be imported (e.g. torch, never a dependency of the service),
    else None; typed Any, as such modules are used only to compute references."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_uvicorn(
    port: int,
    env: dict[str, str] | None = None,
    *,
    app: str = "app.main:app",
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start `uvicorn <app>` on 127.0.0.1:port with SERVER_ENV and `env`, and wait until
    /healthz answers (at most `timeout` seconds). The one place a test or the benchmark starts
    the service.

    Refused for a running test without the `live` marker."""
    if RUNNING and RUNNING[-1].get_closest_marker("live") is None:
        raise RuntimeError(f"{RUNNING[-1].nodeid} starts a live server: mark it `live`")
    # a file, not a pipe: a chatty server must never block on a full pipe
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **SERVER_ENV, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"uvicorn exited: {log.read().decode(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"uvicorn did not answer /healthz within {timeout:g} s")


MAKE_STARTS = (("run", "uvicorn"), ("bench", "bench.run"))
"""(make target, the program on the line that starts it): `make run`'s uvicorn, and the bench's
own process (whose server inherits its environment)."""


def make_command_words(target: str, program: str) -> list[str]:
    """The shell words of the one line `make -n <target>` would run that names `program`
    (skipped, or failed under GRADCHECK_REQUIRE_ALL=1, without make)."""
    make = shutil.which("make")
    require(make is not None, "make is not installed")
    assert make is not None
    dry_run = subprocess.run(
        [make, "--no-print-directory", "-n", target],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    ).stdout
    (command,) = [line for line in dry_run.splitlines() if program in line]
    return shlex.split(command)


def dockerfile_final_env_words() -> list[str]:
    """The KEY=VALUE words of the ENV instructions of the Dockerfile's final stage."""
    final_stage = re.split(r"^FROM\s", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)[-1]
    return [
        word
        for line in re.sub(r"\\\n", " ", final_stage).splitlines()
        if line.startswith("ENV ")
        for word in shlex.split(line.removeprefix("ENV "), comments=True)
    ]


def kubernetes_container_env() -> dict[str, str | None]:
    """The environment of deploy/kubernetes/deployment.yaml's one container, by name."""
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value") for item in container["env"]}


def compose_env() -> dict[str, str]:
    """The environment of docker-compose.yml's `gradcheck` service (PyYAML resolves its anchors
    and merge keys)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env: dict[str, str] = compose["services"]["gradcheck"]["environment"]
    return env


def npy(array: np.ndarray) -> bytes:
    """`array` as the bytes of an .npy file."""
    member = io.BytesIO()
    np.save(member, array, allow_pickle=False)
    return member.getvalue()


def npz_body(arrays: dict[str, Any], fields: dict[str, Any] | None = None) -> bytes:
    """An `application/x-npz` request body: one `.npy` member per array, named after its field,
    and (unless None) `request.json` holding `fields`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in arrays.items():
            archive.writestr(f"{name}.npy", npy(array))
        if fields is not None:
            archive.writestr("request.json", json.dumps(fields))
    return buffer.getvalue()


def module_from_file(name: str, path: Path) -> Any:
    """The Python file at `path` imported as module `name` (as a host imports an example)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_npz(content: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """An .npz response read as its docs say: (arrays by member name without .npy, decoded
    metadata.json)."""
    with np.load(io.BytesIO(content), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "metadata.json"}
        metadata = json.loads(archive["metadata.json"])
    return arrays, metadata
