"""Every configured limit answers 413 with a message naming its setting; just under it is 200."""

import json
from collections.abc import AsyncIterator

import pytest

from tests.conftest import ClientFactory

ROUTES = {
    "/v1/softmax": lambda logits: {"logits": logits, "include": ["probabilities", "jacobian"]},
    "/v1/cross-entropy": lambda logits: {
        "logits": logits,
        "labels": [0] * len(logits),
        "include": ["loss", "jacobian"],
    },
}


def rows(samples: int, classes: int) -> list[list[float]]:
    """A samples × classes logit matrix."""
    return [[float(c) for c in range(classes)] for _ in range(samples)]


async def chunks(body: bytes, size: int = 256) -> AsyncIterator[bytes]:
    """The body in pieces: httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_size_limit(make_client: ClientFactory, path: str, chunked: bool) -> None:
    limit = 2048
    small = json.dumps(ROUTES[path](rows(1, 4))).encode()
    large = json.dumps(ROUTES[path](rows(1, 400))).encode()
    assert len(small) <= limit < len(large)
    async with make_client(max_body_bytes=limit) as client:
        for body, expected in ((small, 200), (large, 413)):
            response = await client.post(
                path,
                content=chunks(body) if chunked else body,
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == expected, response.text
    assert f"GRADCHECK_MAX_BODY_BYTES = {limit}" in response.json()["detail"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("setting", "limit", "under", "over"),
    [
        ("max_batch_size", 3, (3, 2), (4, 2)),
        ("max_classes", 5, (1, 5), (1, 6)),
        ("max_output_entries", 2 * 3 * 3 + 2 * 3, (2, 3), (3, 3)),
    ],
)
async def test_size_limits(
    make_client: ClientFactory,
    path: str,
    setting: str,
    limit: int,
    under: tuple[int, int],
    over: tuple[int, int],
) -> None:
    """Batch size N, classes C, and the number of output entries (here N·C·C + N·C)."""
    async with make_client(**{setting: limit}) as client:
        accepted = await client.post(path, json=ROUTES[path](rows(*under)))
        refused = await client.post(path, json=ROUTES[path](rows(*over)))
    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 413
    assert f"GRADCHECK_{setting.upper()} = {limit}" in refused.json()["detail"]
