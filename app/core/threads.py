"""Work run in a worker thread, its exception handed back without a reference cycle.

Starlette's `run_in_threadpool` (anyio) sets a worker's exception on a future that the awaiting
frame holds; the exception's traceback holds that frame back, a cycle. Every array in the frames
of the failed work (the logits, a half-made Jacobian) then stays alive until the next garbage
collection, unseen by the memory budget — after a 4xx, and after every 504 whose work stopped
at its deadline. Here the worker returns its exception as a value, and the awaiting frame drops
it as it raises it, so refcounting frees the work's memory as soon as the request ends.
"""

from collections.abc import Callable
from typing import TypeVar, cast

from starlette.concurrency import run_in_threadpool

Result = TypeVar("Result")


def _outcome(work: Callable[[], Result]) -> tuple[Result | None, BaseException | None]:
    try:
        return work(), None
    except Exception as error:
        return None, error


async def run_in_thread(work: Callable[[], Result]) -> Result:
    """work() in a worker thread (as `run_in_threadpool`), its exception raised here without
    anything keeping its frames alive after it is handled."""
    result, error = await run_in_threadpool(_outcome, work)
    if error is None:
        return cast(Result, result)
    try:
        raise error
    finally:
        del error
