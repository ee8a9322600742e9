"""Softmax, log-softmax, the complement 1 − a and the softmax Jacobian, without cancellation.

For one row z with its largest entry at k (m = z_k), write s_i = z_i − m, e_i = exp(s_i) (so
e_k = 1) and t = Σ_{i≠k} e_i, the sum of the exponentials *without* the maximal one. Then

    a_i       = e_i / (1 + t)                      softmax
    log a_i   = s_i − log1p(t)                     log-softmax (log-sum-exp with the max removed)
    1 − a_i   = t / (1 + t)            for i = k   (never computed as 1 − a_k, which cancels)
              = 1 − a_i                for i ≠ k   (exact enough: a_i ≤ 1/2 there)
    ∂a_i/∂z_j = a_i (δ_ij − a_j)                   the Jacobian: −a_i·a_j off the diagonal,
                                                   a_i·(1 − a_i) on it

Logits may be −inf (a mask) as long as every row keeps a finite logit; masked entries get a = 0
and log a = −inf. The subtraction z_i − m is carried with its rounding error (TwoSum), so that
exp(s_i) stays accurate to a few ulps even when |s_i| is in the hundreds.

`exp_shifted_double_double` gives the same e_i to about 32 digits, for the few quantities that
cancel for real (see cross_entropy.per_sample_gradient).
"""

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.numerics import double_double

FloatArray = NDArray[np.floating]


@dataclass(frozen=True)
class Softmax:
    """Softmax of a batch of rows (N, C), with the intermediate values its derivatives reuse."""

    probabilities: FloatArray
    """a = softmax(z), shape (N, C)."""
    log_probabilities: FloatArray
    """log a, shape (N, C); −inf where z = −inf."""
    complement: FloatArray
    """1 − a_i = Σ_{j≠i} a_j, shape (N, C), computed without cancellation."""
    argmax: NDArray[np.intp]
    """Index k of each row's largest logit, shape (N,)."""
    tail: FloatArray
    """t = Σ_{i≠k} exp(z_i − z_k), shape (N,): the mass outside the argmax, relative to it."""
    logits: FloatArray | None = None
    """The logits z themselves (not a copy), for recomputing in double-double where needed."""

    def rows(self, part: slice) -> "Softmax":
        """The softmax of the samples `part` (views, no copies)."""
        return Softmax(
            self.probabilities[part],
            self.log_probabilities[part],
            self.complement[part],
            self.argmax[part],
            self.tail[part],
            None if self.logits is None else self.logits[part],
        )


def _two_difference(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """TwoSum for x − y: returns (d, r) with d = fl(x − y) and x − y = d + r exactly (finite x)."""
    d = x - y
    x_part = d + y
    y_part = x_part - d
    r = (x - x_part) + (y_part - y)
    return d, r


def softmax(logits: FloatArray) -> Softmax:
    """Softmax of each row of `logits` (N, C) in the array's own dtype.

    Every row must contain a finite entry; −inf entries are masks. See the module docstring for
    the formulas.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and
       softmax functions", IMA Journal of Numerical Analysis 41(4), 2021: the shift by the maximum
       and its error analysis.
    .. [2] scipy.special.softmax and scipy.special.logsumexp (scipy/special/_logsumexp.py).
    """
    z = np.asarray(logits)
    rows = np.arange(z.shape[0])
    argmax = np.argmax(z, axis=1)
    maximum = z[rows, argmax][:, None]
    shifted, remainder = _shifted(z, maximum)
    exp_shifted = np.exp(shifted)
    exp_shifted *= 1 + remainder

    exp_shifted[rows, argmax] = 0
    tail = exp_shifted.sum(axis=1)
    exp_shifted[rows, argmax] = 1
    denominator = 1 + tail

    probabilities = exp_shifted / denominator[:, None]
    log_probabilities = (shifted - np.log1p(tail)[:, None]) + remainder
    complement = 1 - probabilities
    complement[rows, argmax] = tail / denominator
    return Softmax(probabilities, log_probabilities, complement, argmax, tail, z)


def _shifted(z: FloatArray, maximum: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(s, r) with s + r = z − maximum exactly; r = 0 where s is infinite (masks, overflow)."""
    with np.errstate(invalid="ignore", over="ignore"):
        shifted, remainder = _two_difference(z, maximum)
    return shifted, np.where(np.isfinite(shifted), remainder, 0)


def exp_shifted_double_double(logits: FloatArray, argmax: NDArray[np.intp]) -> double_double.DD:
    """e_i = exp(z_i − z_k) of float64 rows as double-double (relative error ~1e-32 above the
    subnormals): exactly 1 at the argmax k, 0 on −inf entries."""
    z = np.asarray(logits, np.float64)
    maximum = z[np.arange(z.shape[0]), argmax][:, None]
    return double_double.exp(double_double.DD(*_shifted(z, maximum)))


def softmax_jacobian(sm: Softmax) -> FloatArray:
    """The Jacobian J[n, i, j] = ∂a_i/∂z_j = a_i (δ_ij − a_j) of each row, shape (N, C, C).

    Off the diagonal −a_i·a_j (a product: no cancellation); on it a_i·(1 − a_i) with the
    complement taken from `sm`, so saturated rows keep their tiny but nonzero diagonal.
    Allocates only the output.

    References
    ----------
    .. [1] J. S. Bridle, "Probabilistic interpretation of feedforward classification network
       outputs", in Neurocomputing, Springer, 1990: softmax and its derivative a_i(δ_ij − a_j).
    """
    a = sm.probabilities
    num_classes = a.shape[1]
    jacobian = np.multiply(a[:, :, None], a[:, None, :])
    np.negative(jacobian, out=jacobian)
    diagonal = np.arange(num_classes)
    jacobian[:, diagonal, diagonal] = a * sm.complement
    return jacobian
