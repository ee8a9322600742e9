"""From a validated request model to the numpy inputs of the numerics.

What the JSON schema cannot say is checked here, each failure naming its field and position:
shapes (ragged rows, C ≥ 2, label widths), NaN / +Infinity / −Infinity outside a logit mask,
labels out of range, and the configured size limits (413).
"""

from collections.abc import Collection, Sequence
from typing import cast

import numpy as np

from app.api.schemas import CrossEntropyRequest, LossOptions
from app.core.config import Settings
from app.core.errors import LimitExceeded, Location, RequestError
from app.numerics.cross_entropy import Targets, index_targets, probability_targets
from app.numerics.gradcheck import Output
from app.numerics.softmax import FloatArray

DTYPES: dict[str, type[np.floating]] = {"float64": np.float64, "float32": np.float32}
SQUARE_OUTPUTS = frozenset({Output.JACOBIAN, Output.NUMERIC_JACOBIAN})
MAX_MAGNITUDE = 1e15
"""Largest |value| accepted for logits, weights and probability labels. Beyond it float64 cannot
resolve a unit change of a logit (its spacing there is 0.125), softmax is exactly one-hot, and
products such as q·z or the error estimates' h⁴ could overflow; refusing it keeps every output
finite."""


def _matrix(
    field: str, value: Sequence[float] | Sequence[Sequence[float]]
) -> tuple[FloatArray, bool]:
    """A list of rows (or one flat row) as a float64 (N, C) array; True if it was flat."""
    if not value:
        raise RequestError((field,), f"{field} must hold at least one sample", "too_short")
    flat = not isinstance(value[0], list)
    rows = cast(Sequence[Sequence[float]], [value] if flat else value)
    width = len(rows[0])
    for n, row in enumerate(rows):
        if len(row) != width:
            raise RequestError(
                (field, n),
                f"ragged {field}: row {n} has {len(row)} entries but row 0 has {width}",
                "ragged_array",
            )
    return np.array(rows, dtype=np.float64).reshape(len(rows), width), flat


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _where(field: str, index: tuple[int, ...], flat: bool) -> Location:
    """The JSON position of element `index` of an (N, C) array that may have been sent flat."""
    return (field, *(index[1:] if flat else index))


def parse_logits(
    value: Sequence[float] | Sequence[Sequence[float]], settings: Settings
) -> tuple[FloatArray, bool]:
    """Logits as a float64 (N, C) array: C ≥ 2, no NaN or +inf, every row with a finite entry."""
    logits, flat = _matrix("logits", value)
    num_samples, num_classes = logits.shape
    if num_classes < 2:
        raise RequestError(
            ("logits",) if flat else ("logits", 0),
            f"logits need at least 2 classes per sample, got {num_classes}",
            "too_short",
        )
    if num_samples > settings.max_batch_size:
        raise LimitExceeded(
            f"{num_samples} samples exceed GRADCHECK_MAX_BATCH_SIZE = {settings.max_batch_size}: "
            "split the batch over several requests."
        )
    if num_classes > settings.max_classes:
        raise LimitExceeded(
            f"{num_classes} classes exceed GRADCHECK_MAX_CLASSES = {settings.max_classes}."
        )
    if not np.abs(logits).max() <= MAX_MAGNITUDE:  # some NaN, ±inf or huge entry: which?
        _refuse_unusable_logits(logits, flat)
    return logits, flat


def _refuse_unusable_logits(logits: FloatArray, flat: bool) -> None:
    """422 at the first NaN, +inf or huge logit, or the first row that is all −inf (a mask)."""
    bad = np.isnan(logits) | np.isposinf(logits)
    if bad.any():
        index = _first(bad)
        what = "NaN" if np.isnan(logits[index]) else "+Infinity"
        raise RequestError(
            _where("logits", index, flat),
            f"logits must be finite numbers or -Infinity (a mask), got {what}",
            "finite_number",
        )
    _refuse_huge("logits", logits, flat)
    all_masked = ~np.isfinite(logits).any(axis=1)
    if all_masked.any():
        n = int(np.flatnonzero(all_masked)[0])
        raise RequestError(
            ("logits",) if flat else ("logits", n),
            f"sample {n} has every logit -Infinity: keep at least one finite logit per sample",
        )


def _refuse_huge(field: str, values: FloatArray, flat: bool) -> None:
    """422 at the first finite entry with |value| > MAX_MAGNITUDE."""
    with np.errstate(invalid="ignore"):
        huge = np.isfinite(values) & (np.abs(values) > MAX_MAGNITUDE)
    if huge.any():
        raise RequestError(
            _where(field, _first(huge), flat),
            f"{field} must lie within ±{MAX_MAGNITUDE:.0e}: beyond it float64 cannot resolve a "
            "unit change and softmax is exactly one-hot",
        )


def to_dtype(logits: FloatArray, dtype: str, flat: bool) -> FloatArray:
    """Cast to the requested precision, refusing finite logits that overflow it."""
    target = DTYPES[dtype]
    if target is np.float64:
        return logits
    with np.errstate(over="ignore"):
        cast = logits.astype(target)
    overflow = np.isinf(cast) & np.isfinite(logits)
    if overflow.any():
        raise RequestError(
            _where("logits", _first(overflow), flat),
            f"this logit overflows {dtype} (largest {float(np.finfo(target).max):.4g}): "
            "use dtype float64",
        )
    return cast


def output_entries(shape: tuple[int, ...], include: Collection[str]) -> int:
    """How many numbers the outputs in `include` hold for (N, C) logits (C·C per sample for a
    Jacobian, C for the others)."""
    num_samples, num_classes = shape
    return num_samples * sum(
        num_classes * num_classes if item in SQUARE_OUTPUTS else num_classes for item in include
    )


def request_entries(
    value: Sequence[float] | Sequence[Sequence[float]], include: Collection[str]
) -> int:
    """Numbers in the logits plus the requested outputs, from the lengths of the JSON lists
    alone (a ragged or empty batch is refused later, by `parse_logits`)."""
    if not value:
        return 0
    first = value[0]
    shape = (len(value), len(first)) if isinstance(first, list) else (1, len(value))
    return shape[0] * shape[1] + output_entries(shape, include)


def check_output_size(shape: tuple[int, ...], include: Collection[str], settings: Settings) -> None:
    """413 if the requested outputs would hold more numbers than GRADCHECK_MAX_OUTPUT_ENTRIES."""
    num_samples, num_classes = shape
    entries = output_entries(shape, include)
    if entries > settings.max_output_entries:
        square = sorted(set(include) & SQUARE_OUTPUTS)
        hint = (
            f"drop {' and '.join(repr(str(s)) for s in square)} from include (each is N·C·C = "
            f"{num_samples * num_classes * num_classes} numbers) or send fewer samples"
            if square
            else "send fewer samples per request"
        )
        raise LimitExceeded(
            f"the requested outputs hold {entries} numbers, over GRADCHECK_MAX_OUTPUT_ENTRIES = "
            f"{settings.max_output_entries}: {hint}."
        )


def parse_targets(
    request: CrossEntropyRequest | LossOptions,
    labels: int | Sequence[int | float] | Sequence[Sequence[float]],
    shape: tuple[int, int],
    flat_logits: bool,
    dtype: type[np.floating],
) -> Targets:
    """The effective targets q of the labels under the request's loss options."""
    num_samples, num_classes = shape
    weight = None
    if request.weight is not None:
        if len(request.weight) != num_classes:
            raise RequestError(
                ("weight",),
                f"weight needs one entry per class: {num_classes}, got {len(request.weight)}",
            )
        weight_values = np.asarray(request.weight, np.float64)
        _refuse_huge("weight", weight_values[None, :], flat=True)
        weight = weight_values.astype(dtype)

    is_probability_row = (
        flat_logits
        and isinstance(labels, list)
        and len(labels) == num_classes
        and not isinstance(labels[0], list)
    )
    if isinstance(labels, list) and labels and (isinstance(labels[0], list) or is_probability_row):
        rows = [labels] if is_probability_row else labels
        return probability_targets(
            _probability_rows(rows, shape, is_probability_row),
            weight=weight,
            label_smoothing=request.label_smoothing,
            reduction=request.reduction,
            dtype=dtype,
        )

    indices = [labels] if isinstance(labels, int) else list(labels)
    for n, label in enumerate(indices):
        if not isinstance(label, int):
            raise RequestError(
                ("labels",) if isinstance(labels, int) else ("labels", n),
                "class index labels must be integers (or send an N×C array of probabilities)",
                "int_type",
            )
        if label != request.ignore_index and not 0 <= label < num_classes:
            raise RequestError(
                ("labels",) if isinstance(labels, int) else ("labels", n),
                f"label {label} is not a class index in [0, {num_classes}) "
                f"nor ignore_index ({request.ignore_index})",
            )
    if len(indices) != num_samples:
        raise RequestError(
            ("labels",),
            f"labels need one class index per sample: {num_samples}, got {len(indices)}",
        )
    return index_targets(
        np.asarray(indices, np.int64),
        num_classes,
        weight=weight,
        ignore_index=request.ignore_index,
        label_smoothing=request.label_smoothing,
        reduction=request.reduction,
        dtype=dtype,
    )


def _probability_rows(rows: Sequence[object], shape: tuple[int, int], flat: bool) -> FloatArray:
    """Probability labels as an (N, C) array of the logits' shape, entries finite and ≥ 0."""
    num_samples, num_classes = shape
    if len(rows) != num_samples:
        raise RequestError(
            ("labels",),
            f"probability labels need one row per sample: {num_samples}, got {len(rows)}",
        )
    for n, row in enumerate(rows):
        assert isinstance(row, list)
        if len(row) != num_classes:
            raise RequestError(
                ("labels",) if flat else ("labels", n),
                f"probability label rows need one entry per class: {num_classes}, got {len(row)}",
            )
    array = np.array(rows, dtype=np.float64)
    negative = ~(array >= 0) | ~np.isfinite(array)
    if negative.any():
        raise RequestError(
            _where("labels", _first(negative), flat),
            "probability labels must be finite and ≥ 0",
        )
    _refuse_huge("labels", array, flat)
    return array
