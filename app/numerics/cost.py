"""Upper bounds on the memory a request's computation allocates, from its shape alone.

Admission control (`app.core.budget`) needs a request's peak memory *before* it computes. Every
array the numerics allocate is a whole number of rows × width (width 1, C or C·C), so the peak is
a sum of such arrays, counted here in units of one array and calibrated against tracemalloc
(which numpy reports its allocations to; `tests/core/test_cost.py` checks each estimate against
the measured peak: at least it, and at most about twice it).

A request lives in three phases, whose peaks do not add up:

    inputs      the parsed logits (float64, plus a copy in the requested dtype), labels, and
                whatever else the parser keeps (`parsed_bytes_per_number`: 0 when it hands numpy
                arrays over, PYTHON_NUMBER_BYTES when the body stays as lists of floats)
    compute     softmax and loss intermediates (always), each output kept in the report, and
                the largest transient of one output (they are computed one after another)
    response    the outputs kept, plus the encoding: JSON writes ≤ JSON_BYTES_PER_NUMBER bytes a
                number into a buffer that grows (up to twice that while growing); .npz copies
                each array once

    peak = inputs + max(compute, kept + encoding)

Shapes are (rows, classes): K-dimensional inputs (N, C, d1, …, dk) count every position as a row,
rows = N·d1·…·dk. A new output is one more `OutputCost` entry (a Hessian is C·C wide, like the
Jacobian). The response's encoding enters only as its size: bytes per number in JSON
(JSON_BYTES_PER_NUMBER, JSON_GROWTH) and one copy per array in .npz, measured against the web
layer's encoder (`app.api.encoding`), which this module does not import.
"""

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from app.numerics.gradcheck import BY_BLOCKS
from app.numerics.layout import BLOCK_ENTRIES, BLOCK_WORKERS
from app.numerics.linear import DIRECTION_BLOCK_LOGITS, LOSS_BLOCK_LOGITS

FLOAT64_BYTES = 8
INDEX_BYTES = 8
JSON_BYTES_PER_NUMBER = 25
"""Longest float64 orjson writes, with its comma ("-1.2345678901234567e-300,")."""
JSON_GROWTH = 1.6
"""A JSON answer's buffer grows by reallocation: a large answer is written piece by piece into
one bytearray and answered as it is, never copied (2.0 while it was copied into a bytes object
at the end); orjson's own buffer (a small answer, one call) was measured at about 1.5× its
final size. tests/api/test_admission_estimates.py holds every include set between the measured
peak and twice it."""
PYTHON_NUMBER_BYTES = 32
"""A float in a list parsed by json.loads: the 24-byte float object and its 8-byte list slot."""
FIXED_BYTES = 4 << 20
"""Python objects, small arrays and the interpreter's own allocations of one request."""
NUMERIC_FIXED_BYTES = 8 << 20
"""One stack of perturbed columns of a numeric derivative (finite_diff.EVALUATION_ENTRIES numbers,
complex, a few temporaries)."""


class Width(Enum):
    """Numbers per row of an array."""

    ONE = "1"
    CLASSES = "C"
    SQUARE = "C·C"


class ResponseFormat(StrEnum):
    """How the response is encoded."""

    JSON = "json"
    NPZ = "npz"


@dataclass(frozen=True)
class Shape:
    """The size of a problem: rows (N, or N·d1·…·dk), classes C, bytes per number of its dtype."""

    rows: int
    classes: int
    itemsize: int = FLOAT64_BYTES

    def numbers(self, width: Width) -> int:
        """Numbers in one array of `width`."""
        per_row = {Width.ONE: 1, Width.CLASSES: self.classes, Width.SQUARE: self.classes**2}
        return self.rows * per_row[width]

    def array_bytes(self, width: Width, itemsize: int | None = None) -> int:
        """Bytes of one array of `width` (in the problem's dtype unless `itemsize` is given)."""
        return self.numbers(width) * (self.itemsize if itemsize is None else itemsize)


@dataclass(frozen=True)
class OutputCost:
    """What computing one output allocates, in arrays of its own width.

    `kept`: arrays (in the dtype) that stay in the report until the response is encoded;
    `transient`: float64 arrays alive at once while it is computed, beyond those kept (the
    error estimate and the comparison of a numeric derivative run in float64); `requires`:
    outputs computed along with it.
    """

    width: Width
    kept: float = 0.0
    transient: float = 0.0
    numeric: bool = False
    requires: tuple[str, ...] = ()


OUTPUTS: Mapping[str, OutputCost] = {
    # the softmax and the loss are computed for every request: counted in the base costs
    "probabilities": OutputCost(Width.CLASSES),
    "log_probabilities": OutputCost(Width.CLASSES),
    "loss": OutputCost(Width.ONE),
    "gradient": OutputCost(Width.CLASSES),
    # values and steps kept; steps, error estimate and comparison (measured 7.1)
    "numeric_gradient": OutputCost(Width.CLASSES, kept=2, transient=7.5, numeric=True),
    "jacobian": OutputCost(Width.SQUARE, kept=1),
    # the values kept (and its steps, C times smaller); the comparison with the analytic
    # Jacobian, with its worst mismatches when every entry fails (measured 7.2)
    "numeric_jacobian": OutputCost(
        Width.SQUARE, kept=1, transient=7.5, numeric=True, requires=("jacobian",)
    ),
    # the Hessian is s·J (J formed, then scaled: two C·C arrays while it is made)
    "hessian": OutputCost(Width.SQUARE, kept=1, transient=2),
    # finite differences of the gradient: C·C values and the comparison, as numeric_jacobian
    "numeric_hessian": OutputCost(
        Width.SQUARE, kept=1, transient=7.5, numeric=True, requires=("hessian",)
    ),
    # H·v without forming H: a few arrays of the logits' size
    "hessian_vector_product": OutputCost(Width.CLASSES, kept=1, transient=5),
}

SOFTMAX_BASE = 6.5
"""Arrays (N, C) in the dtype at softmax's peak: shifted logits and their rounding error, the
exponentials, probabilities, log-probabilities, complement (measured 6.1)."""
SOFTMAX_KEPT = 3.0
"""Probabilities, log-probabilities and complement, kept until the response is encoded."""
CROSS_ENTROPY_BASE = 7.5
"""Softmax plus the effective targets q, the losses and the gradient (measured 7.0)."""
CROSS_ENTROPY_KEPT = 5.0
"""Softmax's kept arrays, q and the gradient."""
BY_BLOCKS_KEPT = 2.0
"""q and the gradient: all that a cross-entropy computed by blocks of rows keeps
(`app.numerics.gradcheck.LossRows.of`) when q is a matrix (probability labels, label
smoothing)."""
ONE_HOT_BY_BLOCKS_KEPT = 1.0
"""The gradient: what it keeps for index labels without smoothing, whose q is one class a row
(`app.numerics.cross_entropy.OneHot`, formed a block at a time)."""
DIRECTIONAL_TRANSIENT = 12.0
"""float64 arrays of the logits' size alive at once while the gradient is checked along random
directions (`app.numerics.directional.directional_check`): the direction, its step, the moved
logits and a whole loss evaluation's softmax intermediates (measured 11.1 beyond the inputs and
the arrays kept), never computed by blocks; the complex step's evaluations are complex, twice
as wide (DIRECTIONAL_COMPLEX_TRANSIENT, measured 16.1)."""
DIRECTIONAL_COMPLEX_TRANSIENT = 17.0
DIAGNOSIS_TRANSIENT = 3.0
"""Arrays of the logits' size beyond the softmax while a wrong candidate's mistake is named
(`app.numerics.diagnose`: a wrong scalar loss measured 9.1 arrays in all at 128 × 8192, the
softmax's 6.5 and the gradient kept included; 10.1 while q was kept as a matrix)."""
GRADING_PER_SUBMITTED = 6.0
"""float64 arrays of one part's size per submission while a part is graded: the submissions
read, their stack, |difference|, the relative error and its temporaries (measured 4.8–6.1)."""


@dataclass(frozen=True)
class MemoryCost:
    """Peak bytes of one request, by phase (see the module docstring); `peak` is the bound."""

    inputs: int
    compute: int
    kept: int
    encoding: int

    @property
    def peak(self) -> int:
        """inputs + max(compute, kept + encoding)."""
        return self.inputs + max(self.compute, self.kept + self.encoding)


@dataclass(frozen=True)
class _Plan:
    """Arrays of a computation: kept ones by width (in the dtype), the largest transient."""

    kept: dict[Width, float]
    transient: int
    numeric: bool


def _closure(include: Collection[str]) -> list[str]:
    """`include` and what each item requires, each once, in the order of OUTPUTS."""
    unknown = set(include) - OUTPUTS.keys()
    if unknown:
        raise ValueError(f"no cost model for {sorted(unknown)}")
    wanted = set(include)
    for name in include:
        wanted.update(OUTPUTS[name].requires)
    return [name for name in OUTPUTS if name in wanted]


def _plan(shape: Shape, include: Collection[str], extra_transient: float = 0.0) -> _Plan:
    """The arrays of `include`; `extra_transient` float64 arrays of width C computed after
    them (a directional check) count as one more transient."""
    kept: dict[Width, float] = {}
    transient = math.ceil(extra_transient * shape.array_bytes(Width.CLASSES, FLOAT64_BYTES))
    numeric = extra_transient > 0
    for name in _closure(include):
        output = OUTPUTS[name]
        kept[output.width] = kept.get(output.width, 0.0) + output.kept
        own = math.ceil(output.transient * shape.array_bytes(output.width, FLOAT64_BYTES))
        transient = max(transient, own)
        numeric = numeric or output.numeric
    return _Plan(kept, transient, numeric)


def _kept_bytes(shape: Shape, plan: _Plan) -> int:
    return sum(math.ceil(count * shape.array_bytes(width)) for width, count in plan.kept.items())


def encoding_bytes(numbers: int, response: ResponseFormat, itemsize: int = FLOAT64_BYTES) -> int:
    """Peak bytes of encoding `numbers` numbers, the finished body included."""
    if response is ResponseFormat.NPZ:
        return numbers * itemsize + (64 << 10)
    return math.ceil(numbers * JSON_BYTES_PER_NUMBER * JSON_GROWTH) + (64 << 10)


def logits_bytes(shape: Shape, parsed_bytes_per_number: int = 0) -> int:
    """The logits as parsed (float64, plus what the parser keeps) and cast to the dtype."""
    matrix = shape.numbers(Width.CLASSES)
    cast = shape.array_bytes(Width.CLASSES) if shape.itemsize != FLOAT64_BYTES else 0
    return matrix * (FLOAT64_BYTES + parsed_bytes_per_number) + cast


def labels_bytes(shape: Shape, probability_labels: bool, parsed_bytes_per_number: int = 0) -> int:
    """Class indices (N) or probability rows (N, C, float64), as parsed."""
    if probability_labels:
        return shape.numbers(Width.CLASSES) * (FLOAT64_BYTES + parsed_bytes_per_number)
    return shape.rows * (INDEX_BYTES + parsed_bytes_per_number)


def output_numbers(shape: Shape, include: Collection[str]) -> int:
    """Numbers in the requested outputs (before the cross-entropy's per-sample losses)."""
    return sum(shape.numbers(OUTPUTS[name].width) for name in include)


def _analysis_cost(
    shape: Shape,
    include: Collection[str],
    *,
    base: float,
    kept: float,
    inputs: int,
    extra_numbers: int,
    response: ResponseFormat,
    extra_transient: float = 0.0,
) -> MemoryCost:
    plan = _plan(shape, include, extra_transient)
    fixed = FIXED_BYTES + (NUMERIC_FIXED_BYTES if plan.numeric else 0)
    kept_bytes = math.ceil(kept * shape.array_bytes(Width.CLASSES)) + _kept_bytes(shape, plan)
    working = math.ceil(base * shape.array_bytes(Width.CLASSES))
    compute = fixed + max(working, kept_bytes + plan.transient)
    numbers = output_numbers(shape, include) + extra_numbers
    return MemoryCost(
        inputs=inputs,
        compute=compute,
        kept=fixed + kept_bytes,
        encoding=encoding_bytes(numbers, response, shape.itemsize),
    )


def softmax_cost(
    shape: Shape,
    include: Collection[str],
    *,
    response: ResponseFormat = ResponseFormat.JSON,
    parsed_bytes_per_number: int = 0,
) -> MemoryCost:
    """Peak memory of /v1/softmax: softmax of `shape`, the outputs in `include`, the response."""
    return _analysis_cost(
        shape,
        include,
        base=SOFTMAX_BASE,
        kept=SOFTMAX_KEPT,
        inputs=logits_bytes(shape, parsed_bytes_per_number),
        extra_numbers=0,
        response=response,
    )


def cross_entropy_cost(
    shape: Shape,
    include: Collection[str],
    *,
    probability_labels: bool = False,
    label_smoothing: bool = False,
    response: ResponseFormat = ResponseFormat.JSON,
    parsed_bytes_per_number: int = 0,
    later_softmax: bool = False,
    directional: str | None = None,
) -> MemoryCost:
    """Peak memory of /v1/cross-entropy: loss and gradient (always computed, whatever
    `include` says), the outputs in `include`, the per-sample losses and the response.

    `directional`: the method (`finite_diff.Method`) of a numeric gradient checked along random
    directions instead of element-wise (`include` then leaves numeric_gradient out): the check
    runs after the analysis, on whole arrays (DIRECTIONAL_TRANSIENT), whatever blocks the
    analysis used.

    A request asking for nothing beyond the loss and the gradient, larger than one block of
    rows, is computed by blocks and keeps q and the gradient alone (BY_BLOCKS_KEPT, plus one
    block's arrays on each core at work; the gradient alone, ONE_HOT_BY_BLOCKS_KEPT, for index
    labels without `label_smoothing`); `later_softmax` counts the softmax formed afterwards,
    with those two still held (a candidate's probabilities, or its diagnoses)."""
    inputs = logits_bytes(shape, parsed_bytes_per_number) + labels_bytes(
        shape, probability_labels, parsed_bytes_per_number
    )
    base, kept = CROSS_ENTROPY_BASE, CROSS_ENTROPY_KEPT
    if set(include) <= BY_BLOCKS and shape.numbers(Width.CLASSES) > BLOCK_ENTRIES:
        one_hot = not (probability_labels or label_smoothing)
        by_blocks = ONE_HOT_BY_BLOCKS_KEPT if one_hot else BY_BLOCKS_KEPT
        if later_softmax:
            base = by_blocks + SOFTMAX_BASE + DIAGNOSIS_TRANSIENT
            kept = by_blocks + SOFTMAX_KEPT
        else:
            blocks = BLOCK_WORKERS * CROSS_ENTROPY_BASE * BLOCK_ENTRIES  # one block a core
            base, kept = by_blocks + blocks / shape.numbers(Width.CLASSES), by_blocks
    return _analysis_cost(
        shape,
        include,
        base=base,
        kept=kept,
        inputs=inputs,
        extra_numbers=shape.rows,
        response=response,
        extra_transient=_directional_transient(directional),
    )


def _directional_transient(method: str | None) -> float:
    if method is None:
        return 0.0
    return DIRECTIONAL_COMPLEX_TRANSIENT if method == "complex_step" else DIRECTIONAL_TRANSIENT


GRADED_PARTS: Mapping[str, Width] = {
    "probabilities": Width.CLASSES,
    "loss": Width.CLASSES,  # N numbers at most; a C-wide bound keeps it simple and safe
    "gradient": Width.CLASSES,
    "jacobian": Width.SQUARE,
    "hessian": Width.SQUARE,
}


def grading_cost(
    shape: Shape,
    parts: Collection[str],
    submissions: int,
    *,
    probability_labels: bool = False,
    reveal_expected: bool = False,
    parsed_bytes_per_number: int = 0,
) -> MemoryCost:
    """Peak memory of grading `submissions` answers of the `parts` of one problem.

    The reference is a cross-entropy without outputs plus the expected value of each part
    (float64, kept); the parts are graded one after another, each stacking every submission's
    array. With `reveal_expected` each result carries the expected values (JSON). The
    submissions as the parser keeps them count `parsed_bytes_per_number` a number.
    """
    unknown = set(parts) - GRADED_PARTS.keys()
    if unknown:
        raise ValueError(f"no cost model for parts {sorted(unknown)}")
    sizes = [shape.numbers(GRADED_PARTS[part]) for part in parts]
    inputs = (
        logits_bytes(shape, parsed_bytes_per_number)
        + labels_bytes(shape, probability_labels, parsed_bytes_per_number)
        + submissions * sum(sizes) * parsed_bytes_per_number
    )
    reference = math.ceil(CROSS_ENTROPY_BASE * shape.array_bytes(Width.CLASSES))
    # each expected value in float64, kept; computed in the dtype first (a copy unless float64)
    expected = sum(sizes) * FLOAT64_BYTES + max(sizes, default=0) * shape.itemsize
    stacked = math.ceil(GRADING_PER_SUBMITTED * submissions * max(sizes, default=0) * FLOAT64_BYTES)
    compute = FIXED_BYTES + reference + expected + stacked
    kept = FIXED_BYTES + reference + sum(sizes) * FLOAT64_BYTES
    revealed = submissions * sum(sizes) if reveal_expected else 0
    return MemoryCost(
        inputs=inputs,
        compute=compute,
        kept=kept,
        encoding=encoding_bytes(revealed, ResponseFormat.JSON),
    )


CANDIDATE_WIDTHS: Mapping[str, Width] = {
    "probabilities": Width.CLASSES,
    "log_probabilities": Width.CLASSES,
    "losses": Width.ONE,
    "loss": Width.ONE,
    "gradient": Width.CLASSES,
    "jacobian": Width.SQUARE,
    "hessian": Width.SQUARE,
}
CANDIDATE_ARRAYS = 4
"""float64 arrays per candidate number while it is checked: the number read, its float64 copy,
and the reference when it is formed for the check (a Jacobian); the comparison and the
diagnoses' hypotheses work on blocks of about 32k entries and on a few rows at a time."""


def candidate_bytes(shape: Shape, outputs: Collection[str], parsed_bytes_per_number: int) -> int:
    """Bytes of checking a candidate holding `outputs` (each in the reference's shape): its
    numbers as parsed, and CANDIDATE_ARRAYS float64 arrays of its size."""
    numbers = sum(shape.numbers(CANDIDATE_WIDTHS[name]) for name in outputs)
    return numbers * (parsed_bytes_per_number + CANDIDATE_ARRAYS * FLOAT64_BYTES)


LINEAR_BLOCK_ARRAYS = 4.0
"""Arrays of one sub-block's logits (`linear.LOSS_BLOCK_LOGITS`) alive at once in the LM head
(`app.numerics.linear`), beside the block's logits (overwritten by their gradient): the
gradient of the sub-block, `LossRows.of`'s own (smaller) blocks and a scratch array of the
weight gradient's sum."""
LINEAR_CANDIDATE_ARRAYS = 8.0
"""Sub-block arrays while a candidate is checked: the reference's, and a hypothesis's logits
gradient (`linear_candidate`: the hypotheses are computed one after another, sub-block by
sub-block, their softmax by smaller blocks)."""
LINEAR_SOFTMAX_ARRAYS = 9.0
"""Sub-block arrays when the probabilities are asked for: the sub-block's softmax is then
formed whole (`gradcheck.LossRows.of`: shifted logits, exponentials, probabilities,
log-probabilities, the complement), beside the kept probabilities."""
LINEAR_DIRECTION_ARRAYS = 20.0
"""Block arrays of one direction of the numeric check: the logits, their first- and
second-order moves, and the cross-entropy's differences along them (`directional.LogitChanges`
keeps the block's softmax and shifted logits; measured 17)."""


FULL_LOGITS = frozenset({"logits", "logits_gradient", "probabilities"})
"""Outputs of the head as large as its logits."""


@dataclass(frozen=True)
class HeadShape:
    """The size of a linear cross-entropy problem: N samples of d features, C classes and
    J = d1·…·dK positions per sample (1 without K-dimensional loss)."""

    samples: int
    features: int
    classes: int
    positions: int = 1

    @property
    def logits(self) -> int:
        """N·C·J."""
        return self.samples * self.classes * self.positions

    @property
    def weight(self) -> int:
        """C·J·d."""
        return self.classes * self.positions * self.features

    def block_logits(self, block_logits: int, min_rows: int) -> int:
        """Logits of one block of samples (`linear.sample_blocks` of `block_logits`)."""
        row = self.classes * self.positions
        return min(self.samples, max(min_rows, block_logits // max(1, row))) * row


def linear_cost(
    shape: HeadShape,
    include: Collection[str],
    *,
    block_logits: int,
    min_block_rows: int,
    candidate_outputs: Mapping[str, int] | None = None,
    directions: int = 0,
    member_itemsize: int = FLOAT64_BYTES,
    itemsize: int = FLOAT64_BYTES,
    probability_labels: bool = False,
    response: ResponseFormat = ResponseFormat.JSON,
    parsed_bytes_per_number: int = 0,
) -> MemoryCost:
    """Peak memory of /v1/linear-cross-entropy, computed in a precision of `itemsize` bytes
    (float64 with a candidate: its reference is exact).

    inputs: input, weight and bias as sent (`member_itemsize` a number, plus what the parser
    keeps) and in float64; the labels; a candidate's numbers as sent (`candidate_outputs`:
    output name → bytes a number). compute: the input and bias gradients and the losses
    (always), the weight gradient when asked or sent, every N·C·J output asked for, one
    block's logits (of `block_logits`; twice with K-dimensional loss) and one sub-block's
    LINEAR_BLOCK_ARRAYS (LINEAR_CANDIDATE_ARRAYS with a candidate, LINEAR_SOFTMAX_ARRAYS with
    the probabilities); for the numeric check, one direction (its v of the size of input +
    weight, and LINEAR_DIRECTION_ARRAYS arrays of a block of `linear.DIRECTION_BLOCK_LOGITS`)."""
    candidate_outputs = candidate_outputs or {}
    sizes = {
        "loss": shape.samples * shape.positions,
        "losses": shape.samples * shape.positions,
        "input_gradient": shape.samples * shape.features,
        "linear_weight_gradient": shape.weight,
        "linear_bias_gradient": shape.classes * shape.positions,
        "logits": shape.logits,
        "logits_gradient": shape.logits,
        "probabilities": shape.logits,
    }
    unknown = (set(include) - {"numeric_gradient"}) - sizes.keys()
    if unknown:
        raise ValueError(f"no cost model for {sorted(unknown)}")
    head_numbers = shape.samples * shape.features + shape.weight + shape.classes * shape.positions
    per_number = member_itemsize + parsed_bytes_per_number
    if member_itemsize != FLOAT64_BYTES:
        per_number += FLOAT64_BYTES
    label_numbers = shape.logits if probability_labels else shape.samples * shape.positions
    inputs = head_numbers * per_number + label_numbers * (FLOAT64_BYTES + parsed_bytes_per_number)
    inputs += sum(
        sizes[name] * (itemsize + parsed_bytes_per_number)
        for name, itemsize in candidate_outputs.items()
        if name in sizes
    )
    wanted = set(include) | set(candidate_outputs)
    if directions:
        wanted.add("linear_weight_gradient")
    always = sizes["input_gradient"] + sizes["linear_bias_gradient"] + 2 * sizes["losses"]
    kept_numbers = always + sum(
        sizes[name] for name in wanted & {"linear_weight_gradient", *FULL_LOGITS}
    )
    number = FLOAT64_BYTES if candidate_outputs else itemsize
    kept = FIXED_BYTES + kept_numbers * number
    block = shape.block_logits(block_logits, min_block_rows)
    sub_block = min(block, shape.block_logits(LOSS_BLOCK_LOGITS, 1))
    block_arrays = 1 if shape.positions == 1 else 2  # its logits, and G in (n, C·J) layout
    arrays = LINEAR_CANDIDATE_ARRAYS if candidate_outputs else LINEAR_BLOCK_ARRAYS
    if "probabilities" in include:
        arrays = max(arrays, LINEAR_SOFTMAX_ARRAYS)
    compute = kept + (block_arrays * block + math.ceil(arrays * sub_block)) * number
    if directions:
        direction = (shape.samples * shape.features + shape.weight) * FLOAT64_BYTES
        direction_block = shape.block_logits(DIRECTION_BLOCK_LOGITS, min_block_rows) * number
        compute = max(
            compute, kept + direction + math.ceil(LINEAR_DIRECTION_ARRAYS * direction_block)
        )
    numbers = sum(sizes[name] for name in include if name in sizes)
    return MemoryCost(
        inputs=inputs,
        compute=compute,
        kept=kept,
        encoding=encoding_bytes(numbers, response),
    )
