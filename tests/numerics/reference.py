"""An independent reference at 50 significant digits with mpmath.

Written straight from the definitions (and from PyTorch's documented `F.cross_entropy`
semantics), not from the service's effective-target formulation: the loss is assembled the way
PyTorch assembles it (nll term plus smoothing term), and derivatives are taken with mpmath's own
numerical differentiation at high precision, not from a closed form.
"""

from collections.abc import Callable, Sequence

import mpmath
from mpmath import mp, mpf

mp.dps = 50

Row = list[mpf]
SMALLEST_NORMAL = mpf(2.2250738585072014e-308)


def to_mp(values: Sequence[float]) -> Row:
    return [mpf(float(v)) for v in values]


def softmax(z: Sequence[float]) -> Row:
    """a_i = exp(z_i) / Σ_j exp(z_j); exp(-inf) = 0."""
    finite = [mpf(v) for v in z if v != float("-inf")]
    m = max(finite)
    e = [mpf(0) if v == float("-inf") else mpmath.exp(mpf(v) - m) for v in z]
    total = mpmath.fsum(e)
    return [x / total for x in e]


def log_softmax(z: Sequence[float]) -> Row:
    """log a_i = z_i − log Σ_j exp(z_j) (-inf stays -inf, returned as mpf('-inf'))."""
    finite = [mpf(v) for v in z if v != float("-inf")]
    m = max(finite)
    lse = m + mpmath.log(mpmath.fsum(mpmath.exp(x - m) for x in finite))
    return [mpf("-inf") if v == float("-inf") else mpf(v) - lse for v in z]


def jacobian(z: Sequence[float]) -> list[Row]:
    """∂a_i/∂z_j by the definition a_i(δ_ij − a_j), evaluated at 50 digits."""
    a = softmax(z)
    n = len(a)
    return [[a[i] * ((1 if i == j else 0) - a[j]) for j in range(n)] for i in range(n)]


def _sample_terms_index(
    z: Sequence[mpf],
    label: int,
    weight: Sequence[float] | None,
    smoothing: float,
) -> mpf:
    """PyTorch: (1 − ε)·w_y·(−log a_y) + ε/C·Σ_c w_c·(−log a_c), for one non-ignored sample."""
    c = len(z)
    logp = log_softmax(z)
    w = [mpf(1)] * c if weight is None else to_mp(weight)
    eps = mpf(smoothing)
    nll = -w[label] * logp[label]
    if eps == 0:
        return nll
    smooth = -mpmath.fsum(w[k] * logp[k] for k in range(c) if w[k] != 0)
    return (1 - eps) * nll + eps / c * smooth


def losses_index(
    z: Sequence[Sequence[float]],
    labels: Sequence[int],
    *,
    weight: Sequence[float] | None = None,
    ignore_index: int = -100,
    smoothing: float = 0.0,
) -> Row:
    """Per-sample losses of PyTorch's cross_entropy(reduction='none') with index labels."""
    return [
        mpf(0) if y == ignore_index else _sample_terms_index(to_mp(row), y, weight, smoothing)
        for row, y in zip(z, labels, strict=True)
    ]


def reduce_index(
    losses: Row,
    labels: Sequence[int],
    reduction: str,
    *,
    weight: Sequence[float] | None = None,
    ignore_index: int = -100,
) -> mpf | Row:
    """mean divides by Σ w_{y_n} over non-ignored samples (PyTorch), sum sums, none keeps."""
    if reduction == "none":
        return losses
    total = mpmath.fsum(losses)
    if reduction == "sum":
        return total
    kept = [y for y in labels if y != ignore_index]
    divisor = mpf(len(kept)) if weight is None else mpmath.fsum(mpf(weight[y]) for y in kept)
    return total / divisor


def losses_probabilities(
    z: Sequence[Sequence[float]],
    p: Sequence[Sequence[float]],
    *,
    weight: Sequence[float] | None = None,
    smoothing: float = 0.0,
) -> Row:
    """PyTorch with probability targets: −Σ_c w_c·((1 − ε)p_c + ε/C)·log a_c per sample."""
    out = []
    for row, target in zip(z, p, strict=True):
        c = len(row)
        logp = log_softmax(row)
        w = [mpf(1)] * c if weight is None else to_mp(weight)
        eps = mpf(smoothing)
        terms = []
        for k in range(c):
            t = w[k] * ((1 - eps) * mpf(target[k]) + eps / c)
            if t != 0:
                terms.append(-t * logp[k])
        out.append(mpmath.fsum(terms))
    return out


def gradient_by_differentiation(
    loss_of_row: Callable[[int, list[mpf]], mpf], z: Sequence[Sequence[float]]
) -> list[Row]:
    """∂loss_n/∂z_nj by mpmath's numerical differentiation at 50 digits (no closed form)."""
    grads = []
    for n, row in enumerate(z):
        base = to_mp(row)
        g = []
        for j in range(len(row)):
            if row[j] == float("-inf"):
                g.append(mpf(0))
                continue

            def f(x: mpf, j: int = j, n: int = n, base: Row = base) -> mpf:
                shifted = list(base)
                shifted[j] = x
                return loss_of_row(n, shifted)

            g.append(mpmath.diff(f, base[j]))
        grads.append(g)
    return grads


def relative_row_error(computed: Sequence[float], exact: Sequence[mpf]) -> float:
    """max_i |computed_i − exact_i| / max_i |exact_i|.

    The scale is floored at float64's smallest normal number: below it float64 itself has only
    an absolute resolution, so a row whose exact values underflow may be computed as 0.
    """
    scale = max([abs(e) for e in exact] + [SMALLEST_NORMAL])
    err = max(abs(mpf(float(c)) - e) for c, e in zip(computed, exact, strict=True))
    return float(err / scale)
