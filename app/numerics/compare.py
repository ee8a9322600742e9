"""Agreement between an analytic and a numeric derivative.

passes element-wise      |analytic − numeric| ≤ atol + rtol·|numeric|   (torch.autograd.gradcheck)
max_abs_error            max |analytic − numeric|
max_rel_error            max |analytic − numeric| / max(1e-8, |analytic| + |numeric|)   (cs231n)
"""

from dataclasses import dataclass

import numpy as np

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
    """Check |analytic − numeric| ≤ atol + rtol·|numeric| everywhere (computed in float64)."""
    x = np.asarray(analytic, np.float64)
    y = np.asarray(numeric, np.float64)
    difference = np.abs(x - y)
    failing = difference > atol + rtol * np.abs(y)
    count = int(np.count_nonzero(failing))
    worst: list[Mismatch] = []
    if count:
        positions = np.flatnonzero(failing)
        order = np.argsort(difference.ravel()[positions])[::-1][:keep]
        for flat in positions[order]:
            index = tuple(int(i) for i in np.unravel_index(flat, x.shape))
            worst.append(Mismatch(index, float(x[index]), float(y[index])))
    return Agreement(
        passed=count == 0,
        max_abs_error=float(difference.max(initial=0.0)),
        max_rel_error=rel_error(x, y) if x.size else 0.0,
        mismatches=count,
        checked=int(x.size),
        worst=worst,
    )
