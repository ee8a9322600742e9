"""Request model → numerics problem: one function per problem kind, called by every route.

    to_softmax_call(body, settings)     /v1/softmax
    to_loss_call(body, settings)        /v1/cross-entropy
    parse_loss(fields, settings)        the arrays of a cross-entropy body, of a grading
                                        problem given in full, or of a generated one

What the JSON schema cannot say is checked here, each failure naming its field and position:
shapes (ragged rows, C ≥ 2, label widths), NaN / +Infinity / −Infinity outside a logit mask,
labels out of range, steps the precision cannot hold, and the configured size limits (413).
"""

import contextlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
from numpy.typing import NDArray

from app.api.encoding import wants_npz
from app.api.schemas.compute import (
    LOGITS_NOT_AN_ARRAY,
    CrossEntropyRequest,
    Dtype,
    FiniteDifferenceOptions,
    Labels,
    SoftmaxCandidate,
    SoftmaxRequest,
    ToleranceOptions,
)
from app.core.config import Settings
from app.core.errors import LimitExceeded, Location, RequestError
from app.numerics.candidate import CandidateCheck, check_candidate
from app.numerics.cost import (
    PYTHON_NUMBER_BYTES,
    ResponseFormat,
    Shape,
    candidate_bytes,
    cross_entropy_cost,
    softmax_cost,
)
from app.numerics.cross_entropy import Reduction, Targets, index_targets, probability_targets
from app.numerics.deadline import NEVER, Deadline
from app.numerics.diagnose import ProblemInputs
from app.numerics.directional import (
    DEFAULT_DIRECTIONS,
    DirectionalDerivatives,
    directional_check,
    prefer_directions,
)
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import (
    MAX_MAGNITUDE,
    SECOND_ORDER,
    SQUARE_OUTPUTS,
    LossProblem,
    NumericOptions,
    Output,
    ReferenceOutputs,
    Report,
    Tolerance,
    analyse_problem,
    analyse_softmax,
)
from app.numerics.layout import Layout
from app.numerics.softmax import FloatArray

DTYPES: dict[str, type[np.floating]] = {"float64": np.float64, "float32": np.float32}
DTYPE_NAMES = {np.dtype(dtype): name for name, dtype in DTYPES.items()}
"""The name of each precision, as the response states it (numpy's `dtype.name` is slower)."""
SMALLEST_NORMAL = {name: float(np.finfo(dtype).tiny) for name, dtype in DTYPES.items()}
IndexArray = NDArray[np.int64]
"""Class-index labels (the alias is made once: a subscript in a `cast` costs microseconds)."""
HUGE_REASON = {
    "logits": "beyond it float64 cannot resolve a unit change and softmax is exactly one-hot",
    "weight": "beyond it the weighted losses and gradients may not be finite",
    "labels": "beyond it the weighted losses and gradients may not be finite",
}


def _sent_shape(value: object) -> tuple[int, ...]:
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
    shape = _sent_shape(value)
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
    overflow: RequestError | None = None,
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
    if not np.abs(logits).max() <= MAX_MAGNITUDE:  # some NaN, ±inf or huge entry: which?
        _refuse_unusable_logits(logits, layout, overflow)
    return logits, layout


def _refuse_unusable_logits(
    logits: FloatArray, layout: Layout, overflow: RequestError | None
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
        raise overflow
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
    shape = _sent_shape(value)
    try:
        layout = Layout.of(shape, axis)
    except ValueError:
        return 0, 0
    return layout.rows, layout.classes


def _response_format(accept: str | None) -> ResponseFormat:
    return ResponseFormat.NPZ if wants_npz(accept) else ResponseFormat.JSON


def _parsed_bytes(value: object) -> int:
    """What the parsed request keeps per number beyond its float64: a JSON list's Python
    float and list slot; nothing for an array from an .npz body."""
    return 0 if isinstance(value, np.ndarray) else PYTHON_NUMBER_BYTES


def _candidate_bytes(shape: Shape, candidate: SoftmaxCandidate | None) -> int:
    if candidate is None:
        return 0
    sent = candidate.model_fields_set
    parsed = max((_parsed_bytes(getattr(candidate, name)) for name in sent), default=0)
    return candidate_bytes(shape, sent, parsed)


def softmax_request_cost(body: SoftmaxRequest, accept: str | None) -> int:
    """The estimated peak memory of a softmax request, from its shape (`app.numerics.cost`)."""
    shape = Shape(*request_shape(body.logits, body.dim), DTYPES[body.dtype]().itemsize)
    return softmax_cost(
        shape,
        body.include,
        response=_response_format(accept),
        parsed_bytes_per_number=_parsed_bytes(body.logits),
    ).peak + _candidate_bytes(shape, body.candidate)


def cross_entropy_request_cost(
    body: CrossEntropyRequest, settings: Settings, accept: str | None
) -> int:
    """The estimated peak memory of a cross-entropy request, from its shape (a numeric
    gradient checked along directions: the whole loss evaluations of that check)."""
    include = set(body.include)
    directional = directions_of(body, settings) is not None
    if directional:
        include.discard(Output.NUMERIC_GRADIENT)
    shape = Shape(*request_shape(body.logits), DTYPES[body.dtype]().itemsize)
    probability_labels = len(_sent_shape(body.labels)) == len(_sent_shape(body.logits))
    candidate = body.candidate
    later_softmax = candidate is not None and candidate_forms_softmax(
        candidate.model_fields_set, body.z_loss, body.softcap
    )
    return cross_entropy_cost(
        shape,
        include,
        probability_labels=probability_labels,
        response=_response_format(accept),
        parsed_bytes_per_number=_parsed_bytes(body.logits),
        later_softmax=later_softmax,
        directional=body.numeric.method if directional else None,
    ).peak + _candidate_bytes(shape, candidate)


def request_entries(value: object, include: Collection[str], axis: int | None = None) -> int:
    """Numbers in the logits plus the requested outputs, from the lengths of the JSON lists
    alone (a ragged or empty batch is refused later, by `parse_logits`)."""
    shape = request_shape(value, axis)
    return shape[0] * shape[1] + output_entries(shape, include)


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
    axes = len(_sent_shape(value))
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
    ) -> LossProblem:
        """The problem in precision `dtype`: cast logits, effective targets, reduction, and the
        z-loss and soft-capping options of a cross-entropy request."""
        targets = targets_of(fields, self.labels, self.weight, self.logits.shape[1], DTYPES[dtype])
        logits = to_dtype(self.logits, dtype, self.layout)
        return LossProblem(logits, targets, fields.reduction, z_loss=z_loss, softcap=softcap)

    def inputs(self, fields: "LossFields") -> ProblemInputs:
        """The raw problem the diagnoses recompute under each mistaken assumption."""
        return ProblemInputs(
            self.logits,
            self.labels,
            self.weight,
            fields.ignore_index,
            fields.label_smoothing,
            fields.reduction,
        )


def parse_loss(
    fields: "LossFields",
    settings: Settings,
    include: Collection[str] = (),
    overflow: RequestError | None = None,
) -> ParsedLoss:
    """Logits, labels and weights of `fields`, each checked (413 first if the outputs in
    `include` would be too large; `overflow` as for `parse_logits`)."""
    logits, layout = parse_logits(fields.logits, settings, include=include, overflow=overflow)
    check_output_size(logits.shape, include, settings)
    weight = parse_weight(fields, layout.classes)
    return ParsedLoss(logits, layout, parse_labels(fields, layout), weight)


def _numeric_options(
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


def _tolerance(tolerance: ToleranceOptions) -> Tolerance:
    return Tolerance(tolerance.atol, tolerance.rtol)


@dataclass(frozen=True)
class CandidateCall:
    """A caller's own outputs and what checking them needs: the raw problem (for the
    diagnoses), and the float64 problem when the request's own precision is lower (the
    candidate is always checked against the exact reference)."""

    outputs: dict[str, object]
    inputs: ProblemInputs
    reference_problem: LossProblem | None
    docs_url: str | None
    layout: Layout
    problem: LossProblem | None = None
    """The cross-entropy problem itself (its targets give the reference Hessian)."""

    def check(self, report: Report, tolerance: Tolerance) -> CandidateCheck:
        """The candidate against `report`'s outputs (or the float64 problem's), both as rows."""
        reference = report
        if reference.logits.dtype != np.float64:
            reference = self._float64_report()
        problem = self.reference_problem or self.problem
        targets = None if problem is None or problem.z_loss else problem.targets
        llm_options = problem is not None and not names_mistakes(problem.z_loss, problem.softcap)
        check = check_candidate(
            self._as_rows(),
            ReferenceOutputs(reference, targets),
            atol=tolerance.atol,
            rtol=tolerance.rtol,
            inputs=None if llm_options else self.inputs,
            softmax=reference.kept_softmax,
            docs_url=self.docs_url,
        )
        if llm_options and not check.passed:
            check.notes.append(NO_LLM_DIAGNOSES)
        return check

    def _as_rows(self) -> dict[str, object]:
        """The candidate's outputs in the rows layout of the reference. Outputs sent in the
        caller's shape are moved there; anything else is left for the check to describe."""
        if self.layout.is_matrix:
            return self.outputs
        moved: dict[str, object] = {}
        layout = self.layout
        for name, value in self.outputs.items():
            moved[name] = value
            try:
                array = np.array(value, dtype=np.float64)
            except (ValueError, TypeError):
                continue
            if name in PER_CLASS and array.shape == layout.shape:
                moved[name] = layout.to_rows(array)
            elif name in PER_POSITION and array.shape == layout.positions:
                moved[name] = array.reshape(layout.rows)
            elif name in PER_CLASS_PAIR and array.shape == (
                *layout.positions,
                *(layout.classes,) * 2,
            ):
                moved[name] = array.reshape(layout.rows, layout.classes, layout.classes)
        return moved

    def _float64_report(self) -> Report:
        problem = self.reference_problem
        if problem is None:
            return analyse_softmax(self.inputs.logits, frozenset())
        return analyse_problem(problem, frozenset())


def names_mistakes(z_loss: float, softcap: float | None) -> bool:
    """Whether a wrong candidate's mistake is named: the known mistakes are modelled without
    z-loss and soft-capping (NO_LLM_DIAGNOSES)."""
    return not z_loss and softcap is None


def candidate_forms_softmax(outputs: Collection[str], z_loss: float, softcap: float | None) -> bool:
    """Whether checking a candidate of `outputs` may form the softmax: for its probabilities,
    log-probabilities, Jacobian or Hessian, or to name the mistake of a wrong one."""
    return not set(outputs) <= {"loss", "losses", "gradient"} or names_mistakes(z_loss, softcap)


NO_LLM_DIAGNOSES = (
    "no mistake is named with z_loss or softcap: the known mistakes are modelled without them, "
    "so read the worst entries and max_ulp_error (a gradient without the soft-cap's chain "
    "rule, or without the z-loss term, shows there)"
)
PER_CLASS = frozenset({"probabilities", "log_probabilities", "gradient"})
PER_CLASS_PAIR = frozenset({"jacobian", "hessian"})
"""Candidate outputs with the logits' own shape."""
PER_POSITION = frozenset({"losses", "loss"})
"""Candidate outputs with one number per position (the loss: for reduction none)."""


@contextmanager
def located(layout: Layout) -> Iterator[None]:
    """Re-raise the numerics' refusals, which name a row (and a class) of the rows, at the
    caller's own position in the logits or labels."""
    try:
        yield
    except InvalidProblem as error:
        field, *where = error.location
        if layout.is_matrix or field not in ("logits", "labels") or not where:
            raise
        row = int(where[0])
        position = layout.entry(row, int(where[1])) if len(where) > 1 else layout.position(row)
        raise InvalidProblem((field, *position), error.message) from None


def _sent_outputs(candidate: SoftmaxCandidate) -> dict[str, object]:
    """The outputs the caller put in `candidate` (null included: it is checked too)."""
    return {name: getattr(candidate, name) for name in candidate.model_fields_set}


@dataclass(frozen=True)
class SoftmaxCall:
    """One validated softmax request: the logits and the options they are analysed with."""

    logits: FloatArray
    """(R, C) rows."""
    layout: Layout
    include: frozenset[Output]
    numeric: NumericOptions
    tolerance: Tolerance
    candidate: CandidateCall | None = None

    def analyse(self) -> Report:
        """The report of this request."""
        with located(self.layout):
            return analyse_softmax(self.logits, self.include, self.numeric, self.tolerance)


@dataclass(frozen=True)
class LossCall:
    """One validated cross-entropy request: its problem and the options it is analysed with."""

    problem: LossProblem
    layout: Layout
    include: frozenset[Output]
    numeric: NumericOptions
    tolerance: Tolerance
    candidate: CandidateCall | None = None
    directions: int | None = None
    """k: the gradient is checked along k random directions instead of element by element."""
    vector: FloatArray | None = None
    """v (R, C) for the Hessian-vector product."""

    @property
    def coalescable(self) -> bool:
        """Whether the call can share a stacked batch: second-order outputs are computed for
        one problem at a time."""
        return not self.include & SECOND_ORDER

    @property
    def analysed(self) -> frozenset[Output]:
        """What the analysis computes: `include`, less the element-wise numeric gradient when
        directions replace it."""
        if self.directions is None:
            return self.include
        return self.include - {Output.NUMERIC_GRADIENT}

    def batch_key(self) -> tuple[object, ...]:
        """Calls with equal keys can be computed in one stacked batch (`app.api.coalesce`)."""
        problem = self.problem
        return (
            self.analysed,
            self.numeric,
            self.tolerance,
            problem.logits.dtype,
            problem.logits.shape[1],
            problem.z_loss,
            problem.softcap,
        )

    def analyse(self) -> Report:
        """The report of this call alone (raises InvalidProblem)."""
        with located(self.layout):
            return analyse_problem(
                self.problem, self.analysed, self.numeric, self.tolerance, self.vector
            )

    def directional(self, report: Report) -> DirectionalDerivatives | None:
        """The directional check of the report's gradient, when directions are asked for."""
        if self.directions is None:
            return None
        assert report.gradient is not None
        return directional_check(
            self.problem, report.gradient, self.directions, self.numeric, self.tolerance
        )


def to_softmax_call(
    body: SoftmaxRequest,
    settings: Settings,
    *,
    overflow: RequestError | None = None,
    deadline: Deadline = NEVER,
) -> SoftmaxCall:
    """Validate a softmax request into the logits and options the numerics take (`overflow`
    as for `parse_logits`; numeric derivatives stop at `deadline`)."""
    logits, layout = parse_logits(body.logits, settings, body.dim, body.include, overflow)
    include = frozenset(Output(item) for item in body.include)
    check_output_size(logits.shape, include, settings)
    candidate = None
    if body.candidate is not None:
        outputs = _sent_outputs(body.candidate)
        candidate = CandidateCall(outputs, ProblemInputs(logits), None, settings.docs_url, layout)
    return SoftmaxCall(
        to_dtype(logits, body.dtype, layout),
        layout,
        include,
        _numeric_options(body.numeric, body.dtype, deadline),
        _tolerance(body.tolerance),
        candidate,
    )


def directions_of(body: CrossEntropyRequest, settings: Settings) -> int | None:
    """k when the request's numeric gradient is checked along k random directions: those it
    asks for, or DEFAULT_DIRECTIONS when the element-wise one would take more than
    GRADCHECK_NUMERIC_GRADIENT_MAX_EVALUATIONS loss evaluations; None without a numeric
    gradient in `include`."""
    if Output.NUMERIC_GRADIENT not in body.include:
        return None
    if body.numeric.directions is not None:
        return body.numeric.directions
    rows, classes = request_shape(body.logits)
    method = Method(body.numeric.method)
    if prefer_directions(rows, classes, method, settings.numeric_gradient_max_evaluations):
        return DEFAULT_DIRECTIONS
    return None


def to_loss_call(
    body: CrossEntropyRequest,
    settings: Settings,
    *,
    overflow: RequestError | None = None,
    deadline: Deadline = NEVER,
) -> LossCall:
    """Validate a cross-entropy request into the problem and options the numerics take
    (`overflow` as for `parse_logits`; numeric derivatives stop at `deadline`)."""
    include = frozenset(body.include)  # already Output members
    directions = directions_of(body, settings)
    returned = include - {Output.NUMERIC_GRADIENT} if directions else include
    parsed = parse_loss(body, settings, returned, overflow)
    problem = parsed.problem(body, body.dtype, z_loss=body.z_loss, softcap=body.softcap)
    numeric = _numeric_options(body.numeric, body.dtype, deadline)
    candidate = None
    if body.candidate is not None:
        reference = (
            None
            if body.dtype == "float64"
            else parsed.problem(body, "float64", z_loss=body.z_loss, softcap=body.softcap)
        )
        candidate = CandidateCall(
            _sent_outputs(body.candidate),
            parsed.inputs(body),
            reference,
            settings.docs_url,
            parsed.layout,
            problem,
        )
    return LossCall(
        problem,
        parsed.layout,
        include,
        numeric,
        _tolerance(body.tolerance),
        candidate,
        directions,
        parse_vector(body.vector, include, parsed.layout),
    )


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
