"""The Hessian of the cross-entropy loss in the logits, Hessian-vector products, a numeric Hessian.

With effective targets q (cross_entropy.py), S_q = Σ_c q_nc (the targets' sum of row n), the
reduction's divisor D and a_n = softmax(z_n), the reduced loss L = Σ_n loss_n / D has the gradient
g_n = (S_q·a_n − q_n) / D.
Sample n's loss depends on z_n only, so the Hessian over all N·C logits is block-diagonal across
samples; block n is

    H_n = ∂²L / ∂z_n ∂z_n = t_n·(diag a_n − a_n a_nᵀ),     t_n = S_q / D

Derivation from the softmax Jacobian J = ∂a/∂z = diag a − a aᵀ (softmax.py):

    ∂g_i/∂z_j = (S_q/D)·∂a_i/∂z_j − ∂q_i/∂z_j / D     (S_q and q do not depend on z)
              = (S_q/D)·a_i(δ_ij − a_j)                   (the Jacobian, symmetric)
    H_n       = t_n·J_n

For `reduction: none` each loss_n has its own Hessian, the same formula with D = 1.

Definiteness: vᵀJv = Σ_i a_i v_i² − (Σ_i a_i v_i)² is the variance of v under the distribution
a, so J is positive semi-definite, J·1 = a − a·Σa = 0, and vᵀJv = 0 exactly when v is constant
on the classes with a_i > 0. Hence, with non-negative targets (S_q > 0: every option of
PyTorch's `F.cross_entropy` with non-negative weights), H_n is positive semi-definite with the
zero eigenvalue along (1, …, 1) and rank C − 1 when no class is masked. It is not so when
S_q < 0 (negative class weights: H_n is negative semi-definite), when S_q = 0 (targets summing
to 0, ignored samples: H_n = 0), and with masked classes (a_j = 0 for z_j = −inf: row and column
j are 0, so every e_j is a null vector too and the rank is the number of unmasked classes − 1).
In a saturated row (a_k → 1) all other eigenvalues are of the order of 1 − a_k: positive but
far below float64's resolution of the largest entry, so the computed block is numerically of
lower rank. The Hessian depends on q only through S_q: the individual targets do not matter.

z-loss and soft-capping (cross_entropy.py). With a z-loss the reduced loss gains Σ_n ω_n·ℓ_n²,
ω_n = λ_n / D_z (λ_n = 0 on ignored samples, D_z the number of non-ignored samples for `mean`),
ℓ_n = log Σ_c exp y_nc; with a softcap c the logits are y = c·tanh(z / c) and every derivative
is by the raw z. By y (∂ℓ/∂y = a, ∂a/∂y = J):

    g_y = (S_q·a − q)/D + 2ω·ℓ·a
    H_y = (S_q/D)·J + 2ω·(a aᵀ + ℓ·J)        (∂(2ωℓ·a)/∂y = 2ω·(a·∂ℓ/∂y + ℓ·∂a/∂y))

and by z, with s = dy/dz = 1 − tanh²(z/c) and s′ = d²y/dz² = −(2/c)·tanh(z/c)·s, the chain
rule ∂L/∂z_i = g_y,i·s_i differentiated once more gives

    H_z = diag(s)·H_y·diag(s) + diag(g_y ⊙ s′)

(the second term because s_i depends on z_i). Neither option keeps the structure above: the
z-loss breaks the invariance to a shift of the row, 1ᵀH_y1 = 2ω > 0, so (1, …, 1) is no longer a
null vector. Writing H_y = σ·J + 2ω·a aᵀ with σ = S_q/D + 2ωℓ, vᵀH_y v = σ·Var_a(v) + 2ω·⟨a, v⟩²:
positive semi-definite when σ ≥ 0, positive definite on the unmasked classes when σ > 0 and
ω > 0, and indefinite when σ < 0 (ℓ < 0 — every logit well below 0 — with 2ω|ℓ| > S_q/D, or
negative weights). Under a softcap diag(s)·H_y·diag(s) keeps H_y's inertia where s > 0
(Sylvester), but the diagonal g_y ⊙ s′ has either sign (g_y,i < 0 on target classes, s′ has the
sign of −z), so H_z is indefinite in general, even for plain cross-entropy with non-negative
targets.
"""

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.numerics import double_double as dd
from app.numerics.cross_entropy import (
    ExactTargets,
    Targets,
    log_sum_exp,
    per_sample_gradient,
    softcap_logits,
    softcap_slope,
)
from app.numerics.deadline import NEVER, Deadline
from app.numerics.finite_diff import (
    STENCILS,
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
    """t_n = Σ_c q_nc / D_n, shape (N,), correctly rounded up to a few units in 2^-106.

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
    that t_n carries one rounding (plus D's own: Targets.divisor is the float64 rounding of the
    summed weights). A plain float sum of C non-negative terms would be within log2(C)·eps
    already; this makes t exact to the last bit, which the 1e-13 guarantee of the Hessian does
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


@dataclass(frozen=True)
class LogitTerms:
    """The z-loss and the soft-capping of a problem, as its second derivatives need them.

    Build it with `logit_terms`; None (or both parts None) means plain cross-entropy."""

    z_weights: FloatArray | None = None
    """ω_n = λ_n / D_z,n, the weight of ℓ_n² in the reduced loss, shape (N,) (0 on ignored
    samples); None without a z-loss."""
    softcap: float | None = None
    """c > 0: the Softmax passed with these terms is that of y = c·tanh(z/c); None: y = z."""
    logits: FloatArray | None = None
    """The raw logits z (N, C), needed with `softcap` (s and s′ are taken at z)."""

    @property
    def plain(self) -> bool:
        """Neither a z-loss nor a softcap: the plain cross-entropy formulas apply."""
        return self.z_weights is None and self.softcap is None


def logit_terms(
    targets: Targets,
    logits: FloatArray,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    z_divisors: FloatArray | None = None,
) -> LogitTerms | None:
    """The `LogitTerms` of a problem (None without z-loss and softcap).

    Parameters
    ----------
    targets : Targets
        The problem's targets (their `active` samples carry the z-loss, `z_divisor` is D_z).
    logits : (N, C) array
        The raw logits z.
    z_loss : float
        λ ≥ 0.
    softcap : float, optional
        c > 0.
    z_divisors : (N,) array, optional
        D_z per row (stacked problems); default `targets.z_divisor`.
    """
    if not z_loss and softcap is None:
        return None
    weights = None
    if z_loss:
        divisors = targets.z_divisor if z_divisors is None else np.asarray(z_divisors)
        weights = (targets.z_weights(z_loss) / divisors).astype(np.asarray(logits).dtype)
    return LogitTerms(weights, softcap, np.asarray(logits))


def _softcap_derivatives(logits: FloatArray, softcap: float) -> tuple[FloatArray, FloatArray]:
    """(s, s′) = (dy/dz, d²y/dz²) of y = c·tanh(z/c): s = 1 − tanh²(z/c) without cancellation
    (`cross_entropy.softcap_slope`), s′ = −(2/c)·tanh(z/c)·s; both 0 on −inf entries."""
    z = np.asarray(logits)
    slope = softcap_slope(z, softcap)
    curvature: FloatArray = (-2 / softcap) * np.tanh(z / softcap) * slope
    return slope, curvature.astype(z.dtype, copy=False)


def _capped_gradient(
    sm: Softmax,
    q: FloatArray,
    divisor: float | FloatArray,
    exact_q: ExactTargets | None,
    z_weights: FloatArray | None,
    lse: FloatArray | None,
) -> FloatArray:
    """g_y = (S_q·a − q)/D + 2ω·ℓ·a: the gradient of the reduced loss by the capped logits y."""
    a = sm.probabilities
    divisors = np.broadcast_to(np.asarray(divisor, np.float64), (a.shape[0],))
    gradient = per_sample_gradient(sm, q, exact_q=exact_q)
    gradient *= (1 / divisors).astype(a.dtype)[:, None]
    if z_weights is not None and lse is not None:
        gradient += (2 * z_weights * lse).astype(a.dtype)[:, None] * a
    return gradient


def _tiny_rows(sm: Softmax, scale: FloatArray, threshold: float) -> NDArray[np.intp]:
    """float64 rows with a nonzero t and a finite logit whose probability is below `threshold`
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
    terms: LogitTerms | None = None,
) -> FloatArray:
    """Block n of the Hessian of the reduced loss: H_n = (Σ_c q_nc / D)·(diag a_n − a_n a_nᵀ),
    plus the z-loss's and the soft-capping's second derivatives when `terms` has them.

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
    terms : LogitTerms, optional
        z-loss weights ω_n = λ_n / D_z and softcap c (`logit_terms`); `sm` is then the
        softmax of the capped logits y and the Hessian is by the raw z.

    Returns
    -------
    (N, C, C) array
        H[n, i, j] = ∂²L / ∂z_ni ∂z_nj = t_n·a_ni(δ_ij − a_nj); exactly symmetric. The
        Hessian over all logits is block-diagonal: ∂²L / ∂z_ni ∂z_mj = 0 for n ≠ m. With
        `terms` (module docstring for the derivation):

            H_y = (S_q/D)·J + 2ω·(a aᵀ + ℓ·J),   ℓ = log Σ_c exp y_c
            H_z = diag(s)·H_y·diag(s) + diag(g_y ⊙ s′),   s = dy/dz, s′ = d²y/dz²

        with g_y = (S_q·a − q)/D + 2ω·ℓ·a the gradient by y; still exactly symmetric (the
        factor s_i·s_j is formed once for (i, j) and (j, i)).

    Notes
    -----
    Derivation (module docstring): g = (S_q·a − q)/D, q does not depend on z, so
    ∂g_i/∂z_j = (S_q/D)·∂a_i/∂z_j = (S_q/D)·J_ij: H_n = t_n·J_n with J = softmax_jacobian.

    Accuracy: J's entries are single products of probabilities accurate to an ulp or two,
    with 1 − a_k taken from `sm.complement` (no cancellation in saturated rows); t_n is
    correctly rounded (`target_scale`), and H = t·J adds one rounding: each entry is within a
    few ulps of itself, so each block within ~1e-15 of its largest entry. One thing breaks
    this: probabilities below 2^-1022 (saturated rows with gaps above ~708) are subnormal or
    0, with an absolute error of up to 2^-1075, which t > 1 would lift above the block's own
    resolution. The rows (float64) with such a probability are therefore recomputed from
    2^P·a (P = SCALE_POWER, `_scaled_probabilities`, exact in double-double exponentials):
    H = 2^(p−2P)·(f·(2^P·a_i)(2^P·(δ_ij − a_j))) with t = f·2^p, so that every product is
    rounded in the normal range and only the final exact scaling by 2^(p−2P) can round, once,
    at the output's own magnitude. The products a_i·a_j are formed in one order for (i, j)
    and (j, i), so the block is exactly symmetric on both paths.

    Definiteness (derivation in the module docstring): vᵀJv is the variance of v under a, so
    with S_q ≥ 0 (non-negative targets) H_n is positive semi-definite, H_n·(1, …, 1) = 0, and
    its rank is C − 1 without masks. S_q < 0 (negative weights) makes it negative
    semi-definite, S_q = 0 (targets summing to 0, ignored samples) makes it 0, and each masked
    class (z_j = −inf) adds the null vector e_j.

    Definiteness with a z-loss or a softcap: see the module docstring (the ones vector is no
    longer a null vector; H_y is PSD when S_q/D + 2ωℓ ≥ 0; H_z is indefinite in general).

    Accuracy with `terms`: the cross-entropy part as above, the z-loss part 2ω·(a aᵀ + ℓ·J)
    from the same probabilities (each entry within a few ulps of itself, the sum of the two
    parts within a few ulps of the block's largest term), then one product by s_i·s_j and the
    diagonal g_y ⊙ s′ (s to a few ulps, `softcap_slope`): normwise ~1e-15 per block, except
    where the parts cancel against each other.

    Cost: one C×C block per sample, as softmax_jacobian, plus one multiplication; with a
    z-loss a second C×C block per sample is formed.

    References
    ----------
    .. [1] PyTorch, torch.autograd.gradgradcheck: the second-order check and its tolerances
       (GRADGRADCHECK_ATOL, GRADGRADCHECK_RTOL).
    """
    scale = target_scale(q, divisor, exact_q=exact_q).astype(sm.probabilities.dtype)
    hessian = softmax_jacobian(sm)
    np.multiply(hessian, scale[:, None, None], out=hessian)
    rows = _tiny_rows(sm, scale, _SMALLEST_NORMAL)
    if rows.size:
        hessian[rows] = _scaled_hessian(sm, rows, scale[rows])
    if terms is None or terms.plain:
        return hessian
    a = sm.probabilities
    dtype = a.dtype
    lse = None
    if terms.z_weights is not None:
        weights = np.asarray(terms.z_weights, dtype)
        lse = log_sum_exp(sm).astype(dtype, copy=False)
        z_part = softmax_jacobian(sm)
        z_part *= (2 * weights * lse)[:, None, None]
        hessian += z_part
        np.multiply(a[:, :, None], a[:, None, :], out=z_part)
        z_part *= (2 * weights)[:, None, None]
        hessian += z_part
    if terms.softcap is not None:
        assert terms.logits is not None, "a softcap needs the raw logits"
        slope, curvature = _softcap_derivatives(terms.logits, terms.softcap)
        hessian *= slope[:, :, None] * slope[:, None, :]
        gradient = _capped_gradient(sm, q, divisor, exact_q, terms.z_weights, lse)
        diagonal = np.arange(a.shape[1])
        hessian[:, diagonal, diagonal] += gradient * curvature
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
    terms: LogitTerms | None = None,
) -> FloatArray:
    """H_n v_n = t_n·a_n ⊙ (v_n − ⟨a_n, v_n⟩) for every sample, without forming H: O(N·C)
    (with the z-loss's and the soft-capping's terms when `terms` has them).

    Parameters
    ----------
    sm : Softmax
        softmax(z) of the logits (N, C).
    q : (N, C) array
        Effective targets.
    vector : (N, C) array
        One direction v_n per sample (finite).
    divisor, exact_q, terms
        As in `loss_hessian`.

    Returns
    -------
    (N, C) array
        Row n is H_n v_n = t_n·(a ⊙ v − a·⟨a, v⟩), t_n = Σ_c q_nc / D. With `terms`
        (u = s ⊙ v under a softcap, else u = v; s, s′, g_y as in `loss_hessian`):

            H_y u = (S_q/D)·J u + 2ω·(a·⟨a, u⟩ + ℓ·J u),   J u = a ⊙ (u − ⟨a, u⟩)
            H_z v = s ⊙ (H_y u) + (g_y ⊙ s′) ⊙ v

        each J u taken as below; still O(N·C), H never formed.

    Notes
    -----
    Formula: (H v)_i = t·Σ_j a_i(δ_ij − a_j) v_j = t·a_i·(v_i − Σ_j a_j v_j).

    Numerics. v − ⟨a, v⟩ cancels when v is nearly constant: ⟨a, v⟩ = c·Σa + …, and the
    computed Σ_j a_j is 1 only to C·eps, so a plain evaluation leaves c·C·eps where the exact
    value is tiny (and nonzero where H·1 = 0 exactly). Since J·1 = 0, v can be shifted by any
    constant; it is shifted by its value at the argmax k: v̂ = v − v_k (exact for nearly constant
    v, by Sterbenz's lemma), so v̂_k = 0 and the large a_k never multiplies anything in
    μ = ⟨a, v̂⟩ = Σ_{j≠k} a_j v̂_j. Then (H v)_i = t·a_i·(v̂_i − μ) (−t·a_k·μ at the argmax).
    A constant v gives exactly 0. The remaining error is that of μ:
    the rounding of the probabilities and of the (pairwise) sum, ≲ (2 + log2 C)·eps·Σ_j a_j|v̂_j|,
    which is of the order of eps relative to the row's largest entry unless v̂'s large entries
    sit on tiny probabilities and cancel in μ (worst case C·eps; typically √C·eps).

    Scaling: nothing overflows or underflows on the way, so every entry is rounded a few times
    in the normal range and at most once more at its own final magnitude. v_n is scaled by a
    power of two to a largest magnitude in [1/2, 1), and so is v̂ after the shift; rows with a
    probability below 2^-511 (float64: saturated by more than ~354) use 2^P·a (P = 511,
    `_scaled_probabilities`, exact to a few ulps even where a itself is subnormal or 0), so
    that every a_j v̂_j of μ is a normal number unless |v̂_j| < 2^-459 (a negligible term);
    2^P·(v̂ − μ) is formed unscaled; and each output is the product of the mantissas of t, a_i
    and 2^P·(v̂_i − μ) (in [1/8, 1)) put back to its exponent by one ldexp, the only step that
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
    if terms is None or terms.plain:
        return _jacobian_product(sm, scale, v)
    slope = curvature = None
    u = v
    if terms.softcap is not None:
        assert terms.logits is not None, "a softcap needs the raw logits"
        slope, curvature = _softcap_derivatives(terms.logits, terms.softcap)
        u = slope * v
    product = _jacobian_product(sm, scale, u)
    lse = None
    if terms.z_weights is not None:
        weights = np.asarray(terms.z_weights, dtype)
        lse = log_sum_exp(sm).astype(dtype, copy=False)
        product += _jacobian_product(sm, 2 * weights * lse, u)
        product += (2 * weights * np.sum(a * u, axis=1))[:, None] * a
    if slope is not None and curvature is not None:
        product *= slope
        gradient = _capped_gradient(sm, q, divisor, exact_q, terms.z_weights, lse)
        product += gradient * curvature * v
    return product


def _jacobian_product(sm: Softmax, scale: FloatArray, v: FloatArray) -> FloatArray:
    """scale_n·J_n v_n = scale_n·a_n ⊙ (v_n − ⟨a_n, v_n⟩) for every row (see
    `hessian_vector_product`, Notes, for the numerics); v finite, shaped as the probabilities."""
    a = sm.probabilities
    dtype = a.dtype
    num_samples = a.shape[0]
    scale = np.asarray(scale, dtype)
    row_index = np.arange(num_samples)
    k = sm.argmax
    _, vector_exponent = np.frexp(np.max(np.abs(v), axis=1))
    v_hat = np.ldexp(v, -vector_exponent[:, None])
    v_hat -= v_hat[row_index, k][:, None]
    _, spread_exponent = np.frexp(np.max(np.abs(v_hat), axis=1))
    v_hat = np.ldexp(v_hat, -spread_exponent[:, None])  # max |v_hat| in [1/2, 1): exact

    power = np.zeros(num_samples, np.int64)
    probabilities = a
    rows = _tiny_rows(sm, scale, HVP_SCALING_THRESHOLD)
    if rows.size:
        probabilities = a.copy()
        probabilities[rows] = _scaled_probabilities(sm, rows)[0]
        power[rows] = SCALE_POWER
    with np.errstate(under="ignore", over="ignore"):
        # 2^P·μ (masked classes and the argmax, v̂_k = 0, add 0)
        scaled_mean = np.multiply(probabilities, v_hat).sum(axis=1)
        deviation = np.ldexp(v_hat, power[:, None]) - scaled_mean[:, None]  # 2^P·(v̂ − μ)
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
    """D times the gradient of the reduced loss by the raw logits, row by row, with one class
    column replaced, for `finite_diff.derivative_by_column`: its derivative by column j is
    column j of H_n (times D). Output (P, W, N, C).

        D·g_z = (S_q·a′ − q_n + 2·λ̃_n·ℓ′·a′) ⊙ s(z′)      (λ̃_n = D·ω_n, s = dy/dz)

    a′ is a plain evaluation of the softmax of the perturbed (capped) row, as
    `finite_diff.SoftmaxColumns` evaluates it (independent of softmax.py's cancellation-free
    path), so that real and complex values both work and the complex step applies. With
    `z_weights` λ̃ the log-sum-exp of the perturbed row is ℓ′ = m + (d + log E′) (m the row's
    unperturbed maximum, d and E′ from the perturbed column), and ℓ′·a′ is formed as
    m·a′ + (d + log E′)·a′, so that the rounding of m + … (eps·|m|) does not enter the
    differences. With `softcap` c the moved column is capped without cancellation
    (`finite_diff.SoftmaxColumns.capped`) and its slope is 1/cosh²(x/c) (analytic in x, for
    the complex step); the other columns keep `softcap_slope`.
    """

    def __init__(
        self,
        logits: FloatArray,
        q: FloatArray,
        *,
        z_weights: FloatArray | None = None,
        softcap: float | None = None,
    ) -> None:
        self.softmax = SoftmaxColumns(logits, softcap=softcap)
        self.q = np.asarray(q)
        self.target_total = self.q.sum(axis=1)[:, None]
        self.outputs_per_sample = int(np.shape(logits)[1])
        self.z_weights = None if z_weights is None else np.asarray(z_weights)
        self.softcap = softcap
        self.slope = None if softcap is None else softcap_slope(np.asarray(logits), softcap)

    def __call__(
        self, columns: NDArray[np.intp], values: NDArray[np.generic]
    ) -> NDArray[np.generic]:
        if self.z_weights is None and self.softcap is None:
            probabilities = self.softmax(columns, values)
            return np.asarray(probabilities * self.target_total - self.q)
        _, lift, exp, total = self.softmax.capped.replaced(columns, values)
        rows = self.softmax.rows
        # exp(y_i − m′) for the unchanged classes (≤ 0: see SoftmaxColumns), then column j
        unchanged = np.exp(np.minimum(rows.below_maximum - lift[..., None], 0))
        probabilities = unchanged / total[..., None]
        for slot, column in enumerate(columns):
            probabilities[:, slot, :, column] = np.divide(exp[:, slot], total[:, slot])
        gradient = probabilities * self.target_total - self.q
        if self.z_weights is not None:
            coefficient = (2 * self.z_weights)[:, None]
            change = (lift + np.log(total))[..., None]  # ℓ′ − m
            gradient = gradient + coefficient * (
                rows.maximum[:, None] * probabilities + change * probabilities
            )
        if self.softcap is not None and self.slope is not None:
            slope = np.empty_like(gradient)
            slope[...] = self.slope
            masked = np.real(values) == -np.inf
            with np.errstate(over="ignore"):
                moved = 1 / np.cosh(np.where(masked, 0, values) / self.softcap) ** 2
            moved = np.where(masked, 0, moved)
            for slot, column in enumerate(columns):
                slope[:, slot, :, column] = moved[:, slot]
            gradient = gradient * slope
        return np.asarray(gradient)


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
    terms: LogitTerms | None = None,
    deadline: Deadline = NEVER,
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
        softmax(logits) (of the capped logits under a softcap), if already computed (for the
        error estimate).
    terms : LogitTerms, optional
        z-loss and softcap (`logit_terms`): the gradient differentiated then includes them
        (`GradientColumns`), so the check verifies their second derivatives too.
    deadline : Deadline, optional
        Checked before each group of class columns (`finite_diff.derivative_by_column`).

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

    With a z-loss the gradient gains 2ω·ℓ·a, whose derivatives are bounded by about
    2ω·(|ℓ| + 1) times a probability's: added to the derivative scale, and
    2ω·(2 + |m| + |ℓ − m|) to the rounding scale (m the row's largest capped logit). Under a
    softcap every derivative by z carries powers of s ≤ 1 and of its derivatives
    (|d^k y/dz^k| ≲ (2/c)^(k−1)): the derivative scale is multiplied by (1 + 2/c)^(p+2) for a
    stencil of order p, a rough bound that keeps the truncation estimate honest for small c.
    """
    z = np.asarray(logits)
    targets = np.asarray(q, z.dtype)
    capped = z
    if terms is not None and terms.softcap is not None:
        capped = softcap_logits(z, terms.softcap)
    if sm is None:
        sm = softmax(capped)
    divisors = np.broadcast_to(np.asarray(divisor, np.float64), (z.shape[0],))
    steps = choose_steps(z, method, step)
    z_weights = None if terms is None else terms.z_weights
    columns = GradientColumns(
        z,
        targets,
        z_weights=None if z_weights is None else (z_weights * divisors).astype(z.dtype),
        softcap=None if terms is None else terms.softcap,
    )
    values = derivative_by_column(columns, z, steps, method, deadline)
    values *= (1 / divisors).astype(z.dtype)[:, None, None]
    total = np.asarray(targets, np.float64).sum(axis=1)
    a = np.asarray(sm.probabilities, np.float64)
    largest_term = np.max(np.abs(total)[:, None] * a + np.abs(targets), axis=1, initial=0.0)
    value_scale = (
        np.abs(total) * softmax_rounding_scale(capped, sm.probabilities) + largest_term
    ) / divisors
    derivative_scale = np.abs(total) / divisors
    if z_weights is not None:
        lse = np.asarray(log_sum_exp(sm), np.float64)
        top = np.max(np.where(np.isfinite(capped), capped, -np.inf), axis=1).astype(np.float64)
        z_scale = 2 * np.abs(np.asarray(z_weights, np.float64))
        derivative_scale = derivative_scale + z_scale * (np.abs(lse) + 1)
        value_scale = value_scale + z_scale * (2 + np.abs(top) + np.abs(lse - top))
    if terms is not None and terms.softcap is not None:
        order = 2 if method is Method.COMPLEX_STEP else STENCILS[method].order
        derivative_scale = derivative_scale * (1 + 2 / terms.softcap) ** (order + 2)
    errors = estimate_error(
        method,
        steps,
        sm.probabilities,
        derivative_scale=derivative_scale,
        value_scale=value_scale,
        cumulant_shift=1,
    )
    return NumericHessian(values, steps, errors)
