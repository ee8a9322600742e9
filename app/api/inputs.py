"""Request model → numerics problem: one function per problem kind, called by every route.

    to_softmax_call(body, settings)     /v1/softmax
    to_loss_call(body, settings)        /v1/cross-entropy
    parse_loss(fields, settings)        the arrays of a cross-entropy body, of a grading
                                        problem given in full, or of a generated one

What the JSON schema cannot say is checked here, each failure naming its field and position:
shapes (ragged rows, C ≥ 2, label widths), NaN / +Infinity / −Infinity outside a logit mask,
labels out of range, steps the precision cannot hold, and the configured size limits (413).
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
from numpy.typing import NDArray

from app.api.encoding import wants_npz
from app.api.schemas.compute import (
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
from app.numerics.diagnose import ProblemInputs
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import (
    MAX_MAGNITUDE,
    SQUARE_OUTPUTS,
    LossProblem,
    NumericOptions,
    Output,
    ReferenceOutputs,
    Report,
    Tolerance,
    analyse_cross_entropy,
    analyse_softmax,
)
from app.numerics.softmax import FloatArray

DTYPES: dict[str, type[np.floating]] = {"float64": np.float64, "float32": np.float32}
HUGE_REASON = {
    "logits": "beyond it float64 cannot resolve a unit change and softmax is exactly one-hot",
    "weight": "beyond it the weighted losses and gradients may not be finite",
    "labels": "beyond it the weighted losses and gradients may not be finite",
}


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
            f"{field} must lie within ±{MAX_MAGNITUDE:.0e}: {HUGE_REASON[field]}",
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


def request_shape(value: Sequence[float] | Sequence[Sequence[float]]) -> tuple[int, int]:
    """(N, C) from the lengths of the JSON lists alone ((0, 0) for an empty batch; a ragged one
    is refused later, by `parse_logits`)."""
    if not value:
        return 0, 0
    first = value[0]
    return (len(value), len(first)) if isinstance(first, list) else (1, len(value))


def _response_format(accept: str | None) -> ResponseFormat:
    return ResponseFormat.NPZ if wants_npz(accept) else ResponseFormat.JSON


def _candidate_bytes(shape: Shape, candidate: SoftmaxCandidate | None) -> int:
    if candidate is None:
        return 0
    return candidate_bytes(shape, candidate.model_fields_set, PYTHON_NUMBER_BYTES)


def softmax_request_cost(body: SoftmaxRequest, accept: str | None) -> int:
    """The estimated peak memory of a softmax request, from its shape (`app.numerics.cost`)."""
    shape = Shape(*request_shape(body.logits), DTYPES[body.dtype]().itemsize)
    return softmax_cost(
        shape,
        body.include,
        response=_response_format(accept),
        parsed_bytes_per_number=PYTHON_NUMBER_BYTES,
    ).peak + _candidate_bytes(shape, body.candidate)


def cross_entropy_request_cost(body: CrossEntropyRequest, accept: str | None) -> int:
    """The estimated peak memory of a cross-entropy request, from its shape."""
    shape = Shape(*request_shape(body.logits), DTYPES[body.dtype]().itemsize)
    labels = body.labels
    probability_labels = isinstance(labels, list) and bool(labels) and isinstance(labels[0], list)
    return cross_entropy_cost(
        shape,
        body.include,
        probability_labels=probability_labels,
        response=_response_format(accept),
        parsed_bytes_per_number=PYTHON_NUMBER_BYTES,
    ).peak + _candidate_bytes(shape, body.candidate)


def request_entries(
    value: Sequence[float] | Sequence[Sequence[float]], include: Collection[str]
) -> int:
    """Numbers in the logits plus the requested outputs, from the lengths of the JSON lists
    alone (a ragged or empty batch is refused later, by `parse_logits`)."""
    shape = request_shape(value)
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
    _refuse_huge("weight", weight[None, :], flat=True)
    return weight


def parse_labels(
    request: "LossFields", shape: tuple[int, int], flat_logits: bool
) -> NDArray[np.int64] | FloatArray:
    """Class indices (N,) as int64, or probability rows (N, C) as float64."""
    labels = request.labels
    num_samples, num_classes = shape
    is_probability_row = (
        flat_logits
        and isinstance(labels, list)
        and len(labels) == num_classes
        and not isinstance(labels[0], list)
    )
    if isinstance(labels, list) and labels and (isinstance(labels[0], list) or is_probability_row):
        rows = [labels] if is_probability_row else labels
        return _probability_rows(rows, shape, is_probability_row)

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
    return np.asarray(indices, np.int64)


def targets_of(
    request: "LossFields",
    labels: NDArray[np.int64] | FloatArray,
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
        cast(NDArray[np.int64], labels),
        num_classes,
        weight=cast_weight,
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


class LossFields(Protocol):
    """The fields of a cross-entropy problem: a /v1/cross-entropy body or a grading problem."""

    @property
    def logits(self) -> Sequence[float] | Sequence[Sequence[float]]: ...
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
    flat: bool
    labels: NDArray[np.int64] | FloatArray
    weight: FloatArray | None

    def problem(self, fields: "LossFields", dtype: Dtype) -> LossProblem:
        """The problem in precision `dtype`: cast logits, effective targets, reduction."""
        targets = targets_of(fields, self.labels, self.weight, self.logits.shape[1], DTYPES[dtype])
        return LossProblem(to_dtype(self.logits, dtype, self.flat), targets, fields.reduction)

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
    fields: "LossFields", settings: Settings, include: Collection[str] = ()
) -> ParsedLoss:
    """Logits, labels and weights of `fields`, each checked (413 first if the outputs in
    `include` would be too large)."""
    logits, flat = parse_logits(fields.logits, settings)
    check_output_size(logits.shape, include, settings)
    weight = parse_weight(fields, logits.shape[1])
    return ParsedLoss(logits, flat, parse_labels(fields, logits.shape, flat), weight)


def _numeric_options(numeric: FiniteDifferenceOptions, dtype: Dtype) -> NumericOptions:
    """The numerics' options; 422 for a step so small that the precision cannot hold it (it
    would be 0 or subnormal there, and 1/h infinite)."""
    smallest = float(np.finfo(DTYPES[dtype]).tiny)
    if numeric.step is not None and numeric.step < smallest:
        raise RequestError(
            ("numeric", "step"),
            f"step {numeric.step:.3g} is below the smallest normal {dtype} number "
            f"({smallest:.3g}): choose a larger step, or leave it out for the default rule",
        )
    return NumericOptions(Method(numeric.method), numeric.step)


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

    def check(self, report: Report, tolerance: Tolerance) -> CandidateCheck:
        """The candidate against `report`'s outputs (or the float64 problem's)."""
        reference = report
        if reference.softmax.probabilities.dtype != np.float64:
            reference = self._float64_report()
        return check_candidate(
            self.outputs,
            ReferenceOutputs(reference),
            atol=tolerance.atol,
            rtol=tolerance.rtol,
            inputs=self.inputs,
            softmax=reference.softmax,
            docs_url=self.docs_url,
        )

    def _float64_report(self) -> Report:
        problem = self.reference_problem
        if problem is None:
            return analyse_softmax(self.inputs.logits, frozenset())
        return analyse_cross_entropy(
            problem.logits, problem.targets, problem.reduction, frozenset()
        )


def _sent_outputs(candidate: SoftmaxCandidate) -> dict[str, object]:
    """The outputs the caller put in `candidate` (null included: it is checked too)."""
    return {name: getattr(candidate, name) for name in candidate.model_fields_set}


@dataclass(frozen=True)
class SoftmaxCall:
    """One validated softmax request: the logits and the options they are analysed with."""

    logits: FloatArray
    include: frozenset[Output]
    numeric: NumericOptions
    tolerance: Tolerance
    candidate: CandidateCall | None = None

    def analyse(self) -> Report:
        """The report of this request."""
        return analyse_softmax(self.logits, self.include, self.numeric, self.tolerance)


@dataclass(frozen=True)
class LossCall:
    """One validated cross-entropy request: its problem and the options it is analysed with."""

    problem: LossProblem
    include: frozenset[Output]
    numeric: NumericOptions
    tolerance: Tolerance
    candidate: CandidateCall | None = None

    def batch_key(self) -> tuple[object, ...]:
        """Calls with equal keys can be computed in one stacked batch (`app.api.coalesce`)."""
        logits = self.problem.logits
        return (self.include, self.numeric, self.tolerance, logits.dtype, logits.shape[1])

    def analyse(self) -> Report:
        """The report of this call alone (raises InvalidProblem)."""
        problem = self.problem
        return analyse_cross_entropy(
            problem.logits,
            problem.targets,
            problem.reduction,
            self.include,
            self.numeric,
            self.tolerance,
        )


def to_softmax_call(body: SoftmaxRequest, settings: Settings) -> SoftmaxCall:
    """Validate a softmax request into the logits and options the numerics take."""
    logits, flat = parse_logits(body.logits, settings)
    include = frozenset(Output(item) for item in body.include)
    check_output_size(logits.shape, include, settings)
    candidate = None
    if body.candidate is not None:
        outputs = _sent_outputs(body.candidate)
        candidate = CandidateCall(outputs, ProblemInputs(logits), None, settings.docs_url)
    return SoftmaxCall(
        to_dtype(logits, body.dtype, flat),
        include,
        _numeric_options(body.numeric, body.dtype),
        _tolerance(body.tolerance),
        candidate,
    )


def to_loss_call(body: CrossEntropyRequest, settings: Settings) -> LossCall:
    """Validate a cross-entropy request into the problem and options the numerics take."""
    include = frozenset(Output(item) for item in body.include)
    parsed = parse_loss(body, settings, include)
    problem = parsed.problem(body, body.dtype)
    numeric = _numeric_options(body.numeric, body.dtype)
    candidate = None
    if body.candidate is not None:
        reference = None if body.dtype == "float64" else parsed.problem(body, "float64")
        candidate = CandidateCall(
            _sent_outputs(body.candidate), parsed.inputs(body), reference, settings.docs_url
        )
    return LossCall(problem, include, numeric, _tolerance(body.tolerance), candidate)
