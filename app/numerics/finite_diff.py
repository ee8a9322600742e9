"""Numeric derivatives by finite differences and the complex step, batched by class column.

Sample n's outputs depend only on its own row z_n, so perturbing one class column j of the whole
batch at once gives ∂f_n/∂z_nj for every n: C (or 2C, 4C) perturbed batches in all, never a loop
over single elements. Several columns are evaluated in one call, so that small batches do not
pay Python's per-call overhead C times.

    forward       f'(x) ≈ (f(x + h) − f(x)) / h                     p = 1, base = √eps
    central       f'(x) ≈ (f(x + h) − f(x − h)) / 2h                p = 2, base = ∛eps
    five_point    f'(x) ≈ (f(x − 2h) − 8f(x − h) + 8f(x + h) − f(x + 2h)) / 12h
                                                                    p = 4, base = eps^(1/5)
    complex_step  f'(x) ≈ Im f(x + ih) / h                               h = 1e-20

The default step of element (n, j) follows its row's own scale, not |z_nj| (`choose_steps`):

    h_nj = max(base·max(1, r_n)^(1/(p+1)), 4·ulp(z_nj)),   r_n = max_c z_nc − min_c z_nc (finite)

rounded so that z + h − z = h exactly. The functions differentiated here (LossColumns,
SoftmaxColumns) are plain evaluations of the loss and of softmax, independent of the
cancellation-free analytic path in `softmax.py`; with one column replaced, they re-sum only
what that column changes. They include the z-loss and the logit soft-capping of
`cross_entropy` when asked, so that a check of the gradient checks those terms too.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from app.numerics.cross_entropy import softcap_difference, softcap_logits
from app.numerics.deadline import NEVER, Deadline
from app.numerics.softmax import FloatArray

COMPLEX_STEP = 1e-20
STEP_FLOOR_ULPS = 4
"""The default step is at least this many ulps of its logit (see `choose_steps`)."""
LARGEST = float(np.finfo(np.float64).max)
"""Error estimates beyond float64's range (h^p overflows for a huge step) are reported as this:
every number of a response is finite."""
EVALUATION_ENTRIES = 1 << 16
"""Most numbers in one perturbed stack passed to the differentiated function (bounds memory)."""


class Method(StrEnum):
    """How the numeric derivative is taken."""

    CENTRAL = "central"
    FORWARD = "forward"
    FIVE_POINT = "five_point"
    COMPLEX_STEP = "complex_step"


@dataclass(frozen=True)
class Stencil:
    """f'(x) ≈ Σ_k w_k·f(x + o_k·h) / h; truncation error ≈ coefficient·h^order·f^(order+1)."""

    offsets: tuple[float, ...]
    weights: tuple[float, ...]
    order: int
    truncation_coefficient: float


STENCILS = {
    Method.FORWARD: Stencil((0.0, 1.0), (-1.0, 1.0), 1, 1 / 2),
    Method.CENTRAL: Stencil((-1.0, 1.0), (-1 / 2, 1 / 2), 2, 1 / 6),
    Method.FIVE_POINT: Stencil(
        (-2.0, -1.0, 1.0, 2.0), (1 / 12, -8 / 12, 8 / 12, -1 / 12), 4, 1 / 30
    ),
}


@dataclass(frozen=True)
class Steps:
    """The step used for every element, and how it was chosen."""

    h: FloatArray
    """Step per element, shape (N, C) (or one per direction for a directional check)."""
    base: float
    """h = max(base·max(1, r_n)^(1/(p+1)), 4·ulp(z)) when `scaled` (r_n the row's range of
    finite logits, p the stencil's order), else h = base everywhere."""
    scaled: bool
    order: int = 2
    """p, the order of the stencil the default rule was chosen for."""

    @property
    def rule(self) -> str:
        """The step rule in words, for the response."""
        if not self.scaled:
            return f"h = {self.base:.3g}"
        return (
            f"h = {self.base:.3g}·max(1, max z − min z of the row)^(1/{self.order + 1}), "
            f"at least {STEP_FLOOR_ULPS} ulp(z)"
        )


def row_ranges(logits: FloatArray) -> FloatArray:
    """r_n = max_c z_nc − min_c z_nc over the finite logits of each row, shape (N,) (0 for a
    row with one finite logit), in float64 (inf if the difference overflows: it cannot for
    logits within ±1e15)."""
    z = np.asarray(logits, np.float64)
    finite = np.isfinite(z)
    with np.errstate(invalid="ignore"):
        top = np.max(np.where(finite, z, -np.inf), axis=1)
        bottom = np.min(np.where(finite, z, np.inf), axis=1)
        spread: FloatArray = np.where(np.isfinite(top), top - bottom, 0.0)
    return spread


def choose_steps(logits: FloatArray, method: Method, step: float | None) -> Steps:
    """The step per element: `step` if given, else the rule below.

    Notes
    -----
    The default step of element (n, j), for a stencil of order p, is

        h_nj = max(b·max(1, r_n)^(1/(p+1)), 4·ulp(z_nj)),   b = eps^(1/(p+1)),
        r_n = max_c z_nc − min_c z_nc  (over the finite logits of row n)

    rounded so that (z + h) − z = h exactly, and 1e-20 for the complex step (no subtractive
    cancellation). Why:

    - softmax and the cross-entropy are invariant to a shift of the row, so their derivatives
      along z_nj are Bernoulli cumulants κ_k(a_nj) (`bernoulli_cumulant`) that do not grow with
      |z|: the truncation error c·h^p·|f^(p+1)| depends on h alone, not on h/|z|;
    - one evaluation's rounding error is ~eps·(2 + Σ_c (q_c + S·a_c)·|z_c − max z|)
      (`loss_rounding_scale`): it grows with the row's spread of logits, not with their size
      (z_c − max z is exact for nearby logits), bounded by ~eps·S·max(1, r_n). Balancing
      that rounding, eps·max(1, r)/h, against the truncation h^p gives
      h = (eps·max(1, r))^(1/(p+1)) = b·max(1, r)^(1/(p+1));
    - the floor keeps every perturbed logit representable: a step of a few ulps of z moves z
      by exactly h (below half an ulp it would not move at all).

    The former rule b·max(1, |z|) took steps of ∛eps·3e5 ≈ 1.8 on the row [3e5, 3e5 + 1e-3],
    far beyond the scale on which its softmax varies (1e-4 relative error); this one takes 6e-6
    there (central error ~1e-12 relative). A fixed `step` is used as given (rounded to be
    exact, as above); masked (−inf) logits keep the row's step, which moves nothing.

    References
    ----------
    .. [1] J. Nocedal, S. J. Wright, "Numerical Optimization", 2nd ed., Springer, 2006, section 8.1:
       steps √eps and ∛eps for forward and central differences.
    .. [2] scipy.optimize._numdiff.approx_derivative: the relative step eps^(1/(p+1)) per method.
    .. [3] W. Squire, G. Trapp, "Using complex variables to estimate derivatives of real functions",
       SIAM Review 40(1), 1998: the complex step Im f(x + ih)/h.
    """
    z = np.asarray(logits)
    dtype = z.dtype.type
    finite = np.isfinite(z)
    if method is Method.COMPLEX_STEP:
        base, scaled = (COMPLEX_STEP if step is None else step), False
        return Steps(np.full(z.shape, base, dtype), base, scaled)
    if step is not None:
        h = np.full(z.shape, step, dtype)
        base, scaled, order = step, False, 2
    else:
        base = float(np.finfo(dtype).eps ** (1 / (STENCILS[method].order + 1)))
        order = STENCILS[method].order
        row_scale = np.maximum(1.0, row_ranges(z))[:, None] ** (1 / (order + 1))
        floor = STEP_FLOOR_ULPS * np.spacing(np.abs(np.where(finite, z, 0)))
        h = np.maximum(base * row_scale, floor).astype(dtype)
        scaled = True
    with np.errstate(invalid="ignore", over="ignore"):
        exact = np.where(finite, (z + h) - z, h)
    return Steps(np.where(exact > 0, exact, h), base, scaled, order)


class ColumnFunction(Protocol):
    """f evaluated with one class column replaced: what the numeric derivative needs.

    `values` (P, W, N) are new values of the columns `columns` (W,) of the batch (one set per
    stencil point P); the result (P, W, N) or (P, W, N, K) is f of each such batch, row by row.
    """

    outputs_per_sample: int

    def __call__(
        self, columns: NDArray[np.intp], values: NDArray[np.generic]
    ) -> NDArray[np.generic]: ...


def derivative_by_column(
    f: ColumnFunction,
    logits: FloatArray,
    steps: Steps,
    method: Method,
    deadline: Deadline = NEVER,
) -> FloatArray:
    """∂f_n/∂z_nj for every sample n and class j, several class columns per evaluation.

    For each column j and stencil point, f is evaluated on the whole batch with z_nj moved to
    z_nj + offset·h_nj; at most EVALUATION_ENTRIES output numbers per call of `f`. The result has
    shape (N, C) or (N, K, C): the derivative by z_nj sits at [..., j]. `deadline` is checked
    before each group of columns (it raises `DeadlinePassed` to stop the work).

    References
    ----------
    .. [1] B. Fornberg, "Generation of finite difference formulas on arbitrarily spaced grids",
       Mathematics of Computation 51, 1988: the five-point stencil's weights.
    .. [2] J. R. R. A. Martins, P. Sturdza, J. J. Alonso, "The complex-step derivative
       approximation", ACM TOMS 29(3), 2003.
    """
    z = np.asarray(logits)
    h = steps.h
    num_samples, num_classes = z.shape
    if method is Method.COMPLEX_STEP:
        offsets: tuple[complex | float, ...] = (1j,)
        weights: tuple[float, ...] = (1.0,)
    else:
        offsets, weights = STENCILS[method].offsets, STENCILS[method].weights
    points = len(offsets)
    per_column = points * num_samples * f.outputs_per_sample
    chunk = max(1, min(num_classes, EVALUATION_ENTRIES // per_column))
    result: FloatArray | None = None
    for start in range(0, num_classes, chunk):
        deadline.check()
        columns = np.arange(start, min(start + chunk, num_classes))
        base, step = z[:, columns].T, h[:, columns].T
        values = np.stack([base + offset * step for offset in offsets])
        evaluated = np.asarray(f(columns, values))
        if method is Method.COMPLEX_STEP:
            combined: NDArray[np.generic] = np.imag(evaluated[0])
        else:
            combined = np.multiply(weights[0], evaluated[0])
            for point in range(1, points):
                combined = combined + np.multiply(weights[point], evaluated[point])
        if result is None:
            result = np.empty((*combined.shape[1:], num_classes), z.dtype)
        inverse_h = (1 / step).reshape(*step.shape, *(1,) * (combined.ndim - 2))
        result[..., columns] = np.moveaxis(np.multiply(combined, inverse_h), 0, -1)
    assert result is not None
    return result


class _Rows:
    """Per-row parts of a batch that one replaced column leaves unchanged.

    With m = max_c z_c (at c = k), s = z − m and e = exp(s) (0 and 0 on −inf entries),
    E = Σ_c e_c; m2 = max_{c≠k} z_c and T = Σ_{c≠k} exp(z_c − m2) (−inf and 0 if no other
    entry is finite).
    """

    def __init__(self, logits: FloatArray) -> None:
        z = np.asarray(logits)
        rows = np.arange(z.shape[0])
        self.masked = z == -np.inf
        self.argmax = np.argmax(z, axis=1)
        self.maximum = z[rows, self.argmax]
        self.below_maximum = z - self.maximum[:, None]
        """z − m: s with −inf kept on −inf entries."""
        self.shifted = np.where(self.masked, 0, self.below_maximum)
        self.exp = np.where(self.masked, 0, np.exp(self.shifted))
        self.total = self.exp.sum(axis=1)
        others = z.copy()
        others[rows, self.argmax] = -np.inf
        second = np.max(others, axis=1)
        has_second = np.isfinite(second)
        second_exp = np.exp(others - np.where(has_second, second, 0)[:, None])
        self.second = second - self.maximum
        """m2 − m ≤ 0 (−inf if the row has one finite entry)."""
        self.second_total = np.where(has_second, second_exp.sum(axis=1), 0)

    def replaced(
        self, columns: NDArray[np.intp], values: NDArray[np.generic]
    ) -> tuple[NDArray[np.generic], ...]:
        """(s', d, e', E') for the batches with column j set to `values` x: s' = x − m (0 where
        x is −inf) and, relative to the perturbed row's maximum m' = m + d,
        e' = exp(x − m') and E' = Σ_{c≠j} exp(z_c − m') + e'.

        Σ_{c≠j} exp(z_c − m') is (E − e_j)·exp(−d) for j ≠ k, and T·exp(m2 − m') for j = k
        (whose own move can leave another entry the largest). Taking the exponentials relative
        to m' keeps them from overflowing when a step moves x far above m (h = ∛eps·|z| is
        about 700 at |z| = 1e8) and from underflowing when it moves the maximum far down.
        """
        masked = np.real(values) == -np.inf
        with np.errstate(invalid="ignore"):
            shifted = values - self.maximum
        return self.replaced_shifted(columns, np.where(masked, 0, shifted), masked)

    def replaced_shifted(
        self,
        columns: NDArray[np.intp],
        shifted: NDArray[np.generic],
        masked: NDArray[np.bool_],
    ) -> tuple[NDArray[np.generic], ...]:
        """`replaced` given s' = x − m itself (0 where `masked`, the −inf values)."""
        top = self.argmax == columns[:, None]  # (W, N): is column j the row's argmax?
        base = np.where(top, self.second, 0.0)  # max_{c≠j} z_c − m
        rest = np.where(top, self.second_total, self.total - self.exp[:, columns].T)
        lift = np.maximum(base, np.real(shifted))
        exp = np.where(masked, 0, np.exp(shifted - lift))
        total = rest * np.exp(base - lift) + exp
        return shifted, lift, exp, total


class _Capped:
    """The replaced column's shifted value s' = y(x) − max y of soft-capped rows, where y is
    `cross_entropy.softcap_logits`: s' = (y(z) − max y) + (y(x) − y(z)), the difference taken
    without cancellation (`cross_entropy.softcap_difference`), so that the move h of a raw
    logit is not lost in the rounding of c·tanh(x/c) (eps·c, against h ≈ 6e-6)."""

    def __init__(self, logits: FloatArray, softcap: float | None) -> None:
        self.raw = np.asarray(logits)
        self.softcap = softcap
        self.capped = self.raw if softcap is None else softcap_logits(self.raw, softcap)
        self.rows = _Rows(self.capped)

    def replaced(
        self, columns: NDArray[np.intp], values: NDArray[np.generic]
    ) -> tuple[NDArray[np.generic], ...]:
        """`_Rows.replaced` for raw values x of the columns (their capped y(x) replaces y)."""
        if self.softcap is None:
            return self.rows.replaced(columns, values)
        masked = np.real(values) == -np.inf
        raw = self.raw[:, columns].T
        moved = softcap_difference(
            np.where(masked, 0, raw), np.where(masked, 0, values), self.softcap
        )
        shifted = np.where(masked, 0, self.rows.shifted[:, columns].T + moved)
        return self.rows.replaced_shifted(columns, shifted, masked)


class LossColumns:
    """Per-sample cross-entropy losses with one column replaced, for `derivative_by_column`.

        loss_n(z with z_nj := x) = S_n·(d + log E'_n) − (Σ_c q_nc s_nc − q_nj s_nj + q_nj (x − m_n))

    with S_n = Σ_c q_nc and d, E' from `_Rows.replaced`: the same value as −Σ_c q_nc·log a_nc
    evaluated on the whole perturbed row (`plain_losses`), with the unchanged terms summed once
    instead of once per column. Real or complex x.

    With `z_weights` λ_n the z-loss λ_n·ℓ_n² is added as λ_n·δ·(2ℓ_n + δ), its change from the
    unperturbed row (δ = ℓ'_n − ℓ_n = d + log E'_n − log E_n): the constant λ_n·ℓ_n² is left
    out, which changes no derivative and keeps its rounding (eps·λ·ℓ², large for logits near
    1e5) out of the differences. With `softcap` c the logits are y = c·tanh(z/c) and x is a raw
    logit (the derivative is by the raw z).
    """

    outputs_per_sample = 1

    def __init__(
        self,
        logits: FloatArray,
        q: FloatArray,
        *,
        z_weights: FloatArray | None = None,
        softcap: float | None = None,
    ) -> None:
        self.capped = _Capped(logits, softcap)
        self.rows = self.capped.rows
        self.q = q
        self.target_total = q.sum(axis=1)
        self.target_dot_shifted = (q * self.rows.shifted).sum(axis=1)
        self.z_weights = z_weights
        if z_weights is not None:
            self.log_total = np.log(self.rows.total)
            self.log_sum_exp = self.rows.maximum + self.log_total

    def __call__(
        self, columns: NDArray[np.intp], values: NDArray[np.generic]
    ) -> NDArray[np.generic]:
        shifted, lift, _, total = self.capped.replaced(columns, values)
        q_j = self.q[:, columns].T
        unchanged = self.target_dot_shifted - q_j * self.rows.shifted[:, columns].T
        dot = unchanged + np.multiply(q_j, shifted)
        log_total = lift + np.log(total)
        losses = self.target_total * log_total - dot
        if self.z_weights is not None:
            change = log_total - self.log_total
            losses = losses + self.z_weights * change * (2 * self.log_sum_exp + change)
        return np.asarray(losses)


class SoftmaxColumns:
    """Softmax rows with one column replaced, for `derivative_by_column`: a'_i = e_i / E' for
    i ≠ j and a'_j = exp(x − m) / E', with E' = E − e_j + exp(x − m) (all relative to
    max(m, x): see `_Rows.replaced`). Real or complex x; with `softcap` the softmax of
    y = c·tanh(z/c), x a raw logit."""

    def __init__(self, logits: FloatArray, *, softcap: float | None = None) -> None:
        self.capped = _Capped(logits, softcap)
        self.rows = self.capped.rows
        self.outputs_per_sample = int(np.shape(logits)[1])

    def __call__(
        self, columns: NDArray[np.intp], values: NDArray[np.generic]
    ) -> NDArray[np.generic]:
        _, lift, exp, total = self.capped.replaced(columns, values)
        # exp(z_i − m') for i ≠ j, where z_i ≤ m'; column j's old entry (capped) is replaced below
        unchanged = np.exp(np.minimum(self.rows.below_maximum - lift[..., None], 0))
        probabilities = unchanged / total[..., None]
        for slot, column in enumerate(columns):
            probabilities[:, slot, :, column] = np.divide(exp[:, slot], total[:, slot])
        return np.asarray(probabilities)


def _shifted(z: NDArray[np.generic]) -> tuple[NDArray[np.generic], NDArray[np.bool_] | None]:
    """(z − max Re z per row with −inf entries set to 0, mask of the −inf entries or None)."""
    real = np.real(z)
    masked = real == -np.inf
    with np.errstate(invalid="ignore"):
        shifted = z - np.max(real, axis=-1, keepdims=True)
    if not masked.any():
        return shifted, None
    shifted[masked] = 0
    return shifted, masked


def plain_losses(
    z: NDArray[np.generic],
    q: FloatArray,
    *,
    z_weights: FloatArray | None = None,
    softcap: float | None = None,
) -> NDArray[np.generic]:
    """loss_n = −Σ_c q_nc·(y_nc − m − log Σ_k exp(y_nk − m)) + λ_n·ℓ_n² of whole rows, real or
    complex, with y = c·tanh(z/c) under `softcap` (else y = z) and ℓ_n = m + log Σ exp(y − m)
    (the reference that LossColumns must agree with, and the benchmark's per-element loop)."""
    if softcap is not None:
        z = softcap_logits(np.asarray(z), softcap)
    shifted, masked = _shifted(z)
    e = np.exp(shifted)
    if masked is not None:
        e[masked] = 0
    log_total = np.log(e.sum(axis=-1, keepdims=True))
    maximum = None if z_weights is None else np.max(np.real(z), axis=-1)
    log_probabilities = np.subtract(shifted, log_total, out=shifted)
    if masked is not None:
        log_probabilities[masked] = 0
    np.multiply(log_probabilities, q, out=log_probabilities)
    losses = np.negative(log_probabilities.sum(axis=-1))
    if z_weights is not None:
        assert maximum is not None
        log_sum_exp = maximum + log_total[..., 0]
        losses = losses + z_weights * log_sum_exp * log_sum_exp
    return np.asarray(losses)


def bernoulli_cumulant(p: FloatArray, order: int) -> FloatArray:
    """κ_order of a Bernoulli(p) variable, for order 2…6.

    d^k/dx^k log Σ_c exp(z_c) along one coordinate x = z_j is κ_k(a_j), which bounds the
    derivatives that the truncation error of a stencil is made of.
    """
    k2 = p * (1 - p)
    cumulants: dict[int, Callable[[], FloatArray]] = {
        2: lambda: k2,
        3: lambda: k2 * (1 - 2 * p),
        4: lambda: k2 * (1 - 6 * k2),
        5: lambda: k2 * (1 - 2 * p) * (1 - 12 * k2),
        6: lambda: k2 * (1 - 30 * k2 + 120 * k2 * k2),
    }
    return cumulants[order]()


@dataclass(frozen=True)
class ErrorEstimate:
    """Estimated error of a numeric derivative: largest over the entries, in output units."""

    truncation: float
    rounding: float


@dataclass(frozen=True)
class RowErrors:
    """Estimated errors of a numeric derivative, largest in each sample (row), shape (N,)."""

    truncation: FloatArray
    rounding: FloatArray

    def over_blocks(self, starts: NDArray[np.intp]) -> list[ErrorEstimate]:
        """The estimate of each block of samples [starts[i], starts[i + 1]): the largest of its
        rows'."""
        truncation = np.maximum.reduceat(self.truncation, starts).tolist()
        rounding = np.maximum.reduceat(self.rounding, starts).tolist()
        return [ErrorEstimate(t, r) for t, r in zip(truncation, rounding, strict=True)]


def estimate_error(
    method: Method,
    steps: Steps,
    probabilities: FloatArray,
    *,
    derivative_scale: FloatArray,
    value_scale: FloatArray,
    cumulant_shift: int,
) -> RowErrors:
    """Truncation ≈ c·h^p·|f^(p+1)| and rounding ≈ (Σ|w_k|)·eps·|f|/h, largest in each row.

    Along z_j the (k)-th derivative of the loss of row n is S_n·κ_k(a_nj), and that of any
    probability is bounded by |κ_{k+1}(a_j)|: pass derivative_scale = S_n (or 1) and
    cumulant_shift = 0 (or 1). value_scale (N,) bounds the rounding error of one evaluation
    of f in units of eps (see loss_rounding_scale, softmax_rounding_scale). The complex step
    has no cancellation: rounding ≈ eps·|f'|.

    The Taylor term c·h^p·|f^(p+1)| means nothing once h is not small (h = eps^(1/5)·|z| is
    74 at |z| = 1e5): the truncation error is also capped by what a stencil can return at all,
    (Σ|w_k·o_k| + 1)·max|f'|, with max|f'| = S_n for the loss (|a_j·S − q_j| ≤ S) and 1/4 for
    a probability (|a_i(δ_ij − a_j)| ≤ 1/4).
    """
    eps = float(np.finfo(probabilities.dtype).eps)
    h = steps.h
    scale = derivative_scale[:, None]
    if method is Method.COMPLEX_STEP:
        order, coefficient, weight_sum = 2, 1 / 6, 0.0
    else:
        stencil = STENCILS[method]
        order, coefficient = stencil.order, stencil.truncation_coefficient
        weight_sum = sum(abs(w) for w in stencil.weights)
    derivative = scale * np.abs(bernoulli_cumulant(probabilities, order + 1 + cumulant_shift))
    with np.errstate(over="ignore", invalid="ignore"):  # a huge step: no finite estimate
        truncation = coefficient * h.astype(np.float64) ** order * derivative
    truncation = np.maximum(np.fmin(truncation, LARGEST), -LARGEST)  # NaN, ±inf: ±LARGEST
    if method is not Method.COMPLEX_STEP:
        stencil = STENCILS[method]
        reach = sum(abs(w * o) for w, o in zip(stencil.weights, stencil.offsets, strict=True))
        largest_slope = scale * (0.25 if cumulant_shift else 1.0)
        truncation = np.minimum(truncation, (reach + 1) * largest_slope)
    if method is Method.COMPLEX_STEP:
        rounding = eps * np.broadcast_to(scale, h.shape)
    else:
        rounding = weight_sum * eps * value_scale[:, None] / h
    return RowErrors(np.max(truncation, axis=1), np.minimum(np.max(rounding, axis=1), LARGEST))


def _shift_magnitudes(logits: FloatArray) -> FloatArray:
    """|z − max z| per entry, 0 on −inf entries (their exponential is exactly 0)."""
    z = np.asarray(logits, np.float64)
    finite = np.isfinite(z)
    top = np.max(np.where(finite, z, -np.inf), axis=1, keepdims=True)
    magnitudes: FloatArray = np.where(finite, np.abs(z - np.where(finite, top, 0)), 0.0)
    return magnitudes


def softmax_rounding_scale(logits: FloatArray, probabilities: FloatArray) -> FloatArray:
    """Rounding error of one plain_softmax evaluation, largest in each row, in units of eps.

    fl(z_i − m) is off by eps·|s_i|/2, which moves exp(s_i) by that much relatively; with the
    exp, the sum and the division: |δa_i| ≲ eps·a_i·(2 + |s_i| + Σ_c a_c·|s_c|).
    """
    s = _shift_magnitudes(logits)
    a = np.asarray(probabilities, np.float64)
    spread = np.sum(a * s, axis=1, keepdims=True)
    scale: FloatArray = np.max(a * (2 + s + spread), axis=1)
    return scale


def loss_rounding_scale(logits: FloatArray, q: FloatArray, probabilities: FloatArray) -> FloatArray:
    """Rounding error of one plain_losses evaluation per row, in units of eps.

    loss = −Σ_c q_c·(s_c − L), L = log Σ exp(s): each fl(s_c) is off by eps·|s_c|/2, which
    reaches the loss directly (weight q_c) and through L (weight S·a_c); L, its sum and the
    final sum add a few eps·S·(1 + L):  S·(2 + L) + Σ_c (q_c + S·a_c)·|s_c|.
    """
    s = _shift_magnitudes(logits)
    a = np.asarray(probabilities, np.float64)
    weights = np.asarray(q, np.float64)
    total = weights.sum(axis=1)
    log_sum = -np.log(a.max(axis=1))
    scale: FloatArray = total * (2 + log_sum) + np.sum((weights + total[:, None] * a) * s, axis=1)
    return scale
