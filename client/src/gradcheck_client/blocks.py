"""A cross-entropy problem too large for one request, checked by blocks of rows.

With `denominator` (the mean's divisor given by the caller, or `reduction` sum or none), every
row of a batch is computed from its own logits, labels and that number alone: the service's
gradient rows of a block are bit for bit those of the whole batch. The client therefore sends
blocks of `row_block` samples concurrently (to one service, or spread over several replicas)
and joins them: the row outputs concatenated, the reduced loss as `math.fsum` of every block's
per-row losses, divided by the denominator for `mean`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gradcheck_client import wire
from gradcheck_client.results import CrossEntropyResult

ROW_OUTPUTS = frozenset({"probabilities", "log_probabilities", "loss", "gradient"})
"""What a request by blocks may ask for: outputs of each row alone (no check, whose verdict
is over the whole batch, and no C×C blocks)."""


def check_blockable(
    *,
    reduction: str | None,
    denominator: float | None,
    include: Sequence[str] | None,
    candidate: Mapping[str, Any] | None,
    vector: Any,
    row_block: int,
) -> None:
    """ValueError unless the request can be sent by blocks of rows."""
    if row_block < 1:
        raise ValueError("row_block must be at least 1")
    if (reduction or "mean") == "mean" and denominator is None:
        raise ValueError(
            "row_block with reduction mean needs denominator (the mean's divisor over the whole "
            "batch): each block's own mean would divide by its own count"
        )
    extra = set(include or ()) - ROW_OUTPUTS
    if extra:
        raise ValueError(f"row_block computes row outputs only, not {sorted(extra)}")
    if candidate is not None or vector is not None:
        raise ValueError("row_block does not take a candidate or a vector")


def split(logits: Any, labels: Any, row_block: int) -> list[tuple[Any, Any]]:
    """(logits, labels) of each block of `row_block` samples (the first axis)."""
    z, y = wire.as_array(logits), wire.as_array(labels)
    if z.ndim < 2:
        raise ValueError("row_block needs logits with a batch axis, (N, C) or (N, C, d1, …)")
    return [
        (z[start : start + row_block], y[start : start + row_block])
        for start in range(0, z.shape[0], row_block)
    ]


def join(
    results: Sequence[CrossEntropyResult], reduction: str | None, denominator: float | None
) -> CrossEntropyResult:
    """The whole batch's result from its blocks' results, in order."""
    first = results[0]
    losses = np.concatenate([np.atleast_1d(np.asarray(r.losses)) for r in results])
    joined: dict[str, Any] = {}
    for name in ("probabilities", "log_probabilities", "gradient"):
        parts = [getattr(r, name) for r in results]
        if all(part is not None for part in parts):
            joined[name] = np.concatenate(parts)
    loss: float | Any = None
    if any(r.loss is not None for r in results):
        if (reduction or "mean") == "none":
            loss = losses
        else:
            total = math.fsum(losses.astype(np.float64).ravel().tolist())
            loss = total / denominator if denominator is not None else total
    return replace(
        first,
        batch_size=sum(r.batch_size for r in results),
        losses=losses,
        loss=loss,
        arrays={**joined, "losses": losses},
        **joined,
    )
