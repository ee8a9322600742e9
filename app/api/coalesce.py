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
    """Collects the calls of one turn of the event loop into batches (module docstring)."""

    def __init__(self, on_batch: Callable[[int], None] | None = None) -> None:
        """`on_batch(size)` is told the number of calls of every batch computed."""
        self.on_batch = on_batch
        self._pending: dict[tuple[object, ...], _Batch] = {}
        self._flush_scheduled = False

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
            self._run(batch)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush, context=contextvars.Context())
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for batch in pending.values():
            self._run(batch)

    def _run(self, batch: _Batch) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch.calls))
        _outside_any_request(batch.run)


def _outside_any_request(work: Callable[[], None]) -> None:
    """Run `work` in an empty context: no request's compute-timeout checkpoint applies to a
    batch that serves several requests (each checks its own deadline before it encodes)."""
    contextvars.Context().run(work)
