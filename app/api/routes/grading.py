"""Autograding: POST /v1/problems, /v1/grade and /v1/grade/batch.

A problem is either generated from a seed (and then named by its signed `problem_id`) or given
in full like the body of /v1/cross-entropy; both go through the same parsing as that endpoint
(`app.api.inputs.parse_loss`), so the reference values are exactly the ones
/v1/cross-entropy returns.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import BatchGradeBody, GradeBody, ProblemBody, SettingsDep, SigningKeyDep
from app.api.encoding import JSON_MEDIA_TYPE, encode_json
from app.api.inputs import check_output_size, parse_loss, request_shape
from app.api.offload import compute
from app.api.routes import ERROR_RESPONSES
from app.api.schemas.compute import Dtype
from app.api.schemas.grading import (
    AnyGradeResult,
    BatchGradeResponse,
    GradingProblem,
    GradingRequestBase,
    ProblemRequest,
    ProblemResponse,
)
from app.core.config import Settings
from app.core.errors import RequestError
from app.grading.formats import Presentation, gradescope, native, prairielearn
from app.grading.grade import GradingOptions, Part, Reference, grade_batch
from app.grading.problems import (
    GENERATOR_ALGORITHM,
    GENERATOR_NAME,
    GeneratedProblem,
    ProblemSpec,
    generate_problem,
)
from app.grading.tokens import InvalidProblemId, decode_problem_id, encode_problem_id
from app.numerics.cost import PYTHON_NUMBER_BYTES, Shape, grading_cost
from app.numerics.cross_entropy import Reduction
from app.numerics.errors import InvalidProblem

router = APIRouter(prefix="/v1", tags=["grading"])

CHECKED_PARTS = (Part.PROBABILITIES, Part.LOSS, Part.GRADIENT)
"""Parts computed when a problem is issued, so that grading it later cannot fail."""


@contextmanager
def _located(*prefix: str) -> Iterator[None]:
    """Re-raise request errors with their locations moved under `prefix` (e.g. "problem")."""
    try:
        yield
    except RequestError as error:
        for item in error.errors:
            item["loc"] = [item["loc"][0], *prefix, *item["loc"][1:]]
        raise
    except InvalidProblem as error:
        raise InvalidProblem((*prefix, *error.location), error.message) from None


def _reference_of(fields: GradingProblem, settings: Settings) -> Reference:
    """The reference values of a problem, with its raw inputs for the diagnoses."""
    parsed = parse_loss(fields, settings)
    loss = parsed.problem(fields, fields.dtype)
    return Reference(loss.logits, loss.targets, loss.reduction, parsed.inputs(fields))


def _generated(spec: ProblemSpec, settings: Settings) -> tuple[GeneratedProblem, Reference]:
    """The numbers of a generated problem and its reference values."""
    problem = generate_problem(spec)
    fields = GradingProblem.model_construct(
        logits=problem.logits.tolist(),
        labels=problem.labels.tolist(),
        weight=None if spec.weight is None else list(spec.weight),
        ignore_index=spec.ignore_index,
        reduction=spec.reduction,
        label_smoothing=spec.label_smoothing,
        dtype=cast(Dtype, spec.dtype),
    )
    return problem, _reference_of(fields, settings)


def _spec(body: ProblemRequest) -> ProblemSpec:
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


def problem_fields(body: ProblemRequest, settings: Settings, key: bytes) -> dict[str, Any]:
    """Generate, check that it can be graded, sign: the response fields of /v1/problems."""
    spec = _spec(body)
    try:
        problem, reference = _generated(spec, settings)
        for part in CHECKED_PARTS:
            reference.value(part)
    except InvalidProblem as error:
        # Generated labels are valid and |logits| ≤ 6000, so only two things can fail: a 'mean'
        # whose divisor is 0 (reported on labels), or class weights so large that a value
        # overflows the dtype.
        field = "reduction" if error.location[:1] == ("labels",) else "weight"
        raise RequestError((field,), error.message) from None
    return {
        "problem_id": encode_problem_id(spec, key),
        "logits": problem.logits,
        "labels": problem.labels,
        "weight": body.weight,
        "ignore_index": spec.ignore_index,
        "reduction": str(spec.reduction),
        "label_smoothing": spec.label_smoothing,
        "dtype": spec.dtype,
        "parameters": {
            "seed": spec.seed,
            "batch_size": spec.batch_size,
            "num_classes": spec.num_classes,
            "label_type": str(spec.label_type),
            "logit_scale": spec.logit_scale,
        },
        "generator": {
            "name": GENERATOR_NAME,
            "algorithm": GENERATOR_ALGORITHM,
            "numpy": np.__version__,
        },
    }


def _reference(body: GradingRequestBase, settings: Settings, key: bytes) -> Reference:
    """The reference of the request's problem: regenerated from its id, or parsed in full."""
    if (body.problem_id is None) == (body.problem is None):
        raise RequestError(
            ("problem_id",),
            "give exactly one of problem_id (from POST /v1/problems) and problem (logits, "
            "labels and loss options)",
        )
    if body.problem_id is not None:
        try:
            spec = decode_problem_id(body.problem_id, key)
        except InvalidProblemId as error:
            raise RequestError(("problem_id",), str(error)) from None
        with _located("problem_id"):
            return _generated(spec, settings)[1]
    problem = body.problem
    assert problem is not None
    with _located("problem"):
        return _reference_of(problem, settings)


def _options(body: GradingRequestBase) -> GradingOptions:
    if not sum(body.points.values()) > 0:
        raise RequestError(("points",), "points must give at least one part more than 0 points")
    return GradingOptions(
        points=dict(body.points),
        atol=body.tolerance.atol,
        rtol=body.tolerance.rtol,
        partial_credit=body.partial_credit,
    )


def grade_fields(
    body: GradingRequestBase, submissions: Sequence[object], settings: Settings, key: bytes
) -> list[dict[str, Any]]:
    """Grade every submission against the request's problem, in the requested format."""
    options = _options(body)
    reference = _reference(body, settings, key)
    location = ("problem_id",) if body.problem_id is not None else ("problem",)
    with _located(*location):
        grades = grade_batch(reference, submissions, options)
        expected = None
        if body.reveal_expected:
            num_samples, num_classes = reference.shape(Part.PROBABILITIES)
            check_output_size(
                (len(submissions) * num_samples, num_classes),
                {str(part) for part in options.points},
                settings,
            )
            expected = {part: reference.value(part) for part in options.points}
    view = Presentation(body.feedback, options.atol, options.rtol, expected)
    if body.format == "gradescope":
        return [gradescope(grade, view, body.visibility) for grade in grades]
    if body.format == "prairielearn":
        return [prairielearn(grade, view) for grade in grades]
    return [native(grade, view) for grade in grades]


@router.post(
    "/problems",
    summary="A seeded cross-entropy problem with a signed id",
    response_model=ProblemResponse,
    responses=ERROR_RESPONSES,
)
async def problems(body: ProblemBody, settings: SettingsDep, key: SigningKeyDep) -> Response:
    """The same request gives the same logits and labels on every run and machine (see
    `generator`). `problem_id` signs the parameters (HMAC-SHA256 with GRADCHECK_SECRET_KEY): pass
    it to /v1/grade, which regenerates the problem, so no state is kept and ids cannot be forged."""
    fields = await run_in_threadpool(problem_fields, body, settings, key)
    return Response(encode_json(fields), media_type=JSON_MEDIA_TYPE)


def grading_request_cost(body: GradingRequestBase, submissions: int, key: bytes) -> tuple[int, int]:
    """(numbers, estimated peak bytes) of grading `submissions` answers of the body's problem,
    from its shape alone (a problem id is decoded, not generated); an unreadable id costs
    nothing here (it is refused when graded)."""
    if body.problem is not None:
        num_samples, num_classes = request_shape(body.problem.logits)
    else:
        try:
            spec = decode_problem_id(body.problem_id or "", key)
        except InvalidProblemId:
            return 0, 0
        num_samples, num_classes = spec.batch_size, spec.num_classes
    parts = [str(part) for part in body.points]
    cost = grading_cost(
        Shape(num_samples, num_classes),
        parts,
        submissions,
        reveal_expected=body.reveal_expected,
        parsed_bytes_per_number=PYTHON_NUMBER_BYTES,
    )
    return num_samples * num_classes * (submissions + 1), cost.peak


async def _graded(
    request: Request, body: GradingRequestBase, submissions: Sequence[object], single: bool
) -> Response:
    """Grade `submissions` once the memory budget admits them, and encode the results."""
    settings: Settings = request.app.state.settings
    key: bytes = request.app.state.signing_key
    entries, cost = grading_request_cost(body, len(submissions), key)

    def work() -> Response:
        results = grade_fields(body, submissions, settings, key)
        content = results[0] if single else {"results": results}
        return Response(encode_json(content), media_type=JSON_MEDIA_TYPE)

    return await compute(entries, cost, request, work)


@router.post(
    "/grade",
    summary="Grade one student's answer",
    response_model=AnyGradeResult,
    responses=ERROR_RESPONSES,
)
async def grade(body: GradeBody, request: Request) -> Response:
    """Compare each graded part of `submission` with the reference value (the loss, and the
    gradient of the reduced loss, as /v1/cross-entropy computes them): correct where
    |submitted − expected| ≤ atol + rtol·|expected|. A defect in the student's answer (missing
    part, wrong shape, NaN, strings) scores 0 for that part with a message — never an HTTP
    error; `gradable` is false when nothing could be read. Only the caller's own mistakes (the
    problem, the options) are 4xx."""
    return await _graded(request, body, [body.submission], single=True)


@router.post(
    "/grade/batch",
    summary="Grade a whole class in one call",
    response_model=BatchGradeResponse,
    responses=ERROR_RESPONSES,
)
async def grade_batch_route(body: BatchGradeBody, request: Request) -> Response:
    """As /v1/grade for every entry of `submissions` (each part compared for all students in one
    numpy operation); `results` are in the order of `submissions`."""
    return await _graded(request, body, body.submissions, single=False)
