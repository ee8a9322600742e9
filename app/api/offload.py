"""Where a request's computation runs: on the event loop when it is tiny, else in a worker thread.

A hop to a worker thread and back costs about 0.35 ms of a single worker's time, and far more
when many requests contend for the GIL (`make bench`, case 3): 8 × 10 logits computed on the
loop serve twice as many requests per second as in a thread. A tiny request therefore runs
where it is, holding the event loop for about 0.4–1 ms (3 ms at worst: 146 × 2 logits with
label smoothing, every row through the double-double gradient).
"""

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from app.core.config import Settings

Result = TypeVar("Result")


async def compute(entries: int, settings: Settings, work: Callable[[], Result]) -> Result:
    """work() on the event loop when `entries` (numbers in the request's logits and outputs) is
    at most GRADCHECK_INLINE_MAX_ENTRIES, else in a worker thread so the loop stays free."""
    if entries <= settings.inline_max_entries:
        return work()
    return await run_in_threadpool(work)
