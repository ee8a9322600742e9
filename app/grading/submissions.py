"""A student's answer read leniently: any JSON value becomes an array or a message, never an error.

A part is read as nested lists of JSON numbers. What the student got wrong is said in words,
naming the first offending position as it was sent: a string or null where a number belongs,
rows of different lengths, NaN or Infinity, or a shape other than the expected one. Shapes that
differ only by axes of length 1 are accepted (a flat row for a one-sample problem, `[0.5]` or
`[[0.5]]` for a single number).
"""

import json
import math

import numpy as np

from app.numerics.softmax import FloatArray

MAX_NESTING = 16
"""Deepest nesting of lists read; the deepest expected answer (the Jacobian) has 3 levels."""


class _Defect(Exception):
    """The first thing wrong with a submitted part, in words."""


def describe(value: object) -> str:
    """A JSON value named for a message; strings quoted and cut at 20 characters."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        quoted = json.dumps(value[:20], ensure_ascii=False)
        return f"the string {quoted}{'…' if len(value) > 20 else ''}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a number"


_NUMBER_TYPES = frozenset({int, float})


def _is_number(value: object) -> bool:
    return type(value) in _NUMBER_TYPES


def _shape(value: object, where: str, depth: int = 0) -> tuple[int, ...]:
    """The shape of nested lists of numbers; raises _Defect at the first entry that breaks it."""
    if _is_number(value):
        return ()
    if not isinstance(value, list):
        raise _Defect(f"{where} is {describe(value)}, not a number")
    if depth >= MAX_NESTING:
        raise _Defect(f"{where} is nested more than {MAX_NESTING} lists deep")
    if not value:
        return (0,)
    if not isinstance(value[0], list):  # a row of numbers: one C-level pass over its types
        if set(map(type, value)) <= _NUMBER_TYPES:
            return (len(value),)
        bad = next(i for i, item in enumerate(value) if not _is_number(item))
        raise _Defect(f"{where}[{bad}] is {describe(value[bad])}, not a number")
    first = _shape(value[0], f"{where}[0]", depth + 1)
    for i, item in enumerate(value[1:], start=1):
        shape = _shape(item, f"{where}[{i}]", depth + 1)
        if shape != first:
            raise _Defect(
                f"{where}[{i}] has {_size_text(shape)} but {where}[0] has {_size_text(first)}: "
                "every row needs the same length"
            )
    return (len(value), *first)


def _shape_text(shape: tuple[int, ...]) -> str:
    return f"shape {list(shape)}" if shape else "a single number"


def _size_text(shape: tuple[int, ...]) -> str:
    """How a row's contents are named when rows differ: '3 entries', or its shape."""
    if len(shape) == 1:
        return f"{shape[0]} {'entry' if shape[0] == 1 else 'entries'}"
    return _shape_text(shape)


def _mismatch_text(shape: tuple[int, ...], got: tuple[int, ...]) -> str:
    """'expected shape [4, 3], got [4, 2]' (or 'a single number' on either side)."""
    if shape and got:
        return f"expected shape {list(shape)}, got {list(got)}"
    return f"expected {_shape_text(shape)}, got {_shape_text(got)}"


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(length for length in shape if length != 1)


def _non_finite_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def read_part(name: str, value: object, shape: tuple[int, ...]) -> FloatArray | str:
    """`value` as a float64 array of `shape`, or a message saying what is wrong with it.

    Non-finite entries are named in the message as "NaN", "Infinity" or "-Infinity".
    """
    if not _is_number(value) and not isinstance(value, list):
        expected = f"an array of shape {list(shape)}" if shape else "a number"
        return f"{name} is {describe(value)}: expected {expected}"
    try:
        sent_shape = _shape(value, name)
    except _Defect as defect:
        return str(defect)
    if sent_shape != shape and (
        math.prod(sent_shape) != math.prod(shape) or _squeezed(sent_shape) != _squeezed(shape)
    ):
        return f"{name}: {_mismatch_text(shape, sent_shape)}"
    try:
        array = np.array(value, dtype=np.float64)
    except OverflowError:
        return f"{name} holds an integer too large for a floating-point number"
    not_finite = ~np.isfinite(array)
    if not_finite.any():
        index = tuple(int(i) for i in np.argwhere(not_finite)[0])
        where = "".join(f"[{i}]" for i in index)
        return (
            f"{name}{where} is {_non_finite_text(float(array[index]))}: every entry must be a "
            "finite number"
        )
    return array.reshape(shape)
