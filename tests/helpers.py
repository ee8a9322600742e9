"""Helpers shared by the tests."""

import importlib
import os
import socket
from typing import Any

import pytest

REQUIRE_ALL = os.environ.get("GRADCHECK_REQUIRE_ALL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` unless `condition`; under GRADCHECK_REQUIRE_ALL=1, fail instead."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"GRADCHECK_REQUIRE_ALL=1 but: {reason}")
    pytest.skip(reason)


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
