"""One gradient check from start to end: softmax, loss, analytic and numeric derivatives, verdicts.

This is the whole data path of the service below HTTP; it only composes the other modules.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from app.numerics.compare import Agreement, compare_blocks
from app.numerics.cross_entropy import (
    Reduction,
    Targets,
    check_target_support,
    joined_targets,
    per_sample_gradient,
    per_sample_losses,
    reduce_losses,
)
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import (
    ColumnFunction,
    ErrorEstimate,
    LossColumns,
    Method,
    RowErrors,
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


@dataclass(frozen=True)
class LossProblem:
    """One cross-entropy problem: logits (N, C), their effective targets, the reduction."""

    logits: FloatArray
    targets: Targets
    reduction: Reduction


@dataclass(frozen=True)
class _NumericRows:
    """A numeric derivative of a whole batch, its steps and its estimated error by row."""

    values: FloatArray
    steps: Steps
    errors: RowErrors

    def checks(
        self,
        analytic: FloatArray,
        blocks: Sequence[slice],
        method: Method,
        tolerance: Tolerance,
    ) -> list[tuple[FloatArray, Check]]:
        """For each block of samples: its numeric derivative, and its check against
        `analytic` (the whole batch's)."""
        starts = np.array([block.start for block in blocks], np.intp)
        agreements = compare_blocks(
            analytic, self.values, starts, atol=tolerance.atol, rtol=tolerance.rtol
        )
        estimates = self.errors.over_blocks(starts)
        return [
            (
                self.values[rows],
                Check(
                    agreement,
                    method,
                    Steps(self.steps.h[rows], self.steps.base, self.steps.scaled),
                    tolerance,
                    estimate,
                ),
            )
            for rows, agreement, estimate in zip(blocks, agreements, estimates, strict=True)
        ]


def _numeric_rows(
    f: ColumnFunction,
    logits: FloatArray,
    sm: Softmax,
    numeric: NumericOptions,
    *,
    scale: FloatArray | None,
    derivative_scale: FloatArray,
    value_scale: FloatArray,
    cumulant_shift: int,
) -> _NumericRows:
    """scale·(numeric derivative of f by columns), with `scale` (N, 1) per sample or None.

    `derivative_scale`, `value_scale` and `cumulant_shift` feed the error estimate (see
    finite_diff.estimate_error).
    """
    steps = choose_steps(logits, numeric.method, numeric.step)
    values = derivative_by_column(f, logits, steps, numeric.method)
    if scale is not None:
        values *= scale
    errors = estimate_error(
        numeric.method,
        steps,
        sm.probabilities,
        derivative_scale=derivative_scale,
        value_scale=value_scale,
        cumulant_shift=cumulant_shift,
    )
    return _NumericRows(values, steps, errors)


def _jacobian_rows(
    logits: FloatArray, sm: Softmax, include: frozenset[Output], numeric: NumericOptions
) -> tuple[FloatArray | None, _NumericRows | None]:
    """The analytic Jacobian and the numeric one, as far as `include` asks."""
    jacobian = numeric_jacobian = None
    if Output.JACOBIAN in include or Output.NUMERIC_JACOBIAN in include:
        jacobian = softmax_jacobian(sm)
    if Output.NUMERIC_JACOBIAN in include:
        numeric_jacobian = _numeric_rows(
            SoftmaxColumns(logits),
            logits,
            sm,
            numeric,
            scale=None,
            derivative_scale=np.ones(logits.shape[0]),
            value_scale=softmax_rounding_scale(logits, sm.probabilities),
            cumulant_shift=1,
        )
    return jacobian, numeric_jacobian


def analyse_softmax(
    logits: FloatArray,
    include: frozenset[Output],
    numeric: NumericOptions = NumericOptions(),
    tolerance: Tolerance = Tolerance(),
) -> Report:
    """Softmax of `logits` (N, C), with its Jacobian and a numeric check of it if asked."""
    sm = softmax(logits)
    jacobian, numeric_rows = _jacobian_rows(logits, sm, include, numeric)
    numeric_jacobian = check = None
    if numeric_rows is not None:
        assert jacobian is not None
        ((numeric_jacobian, check),) = numeric_rows.checks(
            jacobian, [slice(0, logits.shape[0])], numeric.method, tolerance
        )
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
    problem = LossProblem(logits, targets, reduction)
    (result,) = analyse_cross_entropy_batch([problem], include, numeric, tolerance)
    if isinstance(result, InvalidProblem):
        raise result
    return result


def analyse_cross_entropy_batch(
    problems: Sequence[LossProblem],
    include: frozenset[Output],
    numeric: NumericOptions = NumericOptions(),
    tolerance: Tolerance = Tolerance(),
) -> list[Report | InvalidProblem]:
    """`analyse_cross_entropy` of each problem (all of one C and dtype), computed in one pass.

    Every step but the reductions (the loss, the checks' maxima) works row by row, so the rows
    of all problems are stacked and computed together, and each problem's report is the one it
    would get alone: numpy's cost per call, not per number, dominates small problems. A problem
    with target mass on a −inf logit gets its InvalidProblem instead of a report.
    """
    refusals = _refusals(problems)
    valid = [problem for problem, refusal in zip(problems, refusals, strict=True) if not refusal]
    reports = iter(_analyse_stacked(valid, include, numeric, tolerance) if valid else [])
    return [refusal or next(reports) for refusal in refusals]


def _refusals(problems: Sequence[LossProblem]) -> list[InvalidProblem | None]:
    """Each problem's InvalidProblem if it puts target mass on a −inf logit, else None (one
    check over all of them first: usually none does)."""
    if len(problems) > 1:
        logits = np.concatenate([problem.logits for problem in problems])
        q = np.concatenate([problem.targets.q for problem in problems])
        if _refusal(logits, q) is None:
            return [None] * len(problems)
    return [_refusal(problem.logits, problem.targets.q) for problem in problems]


def _refusal(logits: FloatArray, q: FloatArray) -> InvalidProblem | None:
    try:
        check_target_support(logits, q)
    except InvalidProblem as error:
        return error
    return None


def _analyse_stacked(
    problems: Sequence[LossProblem],
    include: frozenset[Output],
    numeric: NumericOptions,
    tolerance: Tolerance,
) -> list[Report]:
    """The reports of `problems`, whose rows are computed as one stacked batch."""
    sizes = [problem.logits.shape[0] for problem in problems]
    if len(problems) == 1:
        logits, targets = problems[0].logits, problems[0].targets
    else:
        logits = np.concatenate([problem.logits for problem in problems])
        targets = joined_targets([problem.targets for problem in problems])
    divisors = np.repeat([problem.targets.divisor for problem in problems], sizes)
    scale = (1 / divisors).astype(logits.dtype)[:, None]
    q = targets.q

    sm = softmax(logits)
    losses = per_sample_losses(sm, q, factors=targets.factors)
    gradient = per_sample_gradient(sm, q, exact_q=targets.exact_q) * scale
    numeric_gradient = None
    if Output.NUMERIC_GRADIENT in include:
        numeric_gradient = _numeric_rows(
            LossColumns(logits, q),
            logits,
            sm,
            numeric,
            scale=scale,
            derivative_scale=q.sum(axis=1, dtype=np.float64) / divisors,
            value_scale=loss_rounding_scale(logits, q, sm.probabilities) / divisors,
            cumulant_shift=0,
        )
    jacobian, numeric_jacobian = _jacobian_rows(logits, sm, include, numeric)

    blocks = []
    stop = 0
    for size in sizes:
        blocks.append(slice(stop, stop + size))
        stop += size
    unchecked: Sequence[tuple[FloatArray | None, Check | None]] = [(None, None)] * len(problems)
    gradient_checks = jacobian_checks = unchecked
    if numeric_gradient is not None:
        gradient_checks = [*numeric_gradient.checks(gradient, blocks, numeric.method, tolerance)]
    if numeric_jacobian is not None:
        assert jacobian is not None
        jacobian_checks = [*numeric_jacobian.checks(jacobian, blocks, numeric.method, tolerance)]
    reports = []
    for problem, rows, (numeric_part, gradient_check), (
        numeric_jacobian_part,
        jacobian_check,
    ) in zip(problems, blocks, gradient_checks, jacobian_checks, strict=True):
        reports.append(
            Report(
                softmax=sm.rows(rows),
                losses=losses[rows],
                loss=reduce_losses(losses[rows], problem.targets, problem.reduction),
                gradient=gradient[rows],
                numeric_gradient=numeric_part,
                jacobian=None if jacobian is None else jacobian[rows],
                numeric_jacobian=numeric_jacobian_part,
                gradient_check=gradient_check,
                jacobian_check=jacobian_check,
            )
        )
    return reports
