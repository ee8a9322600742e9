"""Typed results: numpy arrays for the arrays, frozen dataclasses for everything else.

Each class names every field of its response model in the service's OpenAPI schema (a test
compares them). A field the schema requires is read as such: a response without it raises
`KeyError`, which the client reports as `ResponseError`. Every object also keeps the server's
own JSON fields in `raw`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
"""An array of floating-point numbers (float64 unless the request asked for another dtype)."""

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _number(value: Any) -> float:
    """A JSON number, or the quoted "NaN" / "Infinity" / "-Infinity" the service writes."""
    if isinstance(value, str):
        return _NON_FINITE[value]
    if value is None:
        return math.nan
    return float(value)


def _optional_number(value: Any) -> float | None:
    return None if value is None else _number(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _index(value: Any) -> tuple[int, ...]:
    return tuple(int(i) for i in value) if isinstance(value, list) else (int(value),)


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value or ())


# ----- the compute endpoints ------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """The tolerance applied: an entry passes where |got − expected| ≤ atol + rtol·|expected|."""

    atol: float
    rtol: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tolerance:
        return cls(_number(data["atol"]), _number(data["rtol"]))


@dataclass(frozen=True)
class Mismatch:
    """One element of a check outside the tolerance."""

    index: tuple[int, ...]
    analytic: float
    numeric: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mismatch:
        return cls(_index(data["index"]), _number(data["analytic"]), _number(data["numeric"]))


@dataclass(frozen=True)
class Check:
    """The service's analytic derivative against its numeric one (`gradient_check`,
    `jacobian_check`, `hessian_check`): `passed`, the counts, the error sizes, the step and a
    sentence (`message`)."""

    passed: bool
    mismatches: int
    checked: int
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    method: str
    message: str
    step: float
    step_rule: str
    step_min: float
    step_max: float
    estimated_truncation_error: float
    estimated_rounding_error: float
    worst_mismatches: tuple[Mismatch, ...] = ()
    directions: int | None = None
    """How many random directions were checked (`numeric.directions`), if so."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        directions = data.get("directions")
        return cls(
            passed=bool(data["passed"]),
            mismatches=int(data["mismatches"]),
            checked=int(data["checked"]),
            max_abs_error=_number(data["max_abs_error"]),
            max_rel_error=_number(data["max_rel_error"]),
            atol=_number(data["atol"]),
            rtol=_number(data["rtol"]),
            method=str(data["method"]),
            message=str(data["message"]),
            step=_number(data["step"]),
            step_rule=str(data["step_rule"]),
            step_min=_number(data["step_min"]),
            step_max=_number(data["step_max"]),
            estimated_truncation_error=_number(data["estimated_truncation_error"]),
            estimated_rounding_error=_number(data["estimated_rounding_error"]),
            worst_mismatches=tuple(Mismatch.from_json(m) for m in data["worst_mismatches"]),
            directions=int(directions) if isinstance(directions, int) else None,
            raw=data,
        )


@dataclass(frozen=True)
class CandidateEntry:
    """One entry of your output outside the tolerance (non-finite values as float nan/inf)."""

    index: tuple[int, ...]
    expected: float
    got: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateEntry:
        return cls(_index(data["index"]), _number(data["expected"]), _number(data["got"]))


@dataclass(frozen=True)
class OutputCheck:
    """How one of your outputs compares with the exact reference."""

    passed: bool
    checked: int
    mismatches: int
    nonfinite: int
    max_abs_error: float | None
    """None when taken over a non-finite entry of yours."""
    max_rel_error: float | None
    max_ulp_error: float | None
    """In ulps of your output's own dtype at the larger of |expected| and the largest |expected|
    of its row (see the service's `max_ulp_error`)."""
    worst: tuple[CandidateEntry, ...] = ()
    defect: str | None = None
    """Why your value could not be read (wrong shape, strings, …), if so."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputCheck:
        return cls(
            passed=bool(data["passed"]),
            checked=int(data["checked"]),
            mismatches=int(data["mismatches"]),
            nonfinite=int(data["nonfinite"]),
            max_abs_error=_optional_number(data["max_abs_error"]),
            max_rel_error=_optional_number(data["max_rel_error"]),
            max_ulp_error=_optional_number(data["max_ulp_error"]),
            worst=tuple(CandidateEntry.from_json(e) for e in data["worst"]),
            defect=_optional_text(data.get("defect")),
            raw=data,
        )


@dataclass(frozen=True)
class Diagnosis:
    """A named mistake that produces your numbers (`code`, e.g. `not_divided`)."""

    code: str
    output: str
    message: str
    evidence: str
    indistinguishable_from: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(
            code=str(data["code"]),
            output=str(data["output"]),
            message=str(data["message"]),
            evidence=str(data["evidence"]),
            indistinguishable_from=_texts(data["indistinguishable_from"]),
        )


@dataclass(frozen=True)
class CandidateCheck:
    """Your outputs against the exact reference, and the mistakes that explain them (the most
    likely first; empty when they pass or when no known mistake explains them), with the
    `tolerance` every output was held to."""

    passed: bool
    outputs: dict[str, OutputCheck]
    diagnoses: tuple[Diagnosis, ...]
    notes: tuple[str, ...]
    tolerance: Tolerance
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateCheck:
        return cls(
            passed=bool(data["passed"]),
            outputs={
                str(name): OutputCheck.from_json(value) for name, value in data["outputs"].items()
            },
            diagnoses=tuple(Diagnosis.from_json(d) for d in data["diagnoses"]),
            notes=_texts(data["notes"]),
            tolerance=Tolerance.from_json(data["tolerance"]),
            raw=data,
        )


@dataclass(frozen=True)
class DirectionalDerivatives:
    """`numeric.directions`: the numeric and analytic derivative along each random direction;
    direction i is the i-th draw of numpy's `default_rng(seed)` (see the API)."""

    numeric: FloatArray
    analytic: FloatArray
    seed: int


@dataclass(frozen=True, kw_only=True)
class SoftmaxResult:
    """What `/v1/softmax` returned; arrays not asked for in `include` are None.

    `log_probabilities` holds -inf where a logit was -inf (the JSON API writes null there)."""

    dtype: str
    batch_size: int
    num_classes: int
    spatial_shape: tuple[int, ...]
    """(d1, …, dk) of K-dimensional inputs (N, C, d1, …, dk); () otherwise."""
    probabilities: FloatArray | None = None
    log_probabilities: FloatArray | None = None
    jacobian: FloatArray | None = None
    numeric_jacobian: FloatArray | None = None
    jacobian_check: Check | None = None
    candidate_check: CandidateCheck | None = None
    arrays: dict[str, FloatArray] = field(default_factory=dict, repr=False, compare=False)
    """Every array of the response by name."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Every non-array field of the response, as the service wrote it."""


@dataclass(frozen=True, kw_only=True)
class CrossEntropyResult(SoftmaxResult):
    """What `/v1/cross-entropy` returned; arrays not asked for in `include` are None.

    `loss` is a float for `mean` and `sum`, the array of per-position losses for `none`;
    `losses` a float for logits without a batch axis."""

    reduction: str
    losses: float | FloatArray
    loss: float | FloatArray | None = None
    gradient: FloatArray | None = None
    numeric_gradient: FloatArray | None = None
    gradient_check: Check | None = None
    directional_derivatives: DirectionalDerivatives | None = None
    hessian: FloatArray | None = None
    numeric_hessian: FloatArray | None = None
    hessian_check: Check | None = None
    hessian_vector_product: FloatArray | None = None


# ----- the grading endpoints ------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemParameters:
    """The generator's parameters, as signed in the problem id."""

    seed: str
    batch_size: int
    num_classes: int
    label_type: str
    logit_scale: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProblemParameters:
        return cls(
            seed=str(data["seed"]),
            batch_size=int(data["batch_size"]),
            num_classes=int(data["num_classes"]),
            label_type=str(data["label_type"]),
            logit_scale=_number(data["logit_scale"]),
        )


@dataclass(frozen=True)
class GeneratorInfo:
    """How the numbers were made, for the record."""

    name: str
    algorithm: str
    numpy: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GeneratorInfo:
        return cls(str(data["name"]), str(data["algorithm"]), str(data["numpy"]))


@dataclass(frozen=True)
class Problem:
    """A seeded problem from `/v1/problems`: give `problem_id` to `grade`, and the rest (as
    `request_fields()`) to `cross_entropy` or to a student."""

    problem_id: str
    logits: FloatArray
    labels: npt.NDArray[Any]
    weight: FloatArray | None
    ignore_index: int
    reduction: str
    label_smoothing: float
    dtype: str
    parameters: ProblemParameters
    generator: GeneratorInfo
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Problem:
        weight = data["weight"]
        return cls(
            problem_id=str(data["problem_id"]),
            logits=np.asarray(data["logits"], dtype=np.float64),
            labels=np.asarray(data["labels"]),
            weight=None if weight is None else np.asarray(weight, dtype=np.float64),
            ignore_index=int(data["ignore_index"]),
            reduction=str(data["reduction"]),
            label_smoothing=_number(data["label_smoothing"]),
            dtype=str(data["dtype"]),
            parameters=ProblemParameters.from_json(data["parameters"]),
            generator=GeneratorInfo.from_json(data["generator"]),
            raw=data,
        )

    def request_fields(self) -> dict[str, Any]:
        """The problem as the JSON fields of a `/v1/cross-entropy` body (or `problem` of
        `/v1/grade`)."""
        return {
            k: v for k, v in self.raw.items() if k not in {"problem_id", "parameters", "generator"}
        }


@dataclass(frozen=True)
class MismatchEntry:
    """A graded entry outside the tolerance, with the submitted value (and the expected one
    with `reveal_expected`)."""

    index: tuple[int, ...]
    submitted: float
    expected: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MismatchEntry:
        return cls(
            _index(data["index"]),
            _number(data["submitted"]),
            _optional_number(data.get("expected")),
        )


@dataclass(frozen=True)
class PartResult:
    """The grade of one part (loss, gradient, …) in the native format."""

    name: str
    passed: bool
    score: float
    max_score: float
    max_abs_error: float | None
    max_rel_error: float | None
    fraction_correct: float | None
    message: str
    diagnosis: str | None = None
    diagnoses: tuple[str, ...] | None = None
    """Every code found in a wrong part, the most likely first (two for a pair of mistakes)."""
    mismatches: tuple[MismatchEntry, ...] | None = None
    expected: Any = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartResult:
        mismatches = data.get("mismatches")
        return cls(
            name=str(data["name"]),
            passed=bool(data["passed"]),
            score=_number(data["score"]),
            max_score=_number(data["max_score"]),
            max_abs_error=_optional_number(data["max_abs_error"]),
            max_rel_error=_optional_number(data["max_rel_error"]),
            fraction_correct=_optional_number(data["fraction_correct"]),
            message=str(data["message"]),
            diagnosis=_optional_text(data.get("diagnosis")),
            diagnoses=None if data.get("diagnoses") is None else _texts(data["diagnoses"]),
            mismatches=None
            if mismatches is None
            else tuple(MismatchEntry.from_json(m) for m in mismatches),
            expected=data.get("expected"),
        )


@dataclass(frozen=True)
class GradeResult:
    """A grade in the native format (`format="native"`)."""

    score: float
    max_score: float
    gradable: bool
    format_errors: tuple[str, ...]
    message: str
    parts: tuple[PartResult, ...]
    student: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The result as the service wrote it (write this as a results file)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GradeResult:
        return cls(
            score=_number(data["score"]),
            max_score=_number(data["max_score"]),
            gradable=bool(data["gradable"]),
            format_errors=_texts(data["format_errors"]),
            message=str(data["message"]),
            parts=tuple(PartResult.from_json(p) for p in data["parts"]),
            student=_optional_text(data.get("student")),
            raw=data,
        )


@dataclass(frozen=True)
class GradescopeTest:
    """One test of Gradescope's results.json: one graded part."""

    name: str
    score: float
    max_score: float
    status: str
    output: str
    output_format: str
    visibility: str
    extra_data: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GradescopeTest:
        return cls(
            name=str(data["name"]),
            score=_number(data["score"]),
            max_score=_number(data["max_score"]),
            status=str(data["status"]),
            output=str(data["output"]),
            output_format=str(data["output_format"]),
            visibility=str(data["visibility"]),
            extra_data=data.get("extra_data"),
        )


@dataclass(frozen=True)
class GradescopeResult:
    """A grade as Gradescope's results.json (`format="gradescope"`)."""

    score: float
    output: str
    output_format: str
    visibility: str
    stdout_visibility: str
    tests: tuple[GradescopeTest, ...]
    student: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The result as the service wrote it (write this as results.json)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GradescopeResult:
        return cls(
            score=_number(data["score"]),
            output=str(data["output"]),
            output_format=str(data["output_format"]),
            visibility=str(data["visibility"]),
            stdout_visibility=str(data["stdout_visibility"]),
            tests=tuple(GradescopeTest.from_json(t) for t in data["tests"]),
            student=_optional_text(data.get("student")),
            raw=data,
        )


@dataclass(frozen=True)
class PrairieLearnTest:
    """One test of PrairieLearn's external-grader result."""

    name: str
    description: str
    points: float
    max_points: float
    message: str
    expected: Any = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrairieLearnTest:
        return cls(
            name=str(data["name"]),
            description=str(data["description"]),
            points=_number(data["points"]),
            max_points=_number(data["max_points"]),
            message=str(data["message"]),
            expected=data.get("expected"),
        )


@dataclass(frozen=True)
class PrairieLearnResult:
    """A grade as PrairieLearn's external-grader results.json (`format="prairielearn"`);
    `score` is a fraction in [0, 1]."""

    gradable: bool
    score: float
    message: str
    format_errors: tuple[str, ...]
    tests: tuple[PrairieLearnTest, ...]
    student: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The result as the service wrote it (write this as results.json)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrairieLearnResult:
        return cls(
            gradable=bool(data["gradable"]),
            score=_number(data["score"]),
            message=str(data["message"]),
            format_errors=_texts(data["format_errors"]),
            tests=tuple(PrairieLearnTest.from_json(t) for t in data["tests"]),
            student=_optional_text(data.get("student")),
            raw=data,
        )


GradingResult = GradeResult | GradescopeResult | PrairieLearnResult
"""A grade in the format asked for: `GradeResult` (native), `GradescopeResult` or
`PrairieLearnResult`; each keeps the service's JSON in `raw`."""

GRADING_RESULTS: dict[str, type[GradeResult] | type[GradescopeResult] | type[PrairieLearnResult]]
GRADING_RESULTS = {
    "native": GradeResult,
    "gradescope": GradescopeResult,
    "prairielearn": PrairieLearnResult,
}
"""The result class of each `format`."""


@dataclass(frozen=True)
class ScoreBin:
    """Scores in [low, high); the last bin includes high (max_score)."""

    low: float
    high: float
    count: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreBin:
        return cls(low=_number(data["low"]), high=_number(data["high"]), count=int(data["count"]))


@dataclass(frozen=True)
class ScoreDistribution:
    """The scores of every submission of a batch (mean … max are None for an empty batch)."""

    max_score: float
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    histogram: tuple[ScoreBin, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreDistribution:
        return cls(
            max_score=_number(data["max_score"]),
            mean=_optional_number(data["mean"]),
            median=_optional_number(data["median"]),
            min=_optional_number(data["min"]),
            max=_optional_number(data["max"]),
            histogram=tuple(ScoreBin.from_json(b) for b in data["histogram"]),
        )


@dataclass(frozen=True)
class PartSummary:
    """One graded part over a batch: how many passed, and in how many submissions each
    diagnosis code was found (most frequent first)."""

    name: str
    submissions: int
    passed: int
    unreadable: int
    codes: dict[str, int]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartSummary:
        return cls(
            name=str(data["name"]),
            submissions=int(data["submissions"]),
            passed=int(data["passed"]),
            unreadable=int(data["unreadable"]),
            codes={str(code): int(count) for code, count in data["codes"].items()},
        )


@dataclass(frozen=True)
class ClassSummary:
    """What a class got wrong, for the instructor: counts and scores only."""

    submissions: int
    gradable: int
    scores: ScoreDistribution
    parts: tuple[PartSummary, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassSummary:
        return cls(
            submissions=int(data["submissions"]),
            gradable=int(data["gradable"]),
            scores=ScoreDistribution.from_json(data["scores"]),
            parts=tuple(PartSummary.from_json(p) for p in data["parts"]),
        )


@dataclass(frozen=True)
class BatchGrades:
    """What `grade_batch` returns: one result per answer, in order, and the class summary.
    Iterating over it (or `len`, indexing) goes through `results`."""

    results: tuple[GradingResult, ...]
    summary: ClassSummary
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[GradingResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> GradingResult:
        return self.results[index]
