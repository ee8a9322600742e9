"""Agreement between an analytic and a numeric derivative.

passes element-wise      |analytic − numeric| ≤ atol + rtol·|numeric|   (torch.autograd.gradcheck)
max_abs_error            max |analytic − numeric|
max_rel_error            max |analytic − numeric| / max(1e-8, |analytic| + |numeric|)   (cs231n)
"""

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.numerics.softmax import FloatArray

REL_ERROR_FLOOR = 1e-8


@dataclass(frozen=True)
class Mismatch:
    """One element outside the tolerance."""

    index: tuple[int, ...]
    analytic: float
    numeric: float


@dataclass(frozen=True)
class Agreement:
    """The verdict of one check."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    mismatches: int
    checked: int
    worst: list[Mismatch]
    """Up to a few failing elements, largest error first."""


def rel_error(analytic: FloatArray, numeric: FloatArray) -> float:
    """cs231n's relative error: max |x − y| / max(1e-8, |x| + |y|)."""
    x = np.asarray(analytic, np.float64)
    y = np.asarray(numeric, np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(REL_ERROR_FLOOR, np.abs(x) + np.abs(y))))


def compare(
    analytic: FloatArray, numeric: FloatArray, *, atol: float, rtol: float, keep: int = 5
) -> Agreement:
    """Check |analytic − numeric| ≤ atol + rtol·|numeric| everywhere (computed in float64).

    References
    ----------
    .. [1] PyTorch, torch.autograd.gradcheck: the test |a − n| ≤ atol + rtol·|n| and its defaults
       atol = 1e-5, rtol = 1e-3.
    .. [2] Stanford CS231n, "Gradient checks" (cs231n.github.io/neural-networks-3): the relative
       error max |a − n| / max(1e-8, |a| + |n|).
    """
    (agreement,) = compare_blocks(
        analytic, numeric, np.zeros(1, np.intp), atol=atol, rtol=rtol, keep=keep
    )
    return agreement


def compare_blocks(
    analytic: FloatArray,
    numeric: FloatArray,
    starts: NDArray[np.intp],
    *,
    atol: float,
    rtol: float,
    keep: int = 5,
) -> list[Agreement]:
    """`compare` of each block of samples (rows along the first axis) [starts[i],
    starts[i + 1]), in one pass over the whole array: per-sample maxima and counts, then their
    maxima and sums per block. Every block must hold at least one sample."""
    x = np.asarray(analytic, np.float64)
    y = np.asarray(numeric, np.float64)
    difference = np.abs(x - y)
    magnitude = np.abs(y)
    failing = difference > tolerance_bound(atol, rtol, magnitude)
    relative = difference / np.maximum(REL_ERROR_FLOOR, np.abs(x) + magnitude)
    per_sample = (x.shape[0], -1)
    counts = np.add.reduceat(np.count_nonzero(failing.reshape(per_sample), axis=1), starts)
    max_abs = np.maximum.reduceat(difference.reshape(per_sample).max(axis=1), starts)
    max_rel = np.maximum.reduceat(relative.reshape(per_sample).max(axis=1), starts)
    per_row = x[:1].size
    bounds = [*starts.tolist(), x.shape[0]]
    return [
        Agreement(
            passed=count == 0,
            max_abs_error=abs_error,
            max_rel_error=rel_error,
            mismatches=count,
            checked=(stop - start) * per_row,
            worst=_worst(x[start:stop], y[start:stop], atol, rtol, keep) if count else [],
        )
        for start, stop, count, abs_error, rel_error in zip(
            bounds[:-1],
            bounds[1:],
            counts.tolist(),
            max_abs.tolist(),
            max_rel.tolist(),
            strict=True,
        )
    ]


def tolerance_bound(atol: float, rtol: float, magnitude: FloatArray) -> FloatArray:
    """atol + rtol·magnitude, the largest difference the tolerance test admits; a tolerance so
    large that this overflows admits everything (inf)."""
    with np.errstate(over="ignore"):
        bound: FloatArray = atol + rtol * magnitude
    return bound


def _worst(x: FloatArray, y: FloatArray, atol: float, rtol: float, keep: int) -> list[Mismatch]:
    """Up to `keep` elements outside the tolerance, largest error first."""
    difference = np.abs(x - y)
    positions = np.flatnonzero(difference > tolerance_bound(atol, rtol, np.abs(y)))
    order = np.argsort(difference.ravel()[positions])[::-1][:keep]
    worst = []
    for flat in positions[order]:
        index = tuple(int(i) for i in np.unravel_index(flat, x.shape))
        worst.append(Mismatch(index, float(x[index]), float(y[index])))
    return worst
