"""A validated body → the numerics task of its problem kind: one function per kind, called by the
routes, whichever media type carried the body.

    softmax_values / to_softmax_call      /v1/softmax
    loss_values / to_loss_call            /v1/cross-entropy
    linear_values / to_linear_call        /v1/linear-cross-entropy
    grading_reference                     a grading problem, given in full or by its signed id
                                          (/v1/problems, /v1/grade, /v1/grade/batch)

A JSON body is its request model; an .npz body is an `ArrayBody` of it. Both become the same
values object (`SoftmaxValues`, `LossValues`: the request's options and its arrays as sent),
which parsing reads (`app.api.parse`). A call (`SoftmaxCall`, `LossCall`) is the task with the
layout its results are reported in; `run()` makes the one call into the numerics
(`app.numerics.tasks`) and moves its refusals to the caller's positions.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, ValidationError

from app.api.coalesce import Coalescer
from app.api.deps import ArrayBody
from app.api.errors import pydantic_errors
from app.api.locations import at_callers_position, under
from app.api.parse import (
    DTYPES,
    LossFields,
    check_output_size,
    numeric_options,
    parse_head_array,
    parse_head_labels,
    parse_logits,
    parse_loss,
    parse_vector,
    request_shape,
    sent_shape,
    to_dtype,
    tolerance_of,
)
from app.api.schemas.compute import (
    CrossEntropyRequest,
    Dtype,
    Labels,
    LinearCandidate,
    LinearCrossEntropyRequest,
    SoftmaxCandidate,
    SoftmaxRequest,
)
from app.api.schemas.grading import GradingProblem, ProblemRequest
from app.core.config import Settings
from app.core.errors import LazyRefusal, LimitExceeded, RequestError
from app.grading.grade import Reference
from app.grading.problems import GeneratedProblem, ProblemSpec, generate_problem
from app.grading.tokens import PAYLOAD_FIELDS, InvalidProblemId, decode_problem_payload
from app.numerics.cost import HeadShape
from app.numerics.cross_entropy import Reduction
from app.numerics.deadline import NEVER, Deadline
from app.numerics.diagnose import ProblemInputs
from app.numerics.directional import DEFAULT_DIRECTIONS, prefer_directions
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import Output
from app.numerics.layout import Layout
from app.numerics.linear import LinearOutput, LinearProblem
from app.numerics.tasks import (
    Candidate,
    LinearResult,
    LinearTask,
    LossResult,
    LossTask,
    SoftmaxResult,
    SoftmaxTask,
    run_cross_entropy,
    run_linear,
    run_softmax,
)

# ----- the values of a body, whichever media type carried it -----


def _sent_outputs(candidate: SoftmaxCandidate | LinearCandidate | None) -> dict[str, object]:
    """The outputs the caller put in `candidate` (null included: it is checked too)."""
    if candidate is None:
        return {}
    return {name: getattr(candidate, name) for name in candidate.model_fields_set}


def _array(body: ArrayBody[Any], name: str) -> object:
    """An array field of an .npz body: its member, else what request.json sent (or None)."""
    array = body.arrays.get(name)
    return getattr(body.fields, name) if array is None else array


def _candidate(body: BaseModel | ArrayBody[Any]) -> dict[str, object] | None:
    """The candidate's outputs by name: from JSON, and from the `candidate.*` members."""
    if isinstance(body, ArrayBody):
        fields = cast(SoftmaxRequest, body.fields)
        if fields.candidate is None and not body.candidate:
            return None
        return {**_sent_outputs(fields.candidate), **body.candidate}
    candidate = cast(SoftmaxRequest, body).candidate
    return None if candidate is None else _sent_outputs(candidate)


@dataclass(frozen=True)
class SoftmaxValues:
    """A /v1/softmax request: its options, and its logits as sent (nested lists or an array)."""

    options: SoftmaxRequest
    logits: object
    candidate: dict[str, object] | None
    binary: bool
    """Sent as .npz: the arrays are not Python lists (what parsing them keeps differs)."""

    @cached_property
    def shape(self) -> tuple[int, int]:
        """(R, C) from the lengths sent alone (`app.api.parse.request_shape`), worked out once
        for where the request runs, what it costs and how it is checked."""
        return request_shape(self.logits, self.options.dim)


@dataclass(frozen=True)
class LossValues:
    """A /v1/cross-entropy request: its options, and its arrays as sent (nested lists or
    arrays). It has the fields `app.api.parse.parse_loss` reads (`LossFields`)."""

    options: CrossEntropyRequest
    logits: object
    labels: Labels
    weight: list[float] | None
    vector: object
    candidate: dict[str, object] | None
    binary: bool

    @cached_property
    def shape(self) -> tuple[int, int]:
        """(R, C) from the lengths sent alone (`app.api.parse.request_shape`), worked out once
        for where the request runs, what it costs and how it is checked."""
        return request_shape(self.logits)

    @property
    def ignore_index(self) -> int:
        return self.options.ignore_index

    @property
    def reduction(self) -> Reduction:
        return self.options.reduction

    @property
    def label_smoothing(self) -> float:
        return self.options.label_smoothing

    @property
    def dtype(self) -> Dtype:
        return self.options.dtype


def softmax_values(body: SoftmaxRequest | ArrayBody[SoftmaxRequest]) -> SoftmaxValues:
    """The values of a softmax body, JSON or .npz."""
    if isinstance(body, ArrayBody):
        return SoftmaxValues(body.fields, _array(body, "logits"), _candidate(body), True)
    return SoftmaxValues(body, body.logits, _candidate(body), False)


def loss_values(body: CrossEntropyRequest | ArrayBody[CrossEntropyRequest]) -> LossValues:
    """The values of a cross-entropy body, JSON or .npz."""
    if isinstance(body, ArrayBody):
        return LossValues(
            body.fields,
            _array(body, "logits"),
            cast(Labels, _array(body, "labels")),
            cast(list[float] | None, _array(body, "weight")),
            _array(body, "vector"),
            _candidate(body),
            True,
        )
    return LossValues(
        body, body.logits, body.labels, body.weight, body.vector, _candidate(body), False
    )


# ----- the calls -----

PER_CLASS = frozenset({"probabilities", "log_probabilities", "gradient"})
PER_CLASS_PAIR = frozenset({"jacobian", "hessian"})
"""Candidate outputs with the logits' own shape."""
PER_POSITION = frozenset({"losses", "loss"})
"""Candidate outputs with one number per position (the loss: for reduction none)."""


def candidate_rows(outputs: Mapping[str, object], layout: Layout) -> dict[str, object]:
    """A candidate's outputs in the rows layout of the reference. Outputs sent in the
    caller's shape are moved there; anything else is left for the check to describe."""
    if layout.is_matrix:
        return dict(outputs)
    moved: dict[str, object] = {}
    for name, value in outputs.items():
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


@dataclass(frozen=True)
class SoftmaxCall:
    """One validated softmax request: its task, and the layout its results are reported in."""

    task: SoftmaxTask
    layout: Layout

    def run(self) -> SoftmaxResult:
        """Everything the request asked for (raises InvalidProblem at the caller's position)."""
        try:
            return run_softmax(self.task)
        except InvalidProblem as error:
            raise at_callers_position(error, self.layout) from None


@dataclass(frozen=True)
class LossCall:
    """One validated cross-entropy request: its task, and the layout its results are
    reported in."""

    task: LossTask
    layout: Layout

    def run(self) -> LossResult:
        """Everything the request asked for, computed alone (raises InvalidProblem at the
        caller's position)."""
        try:
            return run_cross_entropy(self.task)
        except InvalidProblem as error:
            raise at_callers_position(error, self.layout) from None

    async def run_on_loop(self, coalescer: Coalescer) -> LossResult:
        """`run()` on the event loop: with the tasks that arrive with it when its task can be
        stacked (`app.api.coalesce`)."""
        if not self.task.stackable:
            return self.run()
        try:
            return await coalescer.run(self.task)
        except InvalidProblem as error:
            raise at_callers_position(error, self.layout) from None


def to_softmax_call(
    sent: SoftmaxValues | SoftmaxRequest | ArrayBody[SoftmaxRequest],
    settings: Settings,
    *,
    overflow: LazyRefusal | None = None,
    deadline: Deadline = NEVER,
    docs_url: str | None = None,
) -> SoftmaxCall:
    """Validate a softmax request into its task (`overflow`: the body's first literal beyond
    float64, `app.api.parse.parse_logits`; numeric derivatives stop at `deadline`; `docs_url`:
    the base of the links in messages, `app.api.links.docs_url`)."""
    values = sent if isinstance(sent, SoftmaxValues) else softmax_values(sent)
    body = values.options
    logits, layout = parse_logits(values.logits, settings, body.dim, body.include, overflow)
    include = frozenset(Output(item) for item in body.include)
    check_output_size(logits.shape, include, settings)
    candidate = None
    if values.candidate is not None:
        outputs = candidate_rows(values.candidate, layout)
        candidate = Candidate(outputs, ProblemInputs(logits), docs_url)
    task = SoftmaxTask(
        to_dtype(logits, body.dtype, layout),
        include,
        numeric_options(body.numeric, body.dtype, deadline),
        tolerance_of(body.tolerance),
        candidate,
    )
    return SoftmaxCall(task, layout)


def numeric_directions(values: LossValues, settings: Settings) -> int | None:
    """k when the request's numeric gradient is checked along k random directions: those it
    asks for, or DEFAULT_DIRECTIONS when the element-wise one would take more than
    GRADCHECK_NUMERIC_GRADIENT_MAX_EVALUATIONS loss evaluations; None without a numeric
    gradient in `include`."""
    body = values.options
    if Output.NUMERIC_GRADIENT not in body.include:
        return None
    if body.numeric.directions is not None:
        return body.numeric.directions
    rows, classes = values.shape
    method = Method(body.numeric.method)
    if prefer_directions(rows, classes, method, settings.numeric_gradient_max_evaluations):
        return DEFAULT_DIRECTIONS
    return None


def to_loss_call(
    sent: LossValues | CrossEntropyRequest | ArrayBody[CrossEntropyRequest],
    settings: Settings,
    *,
    overflow: LazyRefusal | None = None,
    deadline: Deadline = NEVER,
    docs_url: str | None = None,
) -> LossCall:
    """Validate a cross-entropy request into its task (`overflow`, `deadline` and `docs_url` as
    for `to_softmax_call`)."""
    values = sent if isinstance(sent, LossValues) else loss_values(sent)
    body = values.options
    include = frozenset(body.include)  # already Output members
    directions = numeric_directions(values, settings)
    returned = include - {Output.NUMERIC_GRADIENT} if directions else include
    parsed = parse_loss(values, settings, returned, overflow)
    problem_in = partial(
        parsed.problem,
        values,
        z_loss=body.z_loss,
        softcap=body.softcap,
        denominator=body.denominator,
    )
    problem = problem_in(body.dtype)
    numeric = numeric_options(body.numeric, body.dtype, deadline)
    candidate = None
    if values.candidate is not None:
        exact = None if body.dtype == "float64" else problem_in("float64")
        candidate = Candidate(
            candidate_rows(values.candidate, parsed.layout),
            parsed.inputs(values, body.denominator),
            docs_url,
            exact,
        )
    task = LossTask(
        problem,
        include,
        numeric,
        tolerance_of(body.tolerance),
        candidate,
        directions,
        parse_vector(values.vector, include, parsed.layout),
    )
    return LossCall(task, parsed.layout)


# ----- the LM head: /v1/linear-cross-entropy -----

NUMERIC_GRADIENT = "numeric_gradient"
"""In a linear request's include: check the three gradients along random directions."""


@dataclass(frozen=True)
class LinearValues:
    """A /v1/linear-cross-entropy request: its options, and its arrays as sent."""

    options: LinearCrossEntropyRequest
    input: object
    linear_weight: object
    linear_bias: object
    labels: object
    weight: object
    candidate: dict[str, object] | None

    @property
    def shape(self) -> HeadShape:
        """N, d, C and J from the arrays' lengths alone (refused later if they disagree)."""
        x, w = sent_shape(self.input), sent_shape(self.linear_weight)
        features = x[-1] if x else 0
        samples = int(np.prod(x[:-1])) if len(x) > 1 else 1
        positions = int(np.prod(w[1:-1])) if len(w) > 2 else 1
        return HeadShape(samples, features, w[0] if w else 0, positions)

    @property
    def directions(self) -> int | None:
        """k of the numeric check when `numeric_gradient` is in include (DEFAULT_DIRECTIONS
        unless `numeric.directions` says)."""
        body = self.options
        if NUMERIC_GRADIENT not in body.include:
            return None
        return body.numeric.directions or DEFAULT_DIRECTIONS


def linear_values(
    body: LinearCrossEntropyRequest | ArrayBody[LinearCrossEntropyRequest],
) -> LinearValues:
    """The values of a linear cross-entropy body, JSON or .npz."""
    if isinstance(body, ArrayBody):
        fields = body.fields
        candidate = None
        if fields.candidate is not None or body.candidate:
            candidate = {**_sent_outputs(fields.candidate), **body.candidate}
        return LinearValues(
            fields,
            _array(body, "input"),
            _array(body, "linear_weight"),
            _array(body, "linear_bias"),
            _array(body, "labels"),
            _array(body, "weight"),
            candidate,
        )
    sent = None if body.candidate is None else _sent_outputs(body.candidate)
    return LinearValues(
        body, body.input, body.linear_weight, body.linear_bias, body.labels, body.weight, sent
    )


def head_output_entries(shape: HeadShape, include: Collection[str]) -> int:
    """Numbers in the outputs of `include` of a head of `shape`."""
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
    return sum(sizes.get(name, 0) for name in include)


@dataclass(frozen=True)
class LinearCall:
    """One validated linear cross-entropy request: its task (results in torch's shapes)."""

    task: LinearTask

    def run(self) -> LinearResult:
        """Everything the request asked for (raises InvalidProblem naming the field)."""
        return run_linear(self.task)


def to_linear_call(
    sent: LinearValues | LinearCrossEntropyRequest | ArrayBody[LinearCrossEntropyRequest],
    settings: Settings,
    *,
    overflow: LazyRefusal | None = None,
    deadline: Deadline = NEVER,
    docs_url: str | None = None,
) -> LinearCall:
    """Validate a linear cross-entropy request into its task: the size limits first (413
    naming the limit), then each array (`app.api.parse.parse_head_array`); the shapes are
    checked together by the numerics (`app.numerics.linear.head_of`)."""
    values = sent if isinstance(sent, LinearValues) else linear_values(sent)
    body = values.options
    shape = values.shape
    if shape.classes > settings.max_vocabulary:
        raise LimitExceeded(
            f"{shape.classes} classes exceed GRADCHECK_MAX_VOCABULARY = {settings.max_vocabulary}."
        )
    if shape.samples * shape.positions > settings.max_batch_size:
        raise LimitExceeded(
            f"{shape.samples * shape.positions} positions exceed GRADCHECK_MAX_BATCH_SIZE = "
            f"{settings.max_batch_size}: split the batch over several requests."
        )
    entries = head_output_entries(shape, body.include)
    if entries > settings.max_output_entries:
        raise LimitExceeded(
            f"the requested outputs hold {entries} numbers, over GRADCHECK_MAX_OUTPUT_ENTRIES = "
            f"{settings.max_output_entries}: leave linear_weight_gradient, logits, "
            "logits_gradient or probabilities out of include, or send fewer samples."
        )
    weight = None
    if values.weight is not None:
        weight = parse_head_array("weight", values.weight, overflow)
    problem = LinearProblem(
        input=parse_head_array("input", values.input, overflow),
        linear_weight=parse_head_array("linear_weight", values.linear_weight, overflow),
        labels=parse_head_labels(values.labels),
        linear_bias=None
        if values.linear_bias is None
        else parse_head_array("linear_bias", values.linear_bias, overflow),
        weight=weight,
        ignore_index=body.ignore_index,
        label_smoothing=body.label_smoothing,
        reduction=Reduction(body.reduction),
        z_loss=body.z_loss,
        softcap=body.softcap,
        denominator=body.denominator,
        causal_shift=body.causal_shift,
        dtype=DTYPES[body.dtype],
    )
    include = frozenset(LinearOutput(name) for name in body.include if name != NUMERIC_GRADIENT)
    task = LinearTask(
        problem,
        include,
        numeric_options(body.numeric, body.dtype, deadline),
        tolerance_of(body.tolerance),
        values.directions,
        values.candidate,
        docs_url,
    )
    return LinearCall(task)


# ----- grading: a problem given in full or by its signed id -----


def reference_of(
    fields: LossFields, settings: Settings, overflow: LazyRefusal | None = None
) -> Reference:
    """The reference values of a problem, with its raw inputs for the diagnoses (`overflow`
    as for `to_softmax_call`)."""
    parsed = parse_loss(fields, settings, overflow=overflow)
    loss = parsed.problem(fields, fields.dtype)
    return Reference(
        loss.logits, loss.targets, loss.reduction, parsed.inputs(fields), parsed.layout
    )


@dataclass(frozen=True)
class GeneratedFields:
    """The fields of a generated problem, its arrays as generated (`LossFields`)."""

    logits: object
    labels: Labels
    weight: list[float] | None
    ignore_index: int
    reduction: Reduction
    label_smoothing: float
    dtype: Dtype


def generated_reference(
    spec: ProblemSpec, settings: Settings
) -> tuple[GeneratedProblem, Reference]:
    """The numbers of a generated problem and its reference values (its arrays handed to
    the parser as they are)."""
    problem = generate_problem(spec)
    fields = GeneratedFields(
        logits=problem.logits,
        labels=cast(Labels, problem.labels),
        weight=None if spec.weight is None else list(spec.weight),
        ignore_index=spec.ignore_index,
        reduction=spec.reduction,
        label_smoothing=spec.label_smoothing,
        dtype=cast(Dtype, spec.dtype),
    )
    return problem, reference_of(fields, settings)


def problem_spec(body: ProblemRequest) -> ProblemSpec:
    """The generator's parameters of a /v1/problems body."""
    return ProblemSpec(
        seed=body.seed,
        batch_size=body.batch_size,
        num_classes=body.num_classes,
        label_type=body.label_type,
        logit_scale=body.logit_scale,
        weight=None if body.weight is None else tuple(body.weight),
        ignore_index=body.ignore_index,
        reduction=Reduction(body.reduction),
        label_smoothing=body.label_smoothing,
        dtype=body.dtype,
    )


def signed_spec(problem_id: str, key: bytes, location: tuple[str | int, ...]) -> ProblemSpec:
    """The spec signed in `problem_id`, validated as a /v1/problems body is: a 422 at
    `location` (and the field) for an altered, foreign or malformed id, or one whose signed
    parameters are not valid."""
    try:
        payload = decode_problem_payload(problem_id, key)
    except InvalidProblemId as error:
        raise RequestError(location, str(error)) from None
    missing = [field for field in PAYLOAD_FIELDS if field not in payload]
    if missing:
        raise RequestError.from_items(
            [
                {
                    "loc": ["body", *location, field],
                    "msg": f"the parameters signed in this problem id lack {field}",
                    "type": "missing",
                }
                for field in missing
            ]
        )
    try:
        request = ProblemRequest.model_validate(payload)
    except ValidationError as error:
        items = pydantic_errors(error)
        for item in items:
            item["loc"] = ["body", *location, *item["loc"][1:]]
            item["msg"] = f"the parameters signed in this problem id are invalid: {item['msg']}"
        raise RequestError.from_items(items) from None
    return problem_spec(request)


def grading_reference(
    problem_id: str | None,
    problem: GradingProblem | None,
    settings: Settings,
    key: bytes,
    location: tuple[str | int, ...] = (),
    overflow: LazyRefusal | None = None,
) -> Reference:
    """The reference of a problem: regenerated from its id, or parsed in full; errors
    located under `location` (`overflow` as for `to_softmax_call`)."""
    if (problem_id is None) == (problem is None):
        raise RequestError(
            (*location, "problem_id"),
            "give exactly one of problem_id (from POST /v1/problems) and problem (logits, "
            "labels and loss options)",
        )
    if problem_id is not None:
        spec = signed_spec(problem_id, key, (*location, "problem_id"))
        with under(*location, "problem_id"):
            return generated_reference(spec, settings)[1]
    assert problem is not None
    with under(*location, "problem"):
        return reference_of(problem, settings, overflow)
