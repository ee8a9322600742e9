"""One gradient check from start to end: softmax, loss, analytic and numeric derivatives, verdicts.

This is the whole data path of the service below HTTP for one problem; it only composes the
other modules. `LossRows.of` computes everything that is row by row, so that `app.numerics.batch`
can stack the rows of several problems and get each one exactly what it gets here, and so that a
loss and gradient alone can be computed by blocks of rows (a language model's vocabulary: the
peak is the gradient and one block, not a dozen arrays of the logits' size).
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property, partial

import numpy as np

from app.numerics.compare import Agreement, compare
from app.numerics.cross_entropy import (
    Reduction,
    Targets,
    check_target_support,
    log_sum_exp,
    per_sample_gradient,
    per_sample_losses,
    reduce_losses,
    softcap_logits,
    softcap_slope,
)
from app.numerics.deadline import NEVER, Deadline
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import (
    STENCILS,
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
from app.numerics.hessian import (
    LogitTerms,
    hessian_vector_product,
    logit_terms,
    loss_hessian,
    numeric_hessian,
)
from app.numerics.layout import BLOCK_ENTRIES, for_each_row_block
from app.numerics.softmax import FloatArray, Softmax, softmax, softmax_jacobian

MAX_MAGNITUDE = 1e15
"""Largest |value| accepted for logits, weights and probability labels. Beyond it float64 cannot
resolve a unit change of a logit (its spacing there is 0.125), softmax is exactly one-hot, and
products such as q·z or the error estimates' h⁴ could overflow; refusing it keeps every output
finite."""


class Output(StrEnum):
    """The arrays a caller can ask for."""

    PROBABILITIES = "probabilities"
    LOG_PROBABILITIES = "log_probabilities"
    LOSS = "loss"
    GRADIENT = "gradient"
    NUMERIC_GRADIENT = "numeric_gradient"
    JACOBIAN = "jacobian"
    NUMERIC_JACOBIAN = "numeric_jacobian"
    HESSIAN = "hessian"
    NUMERIC_HESSIAN = "numeric_hessian"
    HESSIAN_VECTOR_PRODUCT = "hessian_vector_product"


SQUARE_OUTPUTS = frozenset(
    {Output.JACOBIAN, Output.NUMERIC_JACOBIAN, Output.HESSIAN, Output.NUMERIC_HESSIAN}
)
"""Outputs with C·C numbers per sample (the others have C, or one)."""
SECOND_ORDER = frozenset({Output.HESSIAN, Output.NUMERIC_HESSIAN, Output.HESSIAN_VECTOR_PRODUCT})
"""The outputs of `app.numerics.hessian`: computed for one problem at a time, never stacked."""


@dataclass(frozen=True)
class NumericOptions:
    """How numeric derivatives are taken: the method, an optional fixed step, and the deadline
    they stop at (not part of the options' identity: calls that differ only in it compute the
    same numbers, `app.api.coalesce`)."""

    method: Method = Method.CENTRAL
    step: float | None = None
    deadline: Deadline = field(default=NEVER, compare=False)


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
    directions: int | None = None
    """k when the check compared k directional derivatives (`app.numerics.directional`), None
    when it compared every element of the gradient."""

    def message(self) -> str:
        """The verdict in words, with the numeric method's own error and, when the check
        failed, why the finite difference itself may be to blame."""
        a = self.agreement
        if self.directions is not None:
            return self._directional_message()
        summary = (
            f"max abs error {a.max_abs_error:.2e}, max rel error {a.max_rel_error:.2e}; "
            f"estimated truncation error {self.estimate.truncation:.1e}, rounding error "
            f"{self.estimate.rounding:.1e} for {self.method} with {self.steps.rule}"
        )
        if a.passed:
            return f"passed: every element within atol + rtol·|numeric| ({summary})."
        return (
            f"failed: {a.mismatches} element(s) differ by more than atol + rtol·|numeric| "
            f"({summary}).{self._advice()}"
        )

    def _directional_message(self) -> str:
        a = self.agreement
        summary = (
            f"{self.directions} random direction(s); max abs error {a.max_abs_error:.2e}, max "
            f"rel error {a.max_rel_error:.2e}; estimated truncation error "
            f"{self.estimate.truncation:.1e}, rounding error {self.estimate.rounding:.1e} for "
            f"{self.method} with {self.steps.rule}"
        )
        if a.passed:
            return (
                "passed: every directional derivative ⟨gradient, v⟩ within atol + "
                f"rtol·|numeric| ({summary})."
            )
        return (
            f"failed: {a.mismatches} of {a.checked} directional derivatives ⟨gradient, v⟩ "
            f"differ by more than atol + rtol·|numeric| ({summary}).{self._advice()}"
        )

    def _advice(self) -> str:
        """Why a failing check may be the finite difference's fault, and what to try.

        A stencil of order p with the best step reaches about eps^(p/(p+1)) (rounding eps/h
        against truncation h^p): eps^(1/2) forward, eps^(2/3) central, eps^(4/5) five-point.
        The complex step has no cancellation and reaches about eps.
        """
        hints = []
        dtype = self.steps.h.dtype
        if dtype == np.float32 and self.method is not Method.COMPLEX_STEP:
            eps = float(np.finfo(dtype).eps)
            order = STENCILS[self.method].order
            best = eps ** (order / (order + 1))
            hints.append(
                f"in float32 (eps = {eps:.2g}) a {self.method} difference cannot be much better "
                f"than eps^({order}/{order + 1}) ≈ {best:.1e}: use dtype float64 or method "
                "complex_step"
            )
        own_error = self.estimate.truncation + self.estimate.rounding
        if own_error > self.tolerance.atol:
            hints.append(
                f"the numeric method's own estimated error ({own_error:.1e}) exceeds atol "
                f"({self.tolerance.atol:g}), so the numeric side may be the one that is off"
            )
        return (" Note: " + "; ".join(hints) + ".") if hints else ""


@dataclass(frozen=True)
class Report:
    """Everything computed for one request; arrays not asked for are None."""

    logits: FloatArray
    """The rows (R, C) the report is of, as given (before any soft-capping)."""
    losses: FloatArray | None = None
    loss: FloatArray | None = None
    gradient: FloatArray | None = None
    numeric_gradient: FloatArray | None = None
    jacobian: FloatArray | None = None
    numeric_jacobian: FloatArray | None = None
    gradient_check: Check | None = None
    jacobian_check: Check | None = None
    hessian: FloatArray | None = None
    numeric_hessian: FloatArray | None = None
    hessian_vector_product: FloatArray | None = None
    hessian_check: Check | None = None
    softcap: float | None = None
    """c of the soft-capping y = c·tanh(z/c), or None."""
    kept_softmax: Softmax | None = None
    """The softmax of the (capped) logits as the analysis computed it; None where it was
    computed by blocks and not kept (`LossRows.of`)."""
    rows_finite: bool = False
    """Every array of the report but the reduced `loss` is known to be finite: the stacked
    batch that computed it checked its rows at once (`app.numerics.batch`), so
    `refuse_non_finite` checks the loss alone."""

    @cached_property
    def softmax(self) -> Softmax:
        """The softmax of the (capped) logits: the one kept, else computed now (the same
        numbers: every row is computed alone)."""
        if self.kept_softmax is not None:
            return self.kept_softmax
        if self.softcap is None:
            return softmax(self.logits)
        return softmax(softcap_logits(self.logits, self.softcap))

    @cached_property
    def logit_slope(self) -> FloatArray | None:
        """dy/dz of the soft-capping (R, C), None without it: the Jacobian and gradient are by
        the raw z, so a Jacobian formed later scales its column j by it."""
        return None if self.softcap is None else softcap_slope(self.logits, self.softcap)

    def refuse_non_finite(self, include: frozenset[Output]) -> None:
        """Raise InvalidProblem naming the first output asked for, and its sample, that is not
        finite in the precision it was computed in (log-probabilities of masked logits are
        −inf by definition and are not outputs that can overflow)."""
        if self.rows_finite:
            if Output.LOSS in include and self.loss is not None:
                _refuse_non_finite(str(Output.LOSS), self.loss)
            return
        arrays: dict[Output, FloatArray | None] = {}
        if Output.PROBABILITIES in include:  # the softmax is computed only if asked for
            arrays[Output.PROBABILITIES] = self.softmax.probabilities
        arrays |= {
            Output.LOSS: self.loss,
            Output.GRADIENT: self.gradient,
            Output.NUMERIC_GRADIENT: self.numeric_gradient,
            Output.JACOBIAN: self.jacobian,
            Output.NUMERIC_JACOBIAN: self.numeric_jacobian,
            Output.HESSIAN: self.hessian,
            Output.NUMERIC_HESSIAN: self.numeric_hessian,
            Output.HESSIAN_VECTOR_PRODUCT: self.hessian_vector_product,
        }
        named = [(str(name), value) for name, value in arrays.items() if name in include]
        for name, value in [*named, ("losses", self.losses)]:
            if value is not None:
                _refuse_non_finite(name, value)


def all_finite(*arrays: FloatArray | None) -> bool:
    """Whether every entry of `arrays` (None skipped) is finite: one pass and no copy each (a
    sum is finite only if every term is; an overflowing sum says False, as a NaN or ±inf does)."""
    return all(array is None or np.isfinite(array.sum()) for array in arrays)


def _refuse_non_finite(name: str, value: FloatArray) -> None:
    """InvalidProblem at the first sample of output `name` that is not finite."""
    if all_finite(value):
        return
    bad = ~np.isfinite(value)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if value.ndim else ()
        where = f" of sample {index[0]}" if index else ""
        raise InvalidProblem(
            ("logits", index[0]) if index else ("logits",),
            f"the {name}{where} is not finite in {value.dtype}: the logits are too "
            "large for this precision (use dtype float64 or smaller logits)",
        )


@dataclass(frozen=True)
class LossProblem:
    """One cross-entropy problem: logits (N, C), their effective targets, the reduction."""

    logits: FloatArray
    targets: Targets
    reduction: Reduction
    z_loss: float = 0.0
    """λ ≥ 0: each non-ignored sample's loss gains λ·(log Σ_c exp z_c)² (`cross_entropy`)."""
    softcap: float | None = None
    """c > 0: the logits are replaced by c·tanh(z/c) before everything (None: no capping)."""


@dataclass(frozen=True)
class NumericRows:
    """A numeric derivative of a batch, its steps and its estimated error by row."""

    values: FloatArray
    steps: Steps
    errors: RowErrors

    def check(self, analytic: FloatArray, method: Method, tolerance: Tolerance) -> Check:
        """The check of `analytic` against these values, over the whole batch."""
        agreement = compare(analytic, self.values, atol=tolerance.atol, rtol=tolerance.rtol)
        estimate = ErrorEstimate(
            float(np.max(self.errors.truncation)), float(np.max(self.errors.rounding))
        )
        return Check(agreement, method, self.steps, tolerance, estimate)


def numeric_rows(
    f: ColumnFunction,
    logits: FloatArray,
    sm: Softmax,
    numeric: NumericOptions,
    *,
    scale: FloatArray | None,
    derivative_scale: FloatArray,
    value_scale: FloatArray,
    cumulant_shift: int,
) -> NumericRows:
    """scale·(numeric derivative of f by columns), with `scale` (N, 1) per sample or None.

    `derivative_scale`, `value_scale` and `cumulant_shift` feed the error estimate (see
    finite_diff.estimate_error).
    """
    steps = choose_steps(logits, numeric.method, numeric.step)
    values = derivative_by_column(f, logits, steps, numeric.method, numeric.deadline)
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
    return NumericRows(values, steps, errors)


def jacobian_rows(
    logits: FloatArray,
    sm: Softmax,
    include: frozenset[Output],
    numeric: NumericOptions,
    *,
    softcap: float | None = None,
    slope: FloatArray | None = None,
) -> tuple[FloatArray | None, NumericRows | None]:
    """The analytic Jacobian and the numeric one, as far as `include` asks.

    With `softcap` c, `sm` is the softmax of y = c·tanh(z/c), `slope` is dy/dz, and both
    Jacobians are by the raw `logits`: ∂a_i/∂z_j = a_i(δ_ij − a_j)·dy_j/dz_j."""
    jacobian = numeric_jacobian = None
    if Output.JACOBIAN in include or Output.NUMERIC_JACOBIAN in include:
        jacobian = softmax_jacobian(sm)
        if slope is not None:
            jacobian *= slope[:, None, :]
    if Output.NUMERIC_JACOBIAN in include:
        numeric_jacobian = numeric_rows(
            SoftmaxColumns(logits, softcap=softcap),
            logits,
            sm,
            numeric,
            scale=None,
            derivative_scale=np.ones(logits.shape[0]),
            value_scale=softmax_rounding_scale(
                logits if sm.logits is None else sm.logits, sm.probabilities
            ),
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
    jacobian, numeric_jacobian = jacobian_rows(logits, sm, include, numeric)
    check = None
    if numeric_jacobian is not None:
        assert jacobian is not None
        check = numeric_jacobian.check(jacobian, numeric.method, tolerance)
    return Report(
        logits,
        kept_softmax=sm,
        jacobian=jacobian,
        numeric_jacobian=None if numeric_jacobian is None else numeric_jacobian.values,
        jacobian_check=check,
    )


BY_BLOCKS = frozenset({Output.LOSS, Output.GRADIENT})
"""A cross-entropy analysis asking for nothing beyond these is computed by blocks of rows."""


@dataclass(frozen=True)
class LossRows:
    """Everything of a cross-entropy analysis that is computed row by row."""

    softmax: Softmax | None
    """The softmax of the (soft-capped, if asked) logits; None when computed by blocks."""
    cross_entropy: FloatArray
    """−Σ_c q_nc·log a_nc per sample, shape (N,)."""
    z_terms: FloatArray | None
    """λ·ℓ_n² per sample (0 where ignored), or None without a z-loss."""
    gradient: FloatArray
    numeric_gradient: NumericRows | None
    jacobian: FloatArray | None
    numeric_jacobian: NumericRows | None

    @property
    def losses(self) -> FloatArray:
        """Per-sample losses: the cross-entropy plus the z-loss term."""
        if self.z_terms is None:
            return self.cross_entropy
        return self.cross_entropy + self.z_terms

    @classmethod
    def of(
        cls,
        logits: FloatArray,
        targets: Targets,
        divisors: FloatArray,
        include: frozenset[Output],
        numeric: NumericOptions,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        z_divisors: FloatArray | None = None,
    ) -> "LossRows":
        """Softmax, per-sample losses, the gradient a·Σq − q of each row divided by its
        reduction's D (`divisors`, shape (N,)), and the Jacobian and numeric derivatives that
        `include` asks for. Every row depends on its own logits, targets, D and D_z alone.

        With `z_loss` λ, sample n (if `targets.active`) gains λ·ℓ_n² and its gradient row
        2λ·ℓ_n·a_n / D_z,n (`z_divisors`, shape (N,); default `targets.z_divisor`); with
        `softcap` c everything is computed from y = c·tanh(z/c) and every derivative is
        multiplied by dy/dz of its column (`cross_entropy.softcap_slope`).

        When `include` asks for nothing beyond the loss and the gradient (`BY_BLOCKS`) and the
        logits exceed one block (`layout.BLOCK_ENTRIES`), the rows are computed block by block
        and only the losses and the gradient are kept (`softmax` is None): the peak is the
        gradient and one dozen temporaries per block under way, not a dozen arrays of the logits'
        size (a 32,000-class vocabulary). The blocks are shared among the cores
        (`layout.for_each_row_block`: rows are independent); each row gets the numbers it gets
        computed whole, whichever thread computes it. `numeric.deadline` is checked before each
        block.
        """
        whole = partial(
            cls._whole, include=include, numeric=numeric, z_loss=z_loss, softcap=softcap
        )
        if not include <= BY_BLOCKS or logits.size <= BLOCK_ENTRIES:
            return whole(logits, targets, divisors, z_divisors=z_divisors)
        num_rows, num_classes = logits.shape
        gradient = np.empty_like(logits)
        cross_entropy = np.empty(num_rows, logits.dtype)
        z_terms = np.empty(num_rows, logits.dtype) if z_loss else None

        def compute(part: slice) -> None:
            numeric.deadline.check()
            block = whole(
                logits[part],
                targets.rows(part),
                divisors[part],
                z_divisors=None if z_divisors is None else z_divisors[part],
            )
            gradient[part] = block.gradient
            cross_entropy[part] = block.cross_entropy
            if z_terms is not None and block.z_terms is not None:
                z_terms[part] = block.z_terms

        for_each_row_block(compute, num_rows, num_classes)
        return cls(None, cross_entropy, z_terms, gradient, None, None, None)

    @classmethod
    def _whole(
        cls,
        logits: FloatArray,
        targets: Targets,
        divisors: FloatArray,
        include: frozenset[Output],
        numeric: NumericOptions,
        *,
        z_loss: float,
        softcap: float | None,
        z_divisors: FloatArray | None,
    ) -> "LossRows":
        """`of` computed on every row at once."""
        scale = (1 / divisors).astype(logits.dtype)[:, None]
        q = targets.q
        capped = logits if softcap is None else softcap_logits(logits, softcap)
        slope = None if softcap is None else softcap_slope(logits, softcap)
        sm = softmax(capped)
        losses = per_sample_losses(sm, q, factors=targets.factors)
        gradient = per_sample_gradient(sm, q, exact_q=targets.exact_q) * scale
        z_terms = z_weights = lse = None
        if z_loss:
            if z_divisors is None:
                z_divisors = np.full(logits.shape[0], targets.z_divisor)
            z_weights = targets.z_weights(z_loss)
            lse = log_sum_exp(sm)
            z_terms = (z_weights * lse * lse).astype(logits.dtype)
            slopes = (2 * z_weights * lse / z_divisors).astype(logits.dtype)
            gradient += slopes[:, None] * sm.probabilities
        if slope is not None:
            gradient *= slope
        numeric_gradient = None
        if Output.NUMERIC_GRADIENT in include:
            derivative_scale = q.sum(axis=1, dtype=np.float64) / divisors
            value_scale = loss_rounding_scale(capped, q, sm.probabilities) / divisors
            column_weights = None
            if z_weights is not None and lse is not None and z_divisors is not None:
                # loss_n·D_n/… : the columns evaluate D_n·(CE_n/D_n + λ·ℓ_n²/D_z,n)
                column_weights = z_weights * divisors / z_divisors
                z_scale = 2 * z_weights / z_divisors * (np.abs(lse) + 1)
                derivative_scale = derivative_scale + z_scale
                log_total = -np.log(np.max(sm.probabilities, axis=1).astype(np.float64))
                value_scale = value_scale + z_scale * (2 + log_total)
            numeric_gradient = numeric_rows(
                LossColumns(logits, q, z_weights=column_weights, softcap=softcap),
                logits,
                sm,
                numeric,
                scale=scale,
                derivative_scale=derivative_scale,
                value_scale=value_scale,
                cumulant_shift=0,
            )
        jacobian, numeric_jacobian = jacobian_rows(
            logits, sm, include, numeric, softcap=softcap, slope=slope
        )
        return cls(sm, losses, z_terms, gradient, numeric_gradient, jacobian, numeric_jacobian)


def analyse_cross_entropy(
    logits: FloatArray,
    targets: Targets,
    reduction: Reduction,
    include: frozenset[Output],
    numeric: NumericOptions = NumericOptions(),
    tolerance: Tolerance = Tolerance(),
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    vector: FloatArray | None = None,
) -> Report:
    """Loss, gradient a·Σq − q (divided by the reduction's D), numeric gradient and checks.

    `z_loss` λ adds λ·ℓ_n² to each non-ignored sample's loss (ℓ_n = log Σ_c exp z_nc; for
    `mean` divided by the number of non-ignored samples, `targets.z_divisor`); `softcap` c
    replaces the logits by c·tanh(z/c) first, every derivative staying by the raw logits.
    The probabilities and log-probabilities reported are those of the capped logits. The
    second-order outputs (`SECOND_ORDER`: the Hessian (Σq/D)·(diag a − a·aᵀ) of each row, its
    numeric check, and H·`vector`) come from `app.numerics.hessian`, with the z-loss's and
    the soft-capping's second derivatives (by the raw logits) when those options are set.

    Raises InvalidProblem when target mass sits on a −inf logit.
    """
    check_target_support(logits, targets)
    divisors = np.full(logits.shape[0], targets.divisor)
    rows = LossRows.of(logits, targets, divisors, include, numeric, z_loss=z_loss, softcap=softcap)
    gradient_check = jacobian_check = None
    if rows.numeric_gradient is not None:
        gradient_check = rows.numeric_gradient.check(rows.gradient, numeric.method, tolerance)
    if rows.numeric_jacobian is not None:
        assert rows.jacobian is not None
        jacobian_check = rows.numeric_jacobian.check(rows.jacobian, numeric.method, tolerance)
    report = Report(
        logits,
        losses=rows.losses,
        loss=reduce_losses(rows.cross_entropy, targets, reduction, z_terms=rows.z_terms),
        gradient=rows.gradient,
        numeric_gradient=None if rows.numeric_gradient is None else rows.numeric_gradient.values,
        jacobian=rows.jacobian,
        numeric_jacobian=None if rows.numeric_jacobian is None else rows.numeric_jacobian.values,
        gradient_check=gradient_check,
        jacobian_check=jacobian_check,
        softcap=softcap,
        kept_softmax=rows.softmax,
    )
    if include & SECOND_ORDER:
        terms = logit_terms(targets, logits, z_loss=z_loss, softcap=softcap)
        report = _second_order(report, logits, targets, include, numeric, tolerance, vector, terms)
    return report


def _second_order(
    report: Report,
    logits: FloatArray,
    targets: Targets,
    include: frozenset[Output],
    numeric: NumericOptions,
    tolerance: Tolerance,
    vector: FloatArray | None,
    terms: LogitTerms | None = None,
) -> Report:
    """The report with the second-order outputs `include` asks for (`app.numerics.hessian`),
    by the raw logits, with the z-loss's and the soft-capping's second derivatives when
    `terms` has them (`report.softmax` is then that of the capped logits)."""
    sm, q, divisor = report.softmax, targets.q, targets.divisor
    hessian = numeric_values = product = check = None
    if Output.HESSIAN in include or Output.NUMERIC_HESSIAN in include:
        hessian = loss_hessian(sm, q, divisor=divisor, exact_q=targets.exact_q, terms=terms)
    if Output.NUMERIC_HESSIAN in include:
        assert hessian is not None
        found = numeric_hessian(
            logits,
            q,
            divisor=divisor,
            method=numeric.method,
            step=numeric.step,
            sm=sm,
            terms=terms,
            deadline=numeric.deadline,
        )
        rows = NumericRows(found.values, found.steps, found.errors)
        numeric_values, check = found.values, rows.check(hessian, numeric.method, tolerance)
    if Output.HESSIAN_VECTOR_PRODUCT in include:
        if vector is None:
            raise InvalidProblem(("vector",), "hessian_vector_product needs a vector v")
        product = hessian_vector_product(
            sm, q, vector, divisor=divisor, exact_q=targets.exact_q, terms=terms
        )
    return replace(
        report,
        hessian=hessian,
        numeric_hessian=numeric_values,
        hessian_vector_product=product,
        hessian_check=check,
    )


def analyse_problem(
    problem: LossProblem,
    include: frozenset[Output],
    numeric: NumericOptions = NumericOptions(),
    tolerance: Tolerance = Tolerance(),
    vector: FloatArray | None = None,
) -> Report:
    """`analyse_cross_entropy` of a `LossProblem`, its z-loss and soft-capping included."""
    return analyse_cross_entropy(
        problem.logits,
        problem.targets,
        problem.reduction,
        include,
        numeric,
        tolerance,
        z_loss=problem.z_loss,
        softcap=problem.softcap,
        vector=vector,
    )


class ReferenceOutputs(Mapping[str, FloatArray]):
    """The outputs of a report by name, as a candidate is checked against them
    (`app.numerics.candidate.check_candidate`); the N·C·C Jacobian is formed only when asked
    for. A softmax report has probabilities, log_probabilities and jacobian; a cross-entropy
    report also loss, losses and gradient, and with its `targets` the Hessian (formed, like the
    Jacobian, only when asked for)."""

    def __init__(self, report: Report, targets: Targets | None = None) -> None:
        self._report = report
        self._targets = targets
        self._names = ["probabilities", "log_probabilities", "jacobian"]
        if report.losses is not None:
            self._names += ["loss", "losses", "gradient"]
        if report.hessian is not None or (targets is not None and report.softcap is None):
            self._names.append("hessian")

    def __getitem__(self, name: str) -> FloatArray:
        if name not in self._names:
            raise KeyError(name)
        report = self._report
        if name == "hessian":
            if report.hessian is not None:
                return report.hessian
            targets = self._targets
            assert targets is not None
            return loss_hessian(
                report.softmax, targets.q, divisor=targets.divisor, exact_q=targets.exact_q
            )
        if name == "jacobian":
            if report.jacobian is not None:
                return report.jacobian
            jacobian = softmax_jacobian(report.softmax)
            if report.logit_slope is not None:
                jacobian *= report.logit_slope[:, None, :]
            return jacobian
        if name in ("probabilities", "log_probabilities"):  # the softmax only when asked for
            value: FloatArray | None = getattr(report.softmax, name)
        else:
            value = getattr(report, name)
        assert value is not None
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
