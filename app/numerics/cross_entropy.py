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

Two options of language-model kernels (Liger-Kernel, PaLM, Gemma 2) extend this:

    z-loss λ:     loss_n += λ·ℓ_n²,  ℓ_n = log Σ_c exp z_nc  (non-ignored samples only)
                  ∂/∂z_nj += 2λ·ℓ_n·a_nj;  for `mean` this term is divided by the number of
                  non-ignored samples D_z (unweighted), the cross-entropy keeps D
    softcap c:    z ↦ y = c·tanh(z / c) before everything (−inf stays −inf); every derivative is
                  by the raw z: ∂/∂z_nj = ∂/∂y_nj · (1 − tanh²(z_nj / c))   (`softcap_slope`)

Accuracy (float64; README, Accuracy): the loss is a sum of non-negative terms and cannot cancel,
and its sums are pairwise (per sample) and correctly rounded (math.fsum, the reduction). The
gradient a·Σq − q cancels for real when the targets nearly equal the prediction; the rows where
it does are recomputed in double-double arithmetic from the logits and from the targets' exact
definition (`Targets.exact_q`), so that every gradient row is accurate to ~1e-15 of its own
largest entry unless that entry is below ~1e-17 of the terms a·Σq and q it is made of.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property, partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.numerics import double_double as dd
from app.numerics.errors import InvalidProblem
from app.numerics.softmax import FloatArray, Softmax, exp_shifted_double_double

NEAR_UNIFORM_SPREAD = 2.0**-56
"""Rows whose finite logits all lie within this of each other take `_near_uniform_gradient`."""
CANCELLATION_LIMIT = 8.0
"""Gradient rows whose largest term a_c·Σq + q_c exceeds this many times their largest entry
are recomputed in double-double (in float64 they would lose more than ~1e-15 of that entry)."""

ExactTargets = Callable[[NDArray[np.intp]], dd.DD]
"""rows ↦ q of those rows as double-double, from the targets' definition (exact inputs)."""


class Reduction(StrEnum):
    """How per-sample losses combine into the reported loss (as in PyTorch)."""

    MEAN = "mean"
    SUM = "sum"
    NONE = "none"


@dataclass(frozen=True)
class OneHot:
    """Effective targets with one class a row, kept as that class and its value: q_nc =
    values_n where c = classes_n, 0 elsewhere (index labels without smoothing; an ignored row has
    the value 0). `dense` forms the matrix; a block of rows forms only its own."""

    classes: NDArray[np.intp]
    """The class of each row, shape (N,) (any class on an ignored row)."""
    values: FloatArray
    """q at that class, shape (N,): the label's weight w_y (1 without weights), 0 on ignored
    rows."""
    num_classes: int

    @property
    def shape(self) -> tuple[int, int]:
        """(N, C), as the matrix's."""
        return self.classes.shape[0], self.num_classes

    def dense(self) -> FloatArray:
        """q as a matrix, shape (N, C)."""
        q = np.zeros(self.shape, self.values.dtype)
        q[np.arange(self.shape[0]), self.classes] = self.values
        return q

    def __getitem__(self, part: slice) -> "OneHot":
        return OneHot(self.classes[part], self.values[part], self.num_classes)


@dataclass(frozen=True)
class Targets:
    """Effective targets of a batch and the divisor of its reduction."""

    effective: FloatArray | OneHot
    """q (`q`), or its one class a row (`OneHot`), formed as a matrix only when read: a
    language model's batch computed by blocks of rows forms each block's q alone."""
    divisor: float
    """D: the reduced loss is Σ_n loss_n / D (1 for `sum` and `none`)."""
    exact_q: ExactTargets | None = None
    """q of chosen rows to ~32 digits, when q's float64 rounding is not exact (None: q is)."""
    factors: tuple[FloatArray, FloatArray] | None = None
    """(w, p′) with q = w·p′ rounded, when class weights make q a rounded product: the loss
    forms (w·(−log a))·p′, so that the rounding of a subnormal q is not multiplied by −log a."""
    active: NDArray[np.bool_] | None = None
    """The samples a z-loss term counts, shape (N,): not ignored (None: every sample)."""
    z_divisor: float = 1.0
    """D_z: the z-loss terms are reduced as Σ_n λ·ℓ_n² / D_z, D_z the number of non-ignored
    samples for `mean` (unweighted, as Liger-Kernel and PaLM define it), 1 otherwise."""

    @cached_property
    def q(self) -> FloatArray:
        """Effective targets, shape (N, C), all ≥ 0 (formed on first use from a `OneHot`)."""
        if isinstance(self.effective, OneHot):
            return self.effective.dense()
        return self.effective

    def rows(self, part: slice) -> "Targets":
        """The targets of the samples `part` (views), each row as the whole batch has it; the
        divisors stay the batch's."""
        start = part.start or 0
        factors = None
        if self.factors is not None:
            weight, base = self.factors
            factors = (weight[part] if weight.ndim == 2 else weight, base[part])
        return replace(
            self,
            effective=self.effective[part],
            exact_q=None if self.exact_q is None else partial(_rows_from, self.exact_q, start),
            factors=factors,
            active=None if self.active is None else self.active[part],
        )

    def z_weights(self, z_loss: float) -> FloatArray:
        """λ per sample, 0 on ignored samples, shape (N,) (the weight of ℓ_n² in loss_n)."""
        weights = np.full(self.effective.shape[0], z_loss, np.float64)
        if self.active is not None:
            weights[~self.active] = 0.0
        return weights


def _rows_from(exact_q: ExactTargets, start: int, rows: NDArray[np.intp]) -> dd.DD:
    """exact_q of a block of rows starting at `start`, asked with the block's own indices."""
    return exact_q(rows + start)


def check_index_labels(
    labels: NDArray[np.integer], num_classes: int, ignore_index: int
) -> NDArray[np.bool_]:
    """The samples that are not ignored, shape (N,); raises InvalidProblem at the first label
    outside [0, C) that is not `ignore_index` (its position among the N samples)."""
    labels = np.asarray(labels)
    active: NDArray[np.bool_] = labels != ignore_index
    classes = labels[active]
    if classes.size and not (classes.min() >= 0 and classes.max() < num_classes):
        n = int(np.flatnonzero(active & ((labels < 0) | (labels >= num_classes)))[0])
        raise InvalidProblem(
            ("labels", n),
            f"label {int(labels[n])} is not a class index in [0, {num_classes}) "
            f"nor ignore_index ({ignore_index})",
        )
    return active


def index_divisors(
    labels: NDArray[np.integer], active: NDArray[np.bool_], weight: FloatArray | None
) -> tuple[float, float]:
    """(D, D_z) of `mean` for class-index labels: D = Σ_{n not ignored} w_{y_n} (correctly
    rounded, math.fsum; the count without weights), D_z the number of non-ignored samples.

    Raises InvalidProblem when D is 0 (PyTorch would return NaN)."""
    classes = np.asarray(labels)[active]
    count = float(classes.size)
    divisor = count if weight is None else math.fsum(weight[classes].astype(np.float64).tolist())
    if divisor == 0:  # torch divides by any other sum, negative weights included
        what = "every sample is ignored" if classes.size == 0 else "their classes weigh 0"
        raise InvalidProblem(
            ("labels",),
            f"reduction 'mean' divides by the summed weight of the non-ignored targets, "
            f"and {what}: use reduction 'sum' or 'none'",
        )
    return divisor, count


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

    References
    ----------
    .. [1] PyTorch, torch.nn.functional.cross_entropy (weight, ignore_index, label_smoothing,
       reduction): the semantic reference for the effective targets and the weighted mean.
    .. [2] C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR
       2016: label smoothing (1 − ε)·y + ε/C.
    """
    labels = np.asarray(labels)
    active = check_index_labels(labels, num_classes, ignore_index)
    classes = labels[active]
    rows = np.flatnonzero(active)
    w = None if weight is None else np.asarray(weight, dtype)
    chosen = 1 - label_smoothing if w is None else (1 - label_smoothing) * w[classes]
    effective: FloatArray | OneHot
    if label_smoothing:
        q = np.zeros((labels.shape[0], num_classes), dtype)
        q[rows] = (
            label_smoothing / num_classes if w is None else (label_smoothing / num_classes) * w
        )
        q[rows, classes] += chosen
        effective = q
    else:
        values = np.zeros(labels.shape[0], dtype)
        values[rows] = chosen
        effective = OneHot(np.where(active, labels, 0).astype(np.intp), values, num_classes)

    divisor = z_divisor = 1.0
    if reduction is Reduction.MEAN:
        divisor, z_divisor = index_divisors(labels, active, w)
    exact_q = factors = None
    if label_smoothing and dtype is np.float64:
        exact_w = np.ones(num_classes) if w is None else w
        exact_q = partial(_exact_index_targets, labels, exact_w, label_smoothing, ignore_index)
    if label_smoothing and w is not None:
        base = np.zeros((labels.shape[0], num_classes), dtype)
        base[rows] = label_smoothing / num_classes
        base[rows, classes] += 1 - label_smoothing
        factors = (w, base)
    return Targets(effective, divisor, exact_q, factors, active, z_divisor)


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
    base = (1 - label_smoothing) * p + label_smoothing / num_classes if label_smoothing else p
    factors = None
    if weight is not None:
        w = np.asarray(weight, dtype)
        q = base * w
        factors = (w, base)
    else:
        q = base if label_smoothing else p.copy()
    divisor = float(num_samples) if reduction is Reduction.MEAN else 1.0
    exact_q = None
    if (label_smoothing or weight is not None) and dtype is np.float64:
        exact_w = None if weight is None else np.asarray(weight, np.float64)
        exact_q = partial(_exact_probability_targets, p, exact_w, label_smoothing)
    return Targets(q.astype(dtype, copy=False), divisor, exact_q, factors, None, divisor)


def _constant(value: float, shape: tuple[int, ...] = ()) -> dd.DD:
    return dd.DD(np.full(shape, value), np.zeros(shape))


def _smoothing_parts(label_smoothing: float, num_classes: int) -> tuple[dd.DD, dd.DD]:
    """(1 − ε, ε/C) as exact-enough double-doubles."""
    keep = dd.two_sum(np.ones(()), np.full((), -label_smoothing))
    share = dd.divide(_constant(label_smoothing), _constant(float(num_classes)))
    return keep, share


def _exact_index_targets(
    labels: NDArray[np.integer],
    weight: FloatArray,
    label_smoothing: float,
    ignore_index: int,
    rows: NDArray[np.intp],
) -> dd.DD:
    """q = (1 − ε)·w_y·onehot(y) + (ε/C)·w of `rows` in double-double (0 for ignored rows)."""
    w = np.asarray(weight, np.float64)
    keep, share = _smoothing_parts(label_smoothing, w.size)
    label = labels[rows]
    active = label != ignore_index
    spread = dd.multiply(share, dd.DD(w, np.zeros_like(w)))
    mask = np.where(active, 1.0, 0.0)[:, None]
    q = dd.DD(spread.hi * mask, spread.lo * mask)
    hit = np.flatnonzero(active)
    y = label[active]
    on_label = dd.add(
        dd.DD(q.hi[hit, y], q.lo[hit, y]), dd.multiply(keep, dd.DD(w[y], np.zeros(y.size)))
    )
    q.hi[hit, y], q.lo[hit, y] = on_label
    return q


def _exact_probability_targets(
    probabilities: FloatArray,
    weight: FloatArray | None,
    label_smoothing: float,
    rows: NDArray[np.intp],
) -> dd.DD:
    """q = w·((1 − ε)·p + ε/C) of `rows` in double-double."""
    p = probabilities[rows]
    keep, share = _smoothing_parts(label_smoothing, p.shape[1])
    q = dd.add(dd.multiply(keep, dd.DD(p, np.zeros_like(p))), share)
    if weight is not None:
        q = dd.multiply(q, dd.DD(weight, np.zeros_like(weight)))
    return q


def softcap_logits(logits: FloatArray, softcap: float) -> FloatArray:
    """y = c·tanh(z / c), real or complex, with −inf (a mask) kept −inf.

    tanh is correctly rounded to about an ulp, so y carries ~2 ulps of c at most.

    References
    ----------
    .. [1] Gemma Team, "Gemma 2: Improving Open Language Models at a Practical Size",
       arXiv:2408.00118, 2024: logit soft-capping c·tanh(z/c).
    """
    z = np.asarray(logits)
    masked = np.real(z) == -np.inf
    if not masked.any():
        unmasked: FloatArray = softcap * np.tanh(z / softcap)
        return unmasked
    capped: FloatArray = softcap * np.tanh(np.where(masked, 0, z) / softcap)
    capped[masked] = z[masked]
    return capped


def softcap_slope(logits: FloatArray, softcap: float) -> FloatArray:
    """dy/dz = 1 − tanh²(z / c) = 1 / cosh²(z / c), 0 on −inf entries.

    Formed as 4e / (1 + e)² with e = exp(−2|z| / c) ≤ 1: no cancellation where tanh → 1
    (1 − tanh² would lose every digit once |z| / c exceeds ~19), a relative error of a few
    ulps everywhere, and an exact 0 only where the true value underflows (at −inf, e = 0).
    Formed in place: one array, five passes."""
    z = np.asarray(logits)
    with np.errstate(invalid="ignore"):
        slope: FloatArray = np.abs(z)
        slope *= -2
        slope /= softcap
        np.exp(slope, out=slope)  # e
        denominator = 1 + slope
        denominator *= denominator
        slope *= 4
        slope /= denominator
    return slope.astype(z.dtype, copy=False)


def softcap_difference(logits: NDArray[Any], moved: NDArray[Any], softcap: float) -> NDArray[Any]:
    """y(x) − y(z) for y = c·tanh(·/c), real or complex x, without the cancellation of the
    difference of two tanh values: c·sinh(d/c) / (cosh(x/c)·cosh(z/c)), d = x − z (exact for
    the moves of a finite difference). 0 where a cosh overflows (the true value is below
    4c·exp(−2·max(|x|, |z|)/c)·|sinh(d/c)|, far below anything resolvable)."""
    with np.errstate(over="ignore", invalid="ignore"):
        d = moved - logits
        difference = (
            softcap
            * np.sinh(d / softcap)
            / (np.cosh(moved / softcap) * np.cosh(np.asarray(logits) / softcap))
        )
    result: NDArray[Any] = np.where(np.isfinite(difference), difference, 0)
    return result


def log_sum_exp(sm: Softmax) -> FloatArray:
    """ℓ_n = log Σ_c exp z_nc = z_nk + log1p(t) from the softmax (z_nk the row's maximum),
    shape (N,). One rounding on top of log1p's; it cancels only where z_nk ≈ −log1p(t) (a
    row whose ℓ is near 0), and then its absolute error is still ~eps·log C.

    References
    ----------
    .. [1] A. Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", JMLR 24, 2023: the
       z-loss λ·(log Σ exp z)².
    .. [2] Liger-Kernel, `lse_square_scale` of its fused linear cross-entropy (its tests:
       F.cross_entropy + λ·lse² per non-ignored token).
    """
    assert sm.logits is not None
    z = np.asarray(sm.logits)
    top = z[np.arange(z.shape[0]), sm.argmax]
    lse: FloatArray = top + np.log1p(sm.tail)
    return lse


def has_masks(logits: FloatArray) -> bool:
    """Whether some logit is −inf (a mask): one pass, no temporary."""
    return logits.size > 0 and bool(np.isneginf(logits.min()))


def check_target_support(logits: FloatArray, targets: Targets) -> None:
    """Raise InvalidProblem if some target mass sits on a −inf logit (an infinite loss)."""
    if not has_masks(logits):
        return
    q = targets.q
    infinite = np.isneginf(logits) & (q != 0)  # a negative weight makes the loss −inf
    if infinite.any():
        n, c = (int(i) for i in np.argwhere(infinite)[0])
        raise InvalidProblem(
            ("logits", n, c),
            f"sample {n} puts target mass {float(q[n, c]):.6g} on class {c}, whose logit is "
            f"-inf: the loss is infinite (remove the mask, or the class's label, weight or "
            f"smoothing share)",
        )


def per_sample_losses(
    sm: Softmax, q: FloatArray, *, factors: tuple[FloatArray, FloatArray] | None = None
) -> FloatArray:
    """loss_n = −Σ_c q_nc·log a_nc, shape (N,); every term is ≥ 0, so the (pairwise) sum
    cannot cancel. With `factors` (w, p′) each term is (w_c·(−log a_nc))·p′_nc: q = w·p′ is
    never rounded on its own, which matters when it is subnormal."""
    neg_log = np.negative(sm.log_probabilities)
    neg_log[(q == 0) & np.isinf(neg_log)] = 0  # masked classes (−log a = inf), no target
    if factors is None:
        neg_log *= q
    else:
        weight, base = factors
        neg_log *= weight
        neg_log *= base
    losses: FloatArray = neg_log.sum(axis=1)
    return losses


def per_sample_gradient(
    sm: Softmax, q: FloatArray, *, exact_q: ExactTargets | None = None
) -> FloatArray:
    """∂loss_n/∂z_n = a·Σ_c q_c − q, shape (N, C).

    At the argmax k the same value is computed as (Σ_{c≠k} q_c − q_k·t) / (1 + t), which is
    exact algebra (a_k = 1/(1 + t)) but avoids the cancellation of a_k·Σq − q_k when a_k → 1.
    Float64 rows that still cancel (largest term > CANCELLATION_LIMIT × largest entry: targets
    close to the prediction) are recomputed in double-double from `sm.logits` and `exact_q`
    (default: q taken as exact).

    References
    ----------
    .. [1] PyTorch, torch.nn.functional.cross_entropy: the gradient a·Σq − q of its loss with
       weights, probability targets and label smoothing.
    .. [2] T. J. Dekker, "A floating-point technique for extending the available precision",
       Numerische Mathematik 18, 1971: the double-double arithmetic of the rows that cancel
       (`double_double`).
    """
    a = sm.probabilities
    rows = np.arange(q.shape[0])
    k = sm.argmax
    t = sm.tail
    q_k = q[rows, k]
    off_argmax = q.copy()
    off_argmax[rows, k] = 0
    rest = off_argmax.sum(axis=1)
    scaled = a * (rest + q_k)[:, None]
    gradient: FloatArray = scaled - q
    gradient[rows, k] = (rest - q_k * t) / (1 + t)
    if a.dtype == np.float64 and sm.logits is not None:
        scaled += q
        scaled[rows, k] = (rest + q_k * t) / (1 + t)
        largest = np.maximum(gradient.max(axis=1), -gradient.min(axis=1))
        cancelling = np.flatnonzero(scaled.max(axis=1) > CANCELLATION_LIMIT * largest)
        if cancelling.size:
            refined = _gradient_double_double(sm.logits, k, q, cancelling, exact_q)
            finite = np.isfinite(refined).all(axis=1)
            gradient[cancelling[finite]] = refined[finite]
    return gradient


def _gradient_double_double(
    logits: FloatArray,
    argmax: NDArray[np.intp],
    q: FloatArray,
    rows: NDArray[np.intp],
    exact_q: ExactTargets | None,
) -> FloatArray:
    """a·Σq − q of `rows` in double-double, rounded to float64 (non-finite where it overflowed).

    Each row of q is scaled by a power of two to a largest entry in [1/2, 1) (exact), which
    keeps Dekker's products in range; at the argmax (Σ_{c≠k} q_c − q_k·t)/(1 + t) as in float64.
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        target = exact_q(rows) if exact_q is not None else dd.DD(q[rows], np.zeros_like(q[rows]))
        _, exponent = np.frexp(np.max(target.hi, axis=1, keepdims=True))
        target = dd.DD(np.ldexp(target.hi, -exponent), np.ldexp(target.lo, -exponent))
        k = argmax[rows]
        e = exp_shifted_double_double(logits[rows], k)
        off_argmax = np.arange(q.shape[1]) != k[:, None]
        t = dd.sum_rows(dd.DD(e.hi * off_argmax, e.lo * off_argmax))
        total = dd.sum_rows(target)
        rest = dd.sum_rows(dd.DD(target.hi * off_argmax, target.lo * off_argmax))
        on = (np.arange(rows.size), k)
        q_k = dd.DD(target.hi[on], target.lo[on])
        denominator = dd.add(_constant(1.0, t.hi.shape), t)

        a = dd.divide(e, dd.DD(denominator.hi[:, None], denominator.lo[:, None]))
        gradient = dd.add(
            dd.multiply(a, dd.DD(total.hi[:, None], total.lo[:, None])), dd.negate(target)
        )
        at_argmax = dd.divide(dd.add(rest, dd.negate(dd.multiply(q_k, t))), denominator)
        result = gradient.hi + gradient.lo
        result[on] = at_argmax.hi + at_argmax.lo
        z = logits[rows]
        finite = np.isfinite(z)
        spread = np.max(z, axis=1) - np.min(np.where(finite, z, np.inf), axis=1)
        near = np.flatnonzero(spread <= NEAR_UNIFORM_SPREAD)
        if near.size:
            near_target = dd.DD(target.hi[near], target.lo[near])
            total_near = dd.DD(total.hi[near], total.lo[near])
            result[near] = _near_uniform_gradient(z[near], finite[near], near_target, total_near)
        refined: FloatArray = np.ldexp(result, exponent)
    return refined


def _near_uniform_gradient(
    z: FloatArray, finite: NDArray[np.bool_], q: dd.DD, total: dd.DD
) -> FloatArray:
    """a·S_q − q (S_q = Σ_c q_c) for rows whose finite logits differ by at most
    NEAR_UNIFORM_SPREAD.

    With C finite classes and u_c = z_c − mean z, a_c = (1 + u_c + O(u²))/C, so
        ∂loss/∂z_c = (S_q·(C·z_c − Σz) + C·(S_q − C·q_c)) / C²
    to a relative O(spread) ≤ 2^-56. Double-double cannot reach these entries when they are
    far smaller than 2^-106 of 1/C (tiny logits with targets near uniform). C·z_c − Σz is
    formed on z scaled to a largest magnitude in [1/2, 1) (exact), and S_q − C·q_c is exactly 0
    in rows of equal targets; masked classes get 0 (a_c = q_c = 0).
    """
    count = finite.sum(axis=1).astype(np.float64)[:, None]
    values = np.where(finite, z, 0.0)
    _, power = np.frexp(np.max(np.abs(values), axis=1, keepdims=True))
    values = np.ldexp(values, -power)
    zeros = np.zeros_like(values)
    classes = dd.DD(np.broadcast_to(count, values.shape), zeros)
    z_total = dd.sum_rows(dd.DD(values, zeros))
    spread_terms = dd.add(
        dd.two_product(classes.hi, values),
        dd.negate(dd.DD(z_total.hi[:, None], z_total.lo[:, None])),
    )
    row_total = dd.DD(total.hi[:, None], total.lo[:, None])
    squared = dd.DD(np.broadcast_to(count * count, values.shape), zeros)
    first = dd.divide(dd.multiply(row_total, spread_terms), squared)
    first = dd.DD(np.ldexp(first.hi, power), np.ldexp(first.lo, power))
    differences = dd.add(row_total, dd.negate(dd.multiply(classes, q)))
    reference = np.argmax(finite, axis=1)[:, None]  # the first finite class
    same = (q.hi == np.take_along_axis(q.hi, reference, axis=1)) & (
        q.lo == np.take_along_axis(q.lo, reference, axis=1)
    )
    equal_targets = (same | ~finite).all(axis=1, keepdims=True)
    differences = dd.DD(
        np.where(equal_targets, 0.0, differences.hi), np.where(equal_targets, 0.0, differences.lo)
    )
    second = dd.divide(differences, classes)
    gradient = dd.add(first, second)
    return np.where(finite, gradient.hi + gradient.lo, 0.0)


def reduce_losses(
    losses: FloatArray,
    targets: Targets,
    reduction: Reduction,
    *,
    z_terms: FloatArray | None = None,
) -> FloatArray:
    """The reported loss: Σ_n loss_n / D for `mean` and `sum` (a 0-d array), `losses` for `none`.

    With `z_terms` (λ·ℓ_n², 0 for ignored samples) `losses` are the cross-entropy parts alone:
    `mean` gives Σ loss_n / D + Σ z_n / D_z, `sum` Σ (loss_n + z_n) as one correctly rounded
    sum, `none` loss_n + z_n. The sums are math.fsum's (correctly rounded), so the result is
    within ~1 ulp (2 with a z-loss under `mean`) of the exact value of the computed terms."""
    if z_terms is not None:
        if reduction is Reduction.NONE:
            return losses + z_terms
        terms = losses.astype(np.float64).tolist()
        extra = z_terms.astype(np.float64).tolist()
        if reduction is Reduction.SUM:
            return np.asarray(losses.dtype.type(math.fsum(terms + extra)))
        total = math.fsum(terms) / targets.divisor + math.fsum(extra) / targets.z_divisor
        return np.asarray(losses.dtype.type(total))
    if reduction is Reduction.NONE:
        return losses
    total = math.fsum(losses.astype(np.float64).tolist())  # correctly rounded
    return np.asarray(losses.dtype.type(total / targets.divisor))
