"""Freed memory is kept for the next request's arrays (glibc), instead of going back to the
kernel and being faulted in, zeroed, again: by environment variables set where the process
starts (Makefile, Dockerfile, docker-compose.yml, deploy/kubernetes), never by the app.

glibc's malloc hands a freed block of more than the mmap threshold back to the kernel, and trims
free memory beyond the trim threshold off the top of its heap; the next request's arrays then
fault in fresh pages that the kernel zeroes first (about half the server time of an N=256,
C=100 .npz request, `make bench` case 4). With higher thresholds freed memory is reused; the
process keeps the memory its largest request needed (bounded by the request limits), in at most
two arenas, so that worker threads do not each keep their own.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.helpers import (
    MAKE_STARTS,
    ROOT,
    compose_env,
    dockerfile_final_env_words,
    kubernetes_container_env,
    make_command_words,
    require,
)

ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "2",
    # Blocks up to this size come from the heap: glibc's largest mmap threshold on 64-bit.
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    # Free memory kept at the top of a heap before the rest is returned to the kernel.
    "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
}
"""The settings, as every place that starts the service must set them."""

REQUEST_PAGE_FAULTS = """
import resource, sys
import numpy as np

if sys.argv[1] == "app":  # the app imported and started: it must leave the allocator alone
    import asyncio
    from app.main import app

    async def start_and_stop():
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(start_and_stop())


def request():  # arrays of a large request alive at once: Jacobian, archive, another output
    return [np.ones(size // 8) for size in (20 << 20, 21 << 20, 2 << 20)]


request()
request()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
request()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_of_a_third_request(*, with_settings: bool, start_the_app: bool = False) -> int:
    """Minor page faults of the arrays of a third large request (43 MiB) after two alike, in a
    fresh process started with or without the settings in its environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MALLOC_") and key != "GLIBC_TUNABLES"
    }
    if with_settings:
        env.update(ALLOCATOR_ENV)
    result = subprocess.run(
        [sys.executable, "-c", REQUEST_PAGE_FAULTS, "app" if start_the_app else "bare"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    return int(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def glibc() -> None:
    require(platform.libc_ver()[0] == "glibc", "MALLOC_* variables are glibc's: not glibc here")


@pytest.mark.usefixtures("glibc")
def test_the_arrays_of_a_request_reuse_freed_memory() -> None:
    by_default = page_faults_of_a_third_request(with_settings=False)
    kept = page_faults_of_a_third_request(with_settings=True)
    assert by_default >= 16  # fresh pages from the kernel: 1267–1778 here (21 if all were huge)
    assert kept * 8 <= by_default  # 0 here


@pytest.mark.usefixtures("glibc")
def test_starting_the_app_leaves_the_allocator_alone() -> None:
    """The app sets nothing process-wide: started without the variables, it still faults."""
    assert page_faults_of_a_third_request(with_settings=False, start_the_app=True) >= 16


# ------------------------------------------------- every place that starts the process


def assignments(words: list[str]) -> dict[str, str]:
    """The MALLOC_* names among KEY=VALUE words."""
    pairs = (word.split("=", 1) for word in words if "=" in word)
    return {key: value for key, value in pairs if key.startswith("MALLOC_")}


def test_dockerfile_final_stage_sets_them() -> None:
    assert assignments(dockerfile_final_env_words()) == ALLOCATOR_ENV


def test_make_run_and_make_bench_start_with_them() -> None:
    """What `make -n` would run: the uvicorn of `make run` and the bench's own process (whose
    server inherits its environment)."""
    for target, program in MAKE_STARTS:
        words = make_command_words(target, program)
        assert assignments(words) == ALLOCATOR_ENV, words


def test_kubernetes_deployment_sets_them() -> None:
    env = kubernetes_container_env()
    assert assignments([f"{key}={value}" for key, value in env.items()]) == ALLOCATOR_ENV


def test_compose_sets_them() -> None:
    env = compose_env()
    assert assignments([f"{key}={value}" for key, value in env.items()]) == ALLOCATOR_ENV
