"""In-process floors measured as in a warm process: their memory comes from a heap that keeps
what it frees, so a floor never pays page faults for what ran before it.

The floors run in the benchmark's own process, interleaved with end-to-end requests. With
glibc's allocator as `make bench` sets it up (the service's settings: blocks over 32 MiB are
mapped, freed memory over 64 MiB at the top of the heap is given back), a floor's large arrays
are faulted in afresh on every run, or not, depending on what ran before it: case 4's floor
measured 27 ms or 44 ms (2026-12-06), and case 7's formula 591 ms where the issue measured it at
206–241 ms (`make bench` now: about 214 ms). So this process never trims its heap
(`keep_freed_memory`, at the start of the run), and each floor runs with mapping off
(`in_warm_heap`), every block from the heap, kept there for its next run. The end-to-end
requests keep the allocator's settings, and the service's process is not touched (another
process, started with the service's settings by `tests.helpers.start_uvicorn`).
"""

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache, wraps
from typing import ParamSpec, TypeVar

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1
DEFAULT_MMAP_MAX = 65536
"""glibc's mallopt parameters (malloc.h), the largest trim threshold it takes (an int) and its
default number of mapped blocks."""

Params = ParamSpec("Params")
Result = TypeVar("Result")


@cache
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, or None where the C library has none (nothing is changed there)."""
    name = ctypes.util.find_library("c")
    function: Callable[[int, int], int] | None = (
        None if name is None else getattr(ctypes.CDLL(name), "mallopt", None)
    )
    return function


def keep_freed_memory() -> bool:
    """Never give this process's freed heap back to the kernel (False where not glibc)."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def in_warm_heap(floor: Callable[Params, Result]) -> Callable[Params, Result]:
    """`floor`, run with every block taken from the heap (none mapped): what it frees stays for
    its next run."""

    @wraps(floor)
    def warm(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        mallopt = _mallopt()
        if mallopt is None:
            return floor(*args, **kwargs)
        mallopt(M_MMAP_MAX, 0)
        try:
            return floor(*args, **kwargs)
        finally:
            mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)

    return warm
