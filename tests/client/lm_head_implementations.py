"""LM-head implementations (the head fused with its loss) that the `lm_head` suite tests run: a
right chunked numpy one, a right torch one built on `F.linear_cross_entropy`, and broken chunked
ones, each with one of the classic bugs of chunked kernels.

Every function takes `(input, linear_weight, labels, linear_bias=None, **options)`; the numpy
ones return `(loss, input_gradient, linear_weight_gradient[, linear_bias_gradient])`, the torch
one the loss alone (the runner takes the gradients from autograd).
"""

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
CHUNK = 4
"""Rows per chunk of the chunked implementations."""


def chunked_linear_cross_entropy(
    input: Array,
    linear_weight: Array,
    labels: Array,
    linear_bias: Array | None = None,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    causal_shift: bool = False,
    denominator: float | None = None,
    bug: str | None = None,
) -> tuple[Any, ...]:
    """F.linear_cross_entropy's loss and gradients, CHUNK rows of logits at a time, in float64
    for float64 inputs and float32 otherwise; `bug` injects one classic mistake."""
    dtype = np.float64 if np.asarray(input).dtype == np.float64 else np.float32
    x: Array = np.asarray(input).astype(dtype)
    w: Array = np.asarray(linear_weight).astype(dtype)
    c, d = w.shape
    b: Array = np.zeros(c, dtype) if linear_bias is None else np.asarray(linear_bias).astype(dtype)
    y = np.asarray(labels)
    shape = x.shape
    if causal_shift:
        if bug != "labels not shifted":
            y = np.concatenate([y[:, 1:], np.full((len(y), 1), ignore_index)], axis=1)
        x, y = x.reshape(-1, d), y.reshape(-1)
    class_weight: Array = np.ones(c, dtype) if weight is None else np.asarray(weight).astype(dtype)
    active = y != ignore_index
    safe = np.where(active, y, 0)
    divisor = (class_weight[safe] * active).sum() if denominator is None else dtype(denominator)
    chunks = range(0, len(x), CHUNK)
    losses: Array = np.zeros(len(x), dtype)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    for start in chunks:
        rows = slice(start, start + CHUNK)
        z = x[rows] @ w.T + b
        shifted = z - z.max(axis=1, keepdims=True)
        log_a = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        q = np.zeros_like(z)
        q[np.arange(len(z)), safe[rows]] = (1 - label_smoothing) * class_weight[safe[rows]]
        q += label_smoothing / c * class_weight
        q[~active[rows]] = 0
        losses[rows] = -(q * log_a).sum(axis=1)
        g: Array = np.exp(log_a) * q.sum(axis=1, keepdims=True) - q
        if reduction == "mean":
            if bug == "mean per chunk":  # a chunk of padding only divides by 0, as kernels do
                scale = (class_weight[safe[rows]] * active[rows]).sum() * len(chunks)
            else:
                scale = divisor
            with np.errstate(divide="ignore", invalid="ignore"):
                losses[rows] /= scale
                g /= scale
        dx[rows] = g @ w
        if bug == "weight gradient of the last chunk":
            dw, db = g.T @ x[rows], g.sum(axis=0)
        else:
            dw += g.T @ x[rows]
            db += g.sum(axis=0)
    if bug == "no bias gradient":
        db = np.zeros_like(b)
    loss: Any = losses.sum() if reduction in ("mean", "sum") else losses.reshape(shape[:-1])
    gradients = (dx.reshape(shape), dw) + (() if linear_bias is None else (db,))
    return (loss, *gradients)


def torch_linear_cross_entropy(
    input: Any,
    linear_weight: Any,
    labels: Any,
    linear_bias: Any = None,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    causal_shift: bool = False,
    denominator: float | None = None,
) -> Any:
    """torch's F.linear_cross_entropy in float32 (float64 for float64 inputs), with HF's causal
    shift and num_items_in_batch: the loss alone."""
    import torch

    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    x, w = input.to(compute), linear_weight.to(compute)
    b = None if linear_bias is None else linear_bias.to(compute)
    y = labels
    if causal_shift:
        y = torch.cat([y[:, 1:], torch.full_like(y[:, :1], ignore_index)], dim=1)
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1)
    loss = torch.nn.functional.linear_cross_entropy(
        x,
        w,
        y,
        linear_bias=b,
        weight=None if weight is None else weight.to(compute),
        reduction="sum" if denominator is not None else reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
    if denominator is not None:
        return loss / denominator
    return loss.reshape(labels.shape) if reduction == "none" else loss


def _broken(bug: str) -> Any:
    def head(
        input: Array, linear_weight: Array, labels: Array, linear_bias: Any = None, **options: Any
    ) -> tuple[Any, ...]:
        return chunked_linear_cross_entropy(
            input, linear_weight, labels, linear_bias, **options, bug=bug
        )

    head.__name__ = head.__qualname__ = bug.replace(" ", "_")
    head.__doc__ = f"The chunked head with one bug: {bug}."
    return head


weight_gradient_of_the_last_chunk = _broken("weight gradient of the last chunk")
mean_per_chunk = _broken("mean per chunk")
no_bias_gradient = _broken("no bias gradient")
labels_not_shifted = _broken("labels not shifted")
BROKEN = {
    fn.__name__: fn
    for fn in (
        weight_gradient_of_the_last_chunk,
        mean_per_chunk,
        no_bias_gradient,
        labels_not_shifted,
    )
}
"""Each classic bug of chunked kernels, by name."""
