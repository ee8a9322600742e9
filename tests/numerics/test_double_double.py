"""Double-double arithmetic: the error-free transformations are exact (checked with Fraction),
the operations keep about 106 bits (checked with mpmath), exp agrees to 32 digits."""

import operator
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest

from app.numerics import double_double as dd

SMALLEST_SUBNORMAL = 2.0**-1074
U = 2.0**-53
"""The unit roundoff of float64: a double-double keeps about U² = 2^-106."""


def exact(*values: np.ndarray) -> list[Fraction]:
    """The element-wise sum of `values`, exactly."""
    return [
        sum((Fraction(float(v)) for v in column), Fraction(0))
        for column in zip(*values, strict=True)
    ]


def wide_floats(seed: int, size: int, exponents: int) -> np.ndarray:
    """Random signs, 53-bit significands and exponents in [-exponents, exponents]."""
    rng = np.random.default_rng(seed)
    significands = rng.uniform(1, 2, size) * rng.choice([-1.0, 1.0], size)
    floats: np.ndarray = np.ldexp(significands, rng.integers(-exponents, exponents + 1, size))
    return floats


def random_dd(seed: int, size: int) -> dd.DD:
    """Normalised pairs (|lo| ≤ ulp(hi)/2) of moderate magnitude."""
    hi = wide_floats(seed, size, 60)
    lo = hi * np.random.default_rng(seed + 1).uniform(-1, 1, size) * U
    s, e = dd.two_sum(hi, lo)
    return dd.DD(s, e)


def as_mpf(x: dd.DD, i: int) -> mp.mpf:
    return mp.mpf(float(x.hi[i])) + mp.mpf(float(x.lo[i]))


def test_two_sum_is_exact_and_its_error_is_below_half_an_ulp() -> None:
    a = wide_floats(1, 500, 80)
    b = wide_floats(2, 500, 80)
    a[:5] = [1.0, 1e16, 0.1, -3.0, 0.0]
    b[:5] = [1e-20, 1.0, 0.2, 3.0, -0.0]
    s, e = dd.two_sum(a, b)
    np.testing.assert_array_equal(s, a + b)
    assert exact(s, e) == exact(a, b)
    assert np.all(np.abs(e) <= np.spacing(np.abs(s)) / 2)
    assert s[0] == 1.0 and e[0] == 1e-20
    assert s[1] == 1e16 and e[1] == 1.0  # 1e16 + 1 rounds to even: the 1 is the error
    assert e[3] == 0.0 and s[3] == 0.0


def test_two_product_is_exact() -> None:
    a = wide_floats(3, 500, 200)
    b = wide_floats(4, 500, 200)
    a[:2] = [0.1, 2.0**27 + 1]
    b[:2] = [0.1, 2.0**27 - 1]
    p, e = dd.two_product(a, b)
    np.testing.assert_array_equal(p, a * b)
    expected = [Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True)]
    assert exact(p, e) == expected
    assert p[1] == 2.0**54 and e[1] == -1.0  # (2^27 + 1)(2^27 − 1) = 2^54 − 1


def test_add_multiply_and_divide_keep_about_106_bits() -> None:
    x = random_dd(5, 300)
    y = random_dd(7, 300)
    results = {
        "add": (dd.add(x, y), operator.add),
        "multiply": (dd.multiply(x, y), operator.mul),
        "divide": (dd.divide(x, y), operator.truediv),
    }
    with mp.workdps(60):
        for name, (result, operation) in results.items():
            for i in range(300):
                want = operation(as_mpf(x, i), as_mpf(y, i))
                got = as_mpf(result, i)
                # add cancels: its error is relative to the operands, not to the sum
                size = abs(as_mpf(x, i)) + abs(as_mpf(y, i)) if name == "add" else abs(want)
                assert abs(got - want) <= 16 * U**2 * size, (name, i)


def test_divide_of_exact_quotients_is_exact() -> None:
    one = np.ones(3)
    zero = np.zeros(3)
    quotient = dd.divide(
        dd.DD(np.array([1.0, 3.0, -6.0]), zero), dd.DD(np.array([4.0, 3.0, 1.5]), zero)
    )
    assert quotient.hi.tolist() == [0.25, 1.0, -4.0]
    assert quotient.lo.tolist() == [0.0, 0.0, 0.0]
    third = dd.divide(dd.DD(one, zero), dd.DD(3 * one, zero))
    with mp.workdps(60):
        error = abs(mp.mpf(float(third.hi[0])) + mp.mpf(float(third.lo[0])) - mp.mpf(1) / 3)
        assert error <= 2 * U**2 / 3
    assert third.hi[0] == 1 / 3


def test_negate() -> None:
    x = dd.DD(np.array([1.0, -2.0]), np.array([1e-20, 0.0]))
    assert dd.negate(x).hi.tolist() == [-1.0, 2.0]
    assert dd.negate(x).lo.tolist() == [-1e-20, -0.0]


@pytest.mark.parametrize("columns", [1, 2, 3, 7, 8])
def test_row_sums_of_any_width_are_correct_to_106_bits(columns: int) -> None:
    rng = np.random.default_rng(columns)
    values = rng.normal(size=(4, columns)) * 10.0 ** rng.integers(-20, 20, (4, columns))
    total = dd.sum_rows(dd.DD(values, np.zeros_like(values)))
    assert total.hi.shape == (4,)
    for n in range(4):
        want = sum(Fraction(float(v)) for v in values[n])
        got = Fraction(float(total.hi[n])) + Fraction(float(total.lo[n]))
        size = sum(abs(Fraction(float(v))) for v in values[n])
        assert abs(got - want) <= 4 * columns * Fraction(U) ** 2 * size


def test_double_double_exp_agrees_with_mpmath_to_32_digits() -> None:
    rng = np.random.default_rng(3)
    hi = np.concatenate([-rng.uniform(0, 700, 200), -rng.uniform(0, 1, 200), [-1e-300, 0.0]])
    lo = hi * 2.0**-60 * rng.uniform(-1, 1, hi.size)
    result = dd.exp(dd.DD(hi, lo))
    with mp.workdps(60):
        for x_hi, x_lo, r_hi, r_lo in zip(hi, lo, result.hi, result.lo, strict=True):
            exact_value = mp.exp(mp.mpf(float(x_hi)) + mp.mpf(float(x_lo)))
            got = mp.mpf(float(r_hi)) + mp.mpf(float(r_lo))
            assert abs(got - exact_value) <= 1e-31 * exact_value + SMALLEST_SUBNORMAL
    edge = dd.exp(dd.DD(np.array([0.0, -np.inf, -1e5]), np.zeros(3)))
    assert edge.hi.tolist() == [1.0, 0.0, 0.0]
    assert edge.lo.tolist() == [0.0, 0.0, 0.0]


def test_double_double_row_sums_are_exact_for_few_terms() -> None:
    values = np.array([[1.0, 1e-20, -1.0, 3e-25, 0.5], [2.0**60, 1.0, -(2.0**60), 0.0, 0.0]])
    total = dd.sum_rows(dd.DD(values, np.zeros_like(values)))
    assert total.hi.tolist() == [0.5, 1.0]
    assert total.lo.tolist() == [1e-20 + 3e-25, 0.0]
