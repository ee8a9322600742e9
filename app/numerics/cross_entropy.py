"""Cross-entropy with PyTorch `F.cross_entropy` semantics, through effective targets q.

Every option (class weights w, label smoothing ε, ignore_index, probability targets) folds into
one non-negative matrix q of *effective targets*, shape (N, C):

    index labels y_n:       q_nc = (1 − ε)·w_{y_n}·[c = y_n] + (ε / C)·w_c      (q_n = 0 if ignored)
    probability labels p:   q_nc = w_c·((1 − ε)·p_nc + ε / C)

and then, with a = softmax(z_n),

    loss_n      = −Σ_c q_nc·log a_nc
    ∂loss_n/∂z_nj = a_nj·Σ_c q_nc − q_nj                 (= a − y only when Σ_c q_nc = 1)

The reduced loss is Σ_n loss_n / D with D = 1 for `sum`; for `mean`, D = Σ_{n not ignored}
w_{y_n} with index labels and D = N with probability labels (PyTorch's convention); `none`
keeps the per-sample values, and its "gradient" row n is ∂loss_n/∂z_n.
"""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from app.numerics.errors import InvalidProblem
from app.numerics.softmax import FloatArray, Softmax


class Reduction(StrEnum):
    """How per-sample losses combine into the reported loss (as in PyTorch)."""

    MEAN = "mean"
    SUM = "sum"
    NONE = "none"


@dataclass(frozen=True)
class Targets:
    """Effective targets of a batch and the divisor of its reduction."""

    q: FloatArray
    """Effective targets, shape (N, C), all ≥ 0."""
    divisor: float
    """D: the reduced loss is Σ_n loss_n / D (1 for `sum` and `none`)."""


def index_targets(
    labels: NDArray[np.integer],
    num_classes: int,
    *,
    weight: FloatArray | None,
    ignore_index: int,
    label_smoothing: float,
    reduction: Reduction,
    dtype: type[np.floating],
) -> Targets:
    """Effective targets for class-index labels: (1 − ε)·w_y·onehot(y) + (ε/C)·w, 0 if ignored.

    Raises InvalidProblem for a label outside [0, C) that is not `ignore_index`, and for a
    `mean` whose divisor Σ w_{y_n} over non-ignored samples is 0 (PyTorch would return NaN).
    """
    labels = np.asarray(labels)
    w = np.ones(num_classes, dtype) if weight is None else np.asarray(weight, dtype)
    active = labels != ignore_index
    bad = active & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        n = int(np.flatnonzero(bad)[0])
        raise InvalidProblem(
            ("labels", n),
            f"label {int(labels[n])} is not a class index in [0, {num_classes}) "
            f"nor ignore_index ({ignore_index})",
        )
    rows = np.flatnonzero(active)
    classes = labels[active]
    q = np.zeros((labels.shape[0], num_classes), dtype)
    if label_smoothing:
        q[rows] = (label_smoothing / num_classes) * w
    q[rows, classes] += (1 - label_smoothing) * w[classes]

    divisor = 1.0
    if reduction is Reduction.MEAN:
        divisor = float(w[classes].sum(dtype=np.float64))
        if not divisor > 0:
            what = "every sample is ignored" if rows.size == 0 else "their classes weigh 0"
            raise InvalidProblem(
                ("labels",),
                f"reduction 'mean' divides by the summed weight of the non-ignored targets, "
                f"and {what}: use reduction 'sum' or 'none'",
            )
    return Targets(q, divisor)


def probability_targets(
    probabilities: FloatArray,
    *,
    weight: FloatArray | None,
    label_smoothing: float,
    reduction: Reduction,
    dtype: type[np.floating],
) -> Targets:
    """Effective targets for probability labels: w·((1 − ε)·p + ε/C); `mean` divides by N."""
    p = np.asarray(probabilities, dtype)
    num_samples, num_classes = p.shape
    q = (1 - label_smoothing) * p + label_smoothing / num_classes if label_smoothing else p.copy()
    if weight is not None:
        q *= np.asarray(weight, dtype)
    divisor = float(num_samples) if reduction is Reduction.MEAN else 1.0
    return Targets(q.astype(dtype, copy=False), divisor)


def check_target_support(logits: FloatArray, q: FloatArray) -> None:
    """Raise InvalidProblem if some target mass sits on a −inf logit (an infinite loss)."""
    infinite = np.isneginf(logits) & (q > 0)
    if infinite.any():
        n, c = (int(i) for i in np.argwhere(infinite)[0])
        raise InvalidProblem(
            ("logits", n, c),
            f"sample {n} puts target mass {float(q[n, c]):.6g} on class {c}, whose logit is "
            f"-inf: the loss is infinite (remove the mask, or the class's label, weight or "
            f"smoothing share)",
        )


def per_sample_losses(sm: Softmax, q: FloatArray) -> FloatArray:
    """loss_n = −Σ_c q_nc·log a_nc, shape (N,); every term is ≥ 0, so the sum cannot cancel."""
    neg_log = np.negative(sm.log_probabilities)
    neg_log[q == 0] = 0  # masked classes (−log a = inf) carry no target mass
    losses: FloatArray = np.einsum("nc,nc->n", q, neg_log)
    return losses


def per_sample_gradient(sm: Softmax, q: FloatArray) -> FloatArray:
    """∂loss_n/∂z_n = a·Σ_c q_c − q, shape (N, C).

    At the argmax k the same value is computed as (Σ_{c≠k} q_c − q_k·t) / (1 + t), which is
    exact algebra (a_k = 1/(1 + t)) but avoids the cancellation of a_k·Σq − q_k when a_k → 1.
    """
    a = sm.probabilities
    rows = np.arange(q.shape[0])
    k = sm.argmax
    total = q.sum(axis=1)
    gradient: FloatArray = a * total[:, None] - q
    q_k = q[rows, k]
    rest = q.sum(axis=1, where=np.arange(q.shape[1]) != k[:, None])
    gradient[rows, k] = (rest - q_k * sm.tail) / (1 + sm.tail)
    return gradient


def reduce_losses(losses: FloatArray, targets: Targets, reduction: Reduction) -> FloatArray:
    """The reported loss: Σ_n loss_n / D for `mean` and `sum` (a 0-d array), `losses` for `none`."""
    if reduction is Reduction.NONE:
        return losses
    return np.asarray(losses.sum() / losses.dtype.type(targets.divisor))
