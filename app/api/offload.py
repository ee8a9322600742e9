"""Where a request's computation runs: on the event loop when it is tiny, else in a worker
thread once the process's memory budget admits its estimated cost (`app.core.budget`).

A hop to a worker thread and back costs about 0.35 ms of a single worker's time, and far more
when many requests contend for the GIL (`make bench`, case 3): 8 × 10 logits computed on the
loop serve twice as many requests per second as in a thread. A tiny request therefore runs
where it is, holding the event loop for about 0.4–1 ms (3 ms at worst: 146 × 2 logits with
label smoothing, every row through the double-double gradient).
"""

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.core.budget import MemoryBudget
from app.core.config import Settings

Result = TypeVar("Result")


async def compute(
    entries: int, cost_bytes: int, request: Request, work: Callable[[], Result]
) -> Result:
    """work() on the event loop when `entries` (numbers in the request's logits and outputs) is
    at most GRADCHECK_INLINE_MAX_ENTRIES; else in a worker thread, once the memory budget has
    admitted `cost_bytes` (the estimated peak of the computation and its encoding, which
    `work` must include): 413 if it can never fit, 503 with Retry-After if it waited too long."""
    settings: Settings = request.app.state.settings
    if entries <= settings.inline_max_entries:
        return work()
    budget: MemoryBudget = request.app.state.budget
    async with budget.admit(cost_bytes):
        return await run_in_threadpool(work)
