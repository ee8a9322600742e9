"""Request and response models of the autograding endpoints (/v1/problems, /v1/grade[/batch]).

A student's values (`submission`, `submissions`) are declared as arbitrary JSON: whatever they
hold is graded, and a defect in them costs points with a message instead of a 422. Everything
else — the problem and the grading options — is the caller's and is validated strictly (422
naming the field).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from app.api.schemas.compute import (
    DTYPE_DESCRIPTION,
    Dtype,
    Labels,
    Logits,
    LossOptions,
    ToleranceOptions,
)
from app.grading.formats import Feedback
from app.grading.grade import Part
from app.grading.problems import LabelType
from app.numerics.cross_entropy import Reduction

MAX_SEED_LENGTH = 256
MAX_PROBLEM_BATCH = 1024
MAX_PROBLEM_CLASSES = 1000


def _seed_text(value: object) -> object:
    """An integer seed as its decimal text (so 42 and "42" are the same seed); strings as is."""
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError("seed must be an integer or a string")


Seed = Annotated[
    str,
    BeforeValidator(_seed_text),
    Field(min_length=1, max_length=MAX_SEED_LENGTH),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "minLength": 1, "maxLength": MAX_SEED_LENGTH},
            ],
            "description": 'Any integer or string, e.g. a student id; 42 and "42" are the '
            "same seed.",
            "examples": ["hw3-alice", 42],
        }
    ),
]

GradescopeVisibility = Literal["visible", "hidden", "after_due_date", "after_published"]
ResultFormat = Literal["native", "gradescope", "prairielearn"]
StrictBool = Annotated[bool, Field(strict=True)]
Points = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e6)]


class ProblemRequest(LossOptions):
    """A reproducible cross-entropy problem: the same request gives the same numbers anywhere."""

    seed: Seed
    batch_size: int = Field(4, strict=True, ge=1, le=MAX_PROBLEM_BATCH, description="N.")
    num_classes: int = Field(3, strict=True, ge=2, le=MAX_PROBLEM_CLASSES, description="C.")
    label_type: LabelType = Field(
        LabelType.INDEX,
        description="index: N class indices; probabilities: N rows of C probabilities "
        "(four decimals, each row summing to 1).",
    )
    logit_scale: float = Field(
        1.0,
        strict=True,
        allow_inf_nan=False,
        gt=0,
        le=1000,
        description="Logits are logit_scale·(an approximately standard normal value in [−6, 6]).",
    )
    dtype: Dtype = Field("float64", description=DTYPE_DESCRIPTION)


class GeneratorInfo(BaseModel):
    """How the numbers were made, for the record."""

    name: str
    algorithm: str
    numpy: str = Field(description="numpy version of the server (the numbers do not depend on it).")


class ProblemParameters(BaseModel):
    """The generator's parameters, as signed in the problem id."""

    seed: str
    batch_size: int
    num_classes: int
    label_type: LabelType
    logit_scale: float


class ProblemResponse(BaseModel):
    """A problem: the body fields of /v1/cross-entropy, its signed id, and how it was made."""

    problem_id: str = Field(description="Signed token of the parameters; pass it to /v1/grade.")
    logits: list[list[float]]
    labels: list[int] | list[list[float]]
    weight: list[float] | None
    ignore_index: int
    reduction: Reduction
    label_smoothing: float
    dtype: Dtype
    parameters: ProblemParameters
    generator: GeneratorInfo


class GradingProblem(LossOptions):
    """A problem stated in full, with the fields of /v1/cross-entropy's body."""

    logits: Logits
    labels: Labels
    dtype: Dtype = Field("float64", description=DTYPE_DESCRIPTION)


def _default_points() -> dict[Part, float]:
    return {Part.LOSS: 1.0, Part.GRADIENT: 1.0}


class GradingRequestBase(BaseModel):
    """The problem (by id or in full) and how to grade and report."""

    model_config = ConfigDict(extra="forbid")

    problem_id: str | None = Field(
        None,
        max_length=200_000,
        description="A problem_id from POST /v1/problems (give this or `problem`).",
    )
    problem: GradingProblem | None = Field(None, description="A problem in full (or problem_id).")
    tolerance: ToleranceOptions = Field(
        default_factory=ToleranceOptions,
        description="An entry is correct when |submitted − expected| ≤ atol + rtol·|expected|.",
    )
    points: dict[Part, Points] = Field(
        default_factory=_default_points,
        description="Points of each graded part; parts not listed are not graded. "
        "Default: loss 1, gradient 1.",
        examples=[{"loss": 1, "gradient": 3}],
    )
    partial_credit: StrictBool = Field(
        False,
        description="true: points × the fraction of entries within tolerance (as PrairieLearn's "
        "matrix input); false: all or nothing per part.",
    )
    feedback: Feedback = Field(
        Feedback.FULL,
        description="full: counts, errors and the first mismatching positions with the "
        "submitted value; summary: counts and errors; none: correct/incorrect only.",
    )
    format: ResultFormat = Field(
        "native",
        description="native; gradescope: a results.json body; prairielearn: an external "
        "grader's results.json.",
    )
    reveal_expected: StrictBool = Field(
        False, description="Include the reference values in the result."
    )
    visibility: GradescopeVisibility = Field(
        "visible", description="Visibility of each Gradescope test (format gradescope only)."
    )


SUBMISSION_DESCRIPTION = (
    "The student's answer: a JSON object with any of probabilities (N×C), loss (a number, or N "
    "numbers for reduction none), gradient (N×C, of the reduced loss) and jacobian (N×C×C). "
    "Anything else is graded too: a defect costs that part's points, with a message."
)


class GradeRequest(GradingRequestBase):
    """Grade one student's answer."""

    submission: Any = Field(
        description=SUBMISSION_DESCRIPTION,
        examples=[{"loss": 0.42, "gradient": [[0.1, -0.2, 0.1]]}],
    )


class BatchGradeRequest(GradingRequestBase):
    """Grade a whole class against one problem."""

    submissions: list[Any] = Field(
        min_length=1, description="One answer per student, each as `submission` of /v1/grade."
    )


# ----- responses (documentation of what the routes write) -----


class MismatchEntry(BaseModel):
    """An entry outside the tolerance."""

    index: list[int]
    submitted: float
    expected: float | None = Field(None, description="Only with reveal_expected.")


class PartResult(BaseModel):
    """The grade of one part."""

    name: Part
    passed: bool
    score: float
    max_score: float
    max_abs_error: float | None = Field(description="null when unreadable or feedback none.")
    max_rel_error: float | None = Field(description="cs231n: max |s − e| / max(1e-8, |s| + |e|).")
    fraction_correct: float | None = Field(description="Entries within tolerance / entries.")
    message: str
    mismatches: list[MismatchEntry] | None = Field(
        None, description="The first few entries outside the tolerance (feedback full)."
    )
    expected: Any = Field(None, description="The reference value (reveal_expected only).")


class GradeResult(BaseModel):
    """Native result of one submission."""

    score: float
    max_score: float
    gradable: bool = Field(description="false when no graded part could be read.")
    format_errors: list[str]
    message: str
    parts: list[PartResult]


class GradescopeTest(BaseModel):
    """One test of Gradescope's results.json: one graded part."""

    name: str
    score: float
    max_score: float
    status: Literal["passed", "failed"]
    output: str
    output_format: Literal["text"]
    visibility: GradescopeVisibility
    extra_data: dict[str, Any] | None = None


class GradescopeResult(BaseModel):
    """Gradescope's results.json."""

    score: float
    output: str
    output_format: Literal["text"]
    tests: list[GradescopeTest]


class PrairieLearnTest(BaseModel):
    """One test of PrairieLearn's external-grader result."""

    name: str
    description: str
    points: float
    max_points: float
    message: str
    expected: Any = None


class PrairieLearnResult(BaseModel):
    """PrairieLearn's external-grader results.json."""

    gradable: bool
    score: float = Field(ge=0, le=1)
    message: str
    format_errors: list[str]
    tests: list[PrairieLearnTest]


AnyGradeResult = GradeResult | GradescopeResult | PrairieLearnResult


class BatchGradeResponse(BaseModel):
    """One result per submission, in the order sent."""

    results: list[AnyGradeResult]
