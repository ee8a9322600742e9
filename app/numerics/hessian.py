"""The Hessian of the cross-entropy loss in the logits, Hessian-vector products, a numeric Hessian.

With effective targets q (cross_entropy.py), S_n = Σ_c q_nc, the reduction's divisor D and
a_n = softmax(z_n), the reduced loss L = Σ_n loss_n / D has the gradient g_n = (S_n a_n − q_n) / D.
Sample n's loss depends on z_n only, so the Hessian over all N·C logits is block-diagonal across
samples; block n is

    H_n = ∂²L / ∂z_n ∂z_n = s_n·(diag a_n − a_n a_nᵀ),     s_n = S_n / D

Derivation from the softmax Jacobian J = ∂a/∂z = diag a − a aᵀ (softmax.py):

    ∂g_i/∂z_j = (S/D)·∂a_i/∂z_j − ∂q_i/∂z_j / D       (S and q do not depend on z)
              = (S/D)·a_i(δ_ij − a_j)                     (the Jacobian, symmetric)
    H_n       = s_n·J_n

For `reduction: none` each loss_n has its own Hessian, the same formula with D = 1.

Definiteness: vᵀJv = Σ_i a_i v_i² − (Σ_i a_i v_i)² is the variance of v under the distribution
a, so J is positive semi-definite, J·1 = a − a·Σa = 0, and vᵀJv = 0 exactly when v is constant
on the classes with a_i > 0. Hence, with non-negative targets (S > 0: every option of
PyTorch's `F.cross_entropy` with non-negative weights), H_n is positive semi-definite with the
zero eigenvalue along (1, …, 1) and rank C − 1 when no class is masked. It is not so when
S_n < 0 (negative class weights: H_n is negative semi-definite), when S_n = 0 (targets summing
to 0, ignored samples: H_n = 0), and with masked classes (a_j = 0 for z_j = −inf: row and column
j are 0, so every e_j is a null vector too and the rank is the number of unmasked classes − 1).
In a saturated row (a_k → 1) all other eigenvalues are of the order of 1 − a_k: positive but
far below float64's resolution of the largest entry, so the computed block is numerically of
lower rank. The Hessian depends on q only through S: the individual targets do not matter.
"""

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.numerics import double_double as dd
from app.numerics.cross_entropy import ExactTargets
from app.numerics.finite_diff import (
    ErrorEstimate,
    Method,
    RowErrors,
    SoftmaxColumns,
    Steps,
    choose_steps,
    derivative_by_column,
    estimate_error,
    softmax_rounding_scale,
)
from app.numerics.softmax import FloatArray, Softmax, softmax, softmax_jacobian

GRADGRADCHECK_ATOL = 1e-5
"""torch.autograd.gradgradcheck's default absolute tolerance."""
GRADGRADCHECK_RTOL = 1e-3
"""torch.autograd.gradgradcheck's default relative tolerance."""

SCALE_POWER = 511
"""Rows with probabilities below float64's normal range are recomputed as 2^511·a (see
`loss_hessian`): 2^511·a_i stays normal down to a_i = 2^-1074, and (2^511)² < 2^1023."""
HVP_SCALING_THRESHOLD = 2.0**-511
"""hessian_vector_product scales the rows with a probability below this (see its Notes)."""
_SMALLEST_NORMAL = float(np.finfo(np.float64).tiny)
_LN2 = dd.DD(np.array(0.6931471805599453), np.array(2.3190468138462996e-17))
"""ln 2 as a double-double (hi = fl(ln 2), lo = fl(ln 2 − hi))."""


def target_scale(
    q: FloatArray,
    divisor: float | FloatArray = 1.0,
    *,
    exact_q: ExactTargets | None = None,
) -> FloatArray:
    """s_n = Σ_c q_nc / D_n, shape (N,), correctly rounded up to a few units in 2^-106.

    Parameters
    ----------
    q : (N, C) array
        Effective targets (cross_entropy.Targets.q).
    divisor : float or (N,) array
        D: the reduction's divisor (Targets.divisor: 1 for `sum` and `none`), or one per row
        when several problems are stacked.
    exact_q : callable, optional
        Targets.exact_q: q of given rows as double-double, when q's float rounding is not
        exact (label smoothing, weights). Default: q is taken as exact.

    Returns
    -------
    (N,) array in q's dtype.

    Notes
    -----
    The sum is taken in double-double from the exact targets and divided in double-double, so
    that s_n carries one rounding (plus D's own: Targets.divisor is the float64 rounding of the
    summed weights). A plain float sum of C non-negative terms would be within log2(C)·eps
    already; this makes s exact to the last bit, which the 1e-13 guarantee of the Hessian does
    not need but its "exact value rounded to float64" aim does. Where double-double overflows
    (|q| or D above ~1e300) the plain float quotient is used.
    """
    targets = np.asarray(q)
    num_samples = targets.shape[0]
    plain = np.asarray(targets, np.float64)
    divisors = np.broadcast_to(np.asarray(divisor, np.float64), (num_samples,)).copy()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if exact_q is not None and targets.dtype == np.float64:
            exact = exact_q(np.arange(num_samples))
        else:
            exact = dd.DD(plain, np.zeros_like(plain))
        total = dd.sum_rows(exact)
        quotient = dd.divide(total, dd.DD(divisors, np.zeros_like(divisors)))
        scale = quotient.hi + quotient.lo
        fallback = plain.sum(axis=1) / divisors
    scale = np.where(np.isfinite(scale) | ~np.isfinite(fallback), scale, fallback)
    scale = np.where(total.hi == 0, 0.0, scale)
    result: FloatArray = scale.astype(targets.dtype)
    return result


def _tiny_rows(sm: Softmax, scale: FloatArray, threshold: float) -> NDArray[np.intp]:
    """float64 rows with a nonzero s and a finite logit whose probability is below `threshold`
    (2^-1022: subnormal or underflowed to 0, with an absolute, not relative, error)."""
    a = sm.probabilities
    if a.dtype != np.float64 or sm.logits is None or a.shape[0] == 0:
        return np.empty(0, np.intp)
    tiny = (a < threshold) & np.isfinite(sm.logits)
    rows: NDArray[np.intp] = np.flatnonzero(tiny.any(axis=1) & (scale != 0))
    return rows


def _scaled_probabilities(sm: Softmax, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
    """(2^P·a, 2^P·(1 − a)) of `rows` with P = SCALE_POWER, every entry to a few ulps.

    With x = z − z_k carried exactly as a double-double (TwoSum) and e = exp(x) computed in
    double-double: entries with x < −P·ln 2 as exp(x + P·ln 2), the others as 2^P·exp(x)
    (exact scaling of a normal number), so that exp's argument stays ≤ 0 and no result is
    subnormal. 2^P·a = 2^P·e / (1 + t), t = Σ_{i≠k} e_i; at the argmax 2^P·(1 − a_k) =
    2^P·t / (1 + t), elsewhere 2^P − 2^P·a_i (a_i ≤ 1/2: no cancellation).
    """
    assert sm.logits is not None
    z = np.asarray(sm.logits[rows], np.float64)
    k = sm.argmax[rows]
    at_argmax = (np.arange(rows.size), k)
    finite = np.isfinite(z)
    power = SCALE_POWER
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = dd.two_sum(z, -z[at_argmax][:, None])
        low = finite & (shifted.hi < -power * _LN2.hi)
        lift = dd.multiply(
            dd.DD(np.full(z.shape, float(power)), np.zeros(z.shape)),
            dd.DD(np.full(z.shape, _LN2.hi), np.full(z.shape, _LN2.lo)),
        )
        argument = dd.add(shifted, dd.DD(np.where(low, lift.hi, 0.0), np.where(low, lift.lo, 0.0)))
        hi = np.where(finite, argument.hi, -np.inf)
        lo = np.where(finite, argument.lo, 0.0)
        exp = dd.exp(dd.DD(hi, lo))
    scaled_exp = np.ldexp(exp.hi + exp.lo, np.where(low, 0, power))
    scaled_exp[at_argmax] = 0.0
    scaled_tail = scaled_exp.sum(axis=1)
    denominator = (1 + np.ldexp(scaled_tail, -power))[:, None]
    scaled_exp[at_argmax] = np.ldexp(1.0, power)
    probabilities: FloatArray = scaled_exp / denominator
    complement: FloatArray = np.ldexp(1.0, power) - probabilities
    complement[at_argmax] = scaled_tail / denominator[:, 0]
    return probabilities, complement


def loss_hessian(
    sm: Softmax,
    q: FloatArray,
    *,
    divisor: float | FloatArray = 1.0,
    exact_q: ExactTargets | None = None,
) -> FloatArray:
    """Block n of the Hessian of the reduced loss: H_n = (Σ_c q_nc / D)·(diag a_n − a_n a_nᵀ).

    Parameters
    ----------
    sm : Softmax
        softmax(z) of the logits (N, C) (its `logits` are used for saturated rows).
    q : (N, C) array
        Effective targets.
    divisor : float or (N,) array
        The reduction's D (Targets.divisor; 1 for `sum` and for `none`, whose block n is then
        the Hessian of loss_n), or one per row for stacked problems.
    exact_q : callable, optional
        Targets.exact_q, for the exact Σq (see `target_scale`).

    Returns
    -------
    (N, C, C) array
        H[n, i, j] = ∂²L / ∂z_ni ∂z_nj = s_n·a_ni(δ_ij − a_nj); exactly symmetric. The
        Hessian over all logits is block-diagonal: ∂²L / ∂z_ni ∂z_mj = 0 for n ≠ m.

    Notes
    -----
    Derivation (module docstring): g = (S·a − q)/D, q does not depend on z, so
    ∂g_i/∂z_j = (S/D)·∂a_i/∂z_j = (S/D)·J_ij: H_n = s_n·J_n with J = softmax_jacobian.

    Accuracy: J's entries are single products of probabilities accurate to an ulp or two,
    with 1 − a_k taken from `sm.complement` (no cancellation in saturated rows); s_n is
    correctly rounded (`target_scale`), and H = s·J adds one rounding: each entry is within a
    few ulps of itself, so each block within ~1e-15 of its largest entry. One thing breaks
    this: probabilities below 2^-1022 (saturated rows with gaps above ~708) are subnormal or
    0, with an absolute error of up to 2^-1075, which s > 1 would lift above the block's own
    resolution. The rows (float64) with such a probability are therefore recomputed from
    2^P·a (P = SCALE_POWER, `_scaled_probabilities`, exact in double-double exponentials):
    H = 2^(E−2P)·(f·(2^P·a_i)(2^P·(δ_ij − a_j))) with s = f·2^E, so that every product is
    rounded in the normal range and only the final exact scaling by 2^(E−2P) can round, once,
    at the output's own magnitude. The products a_i·a_j are formed in one order for (i, j)
    and (j, i), so the block is exactly symmetric on both paths.

    Definiteness (derivation in the module docstring): vᵀJv is the variance of v under a, so
    with S_n ≥ 0 (non-negative targets) H_n is positive semi-definite, H_n·(1, …, 1) = 0, and
    its rank is C − 1 without masks. S_n < 0 (negative weights) makes it negative
    semi-definite, S_n = 0 (targets summing to 0, ignored samples) makes it 0, and each masked
    class (z_j = −inf) adds the null vector e_j.

    Cost: one C×C block per sample, as softmax_jacobian, plus one multiplication.
    """
    scale = target_scale(q, divisor, exact_q=exact_q).astype(sm.probabilities.dtype)
    hessian = softmax_jacobian(sm)
    np.multiply(hessian, scale[:, None, None], out=hessian)
    rows = _tiny_rows(sm, scale, _SMALLEST_NORMAL)
    if rows.size:
        hessian[rows] = _scaled_hessian(sm, rows, scale[rows])
    return hessian


def _scaled_hessian(sm: Softmax, rows: NDArray[np.intp], scale: FloatArray) -> FloatArray:
    """loss_hessian's blocks of `rows`, from 2^P·a (see loss_hessian, Notes)."""
    probabilities, complement = _scaled_probabilities(sm, rows)
    fraction, exponent = np.frexp(scale)
    block = np.multiply(probabilities[:, :, None], probabilities[:, None, :])
    np.negative(block, out=block)
    diagonal = np.arange(probabilities.shape[1])
    block[:, diagonal, diagonal] = probabilities * complement
    block *= fraction[:, None, None]
    with np.errstate(under="ignore"):
        scaled: FloatArray = np.ldexp(block, (exponent - 2 * SCALE_POWER)[:, None, None])
    return scaled


def hessian_vector_product(
    sm: Softmax,
    q: FloatArray,
    vector: FloatArray,
    *,
    divisor: float | FloatArray = 1.0,
    exact_q: ExactTargets | None = None,
) -> FloatArray:
    """H_n v_n = s_n·a_n ⊙ (v_n − ⟨a_n, v_n⟩) for every sample, without forming H: O(N·C).

    Parameters
    ----------
    sm : Softmax
        softmax(z) of the logits (N, C).
    q : (N, C) array
        Effective targets.
    vector : (N, C) array
        One direction v_n per sample (finite).
    divisor, exact_q
        As in `loss_hessian`.

    Returns
    -------
    (N, C) array
        Row n is H_n v_n = s_n·(a ⊙ v − a·⟨a, v⟩), s_n = Σ_c q_nc / D.

    Notes
    -----
    Formula: (H v)_i = s·Σ_j a_i(δ_ij − a_j) v_j = s·a_i·(v_i − Σ_j a_j v_j).

    Numerics. v − ⟨a, v⟩ cancels when v is nearly constant: ⟨a, v⟩ = c·Σa + …, and the
    computed Σ_j a_j is 1 only to C·eps, so a plain evaluation leaves c·C·eps where the exact
    value is tiny (and nonzero where H·1 = 0 exactly). Since J·1 = 0, v can be shifted by any
    constant; it is shifted by its value at the argmax k: w = v − v_k (exact for nearly constant
    v, by Sterbenz's lemma), so w_k = 0 and the large a_k never multiplies anything in
    μ = ⟨a, w⟩ = Σ_{j≠k} a_j w_j. Then (H v)_i = s·a_i·(w_i − μ) (−s·a_k·μ at the argmax).
    A constant v gives exactly 0. The remaining error is that of μ:
    the rounding of the probabilities and of the (pairwise) sum, ≲ (2 + log2 C)·eps·Σ_j a_j|w_j|,
    which is of the order of eps relative to the row's largest entry unless w's large entries
    sit on tiny probabilities and cancel in μ (worst case C·eps; typically √C·eps).

    Scaling: nothing overflows or underflows on the way, so every entry is rounded a few times
    in the normal range and at most once more at its own final magnitude. v_n is scaled by a
    power of two to a largest magnitude in [1/2, 1), and so is w after the shift; rows with a
    probability below 2^-511 (float64: saturated by more than ~354) use 2^P·a (P = 511,
    `_scaled_probabilities`, exact to a few ulps even where a itself is subnormal or 0), so
    that every a_j w_j of μ is a normal number unless |w_j| < 2^-459 (a negligible term);
    2^P·(w − μ) is formed unscaled; and each output is the product of the mantissas of s, a_i
    and 2^P·(w_i − μ) (in [1/8, 1)) put back to its exponent by one ldexp, the only step that
    can round at a subnormal output's own spacing.
    """
    a = sm.probabilities
    dtype = a.dtype
    num_samples, num_classes = a.shape
    scale = target_scale(q, divisor, exact_q=exact_q).astype(dtype)
    v = np.asarray(vector, dtype)
    if v.shape != a.shape:
        raise ValueError(f"vector has shape {v.shape}, expected {a.shape}")
    if num_samples == 0 or num_classes == 0:
        return np.zeros_like(a)
    row_index = np.arange(num_samples)
    k = sm.argmax
    _, vector_exponent = np.frexp(np.max(np.abs(v), axis=1))
    w = np.ldexp(v, -vector_exponent[:, None])
    w -= w[row_index, k][:, None]
    _, spread_exponent = np.frexp(np.max(np.abs(w), axis=1))
    w = np.ldexp(w, -spread_exponent[:, None])  # max |w| in [1/2, 1): exact

    power = np.zeros(num_samples, np.int64)
    probabilities = a
    rows = _tiny_rows(sm, scale, HVP_SCALING_THRESHOLD)
    if rows.size:
        probabilities = a.copy()
        probabilities[rows] = _scaled_probabilities(sm, rows)[0]
        power[rows] = SCALE_POWER
    with np.errstate(under="ignore", over="ignore"):
        # 2^P·μ (masked classes and the argmax, w_k = 0, add 0)
        scaled_mean = np.multiply(probabilities, w).sum(axis=1)
        deviation = np.ldexp(w, power[:, None]) - scaled_mean[:, None]  # 2^P·(w − μ)
        fraction, exponent = np.frexp(scale)
        a_fraction, a_exponent = np.frexp(probabilities)
        d_fraction, d_exponent = np.frexp(deviation)
        mantissa = (a_fraction * fraction[:, None]) * d_fraction  # in [1/8, 1): no underflow
        shift = a_exponent + d_exponent
        shift += (exponent + vector_exponent + spread_exponent - 2 * power)[:, None]
        result: FloatArray = np.ldexp(mantissa, shift).astype(dtype, copy=False)
    return result


# ---------------------------------------------------------------- the numeric Hessian


class GradientColumns:
    """The per-sample gradient S_n·a′_n − q_n with one class column replaced, for
    `finite_diff.derivative_by_column`: its derivative by column j is row j of H_n (times D).

    a′ comes from `finite_diff.SoftmaxColumns` (a plain evaluation of softmax, independent of
    softmax.py's cancellation-free path), so real and complex values both work and the
    complex step applies. Output (P, W, N, C).
    """

    def __init__(self, logits: FloatArray, q: FloatArray) -> None:
        self.softmax = SoftmaxColumns(logits)
        self.q = np.asarray(q)
        self.target_total = self.q.sum(axis=1)[:, None]
        self.outputs_per_sample = int(np.shape(logits)[1])

    def __call__(
        self, columns: NDArray[np.intp], values: NDArray[np.generic]
    ) -> NDArray[np.generic]:
        probabilities = self.softmax(columns, values)
        return np.asarray(probabilities * self.target_total - self.q)


@dataclass(frozen=True)
class NumericHessian:
    """A numeric Hessian of a batch, its steps and its estimated error by row — the parts of a
    check (gradcheck's `_NumericRows`: values, steps, errors)."""

    values: FloatArray
    """(N, C, C): values[n, i, j] ≈ ∂g_ni/∂z_nj by finite differences of the gradient g."""
    steps: Steps
    """The step of every logit (N, C), as for the numeric gradient."""
    errors: RowErrors
    """Estimated truncation and rounding error, largest in each sample's block."""

    def estimate(self) -> ErrorEstimate:
        """The error estimate of the whole batch (largest over its rows)."""
        return self.errors.over_blocks(np.zeros(1, np.intp))[0]


def numeric_hessian(
    logits: FloatArray,
    q: FloatArray,
    *,
    divisor: float | FloatArray = 1.0,
    method: Method = Method.CENTRAL,
    step: float | None = None,
    sm: Softmax | None = None,
) -> NumericHessian:
    """Finite differences (or the complex step) of the analytic gradient, by class column.

    Parameters
    ----------
    logits : (N, C) array
        z; −inf entries are masks (their rows and columns come out 0).
    q : (N, C) array
        Effective targets.
    divisor : float or (N,) array
        The reduction's D (1 for `sum` and `none`), or one per row.
    method : finite_diff.Method
        central, forward, five_point or complex_step, as for the numeric gradient.
    step : float, optional
        A fixed step; default: finite_diff.choose_steps's rule (∛eps·max(1, |z|) for central,
        1e-20 for the complex step, …), the same as the numeric gradient's.
    sm : Softmax, optional
        softmax(logits), if already computed (for the error estimate).

    Returns
    -------
    NumericHessian
        values (N, C, C), steps, errors. Check it with
        `compare.compare(loss_hessian(...), values, atol=GRADGRADCHECK_ATOL,
        rtol=GRADGRADCHECK_RTOL)` (gradgradcheck's defaults) and report `estimate()`.

    Notes
    -----
    g_n(z) = (S_n·softmax(z_n) − q_n) / D is evaluated plainly (GradientColumns) with column j
    of the whole batch moved, so each stencil point yields ∂g_n/∂z_nj for every n at once:
    C·(stencil points) evaluations of an (N, C) gradient, O(N·C²) in all, like the numeric
    Jacobian. Error estimate (finite_diff.estimate_error): g_n's derivatives of order k along
    z_j are s_n times those of a probability, bounded by |κ_{k+1}(a_j)| (cumulant_shift 1,
    derivative_scale |s_n|); one evaluation of g rounds by about
    eps·(S·softmax_rounding_scale + max_c (S·a_c + |q_c|)) / D.
    """
    z = np.asarray(logits)
    targets = np.asarray(q, z.dtype)
    if sm is None:
        sm = softmax(z)
    divisors = np.broadcast_to(np.asarray(divisor, np.float64), (z.shape[0],))
    steps = choose_steps(z, method, step)
    values = derivative_by_column(GradientColumns(z, targets), z, steps, method)
    values *= (1 / divisors).astype(z.dtype)[:, None, None]
    total = np.asarray(targets, np.float64).sum(axis=1)
    a = np.asarray(sm.probabilities, np.float64)
    largest_term = np.max(np.abs(total)[:, None] * a + np.abs(targets), axis=1, initial=0.0)
    value_scale = (
        np.abs(total) * softmax_rounding_scale(z, sm.probabilities) + largest_term
    ) / divisors
    errors = estimate_error(
        method,
        steps,
        sm.probabilities,
        derivative_scale=np.abs(total) / divisors,
        value_scale=value_scale,
        cumulant_shift=1,
    )
    return NumericHessian(values, steps, errors)
