"""The verdict of a check: torch's allclose test, cs231n's relative error, the worst mismatches."""

import warnings

import numpy as np
import pytest

from app.numerics.compare import (
    REL_ERROR_FLOOR,
    Mismatch,
    compare,
    compare_blocks,
    rel_error,
    tolerance_bound,
)


def test_compare_counts_and_ranks_mismatches() -> None:
    analytic = np.array([[1.0, 2.0, 3.0]])
    numeric = np.array([[1.0, 2.1, 3.5]])
    agreement = compare(analytic, numeric, atol=1e-5, rtol=1e-3)
    assert not agreement.passed
    assert agreement.mismatches == 2
    assert agreement.checked == 3
    assert [m.index for m in agreement.worst] == [(0, 2), (0, 1)]
    assert agreement.max_abs_error == pytest.approx(0.5)
    assert agreement.max_rel_error == pytest.approx(0.5 / 6.5)
    assert rel_error(np.zeros(2), np.zeros(2)) == 0.0


def test_a_tolerance_beyond_float_range_passes_everything() -> None:
    """atol + rtol·|numeric| overflows to inf: every element passes, and no warning is raised."""
    agreement = compare(
        np.array([[0.5, -3.0]]), np.array([[-0.5, 4.0]]), atol=1.5e308, rtol=1.1e308
    )
    assert agreement.passed
    assert agreement.mismatches == 0


@pytest.mark.parametrize(
    ("analytic", "numeric", "expected"),
    [
        ([1.0, -2.0], [1.5, -2.0], 0.5 / 2.5),  # |1 − 1.5| / (1 + 1.5); the second is 0
        ([1.0], [-1.0], 1.0),  # opposite signs: 2 / 2, the largest possible
        ([3.0, 4.0], [3.0, 4.0], 0.0),
        ([1e-10], [0.0], 1e-10 / 1e-8),  # below the floor: divided by 1e-8, not by 1e-10
        ([2e-8, 0.0], [0.0, 0.0], 1.0),  # |x| + |y| = 2e-8 > the floor: 2e-8 / 2e-8
    ],
)
def test_rel_error_is_cs231ns_formula(
    analytic: list[float], numeric: list[float], expected: float
) -> None:
    """max |x − y| / max(1e-8, |x| + |y|), by hand."""
    assert REL_ERROR_FLOOR == 1e-8
    assert rel_error(np.array(analytic), np.array(numeric)) == pytest.approx(expected, rel=1e-15)


def test_rel_error_is_computed_in_float64() -> None:
    """float32 inputs are widened first: 1 and 1 + 2^-23 differ by 2^-23 / (2 + 2^-23)."""
    x = np.array([1.0], np.float32)
    y = np.array([1.0 + 2.0**-23], np.float32)
    assert rel_error(x, y) == 2.0**-23 / (2 + 2.0**-23)


def test_tolerance_bound_is_atol_plus_rtol_times_the_magnitude() -> None:
    bound = tolerance_bound(0.5, 0.25, np.array([0.0, 2.0, 8.0]))
    assert bound.tolist() == [0.5, 1.0, 2.5]


def test_tolerance_bound_overflows_to_infinity_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bound = tolerance_bound(1.0, 1e308, np.array([0.0, 10.0]))
    assert bound.tolist() == [1.0, np.inf]


def test_an_element_exactly_at_the_bound_passes() -> None:
    """|a − n| ≤ atol + rtol·|n| with equality admitted (values exact in binary)."""
    at_bound = compare(np.array([[3.0]]), np.array([[2.0]]), atol=0.5, rtol=0.25)
    assert at_bound.passed and at_bound.mismatches == 0
    assert at_bound.max_abs_error == 1.0
    assert at_bound.max_rel_error == 1.0 / 5.0
    beyond = compare(np.array([[3.0 + 2.0**-50]]), np.array([[2.0]]), atol=0.5, rtol=0.25)
    assert not beyond.passed and beyond.mismatches == 1


def test_the_tolerance_is_relative_to_the_numeric_side() -> None:
    """torch.autograd.gradcheck's test is not symmetric: rtol scales |numeric|."""
    assert not compare(np.array([[4.0]]), np.array([[2.0]]), atol=0.0, rtol=0.6).passed
    assert compare(np.array([[2.0]]), np.array([[4.0]]), atol=0.0, rtol=0.6).passed


def test_worst_keeps_the_largest_errors_with_their_values() -> None:
    analytic = np.zeros((2, 2, 3))
    numeric = np.zeros((2, 2, 3))
    numeric[1, 0, 2] = 3.0
    numeric[0, 1, 1] = -2.0
    numeric[0, 0, 0] = 1.0
    agreement = compare(analytic, numeric, atol=0.1, rtol=0.0, keep=2)
    assert agreement.mismatches == 3
    assert agreement.checked == 12
    assert agreement.worst == [
        Mismatch((1, 0, 2), 0.0, 3.0),
        Mismatch((0, 1, 1), 0.0, -2.0),
    ]
    assert agreement.max_abs_error == 3.0
    assert agreement.max_rel_error == 1.0
    assert compare(analytic, analytic, atol=0.0, rtol=0.0).worst == []


def test_blocks_are_judged_apart_with_indices_inside_their_block() -> None:
    analytic = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    numeric = np.array([[1.0, 2.0], [3.0, 4.5], [5.5, 6.0]])
    first, second = compare_blocks(analytic, numeric, np.array([0, 2], np.intp), atol=0.1, rtol=0.0)
    assert first.mismatches == 1 and first.checked == 4 and not first.passed
    assert first.worst == [Mismatch((1, 1), 4.0, 4.5)]
    assert first.max_abs_error == 0.5
    assert first.max_rel_error == pytest.approx(0.5 / 8.5, rel=1e-15)
    assert second.mismatches == 1 and second.checked == 2
    assert second.worst == [Mismatch((0, 0), 5.0, 5.5)]
    assert second.max_rel_error == pytest.approx(0.5 / 10.5, rel=1e-15)
    for block, (start, stop) in zip((first, second), ((0, 2), (2, 3)), strict=True):
        alone = compare(analytic[start:stop], numeric[start:stop], atol=0.1, rtol=0.0)
        assert block == alone


def test_float32_arrays_are_compared_in_float64() -> None:
    """The difference of two float32 values is exact in float64, not rounded to float32."""
    a = np.array([[1.0]], np.float32)
    n = np.array([[np.float32(1.0) + np.finfo(np.float32).eps]], np.float32)
    agreement = compare(a, n, atol=0.0, rtol=0.0)
    assert agreement.max_abs_error == float(np.finfo(np.float32).eps)
    assert isinstance(agreement.max_abs_error, float)
    assert isinstance(agreement.worst[0].analytic, float)
