"""Tiny requests are computed on the event loop, larger ones in a worker thread, with the same
response either way (GRADCHECK_INLINE_MAX_ENTRIES)."""

import threading
from typing import Any

import pytest
from pydantic import BaseModel

from app.api.admission import request_entries
from app.api.routes import cross_entropy, softmax
from app.api.schemas.compute import CrossEntropyRequest, SoftmaxRequest
from tests.conftest import ClientFactory

SMALL = {"logits": [[0.5, -1.0, 2.0], [0.0, 0.0, 1.0]], "labels": [2, 0]}


@pytest.mark.parametrize(
    ("module", "name", "path", "body", "model"),
    [
        (cross_entropy, "cross_entropy_fields", "/v1/cross-entropy", SMALL, CrossEntropyRequest),
        (softmax, "softmax_fields", "/v1/softmax", {"logits": SMALL["logits"]}, SoftmaxRequest),
    ],
)
@pytest.mark.parametrize(("margin", "on_loop"), [(0, True), (-1, False), (None, False)])
async def test_where_the_computation_runs_follows_the_inline_limit(
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
    path: str,
    body: dict[str, Any],
    model: type[BaseModel],
    margin: int | None,
    on_loop: bool,
) -> None:
    """A request of at most GRADCHECK_INLINE_MAX_ENTRIES numbers runs on the event loop's
    thread (the test's own, with an in-process client); above it, or with 0, in another."""
    entries = request_entries(
        body["logits"], model.model_fields["include"].get_default(call_default_factory=True)
    )
    limit = 0 if margin is None else entries + margin
    original = getattr(module, name)
    threads: list[int] = []

    def recording(*args: Any) -> dict[str, object]:
        threads.append(threading.get_ident())
        result: dict[str, object] = original(*args)
        return result

    async with make_client() as client:
        reference = await client.post(path, json=body)
    monkeypatch.setattr(module, name, recording)
    async with make_client(inline_max_entries=limit) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200
    assert response.content == reference.content
    assert len(threads) == 1
    assert (threads[0] == threading.get_ident()) is on_loop
