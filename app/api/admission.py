"""What a request will cost, before it runs: the numbers it holds and asks for (where it runs,
`app.api.offload`) and its estimated peak memory (what the memory budget admits,
`app.core.budget`), from the shapes of the values sent alone (`app.numerics.cost`).
"""

from collections.abc import Collection, Mapping

import numpy as np

from app.api.encoding import wants_npz
from app.api.inputs import (
    LinearValues,
    LossValues,
    SoftmaxValues,
    head_output_entries,
    numeric_directions,
    signed_spec,
)
from app.api.parse import DTYPES, output_entries, request_shape, sent_shape
from app.api.schemas.grading import BatchGradeRequest, GradingProblem, GradingRequestBase
from app.core.config import Settings
from app.core.errors import RequestError
from app.numerics.cost import (
    FIXED_BYTES,
    PYTHON_NUMBER_BYTES,
    ResponseFormat,
    Shape,
    candidate_bytes,
    cross_entropy_cost,
    grading_cost,
    linear_cost,
    softmax_cost,
)
from app.numerics.gradcheck import Output
from app.numerics.linear import BLOCK_LOGITS, MIN_BLOCK_ROWS
from app.numerics.tasks import candidate_forms_softmax


def _response_format(accept: str | None) -> ResponseFormat:
    return ResponseFormat.NPZ if wants_npz(accept) else ResponseFormat.JSON


def _parsed_bytes(value: object) -> int:
    """What the parsed request keeps per number beyond its float64: a JSON list's Python
    float and list slot; nothing for an array from an .npz body."""
    return 0 if isinstance(value, np.ndarray) else PYTHON_NUMBER_BYTES


def _candidate_bytes(shape: Shape, candidate: Mapping[str, object] | None) -> int:
    if candidate is None:
        return 0
    parsed = max((_parsed_bytes(value) for value in candidate.values()), default=0)
    return candidate_bytes(shape, set(candidate), parsed)


def softmax_request_cost(values: SoftmaxValues, accept: str | None) -> int:
    """The estimated peak memory of a softmax request, from its shape (`app.numerics.cost`)."""
    body = values.options
    shape = Shape(*values.shape, DTYPES[body.dtype]().itemsize)
    return softmax_cost(
        shape,
        body.include,
        response=_response_format(accept),
        parsed_bytes_per_number=_parsed_bytes(values.logits),
    ).peak + _candidate_bytes(shape, values.candidate)


def cross_entropy_request_cost(values: LossValues, settings: Settings, accept: str | None) -> int:
    """The estimated peak memory of a cross-entropy request, from its shape (a numeric
    gradient checked along directions: the whole loss evaluations of that check)."""
    body = values.options
    include = set(body.include)
    directional = numeric_directions(values, settings) is not None
    if directional:
        include.discard(Output.NUMERIC_GRADIENT)
    shape = Shape(*values.shape, DTYPES[body.dtype]().itemsize)
    probability_labels = len(sent_shape(values.labels)) == len(sent_shape(values.logits))
    candidate = values.candidate
    later_softmax = candidate is not None and candidate_forms_softmax(
        candidate, body.z_loss, body.softcap
    )
    return cross_entropy_cost(
        shape,
        include,
        probability_labels=probability_labels,
        label_smoothing=bool(body.label_smoothing),
        response=_response_format(accept),
        parsed_bytes_per_number=_parsed_bytes(values.logits),
        later_softmax=later_softmax,
        directional=body.numeric.method if directional else None,
    ).peak + _candidate_bytes(shape, candidate)


def linear_request_cost(values: LinearValues, accept: str | None) -> int:
    """The estimated peak memory of a linear cross-entropy request (`cost.linear_cost`)."""
    candidate = values.candidate or {}
    itemsizes = {
        name: int(value.dtype.itemsize) if isinstance(value, np.ndarray) else PYTHON_NUMBER_BYTES
        for name, value in candidate.items()
    }
    weight = values.linear_weight
    return linear_cost(
        values.shape,
        set(values.options.include),
        block_logits=BLOCK_LOGITS,
        min_block_rows=MIN_BLOCK_ROWS,
        candidate_outputs=itemsizes,
        directions=values.directions or 0,
        member_itemsize=int(weight.dtype.itemsize) if isinstance(weight, np.ndarray) else 8,
        itemsize=DTYPES[values.options.dtype]().itemsize,
        probability_labels=len(sent_shape(values.labels)) > len(sent_shape(values.input)) - 1,
        response=_response_format(accept),
        parsed_bytes_per_number=_parsed_bytes(weight),
    ).peak


def linear_request_entries(values: LinearValues) -> int:
    """Numbers of the head (input and weight) plus the requested outputs."""
    shape = values.shape
    head = shape.samples * shape.features + shape.weight
    return head + head_output_entries(shape, values.options.include)


def shape_entries(shape: tuple[int, int], include: Collection[str]) -> int:
    """Numbers in (R, C) logits plus the requested outputs."""
    return shape[0] * shape[1] + output_entries(shape, include)


def request_entries(value: object, include: Collection[str], axis: int | None = None) -> int:
    """Numbers in the logits plus the requested outputs, from the lengths of the JSON lists
    alone (a ragged or empty batch is refused later, by `parse_logits`)."""
    return shape_entries(request_shape(value, axis), include)


def _problem_shape(
    problem_id: str | None, problem: GradingProblem | None, key: bytes
) -> tuple[int, int] | None:
    """(N, C) of a problem from its id (decoded, not generated) or its logits' lengths; None
    for an unreadable id (refused when graded)."""
    if problem is not None:
        return request_shape(problem.logits)
    try:
        spec = signed_spec(problem_id or "", key, ("problem_id",))
    except RequestError:
        return None
    return spec.batch_size, spec.num_classes


def grading_request_cost(body: GradingRequestBase, submissions: int, key: bytes) -> tuple[int, int]:
    """(numbers, estimated peak bytes) of grading `submissions` answers of the body's problem,
    or of every roster item of a batch body, from the shapes alone (a problem id is decoded,
    not generated); an unreadable id costs nothing here (it is refused when graded)."""
    parts = [str(part) for part in body.points]
    counts: dict[tuple[int, int], int] = {}
    references = 0
    if isinstance(body, BatchGradeRequest) and body.items is not None:
        for item in body.items:
            shape = _problem_shape(item.problem_id, item.problem, key)
            if shape is not None:
                counts[shape] = counts.get(shape, 0) + 1
                references += 1
    else:
        shape = _problem_shape(body.problem_id, body.problem, key)
        if shape is not None:
            counts[shape] = submissions
    entries = 0
    cost = 0
    for (num_samples, num_classes), count in counts.items():
        shape_cost = grading_cost(
            Shape(num_samples, num_classes),
            parts,
            count,
            reveal_expected=body.reveal_expected,
            parsed_bytes_per_number=PYTHON_NUMBER_BYTES,
        )
        entries += num_samples * num_classes * (count + 1)
        cost += shape_cost.peak
        if references:  # a roster keeps one reference per item
            kept = grading_cost(Shape(num_samples, num_classes), parts, 0).kept - FIXED_BYTES
            cost += (count - 1) * kept
    return entries, cost
