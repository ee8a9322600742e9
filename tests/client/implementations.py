"""Implementations of softmax cross-entropy that the suite tests run: right ones (numpy float64,
a kernel-style float32 one, torch autograd) and broken ones, each with one bug people write.

Every function takes `(logits, labels, **options)` and returns `(loss, gradient)` (the torch ones
return the loss alone; the runner takes the gradient from autograd).
"""

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def _log_softmax(z: Array) -> Array:
    """log a = (z − m) − log Σ exp(z − m), m the row's maximum."""
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs: Array = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return log_probs


def softmax_loss(logits: Array, labels: Array) -> tuple[float, Array]:
    """cs231n-style, right: mean cross-entropy of (N, C) logits and index labels."""
    n = logits.shape[0]
    log_probs = _log_softmax(logits)
    loss = -log_probs[np.arange(n), labels].mean()
    gradient = np.exp(log_probs)
    gradient[np.arange(n), labels] -= 1
    return float(loss), gradient / n


def cross_entropy(
    logits: Array,
    labels: Array,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[Any, Array]:
    """Right: F.cross_entropy of (N, C) logits with index or probability labels, in float64."""
    z = np.asarray(logits, np.float64)
    n, c = z.shape
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    if labels.ndim == 2:  # probability targets
        q = w * ((1 - label_smoothing) * labels + label_smoothing / c)
        denominator = float(n)
    else:
        active = labels != ignore_index
        safe = np.where(active, labels, 0)
        q = np.zeros((n, c))
        q[np.arange(n), safe] = (1 - label_smoothing) * w[safe]
        q += label_smoothing / c * w
        q[~active] = 0
        denominator = float(w[safe][active].sum())
    log_probs = _log_softmax(z)
    losses = -(q * log_probs).sum(axis=1)
    gradient = np.exp(log_probs) * q.sum(axis=1, keepdims=True) - q
    if reduction == "none":
        return losses, gradient
    if reduction == "sum":
        return float(losses.sum()), gradient
    return float(losses.sum() / denominator), gradient / denominator


def kernel_cross_entropy(
    logits: Array,
    labels: Array,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> tuple[Array, Array]:
    """Right, kernel-style: mean loss and gradient computed in float32 (bfloat16 logits are
    read as float32), returned in float32; z-loss, soft-capping, padding rows."""
    z = np.asarray(logits).astype(np.float32)
    if softcap is not None:
        t = np.tanh(z / np.float32(softcap))
        y = np.float32(softcap) * t
    else:
        y = z
    m = y.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(y - m).sum(axis=1, keepdims=True))
    active = labels != ignore_index
    rows = np.flatnonzero(active)
    count = np.float32(max(int(active.sum()), 1))
    losses = lse[rows, 0] - y[rows, labels[rows]] + np.float32(z_loss) * lse[rows, 0] ** 2
    gradient = np.exp(y - lse) * (1 + np.float32(2 * z_loss) * lse)
    gradient[rows, labels[rows]] -= 1
    gradient[~active] = 0
    if softcap is not None:
        gradient *= 1 - t * t
    return (losses.sum() / count).astype(np.float32), (gradient / count).astype(np.float32)


# ----- broken implementations, one bug each -----


def no_max_shift(logits: Array, labels: Array) -> tuple[float, Array]:
    """Bug: softmax as exp(z) / Σ exp(z), without subtracting the maximum (overflows)."""
    n = logits.shape[0]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(logits)
        a = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(a[np.arange(n), labels]).mean()
    gradient = a.copy()
    gradient[np.arange(n), labels] -= 1
    return float(loss), gradient / n


def unfused_backward(logits: Array, labels: Array) -> tuple[float, Array]:
    """Bug: the loss as −log a_y and the gradient through dL/da = −1/a_y and the softmax
    Jacobian, instead of the fused a − y (a_y underflowing to 0 gives inf and NaN)."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    a = e / e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -np.log(a[np.arange(n), labels]).mean()
        upstream = np.zeros_like(a)
        upstream[np.arange(n), labels] = -1.0 / a[np.arange(n), labels] / n
        jacobian = a[:, :, None] * (np.eye(a.shape[1]) - a[:, None, :])  # da_i/dz_j
        gradient = np.einsum("ni,nij->nj", upstream, jacobian)
    return float(loss), gradient


def smoothing_over_c_minus_1(
    logits: Array, labels: Array, label_smoothing: float = 0.0
) -> tuple[float, Array]:
    """Bug: label smoothing as 1 − ε on the label and ε/(C − 1) on the other classes (torch
    spreads ε/C over all C classes)."""
    n, c = logits.shape
    q = np.full((n, c), label_smoothing / (c - 1))
    q[np.arange(n), labels] = 1 - label_smoothing
    log_probs = _log_softmax(logits)
    loss = -(q * log_probs).sum() / n
    return float(loss), (np.exp(log_probs) - q) / n


def mean_over_all_rows(
    logits: Array, labels: Array, ignore_index: int = -100
) -> tuple[float, Array]:
    """Bug: ignored rows are left out of the sum but the mean still divides by all N rows."""
    n = logits.shape[0]
    active = labels != ignore_index
    safe = np.where(active, labels, 0)
    log_probs = _log_softmax(logits)
    losses = np.where(active, -log_probs[np.arange(n), safe], 0.0)
    gradient = np.exp(log_probs)
    gradient[np.arange(n), safe] -= 1
    gradient[~active] = 0
    return float(losses.sum() / n), gradient / n


def summed_gradient(logits: Array, labels: Array) -> tuple[float, Array]:
    """Bug: the mean loss, but the gradient of the summed loss (not divided by N)."""
    n = logits.shape[0]
    log_probs = _log_softmax(logits)
    loss = -log_probs[np.arange(n), labels].mean()
    gradient = np.exp(log_probs)
    gradient[np.arange(n), labels] -= 1
    return float(loss), gradient


def sequential_sum_kernel(
    logits: Array, labels: Array, ignore_index: int = -100
) -> tuple[Array, Array]:
    """Bug, kernel-style: Σ exp(z − m) accumulated sequentially in float32 (as a naive loop
    over the vocabulary does), so terms below half an ulp of the running sum are lost."""
    z = np.asarray(logits).astype(np.float32)
    m = z.max(axis=1, keepdims=True)
    total = np.add.accumulate(np.exp(z - m), axis=1)[:, -1:]  # left to right, in float32
    lse = m + np.log(total)
    rows = np.flatnonzero(labels != ignore_index)
    count = np.float32(max(len(rows), 1))
    losses = lse[rows, 0] - z[rows, labels[rows]]
    gradient = np.exp(z - lse)
    gradient[rows, labels[rows]] -= 1
    gradient[np.setdiff1d(np.arange(len(labels)), rows)] = 0
    return losses.sum() / count, gradient / count


BROKEN = {
    "no_max_shift": no_max_shift,
    "unfused_backward": unfused_backward,
    "smoothing_over_c_minus_1": smoothing_over_c_minus_1,
    "mean_over_all_rows": mean_over_all_rows,
    "summed_gradient": summed_gradient,
}
"""Each broken implementation by its bug's name."""


# ----- torch (imported when called: the tests that use these need torch) -----


def torch_kernel_loss(
    logits: Any,
    labels: Any,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> Any:
    """Right, torch autograd: the mean loss in float32 with z-loss and soft-capping; the
    gradient (in the logits' dtype) comes from autograd."""
    import torch
    from torch.nn import functional

    z = logits.float()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    active = labels != ignore_index
    count = active.sum().clamp(min=1)
    loss = functional.cross_entropy(z, labels, ignore_index=ignore_index, reduction="sum")
    lse = torch.logsumexp(z, dim=1)
    return (loss + z_loss * (lse[active] ** 2).sum()) / count


def torch_summed_gradient(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Bug, in torch: the mean loss returned with the gradient of the summed loss."""
    import torch
    from torch.nn import functional

    loss = functional.cross_entropy(logits, labels)
    (gradient,) = torch.autograd.grad(loss * logits.shape[0], logits)
    return loss, gradient
