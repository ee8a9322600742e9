"""Request and response models of the autograding endpoints (/v1/problems, /v1/grade[/batch]).

A student's values (`submission`, `submissions`, an item's `submission`) are declared as
arbitrary JSON: whatever they hold is graded, and a defect in them costs points with a message
instead of a 422. Everything else — the problem and the grading options — is the caller's and is
validated strictly (422 naming the field). The parameters signed in a problem id are validated
with the rules of `ProblemRequest` too.
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
MAX_STUDENT_LABEL = 256
FEEDBACK_DESCRIPTION = (
    "none: correct/incorrect per part; verdict (default): and how many entries are wrong, the "
    "first wrong positions with the submitted value, and the likely mistake (no number derived "
    "from the expected values); full: and the error sizes, which with the student's own value "
    "give the expected one: full reveals the answer."
)


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
    feedback: Feedback = Field(Feedback.VERDICT, description=FEEDBACK_DESCRIPTION)
    format: ResultFormat = Field(
        "native",
        description="native; gradescope: a results.json body; prairielearn: an external "
        "grader's results.json.",
    )
    reveal_expected: StrictBool = Field(
        False, description="Include the reference values in the result."
    )
    visibility: GradescopeVisibility = Field(
        "visible",
        description="Gradescope visibility of the tests and of the top-level output "
        "(stdout_visibility); other than visible, the top-level output says only that the "
        "answer was graded (format gradescope only).",
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


class RosterItem(BaseModel):
    """One student of a roster: their own problem (by id or in full) and their answer."""

    model_config = ConfigDict(extra="forbid")

    problem_id: str | None = Field(
        None, max_length=200_000, description="This student's problem_id (or `problem`)."
    )
    problem: GradingProblem | None = Field(None, description="This student's problem in full.")
    submission: Any = Field(description=SUBMISSION_DESCRIPTION)
    student: str | None = Field(
        None,
        max_length=MAX_STUDENT_LABEL,
        description="A label returned with the result (an email, say); not used in grading.",
    )


class BatchGradeRequest(GradingRequestBase):
    """Grade a whole class: many answers to one problem (`submissions`), or a roster where every
    student has their own problem (`items`); the grading options apply to all."""

    submissions: list[Any] | None = Field(
        None,
        min_length=1,
        description="One answer per student to the request's problem, each as `submission` of "
        "/v1/grade (give this or `items`).",
    )
    items: list[RosterItem] | None = Field(
        None,
        min_length=1,
        fail_fast=True,
        description="A roster: each item its own problem (problem_id or problem), submission "
        "and optional student label (give this or `submissions`, without a top-level problem). "
        "Items whose problems have the same shape are graded together.",
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
    max_abs_error: float | None = Field(
        description="Feedback full only (it reveals the expected value); else null."
    )
    max_rel_error: float | None = Field(
        description="cs231n: max |s − e| / max(1e-8, |s| + |e|); feedback full only."
    )
    fraction_correct: float | None = Field(description="Entries within tolerance / entries.")
    message: str
    diagnosis: str | None = Field(
        None, description="Code of the likely mistake behind a wrong part (feedback verdict, full)."
    )
    diagnoses: list[str] | None = Field(
        None,
        description="Every code found in a wrong part, the most likely first: one, or the two of "
        "a pair of mistakes made at once (feedback verdict, full).",
    )
    mismatches: list[MismatchEntry] | None = Field(
        None,
        description="The first few entries outside the tolerance with the submitted value "
        "(feedback verdict, full).",
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
    student: str | None = Field(None, description="The roster item's label (items only).")


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
    visibility: GradescopeVisibility
    stdout_visibility: GradescopeVisibility
    tests: list[GradescopeTest]
    student: str | None = Field(None, description="The roster item's label (items only).")


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
    student: str | None = Field(None, description="The roster item's label (items only).")


AnyGradeResult = GradeResult | GradescopeResult | PrairieLearnResult


class ScoreBinModel(BaseModel):
    """Scores in [low, high); the last bin includes high (max_score)."""

    low: float
    high: float
    count: int


class ScoreDistribution(BaseModel):
    """The scores of every submission of the batch."""

    max_score: float
    mean: float | None = Field(description="null for an empty batch (also median, min, max).")
    median: float | None
    min: float | None
    max: float | None
    histogram: list[ScoreBinModel] = Field(description="10 equal bins over [0, max_score].")


class PartSummaryModel(BaseModel):
    """One graded part over every submission of the batch."""

    name: Part
    submissions: int
    passed: int
    unreadable: int = Field(description="Submissions whose part was missing or unreadable.")
    codes: dict[str, int] = Field(
        description="Diagnosis code → in how many submissions it was found (each code once per "
        "submission; both codes of a pair count), the most likely code first.",
        examples=[{"not_divided": 12, "sign_flipped": 3}],
    )


class ClassSummaryModel(BaseModel):
    """What the class got wrong, for the instructor: counts and scores only, no number derived
    from the expected values, whatever the feedback level."""

    submissions: int
    gradable: int
    scores: ScoreDistribution
    parts: list[PartSummaryModel]


class BatchGradeResponse(BaseModel):
    """One result per submission (or roster item), in the order sent, and the class summary."""

    results: list[AnyGradeResult]
    summary: ClassSummaryModel
