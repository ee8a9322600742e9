"""Memory admission: the requests computing at once hold at most a budget of memory together.

Each request's peak memory is estimated from its shape before it computes (`app.numerics.cost`);

    async with budget.admit(cost_bytes):
        ... compute (in a worker thread) and encode ...

holds that cost for the duration of the block. A request that does not fit waits in a FIFO
queue (bounded: GRADCHECK_ADMISSION_QUEUE_SIZE) for at most GRADCHECK_ADMISSION_WAIT_SECONDS,
then `Overloaded` (503, Retry-After); a request over the whole budget (or over
`max_cost_bytes`, GRADCHECK_MAX_REQUEST_MEMORY_BYTES) can never be admitted and is `OverBudget`
at once (413). Requests of at most `small_bytes` pass without waiting, so that
/healthz and small requests keep flowing while large ones wait (they still count as in flight).

The queue is strictly first in, first out: a large request at its head is not overtaken by
later ones that would fit, so it cannot starve. Counters sit behind a threading lock and
waiters are woken with `call_soon_threadsafe`, so `release` may be called from any thread
(e.g. a worker thread that finished); `acquire` runs on an event loop.

The default budget is GRADCHECK_MEMORY_BUDGET_FRACTION of the memory this process may use: the
cgroup v2 limit (`memory.max`), else the cgroup v1 one (`memory.limit_in_bytes`), else the
machine's physical memory.
"""

import asyncio
import math
import os
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from app.core.config import Settings
from app.core.errors import OverBudget, Overloaded

CGROUP_ROOT = Path("/sys/fs/cgroup")
BUDGET_SETTING = (
    "the memory budget: GRADCHECK_MEMORY_BUDGET_BYTES, or GRADCHECK_MEMORY_BUDGET_FRACTION of the "
    "memory limit"
)
UNLIMITED_V1 = 1 << 60
"""cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX × page size, ~9.2e18)."""


class BudgetObserver(Protocol):
    """Where the budget reports its state (`HttpMetrics` has these)."""

    @property
    def memory_budget(self) -> "_Settable": ...
    @property
    def memory_in_flight(self) -> "_Settable": ...
    @property
    def admission_queued(self) -> "_Settable": ...
    @property
    def admission_refusals(self) -> "_Labelled": ...


class _Settable(Protocol):
    def set(self, value: float) -> None: ...


class _Incrementable(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Labelled(Protocol):
    def labels(self, *values: str) -> _Incrementable: ...


def _read_limit(path: Path) -> int | None:
    """A cgroup memory limit file's value in bytes; None if absent, unreadable or unlimited."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():  # "max" (v2): no limit
        return None
    value = int(text)
    return value if 0 < value < UNLIMITED_V1 else None


def machine_memory_bytes() -> int | None:
    """Physical memory of the machine (os.sysconf pages), None where sysconf cannot tell."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def memory_limit_bytes(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The memory this process may use: the container's limit (cgroup v2, then v1) or the
    machine's memory, whichever is smaller; None if nothing can be read."""
    limits = [
        limit
        for limit in (
            _read_limit(cgroup_root / "memory.max"),
            _read_limit(cgroup_root / "memory" / "memory.limit_in_bytes"),
            machine_memory_bytes(),
        )
        if limit is not None
    ]
    return min(limits) if limits else None


FALLBACK_LIMIT_BYTES = 4 << 30
"""Memory assumed when neither cgroups nor sysconf tell (a budget must exist)."""


def budget_bytes(settings: Settings, cgroup_root: Path = CGROUP_ROOT) -> int:
    """GRADCHECK_MEMORY_BUDGET_BYTES, or (when 0) GRADCHECK_MEMORY_BUDGET_FRACTION of the
    memory limit."""
    if settings.memory_budget_bytes:
        return settings.memory_budget_bytes
    limit = memory_limit_bytes(cgroup_root) or FALLBACK_LIMIT_BYTES
    return int(limit * settings.memory_budget_fraction)


@dataclass(eq=False)
class _Waiter:
    cost: int
    loop: asyncio.AbstractEventLoop
    future: "asyncio.Future[None]" = field(init=False)
    granted: bool = False

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def wake(self) -> None:
        """Resolve the future from any thread."""
        self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class MemoryBudget:
    """Admission by estimated memory: see the module docstring."""

    def __init__(
        self,
        total_bytes: int,
        max_wait_seconds: float,
        max_queue: int,
        *,
        small_bytes: int = 0,
        max_cost_bytes: int = 0,
        observer: BudgetObserver | None = None,
    ) -> None:
        if total_bytes <= 0:
            raise ValueError("the memory budget must be positive")
        self.total_bytes = total_bytes
        self.max_cost_bytes = max_cost_bytes
        """Largest cost admitted at all (0: the whole budget)."""
        self.max_wait_seconds = max_wait_seconds
        self.max_queue = max_queue
        self.small_bytes = small_bytes
        self._observer = observer
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: deque[_Waiter] = deque()
        if observer is not None:
            observer.memory_budget.set(total_bytes)
            self._report()

    @classmethod
    def from_settings(
        cls, settings: Settings, observer: BudgetObserver | None = None
    ) -> "MemoryBudget":
        """The budget the settings describe (GRADCHECK_MEMORY_BUDGET_*, GRADCHECK_ADMISSION_*)."""
        return cls(
            budget_bytes(settings),
            settings.admission_wait_seconds,
            settings.admission_queue_size,
            small_bytes=settings.admission_small_bytes,
            max_cost_bytes=settings.max_request_memory_bytes,
            observer=observer,
        )

    @property
    def in_flight_bytes(self) -> int:
        """Estimated bytes held by admitted requests."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for memory."""
        return len(self._waiters)

    @property
    def retry_after_seconds(self) -> int:
        """What Retry-After advises: the longest wait, at least one second."""
        return max(1, math.ceil(self.max_wait_seconds))

    @asynccontextmanager
    async def admit(self, cost_bytes: int) -> AsyncIterator[None]:
        """Hold `cost_bytes` of the budget for the block, once they fit (see `acquire`)."""
        await self.acquire(cost_bytes)
        try:
            yield
        finally:
            self.release(cost_bytes)

    async def acquire(self, cost_bytes: int) -> None:
        """Take `cost_bytes` of the budget, waiting in the queue if needed.

        Raises OverBudget if the cost exceeds the whole budget or max_cost_bytes, Overloaded
        if the queue is full or the wait exceeds max_wait_seconds. Every successful call needs
        one `release`.
        """
        cost = max(0, int(cost_bytes))
        if self.max_cost_bytes and self.max_cost_bytes < self.total_bytes:
            limit, setting = self.max_cost_bytes, "GRADCHECK_MAX_REQUEST_MEMORY_BYTES"
        else:
            limit, setting = self.total_bytes, BUDGET_SETTING
        if cost > limit:
            self._refused("too_large")
            raise OverBudget(cost, limit, setting)
        with self._lock:
            if cost <= self.small_bytes or (
                not self._waiters and self._in_flight + cost <= self.total_bytes
            ):
                self._in_flight += cost
                self._report()
                return
            if len(self._waiters) >= self.max_queue:
                waiting = None
            else:
                waiting = _Waiter(cost, asyncio.get_running_loop())
                self._waiters.append(waiting)
                self._report()
        if waiting is None:
            self._refused("queue_full")
            raise Overloaded(
                self.retry_after_seconds,
                f"the server is busy: {self.max_queue} requests already wait for memory "
                f"(GRADCHECK_ADMISSION_QUEUE_SIZE); retry later, or send smaller requests.",
            )
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await asyncio.shield(waiting.future)
        except BaseException as error:
            with self._lock:
                if waiting.granted:  # granted as the wait ended: give the memory back
                    self._in_flight -= cost
                else:
                    self._waiters.remove(waiting)
                self._grant_waiting()
                self._report()
            if isinstance(error, TimeoutError):
                self._refused("timeout")
                raise Overloaded(
                    self.retry_after_seconds,
                    f"the server is busy: this request waited {self.max_wait_seconds:g} s "
                    "(GRADCHECK_ADMISSION_WAIT_SECONDS) for memory held by other requests; "
                    "retry later, or send smaller requests.",
                ) from None
            raise

    def release(self, cost_bytes: int) -> None:
        """Give back what `acquire(cost_bytes)` took; callable from any thread."""
        with self._lock:
            self._in_flight -= max(0, int(cost_bytes))
            self._grant_waiting()
            self._report()

    def _grant_waiting(self) -> None:
        """Admit waiters from the head of the queue while they fit (lock held)."""
        while self._waiters and self._in_flight + self._waiters[0].cost <= self.total_bytes:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._in_flight += waiter.cost
            waiter.wake()

    def _report(self) -> None:
        if self._observer is not None:
            self._observer.memory_in_flight.set(self._in_flight)
            self._observer.admission_queued.set(len(self._waiters))

    def _refused(self, reason: str) -> None:
        if self._observer is not None:
            self._observer.admission_refusals.labels(reason).inc()
