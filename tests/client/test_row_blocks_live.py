"""`Client.cross_entropy(..., row_block=…, replicas=…)` against three live replicas: a batch sent
by blocks of rows, spread over the replicas, gets the whole batch's gradient rows bit for bit
and its loss from the fsum of the per-row losses; every replica served blocks."""

from typing import Any

import httpx
import numpy as np
import pytest
from gradcheck_client import AsyncClient, Client

from tests.live.conftest import ServerFactory, start_server  # noqa: F401 (the fixture)

pytestmark = pytest.mark.live

N, C, BLOCK = 50, 11, 7
DENOMINATOR = 123.0


def batch() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, size=N)
    labels[rng.random(N) < 0.2] = -100
    return rng.normal(size=(N, C)) * 3, labels


def served(url: str) -> float:
    """/v1/cross-entropy requests a replica answered (its metrics)."""
    text = httpx.get(f"{url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gradcheck_http_requests_total{") and "/v1/cross-entropy" in line
    )


def test_blocks_over_three_replicas_give_the_whole_batch(
    start_server: ServerFactory,  # noqa: F811
) -> None:
    urls = [start_server().url for _ in range(3)]
    logits, labels = batch()
    options: dict[str, Any] = {
        "weight": np.linspace(0.5, 2.0, C),
        "label_smoothing": 0.1,
        "denominator": DENOMINATOR,
        "include": ["loss", "gradient", "probabilities"],
    }
    with Client(urls[0]) as service:
        whole = service.cross_entropy(logits, labels, **options)
        before = [served(url) for url in urls]
        joined = service.cross_entropy(
            logits, labels, row_block=BLOCK, replicas=urls[1:], **options
        )
    # 8 blocks of at most 7 rows, in turn: 3, 3 and 2 requests
    assert [served(url) - b for url, b in zip(urls, before, strict=True)] == [3, 3, 2]
    np.testing.assert_array_equal(joined.gradient, whole.gradient)
    np.testing.assert_array_equal(joined.probabilities, whole.probabilities)
    np.testing.assert_array_equal(joined.losses, whole.losses)
    assert joined.loss == whole.loss and joined.batch_size == N


async def test_the_async_client_joins_the_same(start_server: ServerFactory) -> None:  # noqa: F811
    url = start_server().url
    logits, labels = batch()
    async with AsyncClient(url) as service:
        whole = await service.cross_entropy(logits, labels, reduction="sum", include=["loss"])
        joined = await service.cross_entropy(
            logits, labels, reduction="sum", include=["loss"], row_block=BLOCK
        )
    assert joined.loss == whole.loss


def test_mean_by_blocks_needs_the_denominator() -> None:
    logits, labels = batch()
    with (
        Client("http://127.0.0.1:9") as service,
        pytest.raises(ValueError, match="needs denominator"),
    ):
        service.cross_entropy(logits, labels, row_block=BLOCK)
