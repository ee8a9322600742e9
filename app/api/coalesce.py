"""Coalescing: small cross-entropy requests that arrive together are computed as one batch.

For a small problem numpy's fixed cost per call, not the numbers, is the price: eight 8 × 10
problems stacked cost about what two of them cost one by one (`make bench`, case 3). Requests
small enough to be computed on the event loop (`app.api.offload`) and asking for the same
outputs, numeric options, tolerance, dtype and number of classes are collected while the loop
runs its ready callbacks, then computed once (`analyse_cross_entropy_batch`) at the end of that
turn. Each request gets exactly the report it would get alone: every step is row by row (tested
bit for bit in tests/numerics/test_batch.py). A lone request waits for nothing but the rest of
the loop's current turn.
"""

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

from app.numerics.gradcheck import (
    LossProblem,
    NumericOptions,
    Output,
    Report,
    Tolerance,
    analyse_cross_entropy_batch,
)

MAX_COALESCED = 16
"""Most problems computed in one batch (each has at most GRADCHECK_INLINE_MAX_ENTRIES numbers),
which bounds how long one batch holds the event loop."""
CONCURRENCY_MEMORY_SECONDS = 0.1
"""Traffic counts as concurrent for this long after a batch held more than one call."""


@dataclass(frozen=True)
class LossCall:
    """One validated cross-entropy request: its problem and the options it is analysed with."""

    problem: LossProblem
    include: frozenset[Output]
    numeric: NumericOptions
    tolerance: Tolerance

    def batch_key(self) -> tuple[object, ...]:
        """Calls with equal keys can share a batch."""
        logits = self.problem.logits
        return (self.include, self.numeric, self.tolerance, logits.dtype, logits.shape[1])

    def analyse(self) -> Report:
        """The report of this call alone (raises InvalidProblem)."""
        (result,) = analyse_cross_entropy_batch(
            [self.problem], self.include, self.numeric, self.tolerance
        )
        if isinstance(result, Exception):
            raise result
        return result


@dataclass
class _Batch:
    calls: list[LossCall] = field(default_factory=list)
    futures: list["asyncio.Future[Report]"] = field(default_factory=list)

    def run(self) -> None:
        """Compute every call and hand each waiting request its report or its error."""
        first = self.calls[0]
        try:
            results = analyse_cross_entropy_batch(
                [call.problem for call in self.calls], first.include, first.numeric, first.tolerance
            )
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
    """Collects calls into batches; see the module docstring.

    A batch is computed at the end of the event loop's turn, or, while traffic is concurrent
    (the last batch held more than one call), `wait_seconds` after its first call arrived, so
    that the other clients' requests, still on the way, join it. Either way, at once when it
    holds MAX_COALESCED calls.
    """

    def __init__(self, wait_seconds: float) -> None:
        self.wait_seconds = wait_seconds
        self._pending: dict[tuple[object, ...], _Batch] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._concurrent_until = 0.0

    async def analyse(self, call: LossCall) -> Report:
        """The report of `call`, computed together with the calls that arrive with it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Report] = loop.create_future()
        key = call.batch_key()
        batch = self._pending.setdefault(key, _Batch())
        batch.calls.append(call)
        batch.futures.append(future)
        if len(batch.calls) >= MAX_COALESCED:
            del self._pending[key]
            self._concurrent_until = loop.time() + CONCURRENCY_MEMORY_SECONDS
            _outside_any_request(batch.run)
        elif self._flush_handle is None:
            empty = contextvars.Context()
            if self.wait_seconds and loop.time() < self._concurrent_until:
                self._flush_handle = loop.call_later(self.wait_seconds, self._flush, context=empty)
            else:
                self._flush_handle = loop.call_soon(self._flush, context=empty)
        return await future

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        if any(len(batch.calls) > 1 for batch in pending.values()):
            self._concurrent_until = asyncio.get_running_loop().time() + CONCURRENCY_MEMORY_SECONDS
        for batch in pending.values():
            batch.run()


def _outside_any_request(work: Callable[[], None]) -> None:
    """Run `work` in an empty context: no request's compute-timeout checkpoint applies to a
    batch that serves several requests (each checks its own deadline before it encodes)."""
    contextvars.Context().run(work)
