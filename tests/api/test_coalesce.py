"""Small cross-entropy requests that arrive together share one computation, and each gets the
response it would get alone (app/api/coalesce.py)."""

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from app.api.coalesce import MAX_COALESCED, Coalescer
from app.numerics import batch, tasks
from app.numerics.cross_entropy import Reduction, index_targets
from app.numerics.errors import InvalidProblem
from app.numerics.gradcheck import (
    SECOND_ORDER,
    LossProblem,
    NumericOptions,
    Output,
    Report,
    Tolerance,
)
from app.numerics.tasks import LossTask, run_cross_entropy
from tests.conftest import ClientFactory

JSON = {"content-type": "application/json"}


def body(seed: int, **options: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(3, 4))
    return {"logits": logits.tolist(), "labels": rng.integers(0, 4, 3).tolist(), **options}


BODIES = [
    body(1),
    body(2, reduction="sum"),
    body(3, weight=[1.0, 2.0, 0.5, 1.0], label_smoothing=0.1),
    body(4, labels=[[0.1, 0.2, 0.3, 0.4]] * 3),
    body(5, include=["loss", "gradient"]),
    body(6, dtype="float32"),
    {"logits": [[0.0, 1.0], [2.0, -1.0]], "labels": [1, 0]},  # another C
    body(8, numeric={"method": "complex_step"}),
    body(9),
]


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of problems in every batch that the coalescer computes."""
    sizes: list[int] = []
    original = batch.analyse_cross_entropy_batch  # what the batch entry imports

    def recording(problems: Sequence[LossProblem], *args: Any) -> list[Report | InvalidProblem]:
        sizes.append(len(problems))
        return original(problems, *args)

    monkeypatch.setattr(tasks, "analyse_cross_entropy_batch", recording)
    return sizes


async def test_concurrent_requests_share_batches_and_get_their_lone_responses(
    make_client: ClientFactory, batch_sizes: list[int]
) -> None:
    async with make_client() as client:
        alone = [await client.post("/v1/cross-entropy", json=b) for b in BODIES]
        assert batch_sizes == [1] * len(BODIES)
        batch_sizes.clear()
        together = await asyncio.gather(
            *(client.post("/v1/cross-entropy", json=b) for b in BODIES + BODIES)
        )
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in alone] == [200] * len(BODIES)
    for response, reference in zip(together, alone + alone, strict=True):
        assert response.status_code == 200
        assert response.content == reference.content
    assert sum(batch_sizes) == 2 * len(BODIES)
    assert max(batch_sizes) > 2, batch_sizes  # equal options and C share a batch
    # float32, C = 2, complex step and other outputs cannot share with the float64 central ones
    assert len(batch_sizes) >= 5, batch_sizes
    assert f"gradcheck_coalesced_requests_count {len(BODIES) + len(batch_sizes)}.0" in metrics
    assert f"gradcheck_coalesced_requests_sum {3 * len(BODIES)}.0" in metrics


async def test_a_refused_request_does_not_affect_the_others_of_its_batch(
    make_client: ClientFactory, batch_sizes: list[int]
) -> None:
    masked = body(10, labels=[0, 1, 2])
    masked["logits"][1][1] = float("-inf")  # target mass on a masked class: infinite loss
    async with make_client() as client:
        reference = await client.post("/v1/cross-entropy", json=BODIES[0])
        batch_sizes.clear()
        first, refused, last = await asyncio.gather(
            *(
                client.post("/v1/cross-entropy", content=json.dumps(b), headers=JSON)
                for b in (BODIES[0], masked, BODIES[0])
            )
        )
    assert batch_sizes == [3]
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "logits", 1, 1]
    assert first.content == last.content == reference.content


def loss_task(seed: int) -> LossTask:
    rng = np.random.default_rng(seed)
    targets = index_targets(
        rng.integers(0, 3, 2),
        3,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    problem = LossProblem(rng.normal(size=(2, 3)), targets, Reduction.MEAN)
    return LossTask(problem, frozenset(Output) - SECOND_ORDER, NumericOptions(), Tolerance())


async def test_calls_of_one_turn_share_a_batch_and_later_ones_do_not() -> None:
    sizes: list[int] = []
    coalescer = Coalescer(sizes.append)
    reports = await asyncio.gather(*(coalescer.run(loss_task(seed)) for seed in range(3)))
    later = await coalescer.run(loss_task(3))
    assert sizes == [3, 1]
    for seed, report in enumerate([*reports, later]):
        alone = run_cross_entropy(loss_task(seed)).report
        np.testing.assert_array_equal(report.report.gradient, alone.gradient)


async def test_a_full_batch_is_computed_at_once(batch_sizes: list[int]) -> None:
    coalescer = Coalescer()
    calls = [loss_task(seed) for seed in range(MAX_COALESCED + 3)]
    reports = await asyncio.wait_for(
        asyncio.gather(*(coalescer.run(call) for call in calls)), timeout=5
    )
    assert batch_sizes == [MAX_COALESCED, 3]
    for call, report in zip(calls, reports, strict=True):
        np.testing.assert_array_equal(report.report.loss, run_cross_entropy(call).report.loss)


async def test_an_abandoned_call_leaves_its_batch_to_the_others(batch_sizes: list[int]) -> None:
    coalescer = Coalescer()
    abandoned = asyncio.ensure_future(coalescer.run(loss_task(0)))
    kept = asyncio.ensure_future(coalescer.run(loss_task(1)))
    await asyncio.sleep(0)  # both are waiting for the batch
    abandoned.cancel()
    report = await kept
    assert abandoned.cancelled()
    assert batch_sizes == [2]
    alone = run_cross_entropy(loss_task(1)).report
    np.testing.assert_array_equal(report.report.gradient, alone.gradient)
