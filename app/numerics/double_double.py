"""Double-double arithmetic on numpy arrays: a value is an unevaluated sum hi + lo of two floats.

With |lo| ≤ ulp(hi)/2 a pair carries about 106 significant bits (relative error ~1e-32), built
from error-free transformations (Knuth's TwoSum, Dekker's split and TwoProduct) that need no
FMA. Everything is vectorised and element-wise; float64 only. Products use Dekker's split, which
overflows above ~1e300: callers keep their operands near 1 (scale by powers of two).

Used where float64 cancels for real: the gradient a·Σq − q when the targets nearly equal the
prediction.
"""

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]

_SPLITTER = 134217729.0  # 2^27 + 1
# ln 2 = _LN2_1 + _LN2_2 + _LN2_3 (Cody–Waite): the first two have 32 significant bits, so
# k·_LN2_1 and k·_LN2_2 are exact for |k| < 2^21.
_LN2_1 = float.fromhex("0x1.62e42fee00000p-1")
_LN2_2 = float.fromhex("0x1.a39ef35600000p-33")
_LN2_3 = float.fromhex("0x1.93c7673007e5fp-65")
_HALVINGS = 5  # exp(r) = exp(r / 2^5)^(2^5)
_TAYLOR_TERMS = 13  # |r / 2^5| ≤ 0.011: the 14th Taylor term is below 1e-33
_DOUBLE_TERMS = 7  # from the 7th term on, a float64 Horner suffices


class DD(NamedTuple):
    """hi + lo, element-wise."""

    hi: FloatArray
    lo: FloatArray


def two_sum(a: FloatArray, b: FloatArray) -> DD:
    """s + e = a + b exactly, s = fl(a + b) (Knuth).

    References
    ----------
    .. [1] D. E. Knuth, "The Art of Computer Programming", vol. 2, 3rd ed., 1997, section 4.2.2:
       TwoSum.
    """
    s = a + b
    b_virtual = s - a
    a_virtual = s - b_virtual
    return DD(s, (a - a_virtual) + (b - b_virtual))


def _fast_two_sum(a: FloatArray, b: FloatArray) -> DD:
    """s + e = a + b exactly, for |a| ≥ |b| (or a = 0)."""
    s = a + b
    return DD(s, b - (s - a))


def _split(a: FloatArray) -> DD:
    """a = hi + lo with hi, lo of 26 bits each (Dekker)."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return DD(hi, a - hi)


def two_product(a: FloatArray, b: FloatArray) -> DD:
    """p + e = a·b exactly, p = fl(a·b) (Dekker), barring overflow and underflow.

    References
    ----------
    .. [1] T. J. Dekker, "A floating-point technique for extending the available precision",
       Numerische Mathematik 18, 1971: Veltkamp's splitting and TwoProduct.
    """
    p = a * b
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return DD(p, e)


def add(x: DD, y: DD) -> DD:
    """x + y with a relative error of a few 2^-106 (the accurate double-double addition)."""
    s, e = two_sum(x.hi, y.hi)
    t, f = two_sum(x.lo, y.lo)
    s, e = _fast_two_sum(s, e + t)
    return _fast_two_sum(s, e + f)


def multiply(x: DD, y: DD) -> DD:
    """x·y, relative error a few 2^-106."""
    p, e = two_product(x.hi, y.hi)
    return _fast_two_sum(p, e + (x.hi * y.lo + x.lo * y.hi))


def divide(x: DD, y: DD) -> DD:
    """x / y by two correction steps of the float quotient, relative error a few 2^-106."""
    q1 = x.hi / y.hi
    r = add(x, negate(multiply(y, DD(q1, np.zeros_like(q1)))))
    q2 = r.hi / y.hi
    r = add(r, negate(multiply(y, DD(q2, np.zeros_like(q2)))))
    q3 = r.hi / y.hi
    leading = _fast_two_sum(q1, q2)
    return add(leading, DD(q3, np.zeros_like(q3)))


def negate(x: DD) -> DD:
    """−x."""
    return DD(-x.hi, -x.lo)


def sum_rows(x: DD) -> DD:
    """Σ over the last axis, by pairwise double-double additions (log2 C vectorised levels)."""
    hi, lo = x
    while hi.shape[-1] > 1:
        if hi.shape[-1] % 2:
            pad = [(0, 0)] * (hi.ndim - 1) + [(0, 1)]
            hi, lo = np.pad(hi, pad), np.pad(lo, pad)
        hi, lo = add(DD(hi[..., 0::2], lo[..., 0::2]), DD(hi[..., 1::2], lo[..., 1::2]))
    return DD(hi[..., 0], lo[..., 0])


def _inverse_factorials() -> list[DD]:
    """1/j! as double-double scalars, j = 0 … _TAYLOR_TERMS (j! is exact in float64)."""
    one = np.ones(1)
    factorials = np.cumprod(np.arange(1, _TAYLOR_TERMS + 1, dtype=np.float64))
    return [DD(one, 0 * one)] + [
        divide(DD(one, 0 * one), DD(np.full(1, f), 0 * one)) for f in factorials
    ]


_INVERSE_FACTORIALS = _inverse_factorials()


def exp(x: DD) -> DD:
    """exp(hi + lo) for hi ≤ 0 (−inf allowed), relative error about 1e-32 above the subnormals.

    x = k·ln 2 + r with |r| ≤ ln2/2 (Cody–Waite, exact), exp(r) − 1 by a 13-term Taylor
    polynomial of r/32 (Horner; double-double for the first six terms), squared back five
    times in the expm1 form u ← u·(2 + u), and scaled by 2^k.
    """
    underflow = ~(x.hi > -800.0)  # also −inf: exp is 0 to every digit kept
    hi = np.where(underflow, 0.0, x.hi)
    lo = np.where(underflow, 0.0, x.lo)
    k = np.rint(hi / (_LN2_1 + _LN2_2))
    r = add(DD(hi - k * _LN2_1, lo), DD(-k * _LN2_2, -k * _LN2_3))
    r = DD(np.ldexp(r.hi, -_HALVINGS), np.ldexp(r.lo, -_HALVINGS))
    # Terms from r^7/7! on are below 3e-18 of the sum: float64 suffices for them.
    tail = np.zeros_like(hi)
    for term in reversed(_INVERSE_FACTORIALS[_DOUBLE_TERMS:]):
        tail = tail * r.hi + term.hi
    polynomial = DD(tail, np.zeros_like(hi))
    for term in reversed(_INVERSE_FACTORIALS[1:_DOUBLE_TERMS]):
        polynomial = add(multiply(polynomial, r), term)
    expm1 = multiply(polynomial, r)
    two = DD(np.full_like(hi, 2.0), np.zeros_like(hi))
    for _ in range(_HALVINGS):
        expm1 = multiply(expm1, add(two, expm1))
    result = add(DD(np.ones_like(hi), np.zeros_like(hi)), expm1)
    exponent = k.astype(np.int64)
    return DD(
        np.where(underflow, 0.0, np.ldexp(result.hi, exponent)),
        np.where(underflow, 0.0, np.ldexp(result.lo, exponent)),
    )
