"""Coalescing: small cross-entropy requests that arrive together are computed as one batch.

For a small problem numpy's fixed cost per call, not the numbers, is the price: eight 8 × 10
problems stacked cost about what two of them cost one by one (`make bench`, case 3). Requests
small enough to be computed on the event loop (`app.api.offload`; larger ones are computed
alone) and asking for the same
outputs, numeric options, tolerance, dtype and number of classes are collected, then computed
once (`app.numerics.tasks.run_cross_entropy_batch`) when no more arrive (see `Coalescer`). Each
request gets exactly the result it would get alone: every step is row by row (tested bit for bit in
tests/numerics/test_batch.py). A lone request waits only for a few idle turns of the event
loop, microseconds.
"""

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

from app.numerics.tasks import LossResult, LossTask, run_cross_entropy_batch

MAX_COALESCED = 16
"""Most problems computed in one batch (each has at most GRADCHECK_INLINE_MAX_ENTRIES numbers),
which bounds how long one batch holds the event loop."""
QUIET_TURNS = 3
"""Turns of the event loop without a new call before a batch is computed: a request's data,
once read, reaches the coalescer within two turns (the compute-timeout task, then the route)."""
MAX_WAIT_SECONDS = 0.002
"""Longest a call waits for company while calls keep arriving."""


@dataclass
class _Batch:
    tasks: list[LossTask] = field(default_factory=list)
    futures: list["asyncio.Future[LossResult]"] = field(default_factory=list)

    def run(self) -> None:
        """Compute every task and hand each waiting request its result or its error."""
        try:
            results = run_cross_entropy_batch(self.tasks)
        except Exception as error:  # a fault of the batch is every request's
            for future in self.futures:
                if not future.done():
                    future.set_exception(error)
            return
        for future, result in zip(self.futures, results, strict=True):
            if future.done():  # its request was abandoned (timeout, disconnect)
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


class Coalescer:
    """Collects calls into batches (module docstring).

    A batch is computed once the event loop has run QUIET_TURNS turns in which no call arrived
    (what is still on the way in this process has joined by then; when the loop has nothing
    else to do these turns take microseconds), or MAX_WAIT_SECONDS after its first call, or at
    once when it holds MAX_COALESCED calls.
    """

    def __init__(self, on_batch: Callable[[int], None] | None = None) -> None:
        """`on_batch(size)` is told the number of calls of every batch computed."""
        self.on_batch = on_batch
        self._pending: dict[tuple[object, ...], _Batch] = {}
        self._waiting_since: float | None = None
        self._arrivals = 0
        self._arrivals_seen = 0
        self._quiet_turns = 0

    async def run(self, task: LossTask) -> LossResult:
        """The result of `task`, computed together with the tasks that arrive with it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LossResult] = loop.create_future()
        key = task.batch_key()
        batch = self._pending.setdefault(key, _Batch())
        batch.tasks.append(task)
        batch.futures.append(future)
        self._arrivals += 1
        if len(batch.tasks) >= MAX_COALESCED:
            del self._pending[key]
            self._run(batch)
        elif self._waiting_since is None:
            self._waiting_since = loop.time()
            self._arrivals_seen, self._quiet_turns = self._arrivals, 0
            loop.call_soon(self._flush_when_quiet, context=contextvars.Context())
        return await future

    def _flush_when_quiet(self) -> None:
        """Once per turn of the loop: compute the pending batches if calls stopped arriving."""
        loop = asyncio.get_running_loop()
        if self._arrivals != self._arrivals_seen:
            self._arrivals_seen, self._quiet_turns = self._arrivals, 0
        else:
            self._quiet_turns += 1
        assert self._waiting_since is not None
        waited = loop.time() - self._waiting_since
        if self._quiet_turns < QUIET_TURNS and waited < MAX_WAIT_SECONDS and self._pending:
            loop.call_soon(self._flush_when_quiet)
            return
        self._waiting_since = None
        pending, self._pending = self._pending, {}
        for batch in pending.values():
            self._run(batch)

    def _run(self, batch: _Batch) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch.tasks))
        batch.run()
