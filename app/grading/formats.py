"""A grade as the JSON its reader expects: native, Gradescope's results.json, PrairieLearn's result.

Feedback levels: `full` — counts, errors and the first few mismatching positions with the
submitted value; `summary` — counts and errors only; `none` — correct / incorrect and why a part
could not be read, no error magnitudes. Expected values appear only with `reveal_expected`.
At `full` and `summary`, a wrong part also names the mistake that produces it (the diagnosis
code and its sentence, which holds no number derived from the reference).

Every number written is finite: a student's NaN or Infinity makes the part unreadable and is
named in its message as the string "NaN", "Infinity" or "-Infinity".

Gradescope (https://gradescope-autograders.readthedocs.io/en/latest/specs/): top-level `score`,
`output`, `output_format`, and `tests[]` with `name`, `score`, `max_score`, `status`
("passed" / "failed"), `output`, `output_format` ("text": shown verbatim, so a student's string
cannot inject HTML), `visibility` ("visible", "hidden", "after_due_date", "after_published") and,
when expected values are revealed, `extra_data`.

PrairieLearn (external grading, `results.json`): `gradable`, `score` in [0, 1], `message`,
`format_errors`, and `tests[]` with `name`, `description`, `points`, `max_points` and `message`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.grading.grade import Grade, Part, PartGrade, WrongEntry
from app.numerics.softmax import FloatArray

DESCRIPTIONS = {
    Part.PROBABILITIES: "softmax probabilities a = softmax(z), N×C",
    Part.LOSS: "the cross-entropy loss after the reduction",
    Part.GRADIENT: "gradient of the reduced loss with respect to the logits, dL/dz, N×C",
    Part.JACOBIAN: "softmax Jacobian ∂a_i/∂z_j = a_i(δ_ij − a_j), N×C×C",
}


class Feedback(StrEnum):
    """How much a result tells the student."""

    FULL = "full"
    SUMMARY = "summary"
    NONE = "none"


@dataclass(frozen=True)
class Presentation:
    """How a grade is shown: feedback level, tolerance wording and the revealed values."""

    feedback: Feedback
    atol: float
    rtol: float
    expected: Mapping[Part, FloatArray] | None
    """The reference values, only when the request sets reveal_expected."""


def _revealed(view: Presentation, part: Part) -> FloatArray | float:
    """The expected value of `part` as JSON-ready numpy (a 0-d array as a float)."""
    assert view.expected is not None
    value = view.expected[part]
    return float(value) if value.ndim == 0 else value


def _number(value: float) -> str:
    return f"{value:.6g}"


def _position(mismatch: WrongEntry) -> str:
    return str(list(mismatch.index)) if mismatch.index else "value"


def _mismatch_text(mismatch: WrongEntry, reveal: bool) -> str:
    text = f"{_position(mismatch)} = {_number(mismatch.submitted)}"
    return f"{text} (expected {_number(mismatch.expected)})" if reveal else text


def part_message(grade: PartGrade, view: Presentation) -> str:
    """One or two sentences on a part, as detailed as the feedback level allows."""
    name = grade.part
    if grade.defect is not None:
        return f"{grade.defect}. 0 of {_number(grade.max_score)} points."
    assert grade.max_abs_error is not None
    assert grade.max_rel_error is not None
    verdict = "correct" if grade.passed else "incorrect"
    if view.feedback is Feedback.NONE:
        return f"{name}: {verdict}."
    tolerance = f"|submitted − expected| ≤ {view.atol:g} + {view.rtol:g}·|expected|"
    errors = (
        f"max abs error {_number(grade.max_abs_error)}, "
        f"max rel error {_number(grade.max_rel_error)}"
    )
    if grade.entries == 1:
        detail = f"{'within' if grade.passed else 'outside'} {tolerance} ({errors})"
    else:
        detail = f"{grade.correct} of {grade.entries} entries within {tolerance} ({errors})"
    message = f"{name}: {verdict}, {detail}."
    if not grade.passed and grade.score > 0:
        message += f" Partial credit: {_number(grade.score)} of {_number(grade.max_score)} points."
    if view.feedback is Feedback.FULL and grade.mismatches and grade.entries > 1:
        shown = ", ".join(_mismatch_text(m, view.expected is not None) for m in grade.mismatches)
        message += f" First entries outside the tolerance (submitted value): {shown}."
    if grade.diagnosis is not None:
        message += f" Likely mistake: {grade.diagnosis.message}"
    return message


def overall_message(grade: Grade) -> str:
    """The grade in one paragraph: score, parts correct, and notes on the submission."""
    if not grade.gradable:
        text = "Not gradable: " + "; ".join(grade.format_errors) + "."
    else:
        correct = sum(part.passed for part in grade.parts)
        text = (
            f"Score {_number(grade.score)} of {_number(grade.max_score)}: {correct} of "
            f"{len(grade.parts)} parts correct."
        )
        if grade.notes:
            text += " Note: " + "; ".join(grade.notes) + "."
    return text


def _part_fields(grade: PartGrade, view: Presentation) -> dict[str, Any]:
    hide_numbers = view.feedback is Feedback.NONE or grade.defect is not None
    fields: dict[str, Any] = {
        "name": str(grade.part),
        "passed": grade.passed,
        "score": grade.score,
        "max_score": grade.max_score,
        "max_abs_error": None if hide_numbers else grade.max_abs_error,
        "max_rel_error": None if hide_numbers else grade.max_rel_error,
        "fraction_correct": None if view.feedback is Feedback.NONE else grade.fraction_correct,
        "message": part_message(grade, view),
    }
    if grade.diagnosis is not None and view.feedback is not Feedback.NONE:
        fields["diagnosis"] = grade.diagnosis.code
    if view.feedback is Feedback.FULL:
        fields["mismatches"] = [
            {"index": list(m.index), "submitted": m.submitted}
            | ({"expected": m.expected} if view.expected is not None else {})
            for m in grade.mismatches
        ]
    if view.expected is not None:
        fields["expected"] = _revealed(view, grade.part)
    return fields


def native(grade: Grade, view: Presentation) -> dict[str, Any]:
    """The service's own result: totals, `gradable`, `format_errors` and one entry per part."""
    return {
        "score": grade.score,
        "max_score": grade.max_score,
        "gradable": grade.gradable,
        "format_errors": list(grade.format_errors),
        "message": overall_message(grade),
        "parts": [_part_fields(part, view) for part in grade.parts],
    }


def gradescope(grade: Grade, view: Presentation, visibility: str) -> dict[str, Any]:
    """A Gradescope results.json body: one test per part (see the module docstring)."""
    tests = []
    for part in grade.parts:
        test: dict[str, Any] = {
            "name": str(part.part),
            "score": part.score,
            "max_score": part.max_score,
            "status": "passed" if part.passed else "failed",
            "output": part_message(part, view),
            "output_format": "text",
            "visibility": visibility,
        }
        if view.expected is not None:
            test["extra_data"] = {"expected": _revealed(view, part.part)}
        tests.append(test)
    return {
        "score": grade.score,
        "output": overall_message(grade),
        "output_format": "text",
        "tests": tests,
    }


def prairielearn(grade: Grade, view: Presentation) -> dict[str, Any]:
    """A PrairieLearn external-grader result: score = points / max points, in [0, 1]."""
    tests = []
    for part in grade.parts:
        test: dict[str, Any] = {
            "name": str(part.part),
            "description": DESCRIPTIONS[part.part],
            "points": part.score,
            "max_points": part.max_score,
            "message": part_message(part, view),
        }
        if view.expected is not None:
            test["expected"] = _revealed(view, part.part)
        tests.append(test)
    fraction = grade.score / grade.max_score if grade.gradable and grade.max_score > 0 else 0.0
    return {
        "gradable": grade.gradable,
        "score": fraction,
        "message": overall_message(grade),
        "format_errors": list(grade.format_errors),
        "tests": tests,
    }
