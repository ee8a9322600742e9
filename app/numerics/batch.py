"""Several cross-entropy problems computed as one stacked batch (used only by the coalescer).

For a small problem numpy's fixed cost per call, not the numbers, is the price: eight 8 × 10
problems stacked cost about what two of them cost one by one. Every step of an analysis but the
reductions (the loss, the checks' maxima) works row by row (`LossRows.of`), so the rows of all
problems are stacked and computed together, and each problem gets exactly the report it gets from
`analyse_cross_entropy` alone (tested bit for bit in tests/numerics/test_batch.py).
"""

from collections.abc import Sequence
from functools import partial

import numpy as np
from numpy.typing import NDArray

from app.numerics import double_double as dd
from app.numerics.compare import compare_blocks
from app.numerics.cross_entropy import (
    OneHot,
    Targets,
    check_target_support,
    has_masks,
    reduce_losses,
)
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import Steps
from app.numerics.gradcheck import (
    Check,
    LossProblem,
    LossRows,
    NumericOptions,
    NumericRows,
    Output,
    Report,
    Tolerance,
    all_finite,
)
from app.numerics.softmax import FloatArray


def analyse_cross_entropy_batch(
    problems: Sequence[LossProblem],
    include: frozenset[Output],
    numeric: NumericOptions | None = None,
    tolerance: Tolerance | None = None,
) -> list[Report | InvalidProblem]:
    """`analyse_cross_entropy` of each problem (all of one C and dtype), computed in one pass
    per (z_loss, softcap) pair (default options: those of `analyse_cross_entropy`; a caller
    batching by `app.numerics.tasks.LossTask.batch_key` has one pair).

    A problem with target mass on a −inf logit gets its InvalidProblem instead of a report.
    """
    numeric = numeric or NumericOptions()
    tolerance = tolerance or Tolerance()
    refusals = _refusals(problems)
    groups: dict[tuple[float, float | None], list[int]] = {}
    for index, (problem, refusal) in enumerate(zip(problems, refusals, strict=True)):
        if refusal is None:
            groups.setdefault((problem.z_loss, problem.softcap), []).append(index)
    results: list[Report | InvalidProblem | None] = list(refusals)
    for indices in groups.values():
        group = [problems[index] for index in indices]
        for index, report in zip(
            indices, _analyse_stacked(group, include, numeric, tolerance), strict=True
        ):
            results[index] = report
    return [result for result in results if result is not None]


def joined_targets(parts: Sequence[Targets]) -> Targets:
    """The targets of several batches stacked row after row, to be computed in one pass.

    Every row gets what its own batch would give it: `exact_q` asks each batch for its own rows
    (q itself where a batch has none: its q is exact), and `factors` are (1, q) for the rows of
    a batch without them (1·x is exact), `active` every row's own. The divisors are 1: each
    batch's D and D_z stay the caller's. Batches whose q is one class a row (`OneHot`) stay so.
    """
    effective: FloatArray | OneHot
    one_hots = [part.effective for part in parts if isinstance(part.effective, OneHot)]
    if len(one_hots) == len(parts):
        effective = OneHot(
            np.concatenate([one_hot.classes for one_hot in one_hots]),
            np.concatenate([one_hot.values for one_hot in one_hots]),
            one_hots[0].num_classes,
        )
    else:
        effective = np.concatenate([part.q for part in parts])
    active = None
    if any(part.active is not None for part in parts):
        active = np.concatenate(
            [
                np.ones(part.effective.shape[0], np.bool_) if part.active is None else part.active
                for part in parts
            ]
        )
    exact_q = None
    if any(part.exact_q is not None for part in parts):
        exact_q = partial(_joined_exact_targets, parts)
    factors = None
    if any(part.factors is not None for part in parts):
        weights, bases = [], []
        for part in parts:
            weight, base = part.factors or (np.ones_like(part.q), part.q)
            weights.append(np.broadcast_to(weight, part.effective.shape))
            bases.append(base)
        factors = (np.concatenate(weights), np.concatenate(bases))
    return Targets(effective, 1.0, exact_q, factors, active, 1.0)


def _joined_exact_targets(parts: Sequence[Targets], rows: NDArray[np.intp]) -> dd.DD:
    """exact_q of `joined_targets(parts)`: the (ascending) `rows`, each from its own batch."""
    his, los = [], []
    start = 0
    for part in parts:
        stop = start + part.effective.shape[0]
        local = rows[(rows >= start) & (rows < stop)] - start
        start = stop
        if not local.size:
            continue
        if part.exact_q is None:
            exact = dd.DD(part.q[local], np.zeros_like(part.q[local]))
        else:
            exact = part.exact_q(local)
        his.append(exact.hi)
        los.append(exact.lo)
    return dd.DD(np.concatenate(his), np.concatenate(los))


def _refusals(problems: Sequence[LossProblem]) -> list[InvalidProblem | None]:
    """Each problem's InvalidProblem if it puts target mass on a −inf logit, else None (one
    look for a mask over all of them first: usually there is none)."""
    if len(problems) > 1 and not has_masks(np.concatenate([p.logits for p in problems])):
        return [None] * len(problems)
    return [_refusal(problem.logits, problem.targets) for problem in problems]


def _refusal(logits: FloatArray, targets: Targets) -> InvalidProblem | None:
    try:
        check_target_support(logits, targets)
    except InvalidProblem as error:
        return error
    return None


def _checks(
    numeric_rows: NumericRows | None,
    analytic: FloatArray | None,
    blocks: Sequence[slice],
    numeric: NumericOptions,
    tolerance: Tolerance,
) -> list[tuple[FloatArray | None, Check | None]]:
    """For each block of samples: its numeric derivative and its check against `analytic`
    (per-sample maxima and counts in one pass, then per block: `compare_blocks`)."""
    if numeric_rows is None:
        return [(None, None)] * len(blocks)
    assert analytic is not None
    starts = np.array([block.start for block in blocks], np.intp)
    agreements = compare_blocks(
        analytic, numeric_rows.values, starts, atol=tolerance.atol, rtol=tolerance.rtol
    )
    estimates = numeric_rows.errors.over_blocks(starts)
    steps = numeric_rows.steps
    return [
        (
            numeric_rows.values[rows],
            Check(
                agreement,
                numeric.method,
                Steps(steps.h[rows], steps.base, steps.scaled, steps.order),
                tolerance,
                estimate,
            ),
        )
        for rows, agreement, estimate in zip(blocks, agreements, estimates, strict=True)
    ]


def _analyse_stacked(
    problems: Sequence[LossProblem],
    include: frozenset[Output],
    numeric: NumericOptions,
    tolerance: Tolerance,
) -> list[Report]:
    """The reports of `problems`, whose rows are computed as one stacked batch."""
    sizes = [problem.logits.shape[0] for problem in problems]
    logits = np.concatenate([problem.logits for problem in problems])
    targets = joined_targets([problem.targets for problem in problems])
    divisors = np.repeat([problem.targets.divisor for problem in problems], sizes)
    z_divisors = np.repeat([problem.targets.z_divisor for problem in problems], sizes)
    first = problems[0]
    rows = LossRows.of(
        logits,
        targets,
        divisors,
        include,
        numeric,
        z_loss=first.z_loss,
        softcap=first.softcap,
        z_divisors=z_divisors,
    )

    losses = rows.losses
    rows_finite = (rows.softmax is not None or Output.PROBABILITIES not in include) and all_finite(
        None if rows.softmax is None else rows.softmax.probabilities,
        losses,
        rows.gradient,
        None if rows.numeric_gradient is None else rows.numeric_gradient.values,
        rows.jacobian,
        None if rows.numeric_jacobian is None else rows.numeric_jacobian.values,
    )
    stops = np.cumsum(sizes).tolist()
    blocks = [slice(stop - size, stop) for size, stop in zip(sizes, stops, strict=True)]
    gradient_checks = _checks(rows.numeric_gradient, rows.gradient, blocks, numeric, tolerance)
    jacobian_checks = _checks(rows.numeric_jacobian, rows.jacobian, blocks, numeric, tolerance)
    reports = []
    for problem, part, (numeric_gradient, gradient_check), (
        numeric_jacobian,
        jacobian_check,
    ) in zip(problems, blocks, gradient_checks, jacobian_checks, strict=True):
        cross_entropy = rows.cross_entropy[part]
        z_terms = None if rows.z_terms is None else rows.z_terms[part]
        reports.append(
            Report(
                problem.logits,
                losses=losses[part],
                loss=reduce_losses(
                    cross_entropy, problem.targets, problem.reduction, z_terms=z_terms
                ),
                gradient=rows.gradient[part],
                numeric_gradient=numeric_gradient,
                jacobian=None if rows.jacobian is None else rows.jacobian[part],
                numeric_jacobian=numeric_jacobian,
                gradient_check=gradient_check,
                jacobian_check=jacobian_check,
                softcap=problem.softcap,
                kept_softmax=None if rows.softmax is None else rows.softmax.rows(part),
                rows_finite=rows_finite,
            )
        )
    return reports
