"""Autograding: POST /v1/problems, /v1/grade and /v1/grade/batch.

A problem is either generated from a seed (and then named by its signed `problem_id`) or given
in full like the body of /v1/cross-entropy; both go through the same parsing as that endpoint
(`app.api.inputs.parse_loss`), so the reference values are exactly the ones
/v1/cross-entropy returns. The parameters signed in an id are validated as a `ProblemRequest`
is, so a signed but unusable id is a 422 naming the field.

/v1/grade/batch takes either many answers to one problem (`submissions`) or a roster
(`items`, each student with their own problem); items whose problems have the same shapes are
graded together (`app.grading.grade.grade_group`). At most GRADCHECK_MAX_SUBMISSIONS of either:
a larger body is refused with 413 from a scan of its bytes, before it is parsed.
"""

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from app.api.admission import grading_request_cost
from app.api.deps import (
    INLINE_PARSE_BYTES,
    AnswerBody,
    GradeBody,
    ProblemBody,
    Received,
    request_context,
)
from app.api.encoding import encode_json
from app.api.examples import BATCH_GRADE_EXAMPLES
from app.api.inputs import generated_reference, grading_reference, problem_spec
from app.api.locations import under
from app.api.offload import run_admitted
from app.api.parse import check_output_size
from app.api.routes import ERROR_RESPONSES
from app.api.schemas.grading import (
    AnyGradeResult,
    BatchGradeRequest,
    BatchGradeResponse,
    GradeRequest,
    GradingRequestBase,
    ProblemRequest,
    ProblemResponse,
    RosterItem,
)
from app.api.submissions import too_many_elements
from app.core.config import Settings
from app.core.errors import LazyRefusal, LimitExceeded, RequestError
from app.core.media import JSON_MEDIA_TYPE
from app.core.threads import run_in_thread
from app.grading.formats import Presentation, gradescope, native, prairielearn, summary_fields
from app.grading.grade import Grade, GradingOptions, Part, Reference, grade_batch, grade_group
from app.grading.problems import (
    GENERATOR_ALGORITHM,
    GENERATOR_NAME,
)
from app.grading.summary import class_summary
from app.grading.tokens import (
    encode_problem_id,
)
from app.numerics.deadline import NEVER, Deadline
from app.numerics.errors import InvalidProblem

router = APIRouter(prefix="/v1", tags=["grading"])

CHECKED_PARTS = (Part.PROBABILITIES, Part.LOSS, Part.GRADIENT)
"""Parts computed when a problem is issued, so that grading it later cannot fail."""


def problem_fields(body: ProblemRequest, settings: Settings, key: bytes) -> dict[str, Any]:
    """Generate, check that it can be graded, sign: the response fields of /v1/problems."""
    spec = problem_spec(body)
    try:
        problem, reference = generated_reference(spec, settings)
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


def _options(body: GradingRequestBase, deadline: Deadline, docs_url: str | None) -> GradingOptions:
    if not sum(body.points.values()) > 0:
        raise RequestError(("points",), "points must give at least one part more than 0 points")
    return GradingOptions(
        points=dict(body.points),
        atol=body.tolerance.atol,
        rtol=body.tolerance.rtol,
        partial_credit=body.partial_credit,
        deadline=deadline,
        docs_url=docs_url,
    )


def _formatted(
    body: GradingRequestBase, grade: Grade, view: Presentation, student: str | None = None
) -> dict[str, Any]:
    if body.format == "gradescope":
        result = gradescope(grade, view, body.visibility)
    elif body.format == "prairielearn":
        result = prairielearn(grade, view)
    else:
        result = native(grade, view)
    if isinstance(body, BatchGradeRequest) and body.items is not None:
        result["student"] = student
    return result


def _check_revealed(body: GradingRequestBase, rows: int, num_classes: int, s: Settings) -> None:
    """413 if the revealed expected values would hold more numbers than the output limit."""
    if body.reveal_expected:
        check_output_size((rows, num_classes), {str(part) for part in body.points}, s)


def grade_fields(
    body: GradingRequestBase,
    submissions: Sequence[object],
    settings: Settings,
    key: bytes,
    *,
    deadline: Deadline = NEVER,
    overflow: LazyRefusal | None = None,
    docs_url: str | None = None,
) -> tuple[list[dict[str, Any]], list[Grade]]:
    """Grade every submission against the request's problem, until `deadline` (`overflow` as
    for `app.api.inputs.reference_of`; `docs_url`, the base of the links in diagnoses,
    `app.api.links.docs_url`): the results in the requested format, and the grades (for the
    class summary)."""
    options = _options(body, deadline, docs_url)
    reference = grading_reference(body.problem_id, body.problem, settings, key, overflow=overflow)
    location = ("problem_id",) if body.problem_id is not None else ("problem",)
    with under(*location):
        grades = grade_batch(reference, submissions, options)
        expected = None
        if body.reveal_expected:
            num_samples, num_classes = reference.shape(Part.PROBABILITIES)
            _check_revealed(body, len(submissions) * num_samples, num_classes, settings)
            expected = {part: reference.value(part) for part in options.points}
    view = Presentation(body.feedback, options.atol, options.rtol, expected)
    results = []
    for index, grade in enumerate(grades):
        if index % 64 == 63:
            deadline.check()
        results.append(_formatted(body, grade, view))
    return results, grades


ROSTER_CHECKPOINT_ITEMS = 16
"""Roster items whose problems are made between two checks of the request's deadline."""


def roster_fields(
    body: BatchGradeRequest,
    items: Sequence[RosterItem],
    settings: Settings,
    key: bytes,
    *,
    deadline: Deadline = NEVER,
    overflow: LazyRefusal | None = None,
    docs_url: str | None = None,
) -> tuple[list[dict[str, Any]], list[Grade]]:
    """Grade each item against its own problem, in item order: problems made once per distinct
    id, items of equal shapes graded together, until `deadline` (`overflow` and `docs_url` as
    for `grade_fields`). Returns the formatted results and the grades."""
    if body.problem_id is not None or body.problem is not None:
        raise RequestError(
            ("items",),
            "with items, each item names its own problem: leave problem_id and problem out of "
            "the top level",
        )
    options = _options(body, deadline, docs_url)
    by_id: dict[str, Reference] = {}
    references: list[Reference] = []
    for index, item in enumerate(items):
        if index % ROSTER_CHECKPOINT_ITEMS == ROSTER_CHECKPOINT_ITEMS - 1:
            deadline.check()
        location: tuple[str | int, ...] = ("items", index)
        if item.problem_id is not None and item.problem is None and item.problem_id in by_id:
            references.append(by_id[item.problem_id])
            continue
        reference = grading_reference(
            item.problem_id, item.problem, settings, key, location, overflow
        )
        place = "problem_id" if item.problem_id is not None else "problem"
        with under(*location, place):
            for part in options.points:  # a value that cannot be graded is refused here, located
                reference.value(part)
        if item.problem_id is not None:
            by_id[item.problem_id] = reference
        references.append(reference)
    if body.reveal_expected:
        rows = sum(reference.shape(Part.PROBABILITIES)[0] for reference in references)
        classes = max(reference.shape(Part.PROBABILITIES)[1] for reference in references)
        _check_revealed(body, rows, classes, settings)
    groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
    for index, reference in enumerate(references):
        groups.setdefault(reference.shapes, []).append(index)
    grades: list[Grade | None] = [None] * len(items)
    for members in groups.values():
        deadline.check()
        graded = grade_group(
            [references[i] for i in members], [items[i].submission for i in members], options
        )
        for index, member_grade in zip(members, graded, strict=True):
            grades[index] = member_grade
    results = []
    for index, (item, reference, item_grade) in enumerate(
        zip(items, references, grades, strict=True)
    ):
        if index % 64 == 63:
            deadline.check()
        assert item_grade is not None
        expected = (
            {part: reference.value(part) for part in options.points}
            if body.reveal_expected
            else None
        )
        view = Presentation(body.feedback, options.atol, options.rtol, expected)
        results.append(_formatted(body, item_grade, view, item.student))
    return results, [grade for grade in grades if grade is not None]


@router.post(
    "/problems",
    summary="A seeded cross-entropy problem with a signed id",
    response_model=ProblemResponse,
    responses=ERROR_RESPONSES,
)
async def problems(received: ProblemBody) -> Response:
    """The same request gives the same logits and labels on every run and machine (see
    `generator`). `problem_id` signs the parameters (HMAC-SHA256 with GRADCHECK_SECRET_KEY): pass
    it to /v1/grade, which regenerates the problem, so no state is kept and ids cannot be forged."""
    context = received.context
    fields = await run_in_thread(
        lambda: problem_fields(received.body, context.settings, context.signing_key)
    )
    return Response(encode_json(fields), media_type=JSON_MEDIA_TYPE)


async def _graded(
    received: Received[GradeRequest] | Received[BatchGradeRequest],
    submissions: Sequence[object],
    single: bool,
) -> Response:
    """Grade `submissions` (or a batch body's items) once the memory budget admits them, and
    encode the results."""
    body, context = received.body, received.context
    settings, key, deadline = context.settings, context.signing_key, context.deadline
    overflow, links = received.overflow, context.docs_url
    items = body.items if isinstance(body, BatchGradeRequest) else None
    count = len(items) if items is not None else len(submissions)
    entries, cost = grading_request_cost(body, count, key)

    def work() -> Response:
        if items is not None:
            assert isinstance(body, BatchGradeRequest)
            results, grades = roster_fields(
                body, items, settings, key, deadline=deadline, overflow=overflow, docs_url=links
            )
        else:
            results, grades = grade_fields(
                body,
                submissions,
                settings,
                key,
                deadline=deadline,
                overflow=overflow,
                docs_url=links,
            )
        deadline.check()
        content = (
            results[0]
            if single
            else {"results": results, "summary": summary_fields(class_summary(grades))}
        )
        return Response(encode_json(content), media_type=JSON_MEDIA_TYPE)

    return await run_admitted(entries, cost, context, work)


@router.post(
    "/grade",
    summary="Grade one student's answer",
    response_model=AnyGradeResult,
    responses=ERROR_RESPONSES,
)
async def grade(received: GradeBody) -> Response:
    """Compare each graded part of `submission` with the reference value (the loss, and the
    gradient of the reduced loss, as /v1/cross-entropy computes them): correct where
    |submitted − expected| ≤ atol + rtol·|expected|. A defect in the student's answer (missing
    part, wrong shape, NaN, strings) scores 0 for that part with a message — never an HTTP
    error; `gradable` is false when nothing could be read. Only the caller's own mistakes (the
    problem, the options) are 4xx. The default feedback (`verdict`) holds no number derived from
    the expected values; `full` adds the error sizes and so reveals them."""
    return await _graded(received, [received.body.submission], single=True)


def _too_many(settings: Settings) -> LimitExceeded:
    return LimitExceeded(
        f"this batch holds more than GRADCHECK_MAX_SUBMISSIONS = {settings.max_submissions} "
        "submissions (or items): split it into several requests."
    )


class BatchBody(AnswerBody[BatchGradeRequest]):
    """The body of /v1/grade/batch: 413 before parsing when its `submissions` or `items` hold
    more than GRADCHECK_MAX_SUBMISSIONS elements (a scan of the bytes, in a worker thread for a
    large body); then as every body (a student's overflowing number inside an item's
    `submission` is graded, not refused: `app.api.deps.ANSWER_FIELDS`)."""

    async def __call__(self, request: Request) -> Received[BatchGradeRequest]:
        settings = request_context(request).settings
        body = await request.body()
        limit = settings.max_submissions
        if len(body) > 2 * limit:  # each element takes at least two bytes ("0,")
            if len(body) <= INLINE_PARSE_BYTES:
                over = too_many_elements(body, limit)
            else:
                over = await run_in_thread(lambda: too_many_elements(body, limit))
            if over:
                raise _too_many(settings)
        received = await super().__call__(request)
        parsed = received.body
        if len(parsed.items or parsed.submissions or ()) > limit:
            raise _too_many(settings)
        return received


BATCH_BODY = BatchBody(BatchGradeRequest, BATCH_GRADE_EXAMPLES)
RosterBody = Annotated[Received[BatchGradeRequest], Depends(BATCH_BODY)]


@router.post(
    "/grade/batch",
    summary="Grade a whole class in one call",
    response_model=BatchGradeResponse,
    responses=ERROR_RESPONSES,
)
async def grade_batch_route(received: RosterBody) -> Response:
    """As /v1/grade for every entry of `submissions` (one problem; each part compared for all
    students in one numpy operation), or for every roster item of `items` (each student's own
    problem, by id or in full; items of one shape graded together, each result carrying the
    item's `student` label). `results` are in the order sent. `summary` is for the
    instructor: per part, in how many submissions each diagnosis code was found, and the score
    distribution (counts and scores only, no number derived from the expected values). At most
    GRADCHECK_MAX_SUBMISSIONS entries (413 above)."""
    body = received.body
    if (body.items is None) == (body.submissions is None):
        raise RequestError(
            ("submissions",),
            "give exactly one of submissions (answers to the request's problem) and items "
            "(a roster: each student's problem and submission)",
        )
    return await _graded(received, body.submissions or [], single=False)
