"""Where a request's work runs: on the event loop when it is tiny, else in a worker thread once
the process's memory budget admits its estimated cost (`app.core.budget`).

A hop to a worker thread and back costs about 0.35 ms of a single worker's time, and far more
when many requests contend for the GIL (`make bench`, case 3): 8 × 10 logits computed on the
loop serve twice as many requests per second as in a thread. A tiny request therefore runs
where it is, holding the event loop for about 0.4–1 ms (3 ms at worst: 146 × 2 logits with
label smoothing, every row through the double-double gradient).
"""

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from app.api.deps import RequestContext

Result = TypeVar("Result")


def runs_inline(entries: int, context: RequestContext) -> bool:
    """Whether work on `entries` numbers (the request's logits and outputs) runs on the event
    loop: at most GRADCHECK_INLINE_MAX_ENTRIES."""
    return entries <= context.settings.inline_max_entries


async def run_in_worker(
    cost_bytes: int, context: RequestContext, work: Callable[[], Result]
) -> Result:
    """work() in a worker thread, once the memory budget has admitted `cost_bytes` (the
    estimated peak of the computation and its encoding, which `work` must include): 413 if it
    can never fit, 503 with Retry-After if it waited too long."""
    async with context.budget.admit(cost_bytes):
        return await run_in_threadpool(work)


async def run_admitted(
    entries: int, cost_bytes: int, context: RequestContext, work: Callable[[], Result]
) -> Result:
    """work() on the event loop when `runs_inline(entries)`, else `run_in_worker`."""
    if runs_inline(entries, context):
        return work()
    return await run_in_worker(cost_bytes, context, work)
