"""Heap settings for a process that allocates and frees arrays of megabytes on every request.

glibc's malloc hands a freed block of more than M_MMAP_THRESHOLD bytes back to the kernel, and
trims free memory beyond M_TRIM_THRESHOLD off the top of its heap. The next request's arrays
then fault in fresh pages that the kernel zeroes first: about half the server time of an
N=256, C=100 request (`make bench`, case 4). With higher thresholds freed memory is
reused instead. The process keeps the memory its largest request needed (bounded by the
request limits), in at most MAX_ARENAS malloc arenas, so that worker threads do not each keep
their own.
"""

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""mallopt parameter numbers, from glibc's malloc.h."""

MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks up to this size come from the heap: glibc's largest allowed value on 64-bit."""
TRIM_THRESHOLD_BYTES = 64 << 20
"""Free memory kept at the top of a heap before the rest is returned to the kernel."""
MAX_ARENAS = 2


def keep_freed_memory_for_reuse() -> bool:
    """Apply the settings above with glibc's mallopt; False where there is no mallopt (macOS,
    Windows) or it refuses one of them, which leaves the allocator as it was."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (M_ARENA_MAX, MAX_ARENAS),
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
