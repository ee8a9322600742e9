"""Helpers shared by the tests."""

import importlib
import os
import socket
from typing import Any

import pytest

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
