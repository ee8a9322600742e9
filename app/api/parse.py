"""Request values → arrays: what the JSON schema cannot say, checked, each failure naming its field
and its position in the caller's own shape.

    parse_logits        logits as rows (R, C) and their `Layout`: C ≥ 2, no NaN or +inf, a
                        finite logit at every position, the size limits (413)
    parse_loss          logits, labels and class weights of a cross-entropy problem
    parse_vector        v of the Hessian-vector product
    parse_head_array    input, linear_weight or linear_bias of the LM head
    parse_head_labels   the LM head's labels (their shape is the numerics' to check)
    numeric_options     the numeric method and step (a step the precision cannot hold: 422)

Values arrive as nested JSON lists or as arrays of an .npz body; `nested_array` is the one
place that tells them apart.
"""

import contextlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Protocol, cast

import numpy as np
from numpy.typing import NDArray

from app.api.schemas.compute import (
    LOGITS_NOT_AN_ARRAY,
    Dtype,
    FiniteDifferenceOptions,
    Labels,
    ToleranceOptions,
)
from app.core.config import Settings
from app.core.errors import LazyRefusal, LimitExceeded, Location, RequestError
from app.numerics.cross_entropy import Reduction, Targets, index_targets, probability_targets
from app.numerics.deadline import Deadline
from app.numerics.diagnose import ProblemInputs
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import (
    MAX_MAGNITUDE,
    SQUARE_OUTPUTS,
    LossProblem,
    NumericOptions,
    Output,
    Tolerance,
)
from app.numerics.layout import Layout
from app.numerics.softmax import FloatArray

DTYPES: dict[str, type[np.floating]] = {"float64": np.float64, "float32": np.float32}

SMALLEST_NORMAL = {name: float(np.finfo(dtype).tiny) for name, dtype in DTYPES.items()}

IndexArray = NDArray[np.int64]
"""Class-index labels (the alias is made once: a subscript in a `cast` costs microseconds)."""

HUGE_REASON = {
    "logits": "beyond it float64 cannot resolve a unit change and softmax is exactly one-hot",
    "input": "beyond it the logits x·Wᵀ + b cannot be resolved",
    "linear_weight": "beyond it the logits x·Wᵀ + b cannot be resolved",
    "linear_bias": "beyond it the logits x·Wᵀ + b cannot be resolved",
    "weight": "beyond it the weighted losses and gradients may not be finite",
    "labels": "beyond it the weighted losses and gradients may not be finite",
}


def sent_shape(value: object) -> tuple[int, ...]:
    """The shape of a nested JSON list, read along its first elements (or of an array from an
    .npz body)."""
    if isinstance(value, np.ndarray):
        return tuple(value.shape)
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def _ragged(value: object, shape: tuple[int, ...], path: Location = ()) -> Location | None:
    """The first position where a nested list departs from `shape`, or None."""
    depth = len(path)
    if depth == len(shape):
        return path if isinstance(value, list) else None
    if not isinstance(value, list) or len(value) != shape[depth]:
        return path
    for index, item in enumerate(value):
        found = _ragged(item, shape, (*path, index))
        if found is not None:
            return found
    return None


def nested_array(field: str, value: object, dtype: type[np.generic]) -> NDArray[np.generic]:
    """A nested JSON list as an array: 422 naming the first ragged position or empty axis."""
    shape = sent_shape(value)
    if 0 in shape:
        empty = (0,) * shape.index(0)
        raise RequestError((field, *empty), f"{field} must hold at least one sample", "too_short")
    if isinstance(value, np.ndarray):  # from an .npz body: converted exactly
        _refuse_beyond(field, value, dtype)
        return value.astype(dtype, copy=False)
    try:
        return np.array(value, dtype=dtype)
    except OverflowError:  # an integer beyond int64
        where = _first_beyond_int64(value) or ()
        raise RequestError(
            (field, *where), f"{field} must be integers within int64's range", "int_type"
        ) from None
    except (ValueError, TypeError):
        where = _ragged(value, shape) or ()
        raise RequestError(
            (field, *where),
            f"ragged {field}: the entry at {list(where)} does not have the shape "
            f"{list(shape[len(where) :])} of the first one",
            "ragged_array",
        ) from None


def _refuse_beyond(field: str, value: NDArray[np.generic], dtype: type[np.generic]) -> None:
    """422 at the first integer of an .npz array that `dtype` (an integer type) cannot hold:
    a uint64 2**64 - 1 is not the label -1."""
    if value.dtype.kind != "u" or np.dtype(dtype).kind != "i":
        return
    beyond = value.astype(np.uint64, copy=False) > np.uint64(np.iinfo(np.dtype(dtype)).max)
    if beyond.any():
        where = tuple(int(i) for i in np.unravel_index(int(beyond.argmax()), value.shape))
        raise RequestError(
            (field, *where), f"{field} must be integers within int64's range", "int_type"
        )


def _first_beyond_int64(value: object, path: Location = ()) -> Location | None:
    """The position of the first integer that int64 cannot hold, or None."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_beyond_int64(item, (*path, index))
            if found is not None:
                return found
        return None
    return path if isinstance(value, int) and not -(2**63) <= value < 2**63 else None


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _entry(field: str, layout: Layout, mask: NDArray[np.bool_]) -> Location:
    """The caller's position of the first True entry of a rows-shaped mask."""
    row, column = _first(mask)
    return (field, *layout.entry(row, column))


def parse_logits(
    value: object,
    settings: Settings,
    axis: int | None = None,
    include: Collection[str] = (),
    overflow: LazyRefusal | None = None,
) -> tuple[FloatArray, Layout]:
    """Logits as float64 rows (R, C) and their layout (class axis `axis`, by default 1, or 0
    for one axis): C ≥ 2 (at most GRADCHECK_MAX_CLASSES with a C×C output in `include`, else
    GRADCHECK_MAX_VOCABULARY), no NaN or +inf, every position with a finite logit. `overflow`
    is the body's first literal beyond float64 (`app.api.deps.overflowing_literal`), refused
    if a −∞ is read (it may come from `-1e999999`, not `-Infinity`)."""
    array = cast(FloatArray, nested_array("logits", value, np.float64))
    if array.ndim == 0:  # an .npz member (JSON's single number is refused by the schema)
        raise RequestError(("logits",), LOGITS_NOT_AN_ARRAY, "array_type")
    try:
        layout = Layout.of(array.shape, axis)
    except ValueError as error:
        raise RequestError(("dim",), f"dim {error}") from None
    if layout.classes < 2:
        raise RequestError(
            ("logits", *(0,) * layout.axis),
            f"logits need at least 2 classes (axis {layout.axis}), got {layout.classes}",
            "too_short",
        )
    if layout.rows > settings.max_batch_size:
        raise LimitExceeded(
            f"{layout.rows} positions (samples × spatial positions) exceed "
            f"GRADCHECK_MAX_BATCH_SIZE = {settings.max_batch_size}: split the batch over "
            "several requests."
        )
    square = sorted(set(include) & SQUARE_OUTPUTS)
    if square and layout.classes > settings.max_classes:
        raise LimitExceeded(
            f"{layout.classes} classes exceed GRADCHECK_MAX_CLASSES = {settings.max_classes} "
            f"for the C×C outputs {', '.join(square)}: leave them out of include for up to "
            f"GRADCHECK_MAX_VOCABULARY = {settings.max_vocabulary} classes."
        )
    if layout.classes > settings.max_vocabulary:
        raise LimitExceeded(
            f"{layout.classes} classes exceed GRADCHECK_MAX_VOCABULARY = {settings.max_vocabulary}."
        )
    logits = cast(FloatArray, layout.to_rows(array))
    # two passes and no temporary; false for a NaN, ±inf or huge entry: which one?
    if not (logits.min() >= -MAX_MAGNITUDE and logits.max() <= MAX_MAGNITUDE):
        _refuse_unusable_logits(logits, layout, overflow)
    return logits, layout


def _refuse_unusable_logits(
    logits: FloatArray, layout: Layout, overflow: LazyRefusal | None
) -> None:
    """422 at the first NaN, +inf or huge logit, or the first position that is all −inf."""
    bad = np.isnan(logits) | np.isposinf(logits)
    if bad.any():
        what = "NaN" if np.isnan(logits[_first(bad)]) else "+Infinity"
        raise RequestError(
            _entry("logits", layout, bad),
            f"logits must be finite numbers or -Infinity (a mask), got {what}",
            "finite_number",
        )
    _refuse_huge("logits", logits, layout)
    if overflow is not None:  # a −∞ may come from -1e999999, not -Infinity
        overflow.raise_if_refused()
    all_masked = ~np.isfinite(logits).any(axis=1)
    if all_masked.any():
        position = layout.position(int(np.flatnonzero(all_masked)[0]))
        raise RequestError(
            ("logits", *position[:1]),
            f"the logits at position {list(position)} are all -Infinity: keep at least one "
            "finite logit per position",
        )


def _refuse_huge(field: str, values: FloatArray, layout: Layout | None) -> None:
    """422 at the first finite entry with |value| > MAX_MAGNITUDE (of rows laid out by
    `layout`, or of a flat array)."""
    with np.errstate(invalid="ignore"):
        huge = np.isfinite(values) & (np.abs(values) > MAX_MAGNITUDE)
    if huge.any():
        where: Location = _entry(field, layout, huge) if layout else (field, *_first(huge))
        raise RequestError(
            where, f"{field} must lie within ±{MAX_MAGNITUDE:.0e}: {HUGE_REASON[field]}"
        )


def to_dtype(logits: FloatArray, dtype: str, layout: Layout) -> FloatArray:
    """Cast to the requested precision, refusing finite logits that overflow it."""
    target = DTYPES[dtype]
    if target is np.float64:
        return logits
    with np.errstate(over="ignore"):
        cast_logits = logits.astype(target)
    overflow = np.isinf(cast_logits) & np.isfinite(logits)
    if overflow.any():
        raise RequestError(
            _entry("logits", layout, overflow),
            f"this logit overflows {dtype} (largest {float(np.finfo(target).max):.4g}): "
            "use dtype float64",
        )
    return cast_logits


def output_entries(shape: tuple[int, ...], include: Collection[str]) -> int:
    """How many numbers the outputs in `include` hold for (R, C) rows: C·C per row for a
    Jacobian, one for the loss, C for the others."""
    rows, classes = shape
    widths: dict[str, int] = {Output.LOSS: 1, **dict.fromkeys(SQUARE_OUTPUTS, classes * classes)}
    return rows * sum(widths.get(item, classes) for item in include)  # Output is a str


def request_shape(value: object, axis: int | None = None) -> tuple[int, int]:
    """(R, C): positions and classes, from the lengths of the JSON lists alone ((0, 0) for an
    empty or unusable array: it is refused later, by `parse_logits`)."""
    shape = sent_shape(value)
    try:
        layout = Layout.of(shape, axis)
    except ValueError:
        return 0, 0
    return layout.rows, layout.classes


def check_output_size(shape: tuple[int, ...], include: Collection[str], settings: Settings) -> None:
    """413 if the requested outputs would hold more numbers than GRADCHECK_MAX_OUTPUT_ENTRIES."""
    num_samples, num_classes = shape
    entries = output_entries(shape, include)
    if entries > settings.max_output_entries:
        square = sorted(set(include) & SQUARE_OUTPUTS)
        hint = (
            f"drop {' and '.join(repr(str(s)) for s in square)} from include (each is R·C·C = "
            f"{num_samples * num_classes * num_classes} numbers) or send fewer samples"
            if square
            else "send fewer samples per request"
        )
        raise LimitExceeded(
            f"the requested outputs hold {entries} numbers, over GRADCHECK_MAX_OUTPUT_ENTRIES = "
            f"{settings.max_output_entries}: {hint}."
        )


def parse_weight(request: "LossFields", num_classes: int) -> FloatArray | None:
    """Class weights as float64 (C,), or None: one per class, each within ±MAX_MAGNITUDE."""
    if request.weight is None:
        return None
    if len(request.weight) != num_classes:
        raise RequestError(
            ("weight",),
            f"weight needs one entry per class: {num_classes}, got {len(request.weight)}",
        )
    weight = np.asarray(request.weight, np.float64)
    not_finite = ~np.isfinite(weight)  # JSON refuses them when parsed; an .npz member here
    if not_finite.any():
        raise RequestError(
            ("weight", int(not_finite.argmax())), "weight must be finite numbers", "finite_number"
        )
    _refuse_huge("weight", weight, None)
    return weight


def parse_labels(request: "LossFields", layout: Layout) -> IndexArray | FloatArray:
    """Class indices (R,) as int64, or probability rows (R, C) as float64. As in torch, labels
    are probabilities exactly when they have as many axes as the logits."""
    value = request.labels
    axes = len(sent_shape(value))
    if axes == len(layout.shape):
        return _probability_rows(value, layout)
    if axes != len(layout.shape) - 1:
        raise RequestError(
            ("labels",),
            f"labels need {len(layout.shape) - 1} axes (class indices, shape "
            f"{list(layout.positions)}) or {len(layout.shape)} (probabilities, the logits' shape "
            f"{list(layout.shape)}); got {axes}",
        )
    labels = _index_array(value)
    if labels.shape != layout.positions:
        raise RequestError(
            ("labels",),
            f"labels need one class index per position: shape {list(layout.positions)}, got "
            f"{list(labels.shape)}",
        )
    flat = cast(IndexArray, labels.reshape(-1))
    if flat.min(initial=0) >= 0 and flat.max(initial=0) < layout.classes:
        return flat  # every label a class (two passes, no temporary)
    active = flat != request.ignore_index
    outside = active & ((flat < 0) | (flat >= layout.classes))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise RequestError(
            ("labels", *layout.position(row)),
            f"label {int(flat[row])} is not a class index in [0, {layout.classes}) "
            f"nor ignore_index ({request.ignore_index})",
        )
    return flat


def _index_array(value: object) -> IndexArray:
    """Class indices as int64: 422 at the first float (or the first ragged position)."""
    if isinstance(value, list) and value and all(type(item) is int for item in value):
        with contextlib.suppress(OverflowError):  # beyond int64: located below
            return np.array(value, dtype=np.int64)  # the usual (N,) labels: one C-level pass
    first_float = _first_float(value)
    if first_float is not None:
        raise RequestError(
            ("labels", *first_float),
            "class index labels must be integers (or send probabilities with the logits' shape)",
            "int_type",
        )
    return cast(IndexArray, nested_array("labels", value, np.int64))


def _first_float(value: object, path: Location = ()) -> Location | None:
    """The position of the first float in nested labels, or None if they are all integers."""
    if isinstance(value, np.ndarray):
        return None if value.dtype.kind in "iu" else (*path, *(0,) * value.ndim)
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_float(item, (*path, index))
            if found is not None:
                return found
        return None
    return path if isinstance(value, float) else None


def targets_of(
    request: "LossFields",
    labels: IndexArray | FloatArray,
    weight: FloatArray | None,
    num_classes: int,
    dtype: type[np.floating],
) -> Targets:
    """The effective targets q of parsed labels under the request's loss options."""
    cast_weight = None if weight is None else weight.astype(dtype)
    if labels.ndim == 2:
        return probability_targets(
            cast(FloatArray, labels),
            weight=cast_weight,
            label_smoothing=request.label_smoothing,
            reduction=request.reduction,
            dtype=dtype,
        )
    return index_targets(
        cast(IndexArray, labels),
        num_classes,
        weight=cast_weight,
        ignore_index=request.ignore_index,
        label_smoothing=request.label_smoothing,
        reduction=request.reduction,
        dtype=dtype,
    )


def _probability_rows(value: object, layout: Layout) -> FloatArray:
    """Probability labels of the logits' shape as rows (R, C), entries finite and ≥ 0."""
    array = cast(FloatArray, nested_array("labels", value, np.float64))
    if array.shape != layout.shape:
        raise RequestError(
            ("labels",),
            f"probability labels need the logits' shape {list(layout.shape)}, got "
            f"{list(array.shape)}",
        )
    rows = cast(FloatArray, layout.to_rows(array))
    negative = ~(rows >= 0) | ~np.isfinite(rows)
    if negative.any():
        raise RequestError(
            _entry("labels", layout, negative), "probability labels must be finite and ≥ 0"
        )
    _refuse_huge("labels", rows, layout)
    return rows


class LossFields(Protocol):
    """The fields of a cross-entropy problem: a /v1/cross-entropy body or a grading problem."""

    @property
    def logits(self) -> object: ...
    @property
    def labels(self) -> Labels: ...
    @property
    def weight(self) -> list[float] | None: ...
    @property
    def ignore_index(self) -> int: ...
    @property
    def reduction(self) -> Reduction: ...
    @property
    def label_smoothing(self) -> float: ...
    @property
    def dtype(self) -> Dtype: ...


@dataclass(frozen=True)
class ParsedLoss:
    """The arrays of a cross-entropy problem as the caller sent them, in float64."""

    logits: FloatArray
    """(R, C) rows."""
    layout: Layout
    labels: IndexArray | FloatArray
    weight: FloatArray | None

    def problem(
        self,
        fields: "LossFields",
        dtype: Dtype,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        denominator: float | None = None,
    ) -> LossProblem:
        """The problem in precision `dtype`: cast logits, effective targets, reduction, and the
        z-loss, soft-capping and denominator options of a cross-entropy request (422 for a
        denominator without reduction mean)."""
        targets = targets_of(fields, self.labels, self.weight, self.logits.shape[1], DTYPES[dtype])
        if denominator is not None:
            if fields.reduction is not Reduction.MEAN:
                raise RequestError(
                    ("denominator",), "denominator replaces the divisor of reduction 'mean' only"
                )
            targets = replace(targets, divisor=denominator, z_divisor=denominator)
        logits = to_dtype(self.logits, dtype, self.layout)
        return LossProblem(logits, targets, fields.reduction, z_loss=z_loss, softcap=softcap)

    def inputs(self, fields: "LossFields", denominator: float | None = None) -> ProblemInputs:
        """The raw problem the diagnoses recompute under each mistaken assumption."""
        return ProblemInputs(
            self.logits,
            self.labels,
            self.weight,
            fields.ignore_index,
            fields.label_smoothing,
            fields.reduction,
            denominator,
        )


def parse_loss(
    fields: "LossFields",
    settings: Settings,
    include: Collection[str] = (),
    overflow: LazyRefusal | None = None,
) -> ParsedLoss:
    """Logits, labels and weights of `fields`, each checked (413 first if the outputs in
    `include` would be too large; `overflow` as for `parse_logits`)."""
    logits, layout = parse_logits(fields.logits, settings, include=include, overflow=overflow)
    check_output_size(logits.shape, include, settings)
    weight = parse_weight(fields, layout.classes)
    return ParsedLoss(logits, layout, parse_labels(fields, layout), weight)


def numeric_options(
    numeric: FiniteDifferenceOptions, dtype: Dtype, deadline: Deadline
) -> NumericOptions:
    """The numerics' options, stopping at `deadline`; 422 for a step so small that the
    precision cannot hold it (it would be 0 or subnormal there, and 1/h infinite)."""
    smallest = SMALLEST_NORMAL[dtype]
    if numeric.step is not None and numeric.step < smallest:
        raise RequestError(
            ("numeric", "step"),
            f"step {numeric.step:.3g} is below the smallest normal {dtype} number "
            f"({smallest:.3g}): choose a larger step, or leave it out for the default rule",
        )
    return NumericOptions(Method(numeric.method), numeric.step, deadline)


def tolerance_of(tolerance: ToleranceOptions) -> Tolerance:
    """The numerics' tolerance of a request's `tolerance`."""
    return Tolerance(tolerance.atol, tolerance.rtol)


def parse_vector(value: object, include: Collection[str], layout: Layout) -> FloatArray | None:
    """v as rows (R, C): finite, the logits' shape; given exactly when the Hessian-vector
    product is asked for."""
    wanted = Output.HESSIAN_VECTOR_PRODUCT in include
    if value is None:
        if wanted:
            raise RequestError(
                ("vector",), "hessian_vector_product needs `vector`, shaped as the logits"
            )
        return None
    if not wanted:
        raise RequestError(
            ("vector",), "`vector` is used only with hessian_vector_product in include"
        )
    array = cast(FloatArray, nested_array("vector", value, np.float64))
    if array.shape != layout.shape:
        raise RequestError(
            ("vector",),
            f"vector needs the logits' shape {list(layout.shape)}, got {list(array.shape)}",
        )
    rows = cast(FloatArray, layout.to_rows(array))
    bad = ~np.isfinite(rows)
    if bad.any():
        raise RequestError(
            _entry("vector", layout, bad), "vector must hold finite numbers", "finite_number"
        )
    return rows


def parse_head_array(field: str, value: object, overflow: LazyRefusal | None) -> FloatArray:
    """input, linear_weight or linear_bias as float64 (any float member of an .npz body
    converted exactly): finite and within ±MAX_MAGNITUDE, 422 at the first entry that is not
    (`overflow`, the body's first literal beyond float64, when that is what made it ±inf)."""
    array = cast(FloatArray, nested_array(field, value, np.float64))
    if not np.abs(array).max() <= MAX_MAGNITUDE:
        bad = ~np.isfinite(array)
        if bad.any():
            if overflow is not None:
                overflow.raise_if_refused()
            raise RequestError(
                (field, *_first(bad)), f"{field} must hold finite numbers", "finite_number"
            )
        _refuse_huge(field, array, None)
    return array


def parse_head_labels(value: object) -> NDArray[np.generic]:
    """The LM head's labels in the shape sent: class indices (int64), or probabilities
    (float64, finite and ≥ 0) as soon as one entry is a float (`app.numerics.linear.head_of`
    checks the shape against the head's)."""
    if _first_float(value) is None:
        return _index_array(value)
    array = cast(FloatArray, nested_array("labels", value, np.float64))
    bad = ~(array >= 0) | ~np.isfinite(array)
    if bad.any():
        raise RequestError(("labels", *_first(bad)), "probability labels must be finite and ≥ 0")
    return array
