"""Freed memory is kept for the next request's arrays (glibc), instead of going back to the
kernel and being faulted in, zeroed, again."""

import platform
import subprocess
import sys

import pytest

from app.core.allocator import keep_freed_memory_for_reuse
from tests.helpers import require

REQUEST_PAGE_FAULTS = """
import resource, sys
import numpy as np
from app.core.allocator import keep_freed_memory_for_reuse

if sys.argv[1] == "kept":
    assert keep_freed_memory_for_reuse()


def request():  # arrays of a large request alive at once: Jacobian, archive, another output
    return [np.ones(size // 8) for size in (20 << 20, 21 << 20, 2 << 20)]


request()
request()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
request()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_of_a_third_request(mode: str) -> int:
    """Minor page faults of the arrays of a third large request (43 MiB) after two alike, in a
    fresh process (the settings are process-wide)."""
    result = subprocess.run(
        [sys.executable, "-c", REQUEST_PAGE_FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(result.stdout)


@pytest.fixture(scope="module")
def glibc() -> None:
    require(platform.libc_ver()[0] == "glibc", "mallopt is glibc's: this is not a glibc system")


@pytest.mark.usefixtures("glibc")
def test_the_arrays_of_a_request_reuse_freed_memory() -> None:
    by_default = page_faults_of_a_third_request("default")
    kept = page_faults_of_a_third_request("kept")
    assert by_default >= 16  # fresh pages from the kernel: 1267–1778 here (21 if all were huge)
    assert kept * 8 <= by_default  # 0 here


@pytest.mark.usefixtures("glibc")
def test_the_settings_are_accepted() -> None:
    assert keep_freed_memory_for_reuse()
