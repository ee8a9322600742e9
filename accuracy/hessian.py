"""Exact Hessians and Hessian-vector products of the adversarial cases, and their per-row errors.

The reference is written from the definition at 60+ digits (tests/numerics/adversarial.py's
exact softmax rows and exact effective targets, from the float64 inputs taken as exact):

    H_n[i, j] = s_n·a_i(δ_ij − a_j),   s_n = Σ_c q_nc / D          (1 − a_k from the exact tail)
    (H_n v)_i = s_n·a_i·((v_i − v_k) − Σ_j a_j (v_j − v_k))       (k: the row's argmax)

and the error of a row is that of adversarial.py: max |ours − exact| / max |exact| over sample
n's C×C block (its C entries for the HVP), the scale floored at 2^-1022.
"""

from dataclasses import dataclass

import mpmath as mp
import numpy as np
from numpy.typing import NDArray

from app.numerics.hessian import hessian_vector_product, loss_hessian
from app.numerics.softmax import softmax
from tests.numerics.adversarial import (
    DIGITS,
    MAX_JACOBIAN_CLASSES,
    Case,
    ExactRow,
    Row,
    exact_row,
    exact_targets,
    jacobian_block_error,
    precision_bits,
    row_error,
)

FloatArray = NDArray[np.float64]
HESSIAN_OUTPUTS = ("hessian", "hvp", "hvp_near_constant")
"""hessian: the C×C blocks; hvp: H v with v ~ N(0, 1); hvp_near_constant: v = 3 + 1e-9·N(0, 1)
(rounded), where v − ⟨a, v⟩ cancels to 9 digits."""
GUARANTEES = {"hessian": 1e-13, "hvp": 1e-12, "hvp_near_constant": 1e-12}


@dataclass(frozen=True)
class HessianOutputs:
    """The arrays measured: Hessian blocks (None above MAX_JACOBIAN_CLASSES) and H v per kind."""

    hessian: FloatArray | None
    hvp: dict[str, FloatArray]


def vectors(case: Case, seed: int = 0) -> dict[str, FloatArray]:
    """The directions v of each HVP output, deterministic per case shape and seed."""
    rng = np.random.default_rng([seed, *case.logits.shape])
    shape = case.logits.shape
    return {
        "hvp": rng.normal(0.0, 1.0, shape),
        "hvp_near_constant": 3.0 + 1e-9 * rng.normal(0.0, 1.0, shape),
    }


def ours(case: Case, seed: int = 0) -> HessianOutputs:
    """The service's Hessian and HVPs of `case`."""
    targets = case.targets()
    sm = softmax(case.logits)
    hessian = None
    if case.logits.shape[1] <= MAX_JACOBIAN_CLASSES:
        hessian = np.asarray(
            loss_hessian(sm, targets.q, divisor=targets.divisor, exact_q=targets.exact_q),
            np.float64,
        )
    products = {
        kind: np.asarray(
            hessian_vector_product(
                sm, targets.q, v, divisor=targets.divisor, exact_q=targets.exact_q
            ),
            np.float64,
        )
        for kind, v in vectors(case, seed).items()
    }
    return HessianOutputs(hessian, products)


def torch_outputs(case: Case, seed: int = 0) -> HessianOutputs:
    """The same from PyTorch in float64: double backward through F.cross_entropy's gradient
    (block rows by batched vector-Jacobian products, H v by one)."""
    import torch
    from torch.nn import functional

    z = torch.tensor(case.logits, dtype=torch.float64, requires_grad=True)
    weight = None if case.weight is None else torch.tensor(case.weight, dtype=torch.float64)
    if case.labels is not None:
        target = torch.tensor(case.labels, dtype=torch.int64)
    else:
        target = torch.tensor(case.probabilities, dtype=torch.float64)
    loss = functional.cross_entropy(
        z,
        target,
        weight=weight,
        ignore_index=case.ignore_index,
        label_smoothing=case.label_smoothing,
        reduction=str(case.reduction),
    )
    (gradient,) = torch.autograd.grad(loss.sum(), z, create_graph=True)
    num_samples, num_classes = case.logits.shape
    hessian = None
    if num_classes <= MAX_JACOBIAN_CLASSES:
        basis = torch.eye(num_classes, dtype=torch.float64)[:, None, :].expand(
            num_classes, num_samples, num_classes
        )
        (rows,) = torch.autograd.grad(
            gradient, z, grad_outputs=basis, is_grads_batched=True, retain_graph=True
        )
        hessian = rows.permute(1, 0, 2).detach().numpy().copy()
    products = {}
    for kind, v in vectors(case, seed).items():
        (product,) = torch.autograd.grad(
            gradient, z, grad_outputs=torch.tensor(v), retain_graph=True
        )
        products[kind] = product.detach().numpy().copy()
    return HessianOutputs(hessian, products)


def exact_scales(case: Case) -> list[mp.mpf]:
    """s_n = Σ_c q_nc / D exactly (at the case's precision)."""
    q, divisor = exact_targets(case)
    with mp.workprec(precision_bits(case.logits)):
        return [mp.fsum(row) / divisor for row in q]


def hessian_block_error(
    ours: FloatArray, row: ExactRow, scale: mp.mpf, rng: np.random.Generator
) -> float:
    """Row error of sample n's C×C Hessian block s·a_i(δ_ij − a_j), measured as the Jacobian's
    (`jacobian_block_error` with the factor s)."""
    return jacobian_block_error(ours, row, rng, factor=scale)


def exact_hvp(row: ExactRow, scale: mp.mpf, v: FloatArray) -> Row:
    """s·a_i·((v_i − v_k) − Σ_j a_j (v_j − v_k)): differences of floats are exact here, and
    the sum's deviation from Σ a = 1 enters only at 60+ digits relative to |v − v_k|."""
    k = row.argmax
    a = row.probabilities
    top = mp.mpf(float(v[k]))
    with mp.workprec(int(DIGITS * 3.33) + 64):
        w = [mp.mpf(float(x)) - top for x in v]
        mean = mp.fsum(a_j * w_j for a_j, w_j in zip(a, w, strict=True) if a_j != 0)
        return [scale * a_i * (w_i - mean) for a_i, w_i in zip(a, w, strict=True)]


def measure(
    case: Case,
    outputs: HessianOutputs | None = None,
    seed: int = 0,
    rows: list[ExactRow] | None = None,
) -> dict[str, list[float]]:
    """Per-row errors of each Hessian output of `case` (the service's, or `outputs`)."""
    if outputs is None:
        outputs = ours(case, seed)
    if rows is None:
        rows = [exact_row(z) for z in case.logits]
    scales = exact_scales(case)
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {}
    if outputs.hessian is not None:
        hessian = outputs.hessian
        errors["hessian"] = [
            hessian_block_error(hessian[n], row, s, rng)
            for n, (row, s) in enumerate(zip(rows, scales, strict=True))
        ]
    for kind, v in vectors(case, seed).items():
        product = outputs.hvp[kind]
        errors[kind] = [
            row_error(product[n], exact_hvp(row, s, v[n]))
            for n, (row, s) in enumerate(zip(rows, scales, strict=True))
        ]
    return errors


def worst(errors: dict[str, list[float]]) -> dict[str, float]:
    """The largest row error of each output (NaN counts as the worst)."""
    result = {}
    for name, values in errors.items():
        result[name] = max((v if v == v else float("inf") for v in values), default=0.0)
    return result
