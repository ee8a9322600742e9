"""Memory admission: FIFO queue, bounded queue and wait, small requests pass, 413 / 503, metrics,
release from a worker thread, and the default budget from cgroups or the machine."""

import asyncio
import threading
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from app.core.budget import (
    FALLBACK_LIMIT_BYTES,
    MemoryBudget,
    budget_bytes,
    machine_memory_bytes,
    memory_limit_bytes,
)
from app.core.config import Settings
from app.core.errors import LimitExceeded, OverBudget, Overloaded
from app.core.metrics import HttpMetrics
from tests.core.test_middleware import samples

MiB = 1 << 20


async def test_costs_that_fit_are_admitted_at_once_and_released() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=1, max_queue=4)
    async with budget.admit(60 * MiB), budget.admit(40 * MiB):
        assert budget.in_flight_bytes == 100 * MiB
    assert budget.in_flight_bytes == 0


async def test_a_cost_over_the_whole_budget_is_a_413_naming_the_budget() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=1, max_queue=4)
    with pytest.raises(OverBudget) as refused:
        async with budget.admit(101 * MiB):
            pass
    assert isinstance(refused.value, LimitExceeded)  # answered 413 by its handler
    assert "GRADCHECK_MEMORY_BUDGET_BYTES" in refused.value.message
    assert budget.in_flight_bytes == 0


async def test_a_cost_over_the_per_request_limit_is_a_413_naming_it() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=1, max_queue=4, max_cost_bytes=10 * MiB)
    async with budget.admit(10 * MiB):
        pass
    with pytest.raises(OverBudget) as refused:
        await budget.acquire(11 * MiB)
    assert "GRADCHECK_MAX_REQUEST_MEMORY_BYTES" in refused.value.message
    assert refused.value.limit_bytes == 10 * MiB
    large_cap = MemoryBudget(100 * MiB, max_wait_seconds=1, max_queue=4, max_cost_bytes=1 << 40)
    with pytest.raises(OverBudget, match="GRADCHECK_MEMORY_BUDGET_BYTES"):
        await large_cap.acquire(101 * MiB)


async def test_waiters_are_admitted_in_arrival_order_as_memory_frees() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=5, max_queue=4)
    order: list[str] = []
    release_first = asyncio.Event()

    async def request(name: str, cost: int, hold: asyncio.Event | None = None) -> None:
        async with budget.admit(cost):
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(request("first", 80 * MiB, release_first))
    await asyncio.sleep(0)
    large = asyncio.create_task(request("large", 90 * MiB))
    await asyncio.sleep(0)
    medium = asyncio.create_task(request("medium", 20 * MiB))  # would fit, but queues behind
    await asyncio.sleep(0.01)
    assert order == ["first"]
    assert budget.queued == 2
    release_first.set()
    await asyncio.gather(first, large, medium)
    assert order == ["first", "large", "medium"]
    assert budget.in_flight_bytes == 0 and budget.queued == 0


async def test_small_requests_pass_while_large_ones_wait() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=5, max_queue=4, small_bytes=1 * MiB)
    async with budget.admit(100 * MiB):
        waiting = asyncio.create_task(budget.acquire(50 * MiB))
        await asyncio.sleep(0.01)
        assert budget.queued == 1
        async with asyncio.timeout(0.5):
            async with budget.admit(1 * MiB):
                assert budget.in_flight_bytes == 101 * MiB
    await waiting
    budget.release(50 * MiB)
    assert budget.in_flight_bytes == 0


async def test_a_full_queue_is_a_503_with_retry_after() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=3, max_queue=1)
    async with budget.admit(100 * MiB):
        waiting = asyncio.create_task(budget.acquire(10 * MiB))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:
            await budget.acquire(10 * MiB)
        assert refused.value.headers == {"Retry-After": "3"}
        assert "GRADCHECK_ADMISSION_QUEUE_SIZE" in refused.value.message
    await waiting
    budget.release(10 * MiB)


async def test_a_wait_past_the_limit_is_a_503_and_leaves_the_queue() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=0.05, max_queue=4)
    async with budget.admit(90 * MiB):
        started = asyncio.get_running_loop().time()
        with pytest.raises(Overloaded) as refused:
            await budget.acquire(20 * MiB)
        waited = asyncio.get_running_loop().time() - started
        assert 0.04 <= waited < 1
        assert refused.value.retry_after_seconds == 1
        assert "GRADCHECK_ADMISSION_WAIT_SECONDS" in refused.value.message
        assert budget.queued == 0
    assert budget.in_flight_bytes == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_in() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=5, max_queue=4)
    await budget.acquire(60 * MiB)
    blocked = asyncio.create_task(budget.acquire(50 * MiB))
    await asyncio.sleep(0.01)
    behind = asyncio.create_task(budget.acquire(40 * MiB))
    await asyncio.sleep(0.01)
    blocked.cancel()
    async with asyncio.timeout(1):
        await behind  # 60 + 40 fits once the head has gone
    assert budget.in_flight_bytes == 100 * MiB
    budget.release(100 * MiB)


async def test_release_from_a_worker_thread_wakes_the_waiter() -> None:
    budget = MemoryBudget(100 * MiB, max_wait_seconds=5, max_queue=4)
    await budget.acquire(100 * MiB)
    waiting = asyncio.create_task(budget.acquire(100 * MiB))
    await asyncio.sleep(0.01)
    thread = threading.Thread(target=budget.release, args=(100 * MiB,))
    thread.start()
    async with asyncio.timeout(1):
        await waiting
    thread.join()
    assert budget.in_flight_bytes == 100 * MiB
    budget.release(100 * MiB)


async def test_concurrent_admissions_never_exceed_the_budget() -> None:
    """Many tasks with random costs, computing in worker threads: in flight ≤ budget always."""
    budget = MemoryBudget(100 * MiB, max_wait_seconds=10, max_queue=64)
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal peak
        with lock:
            peak = max(peak, budget.in_flight_bytes)

    async def request(cost: int) -> None:
        async with budget.admit(cost):
            await asyncio.to_thread(work)

    costs = [(7 * k % 60 + 10) * MiB for k in range(40)]
    async with asyncio.timeout(20):
        await asyncio.gather(*(request(cost) for cost in costs))
    assert 0 < peak <= 100 * MiB
    assert budget.in_flight_bytes == 0


async def test_metrics_show_budget_in_flight_queue_and_refusals() -> None:
    metrics = HttpMetrics()
    budget = MemoryBudget(100 * MiB, max_wait_seconds=0.02, max_queue=1, observer=metrics)

    def values() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        text = generate_latest(metrics.registry).decode()
        names = (
            "gradcheck_memory_budget_bytes",
            "gradcheck_memory_in_flight_bytes",
            "gradcheck_admission_queued_requests",
            "gradcheck_admission_refusals_total",
        )
        return {name: samples(text, name) for name in names}

    async with budget.admit(70 * MiB):
        waiting = asyncio.create_task(budget.acquire(50 * MiB))
        await asyncio.sleep(0.005)
        now = values()
        assert now["gradcheck_memory_budget_bytes"][()] == 100 * MiB
        assert now["gradcheck_memory_in_flight_bytes"][()] == 70 * MiB
        assert now["gradcheck_admission_queued_requests"][()] == 1
        with pytest.raises(Overloaded):
            await budget.acquire(50 * MiB)
        with pytest.raises(Overloaded):
            await waiting
        with pytest.raises(OverBudget):
            await budget.acquire(200 * MiB)
    refusals = values()["gradcheck_admission_refusals_total"]
    assert refusals == {
        (("reason", "queue_full"),): 1,
        (("reason", "timeout"),): 1,
        (("reason", "too_large"),): 1,
    }
    assert values()["gradcheck_memory_in_flight_bytes"][()] == 0


# ---------------------------------------------------------------- default budget


def test_cgroup_v2_limit_is_used(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("2147483648\n")
    assert memory_limit_bytes(tmp_path) == 2 << 30


def test_cgroup_v2_without_limit_falls_back_to_the_machine(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    assert memory_limit_bytes(tmp_path) == machine_memory_bytes()


def test_cgroup_v1_limit_is_used_and_its_unlimited_value_ignored(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    limit = tmp_path / "memory" / "memory.limit_in_bytes"
    limit.write_text("1073741824\n")
    assert memory_limit_bytes(tmp_path) == 1 << 30
    limit.write_text("9223372036854771712\n")
    assert memory_limit_bytes(tmp_path) == machine_memory_bytes()


def test_budget_is_the_setting_or_a_fraction_of_the_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(str(8 << 30))
    assert budget_bytes(Settings(memory_budget_bytes=123 * MiB), tmp_path) == 123 * MiB
    assert budget_bytes(Settings(memory_budget_fraction=0.25), tmp_path) == 2 << 30
    assert budget_bytes(Settings(), tmp_path) == 4 << 30


def test_budget_without_any_limit_uses_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.core.budget.machine_memory_bytes", lambda: None)
    assert budget_bytes(Settings(memory_budget_fraction=0.5), tmp_path) == FALLBACK_LIMIT_BYTES // 2


def test_budget_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHECK_MEMORY_BUDGET_BYTES", str(300 * MiB))
    monkeypatch.setenv("GRADCHECK_ADMISSION_WAIT_SECONDS", "2.5")
    monkeypatch.setenv("GRADCHECK_ADMISSION_QUEUE_SIZE", "3")
    monkeypatch.setenv("GRADCHECK_ADMISSION_SMALL_BYTES", str(MiB))
    monkeypatch.setenv("GRADCHECK_MAX_REQUEST_MEMORY_BYTES", str(200 * MiB))
    budget = MemoryBudget.from_settings(Settings())
    assert budget.max_cost_bytes == 200 * MiB
    assert (budget.total_bytes, budget.max_wait_seconds, budget.max_queue) == (300 * MiB, 2.5, 3)
    assert budget.small_bytes == MiB
    assert budget.retry_after_seconds == 3
