"""Grading: each submitted part against the reference value, for a whole class at once.

A part is correct entry by entry where |submitted − expected| ≤ atol + rtol·|expected| (the
tolerance test of `app.numerics.compare`, with the reference in the place of the numeric
derivative). Its score is

    all-or-nothing    points·[every entry correct]
    partial credit    points·(correct entries / entries)       (PrairieLearn's matrix input)

and max_rel_error is cs231n's max |s − e| / max(1e-8, |s| + |e|). The submissions of a part that
have the expected shape are stacked into one array and compared in a single numpy expression
(against one reference, or against the stacked references of several problems of one shape: a
roster where every student has their own problem); a part that is missing or unreadable scores 0
with a message saying why. A part is read leniently, by the reader the candidate check of
/v1/softmax and /v1/cross-entropy uses (`app.numerics.candidate.read_part`: one reader, one
wording): any JSON value becomes an array or a message naming the first offending position as it
was sent, never an error; shapes that differ only by axes of length 1 are accepted.

The work is bounded: at most MISMATCHES_KEPT positions and one note on unknown keys per
submission, and the options' deadline is checked between parts and every CHECKPOINT_ROWS
submissions, so a request stopped at its deadline does no more work.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

import numpy as np

from app.numerics.candidate import describe, read_part
from app.numerics.compare import REL_ERROR_FLOOR, tolerance_bound
from app.numerics.cross_entropy import Reduction, Targets
from app.numerics.deadline import NEVER, Deadline
from app.numerics.diagnose import Diagnosis, Observed, ProblemInputs, diagnose
from app.numerics.errors import InvalidProblem
from app.numerics.gradcheck import Report, analyse_cross_entropy
from app.numerics.hessian import loss_hessian
from app.numerics.layout import Layout
from app.numerics.softmax import FloatArray, softmax_jacobian

MISMATCHES_KEPT = 5
"""How many mismatching positions are recorded per part (the first ones, in row-major order)."""
UNKNOWN_KEYS_SHOWN = 3
"""How many unknown keys of a submission its one note names (it counts the rest)."""
CHECKPOINT_ROWS = 64
"""Submissions handled between two checks of the request's deadline (`GradingOptions`)."""


class Part(StrEnum):
    """The values a student can submit, in the order they are graded and reported."""

    PROBABILITIES = "probabilities"
    LOSS = "loss"
    GRADIENT = "gradient"
    JACOBIAN = "jacobian"
    HESSIAN = "hessian"


PART_NAMES = ", ".join(Part)
_PART_VALUES = frozenset(part.value for part in Part)


class Reference:
    """The expected values of one problem (float64); the N·C·C Jacobian only on first use.

    The gradient is that of the reduced loss, as /v1/cross-entropy returns it: (a·Σq − q)/D.
    Raises InvalidProblem (location ("logits",)) if a value is not finite in the problem's dtype.
    With the problem's raw `inputs`, a wrong part is explained by the mistake that produces it
    (`app.numerics.diagnose`). `logits` are rows (R, C); `layout` says the shape the caller
    sent them in (K-dimensional inputs, no batch axis), which the expected values take.
    """

    def __init__(
        self,
        logits: FloatArray,
        targets: Targets,
        reduction: Reduction,
        inputs: ProblemInputs | None = None,
        layout: Layout | None = None,
    ) -> None:
        self.inputs = inputs
        self._targets = targets
        self._layout = layout or Layout.of(logits.shape)
        with np.errstate(over="ignore", invalid="ignore"):  # `value` refuses what is not finite
            self._report: Report = analyse_cross_entropy(logits, targets, reduction, frozenset())
        self._values: dict[Part, FloatArray] = {}
        layout = self._layout
        pair = (*layout.positions, layout.classes, layout.classes)
        self._shapes = {
            Part.PROBABILITIES: layout.shape,
            Part.LOSS: layout.positions if reduction is Reduction.NONE else (),
            Part.GRADIENT: layout.shape,
            Part.JACOBIAN: pair,
            Part.HESSIAN: pair,
        }

    def shape(self, part: Part) -> tuple[int, ...]:
        """The shape a submission of `part` must have (up to axes of length 1)."""
        return self._shapes[part]

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shapes of every part: references with equal shapes can be graded stacked."""
        return tuple(self._shapes[part] for part in Part)

    def _compute(self, part: Part) -> FloatArray | None:
        report = self._report
        if part is Part.PROBABILITIES:
            return report.softmax.probabilities
        if part is Part.LOSS:
            return report.loss
        if part is Part.GRADIENT:
            return report.gradient
        if part is Part.HESSIAN:
            targets = self._targets
            return loss_hessian(
                report.softmax, targets.q, divisor=targets.divisor, exact_q=targets.exact_q
            )
        return softmax_jacobian(report.softmax)

    def diagnoses(
        self, part: Part, submitted: FloatArray, options: "GradingOptions"
    ) -> tuple[Diagnosis, ...]:
        """The mistake behind a wrong `submitted` value of `part` (or the two of a pair), if
        one fits."""
        if self.inputs is None or self._report.logits.dtype != np.float64:
            return ()
        observed = {str(part): Observed(self._as_rows(part, submitted), self._rows(part))}
        found = diagnose(
            observed,
            self.inputs,
            atol=options.atol,
            rtol=options.rtol,
            softmax=self._report.softmax,
            docs_url=options.docs_url,
        )
        return tuple(found)

    def _as_rows(self, part: Part, value: FloatArray) -> FloatArray:
        """A value of `part` in the caller's shape, laid out as the numerics' rows."""
        layout = self._layout
        if part in (Part.PROBABILITIES, Part.GRADIENT):
            return cast(FloatArray, layout.to_rows(value))
        if part in (Part.JACOBIAN, Part.HESSIAN):
            return value.reshape(layout.rows, layout.classes, layout.classes)
        return value.reshape(layout.rows) if value.ndim else value

    def _rows(self, part: Part) -> FloatArray:
        """The expected value of `part` as rows (what the diagnoses work on)."""
        return self._as_rows(part, self.value(part))

    def _in_callers_shape(self, part: Part, rows: FloatArray) -> FloatArray:
        layout = self._layout
        if part in (Part.PROBABILITIES, Part.GRADIENT):
            return cast(FloatArray, layout.per_class(rows))
        if part in (Part.JACOBIAN, Part.HESSIAN):
            return cast(FloatArray, layout.per_class_pair(rows))
        return cast(FloatArray, layout.per_position(rows)) if rows.ndim else rows

    def value(self, part: Part) -> FloatArray:
        """The expected value of `part`, as float64, in the caller's shape."""
        if part not in self._values:
            with np.errstate(over="ignore", invalid="ignore"):
                computed = self._compute(part)
            value = self._in_callers_shape(part, np.asarray(computed, np.float64))
            if not np.isfinite(value).all():
                raise InvalidProblem(
                    ("logits",),
                    f"the expected {part} is not finite in this dtype: the logits or class "
                    "weights are too large for this precision (use dtype float64, smaller "
                    "logits or smaller weights)",
                )
            self._values[part] = value
        return self._values[part]


@dataclass(frozen=True)
class GradingOptions:
    """What is graded and how: points per part (parts not listed are not graded), tolerance,
    the deadline the work stops at, and `docs_url`, the base of the links in diagnoses (None:
    they name docs/maths.md)."""

    points: Mapping[Part, float]
    atol: float
    rtol: float
    partial_credit: bool
    deadline: Deadline = field(default=NEVER, compare=False)
    docs_url: str | None = None


@dataclass(frozen=True)
class WrongEntry:
    """One submitted entry outside the tolerance."""

    index: tuple[int, ...]
    submitted: float
    expected: float


@dataclass(frozen=True)
class PartGrade:
    """The grade of one part of one submission; `defect` says why it could not be compared."""

    part: Part
    score: float
    max_score: float
    passed: bool
    defect: str | None
    entries: int
    correct: int
    max_abs_error: float | None
    max_rel_error: float | None
    mismatches: tuple[WrongEntry, ...]
    diagnoses: tuple[Diagnosis, ...] = ()
    """The named mistake that produces the submitted value, or the two of a pair, the most
    likely first (no reference number in their messages)."""

    @property
    def fraction_correct(self) -> float:
        """Correct entries / entries (0 for a part that could not be compared)."""
        return self.correct / self.entries if self.entries else 0.0


@dataclass(frozen=True)
class Grade:
    """The grade of one submission. `gradable` is False when no graded part could be compared."""

    parts: tuple[PartGrade, ...]
    gradable: bool
    format_errors: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def score(self) -> float:
        """Σ part scores."""
        return math.fsum(part.score for part in self.parts)

    @property
    def max_score(self) -> float:
        """Σ part points."""
        return math.fsum(part.max_score for part in self.parts)


@dataclass(frozen=True)
class _Comparison:
    """Per-submission counts and errors of one part, for a stack of S submissions."""

    within: np.ndarray
    """(S, entries) booleans."""
    correct: np.ndarray
    max_abs_error: np.ndarray
    max_rel_error: np.ndarray


def _compare_stack(
    submitted: FloatArray, expected: FloatArray, atol: float, rtol: float
) -> _Comparison:
    """The tolerance test and error measures of S stacked submissions (S, *shape) at once,
    against one reference (1, *shape) or one per submission (S, *shape)."""
    count = submitted.shape[0]
    expected_flat = expected.reshape(expected.shape[0], -1)
    submitted_flat = submitted.reshape(count, -1)
    difference = np.abs(submitted_flat - expected_flat)
    within = difference <= tolerance_bound(atol, rtol, np.abs(expected_flat))
    relative = difference / np.maximum(
        REL_ERROR_FLOOR, np.abs(submitted_flat) + np.abs(expected_flat)
    )
    return _Comparison(
        within=within,
        correct=within.sum(axis=1),
        max_abs_error=difference.max(axis=1, initial=0.0),
        max_rel_error=relative.max(axis=1, initial=0.0),
    )


def _mismatches(
    within: np.ndarray, submitted: FloatArray, expected: FloatArray
) -> tuple[WrongEntry, ...]:
    """The first few entries outside the tolerance, in row-major order."""
    positions = np.flatnonzero(~within)[:MISMATCHES_KEPT]
    return tuple(
        WrongEntry(
            tuple(int(i) for i in np.unravel_index(position, expected.shape)),
            float(submitted.flat[position]),
            float(expected.flat[position]),
        )
        for position in positions
    )


def _unreadable(part: Part, points: float, defect: str) -> PartGrade:
    return PartGrade(part, 0.0, points, False, defect, 0, 0, None, None, ())


def _grade_part(
    part: Part,
    answers: Sequence[Mapping[str, object] | None],
    references: Sequence[Reference],
    options: GradingOptions,
) -> list[PartGrade]:
    """Part `part` of every submission: readable ones stacked and compared in one go.

    `references[i]` is the problem of `answers[i]`; all have the same shapes. When they are all
    one object (one problem for the whole class) its value is broadcast, not copied."""
    points = options.points[part]
    shape = references[0].shape(part)
    grades: list[PartGrade | None] = []
    readable: list[int] = []
    arrays: list[FloatArray] = []
    for row, answer in enumerate(answers):
        if row % CHECKPOINT_ROWS == CHECKPOINT_ROWS - 1:
            options.deadline.check()
        if answer is None:
            grades.append(_unreadable(part, points, f"{part}: not read, see the format errors"))
        elif part not in answer:
            expected = f"an array of shape {list(shape)}" if shape else "a number"
            grades.append(_unreadable(part, points, f"{part}: missing (expected {expected})"))
        else:
            array = read_part(part, answer[part], shape)
            if isinstance(array, str):
                grades.append(_unreadable(part, points, array))
            else:
                readable.append(len(grades))
                arrays.append(array)
                grades.append(None)
    if arrays:
        stack = np.stack(arrays)
        shared = all(reference is references[0] for reference in references)
        expected_stack = (
            references[0].value(part)[np.newaxis]
            if shared
            else np.stack([references[index].value(part) for index in readable])
        )
        comparison = _compare_stack(stack, expected_stack, options.atol, options.rtol)
        entries = comparison.within.shape[1]
        for row, index in enumerate(readable):
            if row % CHECKPOINT_ROWS == CHECKPOINT_ROWS - 1:
                options.deadline.check()
            correct = int(comparison.correct[row])
            passed = correct == entries
            credit = correct / entries if options.partial_credit else float(passed)
            expected_value = expected_stack[0 if shared else row]
            grades[index] = PartGrade(
                part=part,
                score=points * credit,
                max_score=points,
                passed=passed,
                defect=None,
                entries=entries,
                correct=correct,
                max_abs_error=float(comparison.max_abs_error[row]),
                max_rel_error=float(comparison.max_rel_error[row]),
                mismatches=()
                if passed
                else _mismatches(comparison.within[row], stack[row], expected_value),
                diagnoses=() if passed else references[index].diagnoses(part, stack[row], options),
            )
    return [grade for grade in grades if grade is not None]


def _key_text(key: str) -> str:
    return json.dumps(key[:20], ensure_ascii=False) + ("…" if len(key) > 20 else "")


def _sheet(
    submission: object, graded: Sequence[Part]
) -> tuple[Mapping[str, object] | None, str | None, list[str]]:
    """The submission as a mapping (None if it is not a JSON object), why not, and notes on it."""
    if not isinstance(submission, dict):
        return (
            None,
            f"the submission must be a JSON object with any of {PART_NAMES} as keys; got "
            f"{describe(submission)}",
            [],
        )
    notes = []
    unknown = 0
    named: list[str] = []
    for key in submission:
        if key not in _PART_VALUES:
            unknown += 1
            if len(named) < UNKNOWN_KEYS_SHOWN:
                named.append(_key_text(key))
    if unknown:
        shown = ", ".join(named)
        more = unknown - len(named)
        if more > 0:
            shown += f" and {more} more"
        what = "not a part" if unknown == 1 else "not parts"
        notes.append(f"ignored {shown}: {what} (the parts are {PART_NAMES})")
    notes += [
        f"{part}: submitted but not graded in this assignment"
        for part in Part
        if part in submission and part not in graded
    ]
    return submission, None, notes


def _format_errors(
    answer: Mapping[str, object] | None,
    sheet_error: str | None,
    parts: Sequence[PartGrade],
    notes: Sequence[str],
) -> list[str]:
    """Why nothing could be graded: the sheet's defect, the absent parts, or each part's defect."""
    if sheet_error is not None:
        return [sheet_error]
    assert answer is not None
    present = [part for part in parts if part.part in answer]
    if not present:
        names = ", ".join(part.part for part in parts)
        return [f"the submission holds none of the graded parts ({names}) as JSON keys", *notes]
    return [str(part.defect) for part in present]


def grade_batch(
    reference: Reference, submissions: Sequence[object], options: GradingOptions
) -> list[Grade]:
    """Grade every submission against `reference`; each part for all students in one go."""
    return grade_group([reference] * len(submissions), submissions, options)


def grade_group(
    references: Sequence[Reference], submissions: Sequence[object], options: GradingOptions
) -> list[Grade]:
    """Grade `submissions[i]` against `references[i]`, problems that all have the same shapes
    (`Reference.shapes`): each part for all of them in one numpy expression."""
    if len(references) != len(submissions):
        raise ValueError("one reference per submission")
    if not submissions:
        return []
    if len({reference.shapes for reference in references}) > 1:
        raise ValueError("the references of one group must have the same shapes")
    graded = [part for part in Part if part in options.points]
    sheets = [_sheet(submission, graded) for submission in submissions]
    answers = [answer for answer, _, _ in sheets]
    by_part = []
    for part in graded:
        options.deadline.check()
        by_part.append(_grade_part(part, answers, references, options))
    grades = []
    for student, (answer, sheet_error, notes) in enumerate(sheets):
        parts = tuple(part_grades[student] for part_grades in by_part)
        gradable = any(part.defect is None for part in parts)
        format_errors = () if gradable else tuple(_format_errors(answer, sheet_error, parts, notes))
        grades.append(Grade(parts, gradable, format_errors, tuple(notes)))
    return grades
