"""A caller's own outputs ("candidate") read leniently and compared with the exact reference.

Reading
-------
Any JSON value becomes an array or a sentence saying what is wrong with it, never an error. A
value is read as nested lists of numbers, naming the first offending position as it was sent:
a string, boolean or object where a number belongs, rows of different lengths, or a shape other
than the expected one. Shapes that differ only by axes of length 1 are accepted (a flat row for
a one-sample problem, `[0.5]` or `[[0.5]]` for a single number). A numpy array (the kernel
path: float16, bfloat16, float32…) is accepted in its own floating-point dtype.

Two readers share this code: `read_part` (grading: every entry must be a finite number) and
`read_candidate` (a candidate: NaN and ±Infinity are answers to diagnose, and `null` reads as
−inf in the outputs whose response writes `null` for −inf, the masked log-probabilities).

Comparing
---------
Entry by entry, as the gradient check does (torch.autograd.gradcheck's test),

    passes   |got − expected| ≤ atol + rtol·|expected|       (equal infinities pass)

with, over the entries that are not equal infinities,

    max_abs_error   max |got − expected|
    max_rel_error   max |got − expected| / max(1e-8, |got| + |expected|)     (cs231n)
    max_ulp_error   max |got − expected| / ulp(max(|expected|, s))

where ulp(x) = 2^(max(⌊log2 |x|⌋, e_min) − p) is the spacing of the candidate's own dtype
(p fraction bits, smallest normal exponent e_min), and s is the largest finite |expected| of
the entry's row (one sample: a row of C values, a C × C block, one loss), or of the whole
output when that row is all zero; a single number (a reduced loss) uses its own |expected|.

Why the row's scale: a kernel computes a row's entries from the same sums, in its own
precision, so each carries an absolute error of a few ulp(s), not a few ulps of itself. An entry
far below s (a probability of 1e-12 beside 0.9, a gradient entry formed as a_j·Σq − q_j by
cancellation) is right to within ulp(s) and can be hundreds of its own ulps off; measured at s,
a correct kernel is a few ulps off everywhere and a real error (a missing term, an ignored row
left unzeroed, whose expected values are all 0) is tens or more. This is the error measure of
accurate summation: an absolute error bounded by a multiple of eps·Σ|x_i| (Higham, Accuracy
and Stability of Numerical Algorithms, 2nd ed., §4.2), the spacing at the largest term
standing for that sum.

The three sizes are None as soon as one of those entries is not finite (a NaN or ±Infinity of
the candidate, or a finite candidate where the reference is −inf): no number describes that
error.
"""

import json
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from app.numerics.compare import REL_ERROR_FLOOR
from app.numerics.diagnose import (
    Diagnosis,
    Observed,
    ProblemInputs,
    diagnose,
    probe_rows,
)
from app.numerics.layout import for_each_row_block, row_blocks
from app.numerics.softmax import FloatArray, Softmax

MAX_NESTING = 16
"""Deepest nesting of lists read; the deepest expected answer (the Jacobian) has 3 levels."""

NULLABLE_OUTPUTS = frozenset({"log_probabilities"})
"""Outputs whose response writes `null` for −inf (log 0 of a masked class)."""

DEFAULT_TOLERANCE: dict[str, tuple[float, float]] = {
    "float64": (1e-12, 1e-10),
    "float32": (1e-8, 1e-5),
    "float16": (1e-6, 1e-2),
    "bfloat16": (1e-5, 5e-2),
}
"""(atol, rtol) of a candidate sent in its own precision when the request gives no tolerance:
about what a correct kernel reaches in that precision (float32: Liger-Kernel's atol 1e-8 with a
looser rtol for sums over 32k-class rows; bfloat16: its rtol 5e-2), keyed by dtype as jax's
`check_grads` keys its defaults."""


def default_tolerance(dtypes: Iterable[np.dtype[np.generic]]) -> tuple[float, float]:
    """The DEFAULT_TOLERANCE of the least precise of `dtypes` (float64's if there is none)."""
    names = {str(dtype) for dtype in dtypes} & DEFAULT_TOLERANCE.keys()
    loosest = max(names, key=lambda name: DEFAULT_TOLERANCE[name][1], default="float64")
    return DEFAULT_TOLERANCE[loosest]


KEEP_WORST = 5
"""How many failing entries an OutputCheck lists."""

LOW_PRECISION_ULPS = 2.0**20
"""A float64 candidate passing with errors above this many ulps gets a note (float32-like)."""


class _Defect(Exception):
    """The first thing wrong with a value, in words."""


# ----- reading ----------------------------------------------------------------------------------


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
_NUMBER_OR_NULL_TYPES = frozenset({int, float, type(None)})


def _is_number(value: object) -> bool:
    return type(value) in _NUMBER_TYPES


class _Reader:
    """The shape of nested lists, with the positions of nulls where they are allowed."""

    def __init__(self, name: str, nulls: bool) -> None:
        self.name = name
        self.nulls = nulls
        self.null_rows: list[tuple[tuple[int, ...], list[object]]] = []

    def _where(self, path: tuple[int, ...]) -> str:
        """'gradient[3][1]': a position named as sent (built only for a message)."""
        return self.name + "".join(f"[{i}]" for i in path)

    def shape(self, value: object, path: tuple[int, ...] = ()) -> tuple[int, ...]:
        """Raises _Defect at the first entry that breaks the nesting."""
        if _is_number(value) or (value is None and self.nulls and path):
            return ()
        if not isinstance(value, list):
            raise _Defect(f"{self._where(path)} is {describe(value)}, not a number")
        if len(path) >= MAX_NESTING:
            raise _Defect(f"{self._where(path)} is nested more than {MAX_NESTING} lists deep")
        if not value:
            return (0,)
        if not isinstance(value[0], list):  # a row of numbers: one C-level pass over its types
            types = set(map(type, value))
            if types <= _NUMBER_TYPES:
                return (len(value),)
            if self.nulls and types <= _NUMBER_OR_NULL_TYPES:
                self.null_rows.append((path, value))
                return (len(value),)
            allowed = _NUMBER_OR_NULL_TYPES if self.nulls else _NUMBER_TYPES
            bad = next(i for i, item in enumerate(value) if type(item) not in allowed)
            where = self._where((*path, bad))
            raise _Defect(f"{where} is {describe(value[bad])}, not a number")
        first = self.shape(value[0], (*path, 0))
        for i, item in enumerate(value[1:], start=1):
            shape = self.shape(item, (*path, i))
            if shape != first:
                where = self._where(path)
                raise _Defect(
                    f"{where}[{i}] has {_size_text(shape)} but {where}[0] has "
                    f"{_size_text(first)}: every row needs the same length"
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


def _shape_defect(name: str, shape: tuple[int, ...], sent: tuple[int, ...]) -> str | None:
    if sent != shape and (
        math.prod(sent) != math.prod(shape) or _squeezed(sent) != _squeezed(shape)
    ):
        return f"{name}: {_mismatch_text(shape, sent)}"
    return None


def _non_finite_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _read_ndarray(
    name: str, value: NDArray[np.generic], shape: tuple[int, ...]
) -> FloatArray | str:
    """A numpy array in its own floating-point dtype (integers become float64)."""
    kind = value.dtype.kind
    array: FloatArray
    if kind in "iu":
        array = value.astype(np.float64)
    elif kind == "f" or (kind == "V" and value.dtype.fields is None and value.dtype.itemsize <= 2):
        array = value.view()  # type: ignore[assignment]  # float16/32/64, or an ml_dtypes float
    else:
        return f"{name} is an array of {value.dtype.name}: expected floating-point numbers"
    defect = _shape_defect(name, shape, value.shape)
    if defect is not None:
        return defect
    return array.reshape(shape)


def read_candidate(
    name: str, value: object, shape: tuple[int, ...], *, null_as: float | None = None
) -> FloatArray | str:
    """`value` as an array of `shape`, or a sentence saying what is wrong with it.

    JSON values (nested lists, numbers, with float NaN/±inf already parsed) become float64;
    NaN and ±Infinity are kept. `null` entries read as `null_as` when it is given (−inf for the
    outputs of NULLABLE_OUTPUTS) and are a defect otherwise. A numpy array keeps its own
    floating-point dtype.
    """
    if isinstance(value, np.ndarray):
        return _read_ndarray(name, value, shape)
    return _read(name, value, shape, allow_non_finite=True, null_as=null_as)


def read_part(name: str, value: object, shape: tuple[int, ...]) -> FloatArray | str:
    """`value` as a float64 array of `shape`, or a message saying what is wrong with it.

    Every entry must be a finite number: a non-finite one is named in the message as "NaN",
    "Infinity" or "-Infinity" (a student's answer, read for grading).
    """
    return _read(name, value, shape, allow_non_finite=False, null_as=None)


def _read(
    name: str,
    value: object,
    shape: tuple[int, ...],
    *,
    allow_non_finite: bool,
    null_as: float | None,
) -> FloatArray | str:
    if not _is_number(value) and not isinstance(value, list):
        expected = f"an array of shape {list(shape)}" if shape else "a number"
        return f"{name} is {describe(value)}: expected {expected}"
    reader = _Reader(name, nulls=null_as is not None)
    try:
        sent_shape = reader.shape(value)
    except _Defect as defect:
        return str(defect)
    wrong_shape = _shape_defect(name, shape, sent_shape)
    if wrong_shape is not None:
        return wrong_shape
    try:
        array = np.array(value, dtype=np.float64)  # a null becomes NaN here, then null_as
    except OverflowError:
        return f"{name} holds an integer too large for a floating-point number"
    for path, row in reader.null_rows:
        nulls = [i for i, item in enumerate(row) if item is None]
        array[path][nulls] = null_as
    if not allow_non_finite:
        not_finite = ~np.isfinite(array)
        if not_finite.any():
            index = tuple(int(i) for i in np.argwhere(not_finite)[0])
            where = "".join(f"[{i}]" for i in index)
            return (
                f"{name}{where} is {_non_finite_text(float(array[index]))}: every entry must "
                "be a finite number"
            )
    return array.reshape(shape)


# ----- units in the last place ----------------------------------------------------------------


@lru_cache(maxsize=32)
def float_format(dtype: np.dtype[np.generic]) -> tuple[int, int]:
    """(p, e_min) of a binary floating-point dtype: p fraction bits, 2^e_min the smallest
    normal number. From np.finfo, or found by rounding probes for types numpy does not know
    (ml_dtypes' bfloat16, float8…): p is the largest k with 1 + 2^-k ≠ 1 in the dtype, e_min
    the smallest e at which 2^e·(1 + 2^-p) is still exact (not subnormal)."""
    try:
        info = np.finfo(dtype)  # type: ignore[type-var]
        return int(info.nmant), int(info.minexp)
    except ValueError:
        pass

    def exact(x: float) -> bool:
        return float(np.array(x).astype(dtype).astype(np.float64)) == x

    fraction_bits = next(k for k in range(1, 64) if not exact(1 + 2.0**-k)) - 1
    step = 1 + 2.0**-fraction_bits
    e_min = -1
    while e_min > -1022 and exact(math.ldexp(step, e_min - 1)):
        e_min -= 1
    return fraction_bits, e_min


def ulp(values: FloatArray, dtype: np.dtype[np.generic]) -> FloatArray:
    """The spacing of `dtype` at each of `values` (float64): 2^(max(⌊log2|x|⌋, e_min) − p);
    at 0 the smallest subnormal; inf at ±inf.

    2^⌊log2|x|⌋ is read off the bits: x with its sign and fraction cleared (0 for a float64
    subnormal or zero, which the floor 2^e_min then replaces)."""
    fraction_bits, e_min = float_format(dtype)
    x = np.asarray(values, np.float64)
    power = np.asarray(x.view(np.int64) & np.int64(0x7FF0000000000000)).view(np.float64)
    np.maximum(power, 2.0**e_min, out=power)
    power *= 2.0**-fraction_bits
    return power


# ----- comparing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One entry outside the tolerance."""

    index: tuple[int, ...]
    expected: float
    got: float


@dataclass(frozen=True)
class OutputCheck:
    """The verdict on one candidate output."""

    passed: bool
    checked: int
    """How many entries were compared (0 when the output could not be read)."""
    mismatches: int
    """How many entries fail the tolerance test."""
    nonfinite: int
    """How many candidate entries are NaN or ±Infinity (other than an exact −inf of a mask)."""
    max_abs_error: float | None
    max_rel_error: float | None
    max_ulp_error: float | None
    """In ulps of the candidate's own dtype at the scale of each entry's row (module
    docstring)."""
    worst: list[Entry] = field(default_factory=list)
    """Up to KEEP_WORST failing entries, non-finite ones first, then by absolute error."""
    defect: str | None = None
    """Why the output could not be compared (wrong shape, strings…); None if it was."""
    dtype: str = "float64"
    """The candidate's dtype."""


@dataclass(frozen=True)
class CandidateCheck:
    """The verdict on every candidate output, with the mistakes that explain them."""

    passed: bool
    outputs: dict[str, OutputCheck]
    diagnoses: list[Diagnosis]
    notes: list[str]
    atol: float
    rtol: float
    """The tolerance applied to every output: |got − expected| ≤ atol + rtol·|expected|."""


def _unreadable(defect: str) -> OutputCheck:
    return OutputCheck(False, 0, 0, 0, None, None, None, [], defect)


def compare_output(
    candidate: FloatArray, reference: FloatArray, *, atol: float, rtol: float
) -> OutputCheck:
    """`candidate` (any float dtype) against `reference` (same shape), entry by entry.

    See the module docstring for the test and the error sizes.
    """
    return _compare(candidate, reference, atol, rtol)[0]


@dataclass
class _BlockComparison:
    """What one block of rows of `_compare` found (its own rows of row_ok and row_error are
    written in place)."""

    mismatches: int = 0
    nonfinite: int = 0
    finite: bool = True
    """Whether every |got − expected| of the block is finite (else the maxima are not kept)."""
    largest: float = 0.0
    relative: float = 0.0
    ulps: float = 0.0
    failures: tuple[FloatArray, NDArray[np.intp]] | None = None
    """(sizes, flat indices) of its KEEP_WORST largest failures, or None."""


def _compare(
    candidate: FloatArray, reference: FloatArray, atol: float, rtol: float
) -> tuple[OutputCheck, NDArray[np.bool_], FloatArray]:
    """compare_output's verdict, with each sample's "all entries pass" and largest
    |got − expected| (inf for NaN), for choosing probe rows.

    Works through blocks of samples (`layout.for_each_row_block`, on every core), so that
    every temporary stays in cache: a dozen cheap passes per block instead of a dozen over a
    Jacobian of N·C·C entries. The blocks' findings are combined in the order of their rows,
    so the verdict does not depend on which block finished first."""
    dtype = np.asarray(candidate).dtype
    expected_all = np.asarray(reference, np.float64)
    shape = expected_all.shape
    rows = shape[0] if shape else 1
    got_rows = np.asarray(candidate).reshape(rows, -1)
    expected_rows = expected_all.reshape(rows, -1)
    row_size = expected_rows.shape[1]
    row_ok = np.ones(rows, bool)
    row_error = np.zeros(rows)
    blocks: dict[int, _BlockComparison] = {}
    whole_scale: list[float] = []
    finding_scale = threading.Lock()

    def output_scale() -> float:
        """The largest finite |expected| of the whole output, for rows that are all zero: found
        once (the first block that needs it), block by block (no temporary of the output's
        size)."""
        with finding_scale:
            if not whole_scale:
                scales = (
                    float(_row_scale(np.abs(expected_rows[part])).max(initial=0.0))
                    for part in row_blocks(rows, row_size)
                )
                whole_scale.append(max(scales, default=0.0))
        return whole_scale[0]

    def compare_block(part: slice) -> None:
        found = blocks[part.start] = _BlockComparison()
        got = got_rows[part].astype(np.float64)
        expected = expected_rows[part]
        with np.errstate(invalid="ignore", over="ignore"):
            difference = got - expected
            np.abs(difference, out=difference)
            magnitude = np.abs(expected)
            bound = magnitude * rtol
            bound += atol  # a bound that overflows admits everything (compare.tolerance_bound)
            ok = difference <= bound
            finite = bool(np.isfinite(magnitude.max(initial=0.0)))  # one pass, no temporary
            if not finite:  # an infinite expected value (a mask's log 0): only itself
                infinite = ~np.isfinite(magnitude)
                same = got == expected
                ok &= ~infinite
                ok |= same
                difference[same & infinite] = 0.0
            rows_pass = ok.all(axis=1)
            row_ok[part] = rows_pass
            error = difference.max(axis=1, initial=0.0)
            row_error[part] = error
            found.largest = float(error.max(initial=0.0))
            if not math.isfinite(found.largest):
                found.finite = False
                found.nonfinite = int(np.count_nonzero(~np.isfinite(got) & ~(got == expected)))
            else:
                denominator = np.abs(got)
                denominator += magnitude
                np.maximum(denominator, REL_ERROR_FLOOR, out=denominator)
                relative = np.divide(difference, denominator, out=denominator)
                found.relative = float(relative.max(initial=0.0))
                scale = magnitude.max(axis=1, initial=0.0) if finite else _row_scale(magnitude)
                if not scale.all():
                    scale[scale == 0] = output_scale()
                found.ulps = float((error / ulp(scale, dtype)).max(initial=0.0))
        failing = np.empty(0, np.intp) if rows_pass.all() else np.flatnonzero(~ok)
        if failing.size:
            found.mismatches = int(failing.size)
            size = np.nan_to_num(difference.ravel()[failing], nan=np.inf)
            if size.size > KEEP_WORST:  # the KEEP_WORST largest, without sorting all of them
                keep = np.argpartition(-size, KEEP_WORST - 1)[:KEEP_WORST]
                size, failing = size[keep], failing[keep]
            found.failures = (size, failing + part.start * row_size)

    for_each_row_block(compare_block, rows, row_size)
    in_order = [blocks[start] for start in sorted(blocks)]
    mismatches = sum(block.mismatches for block in in_order)
    nonfinite = sum(block.nonfinite for block in in_order)
    finite = all(block.finite for block in in_order)
    largest = max((block.largest for block in in_order), default=0.0)
    relative = max((block.relative for block in in_order), default=0.0)
    ulps = max((block.ulps for block in in_order), default=0.0)
    pool = [block.failures for block in in_order if block.failures is not None]
    worst: list[Entry] = []
    if pool:
        sizes_pool = np.concatenate([size for size, _ in pool])
        flats = np.concatenate([flat for _, flat in pool])
        for flat in flats[np.argsort(-sizes_pool, kind="stable")[:KEEP_WORST]]:
            index = tuple(int(i) for i in np.unravel_index(flat, shape))
            worst.append(
                Entry(index, float(expected_all[index]), float(np.asarray(candidate)[index]))
            )
    top = float(np.finfo(np.float64).max)  # an error at a zero reference, in subnormal spacings
    check = OutputCheck(
        passed=mismatches == 0,
        checked=int(expected_all.size),
        mismatches=mismatches,
        nonfinite=nonfinite,
        max_abs_error=largest if finite else None,
        max_rel_error=relative if finite else None,
        max_ulp_error=min(ulps, top) if finite else None,
        worst=worst,
        defect=None,
        dtype=str(dtype),
    )
    return check, row_ok, np.nan_to_num(row_error, nan=np.inf)


def _row_scale(magnitude: FloatArray) -> FloatArray:
    """s of each row: the largest finite entry of `magnitude` (|expected|), 0 if there is none."""
    finite = np.isfinite(magnitude)
    scale: FloatArray = np.where(finite, magnitude, 0.0) if not finite.all() else magnitude
    largest: FloatArray = scale.max(axis=1, initial=0.0)
    return largest


def check_candidate(
    candidate: Mapping[str, object],
    reference: Mapping[str, FloatArray],
    *,
    atol: float,
    rtol: float,
    inputs: ProblemInputs | None = None,
    softmax: Softmax | None = None,
    docs_url: str | None = None,
) -> CandidateCheck:
    """Compare each candidate output with its reference, and name the mistakes.

    Parameters
    ----------
    candidate
        Output name → the caller's value: a JSON value (nested lists, numbers, None for
        null, float NaN/±inf) or a numpy array of any floating-point dtype.
    reference
        Output name → the exact (float64 or the request's dtype) reference of every output
        the candidate may hold: probabilities, log_probabilities (−inf at masks), loss (a 0-d
        array, or (N,) for reduction `none`), losses, gradient, jacobian. A candidate output
        without a reference is reported as a defect.
    atol, rtol
        The tolerance: an entry passes where |got − expected| ≤ atol + rtol·|expected|.
    inputs
        The raw problem, for diagnoses; None: no diagnoses.
    softmax
        The problem's float64 softmax if already computed (saves recomputing it).
    docs_url
        Base URL of the published docs, for the links in diagnosis messages.

    Returns
    -------
    CandidateCheck
        `passed` when every output was read and passes; `diagnoses` (see diagnose.diagnose)
        for the failing ones; `notes` on precision (a passing low-precision candidate) and on
        failing outputs that no known mistake explains.
    """
    outputs: dict[str, OutputCheck] = {}
    failing: dict[str, Observed] = {}
    notes: list[str] = []
    for name, value in candidate.items():
        if name not in reference:
            known = ", ".join(sorted(reference))
            outputs[name] = _unreadable(f"{name}: not an output of this problem ({known})")
            continue
        expected = np.asarray(reference[name], np.float64)
        null_as = -math.inf if name in NULLABLE_OUTPUTS else None
        array = read_candidate(name, value, expected.shape, null_as=null_as)
        if isinstance(array, str):
            outputs[name] = _unreadable(array)
            continue
        check, row_ok, row_error = _compare(array, expected, atol, rtol)
        outputs[name] = check
        if check.passed:
            notes.extend(_precision_note(name, check))
        elif check.max_ulp_error is not None and check.max_ulp_error <= 1:
            # precision is not a mistake: the candidate is its dtype's rounding of the answer
            eps = 2.0 ** -float_format(np.asarray(array).dtype)[0]
            notes.append(
                f"{name}: every difference is within 1 ulp of {check.dtype} at the scale of its "
                f"row, the candidate's own rounding; a tolerance for {check.dtype} needs "
                f"rtol ≥ {eps:g} (and atol ≥ {check.max_abs_error:.3g} where the expected "
                "values are small)"
            )
        else:
            got = array.astype(np.float64, copy=False)
            rows = probe_rows(row_ok, row_error) if got.ndim >= 1 else None
            failing[name] = Observed(got, expected, rows, check.nonfinite, np.asarray(array).dtype)
    diagnoses: list[Diagnosis] = []
    if inputs is not None and failing:
        diagnoses = diagnose(
            failing, inputs, atol=atol, rtol=rtol, softmax=softmax, docs_url=docs_url
        )
    explained = {d.output for d in diagnoses}
    for name in failing:
        if name not in explained:
            notes.append(
                f"{name}: no known mistake explains these values; compare the worst entries"
            )
    passed = all(check.passed for check in outputs.values())
    return CandidateCheck(passed, outputs, diagnoses, notes, atol, rtol)


def _precision_note(name: str, check: OutputCheck) -> list[str]:
    """A line for a passing output whose errors show a lower precision than float64."""
    ulps = check.max_ulp_error
    if check.dtype != "float64":
        detail = "" if ulps is None else f" (largest error {ulps:.3g} ulps of {check.dtype})"
        return [f"{name}: {check.dtype} values, within the tolerance{detail}"]
    if ulps is not None and ulps > LOW_PRECISION_ULPS:
        return [
            f"{name}: within the tolerance, with errors up to {ulps:.3g} float64 ulps (rounding, "
            "as of a float32 computation or of cancellation): precision, not a mistake"
        ]
    return []
