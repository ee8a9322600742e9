"""One gradient check from start to end: softmax, loss, analytic and numeric derivatives, verdicts.

This is the whole data path of the service below HTTP; it only composes the other modules.
"""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from app.numerics.compare import Agreement, compare
from app.numerics.cross_entropy import (
    Reduction,
    Targets,
    check_target_support,
    per_sample_gradient,
    per_sample_losses,
    reduce_losses,
)
from app.numerics.finite_diff import (
    ColumnFunction,
    ErrorEstimate,
    LossColumns,
    Method,
    SoftmaxColumns,
    Steps,
    choose_steps,
    derivative_by_column,
    estimate_error,
    loss_rounding_scale,
    softmax_rounding_scale,
)
from app.numerics.softmax import FloatArray, Softmax, softmax, softmax_jacobian


class Output(StrEnum):
    """The arrays a caller can ask for."""

    PROBABILITIES = "probabilities"
    LOG_PROBABILITIES = "log_probabilities"
    LOSS = "loss"
    GRADIENT = "gradient"
    NUMERIC_GRADIENT = "numeric_gradient"
    JACOBIAN = "jacobian"
    NUMERIC_JACOBIAN = "numeric_jacobian"


@dataclass(frozen=True)
class NumericOptions:
    """How numeric derivatives are taken: the method and an optional fixed step."""

    method: Method = Method.CENTRAL
    step: float | None = None


@dataclass(frozen=True)
class Tolerance:
    """|analytic − numeric| ≤ atol + rtol·|numeric| (torch.autograd.gradcheck's defaults)."""

    atol: float = 1e-5
    rtol: float = 1e-3


@dataclass(frozen=True)
class Check:
    """A verdict with everything needed to read it: method, step, tolerance and error estimate."""

    agreement: Agreement
    method: Method
    steps: Steps
    tolerance: Tolerance
    estimate: ErrorEstimate


@dataclass(frozen=True)
class Report:
    """Everything computed for one request; arrays not asked for are None."""

    softmax: Softmax
    losses: FloatArray | None = None
    loss: FloatArray | None = None
    gradient: FloatArray | None = None
    numeric_gradient: FloatArray | None = None
    jacobian: FloatArray | None = None
    numeric_jacobian: FloatArray | None = None
    gradient_check: Check | None = None
    jacobian_check: Check | None = None


def _numeric_check(
    f: ColumnFunction,
    analytic: FloatArray,
    logits: FloatArray,
    sm: Softmax,
    numeric: NumericOptions,
    tolerance: Tolerance,
    *,
    scale: float,
    derivative_scale: FloatArray,
    value_scale: FloatArray,
    cumulant_shift: int,
) -> tuple[FloatArray, Check]:
    """scale·(numeric derivative of f by columns), and its check against `analytic`.

    `derivative_scale`, `value_scale` and `cumulant_shift` feed the error estimate (see
    finite_diff.estimate_error).
    """
    steps = choose_steps(logits, numeric.method, numeric.step)
    values = derivative_by_column(f, logits, steps, numeric.method)
    values *= logits.dtype.type(scale)
    estimate = estimate_error(
        numeric.method,
        steps,
        sm.probabilities,
        derivative_scale=derivative_scale,
        value_scale=value_scale,
        cumulant_shift=cumulant_shift,
    )
    agreement = compare(analytic, values, atol=tolerance.atol, rtol=tolerance.rtol)
    return values, Check(agreement, numeric.method, steps, tolerance, estimate)


def _jacobian_outputs(
    logits: FloatArray,
    sm: Softmax,
    include: frozenset[Output],
    numeric: NumericOptions,
    tolerance: Tolerance,
) -> tuple[FloatArray | None, FloatArray | None, Check | None]:
    """The analytic Jacobian, the numeric one and their check, as far as `include` asks."""
    jacobian = numeric_jacobian = check = None
    if Output.JACOBIAN in include or Output.NUMERIC_JACOBIAN in include:
        jacobian = softmax_jacobian(sm)
    if Output.NUMERIC_JACOBIAN in include:
        assert jacobian is not None
        numeric_jacobian, check = _numeric_check(
            SoftmaxColumns(logits),
            jacobian,
            logits,
            sm,
            numeric,
            tolerance,
            scale=1.0,
            derivative_scale=np.ones(logits.shape[0]),
            value_scale=softmax_rounding_scale(logits, sm.probabilities),
            cumulant_shift=1,
        )
    return jacobian, numeric_jacobian, check


def analyse_softmax(
    logits: FloatArray,
    include: frozenset[Output],
    numeric: NumericOptions = NumericOptions(),
    tolerance: Tolerance = Tolerance(),
) -> Report:
    """Softmax of `logits` (N, C), with its Jacobian and a numeric check of it if asked."""
    sm = softmax(logits)
    jacobian, numeric_jacobian, check = _jacobian_outputs(logits, sm, include, numeric, tolerance)
    return Report(
        softmax=sm, jacobian=jacobian, numeric_jacobian=numeric_jacobian, jacobian_check=check
    )


def analyse_cross_entropy(
    logits: FloatArray,
    targets: Targets,
    reduction: Reduction,
    include: frozenset[Output],
    numeric: NumericOptions = NumericOptions(),
    tolerance: Tolerance = Tolerance(),
) -> Report:
    """Loss, gradient a·Σq − q (divided by the reduction's D), numeric gradient and checks.

    Raises InvalidProblem when target mass sits on a −inf logit.
    """
    check_target_support(logits, targets.q)
    sm = softmax(logits)
    losses = per_sample_losses(sm, targets.q, factors=targets.factors)
    scale = logits.dtype.type(1 / targets.divisor)
    gradient = per_sample_gradient(sm, targets.q, exact_q=targets.exact_q) * scale

    numeric_gradient = gradient_check = None
    if Output.NUMERIC_GRADIENT in include:
        q = targets.q
        numeric_gradient, gradient_check = _numeric_check(
            LossColumns(logits, q),
            gradient,
            logits,
            sm,
            numeric,
            tolerance,
            scale=1 / targets.divisor,
            derivative_scale=q.sum(axis=1, dtype=np.float64) / targets.divisor,
            value_scale=loss_rounding_scale(logits, q, sm.probabilities) / targets.divisor,
            cumulant_shift=0,
        )
    jacobian, numeric_jacobian, jacobian_check = _jacobian_outputs(
        logits, sm, include, numeric, tolerance
    )
    return Report(
        softmax=sm,
        losses=losses,
        loss=reduce_losses(losses, targets, reduction),
        gradient=gradient,
        numeric_gradient=numeric_gradient,
        jacobian=jacobian,
        numeric_jacobian=numeric_jacobian,
        gradient_check=gradient_check,
        jacobian_check=jacobian_check,
    )
