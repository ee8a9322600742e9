"""A grade as the JSON its reader expects: native, Gradescope's results.json, PrairieLearn's result.

Feedback levels, each telling more than the one before:

    none      correct / incorrect per part, and why a part could not be read
    verdict   (the default) and how many entries are wrong, the first few wrong positions with
              the value the student SUBMITTED there, and the mistake that produces a wrong part
              (its diagnosis code and sentence; the two of a pair of mistakes)
    full      and the error sizes (max abs / rel error): with the student's own value they give
              the expected one, so `full` reveals the answer

Below `full` no number derived from the reference is written: no error size, expected value,
difference or factor (diagnosis sentences hold none, and their evidence is never shown). The
numbers a student sees are their own values, positions, counts, scores and the tolerance.
Expected values appear only with `reveal_expected`.

Every number written is finite: a student's NaN or Infinity makes the part unreadable and is
named in its message as the string "NaN", "Infinity" or "-Infinity".

Gradescope (https://gradescope-autograders.readthedocs.io/en/latest/specs/): top-level `score`,
`output`, `output_format`, `visibility`, `stdout_visibility` and `tests[]` with `name`, `score`,
`max_score`, `status` ("passed" / "failed"), `output`, `output_format` ("text": shown verbatim,
so a student's string cannot inject HTML), `visibility` ("visible", "hidden", "after_due_date",
"after_published") and, when expected values are revealed, `extra_data`. A visibility other
than "visible" applies to the whole result: the top-level `visibility` and `stdout_visibility`
carry it, and the top-level `output` then says only that the answer was graded, so that no
hidden test's verdict shows through it.

PrairieLearn (external grading, `results.json`): `gradable`, `score` in [0, 1], `message`,
`format_errors`, and `tests[]` with `name`, `description`, `points`, `max_points` and `message`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.grading.grade import Grade, Part, PartGrade, WrongEntry
from app.grading.summary import ClassSummary
from app.numerics.softmax import FloatArray

DESCRIPTIONS = {
    Part.PROBABILITIES: "softmax probabilities a = softmax(z), N×C",
    Part.LOSS: "the cross-entropy loss after the reduction",
    Part.GRADIENT: "gradient of the reduced loss with respect to the logits, dL/dz, N×C",
    Part.JACOBIAN: "softmax Jacobian ∂a_i/∂z_j = a_i(δ_ij − a_j), N×C×C",
    Part.HESSIAN: "Hessian of the reduced loss, (Σ_c q_c / D)·(diag a − a·aᵀ) per sample, N×C×C",
}


class Feedback(StrEnum):
    """How much a result tells the student."""

    NONE = "none"
    VERDICT = "verdict"
    FULL = "full"


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


def _tolerance(view: Presentation) -> str:
    return f"|submitted − expected| ≤ {view.atol:g} + {view.rtol:g}·|expected|"


def part_message(grade: PartGrade, view: Presentation) -> str:
    """One or two sentences on a part, as detailed as the feedback level allows."""
    name = grade.part
    if grade.defect is not None:
        return f"{grade.defect}. 0 of {_number(grade.max_score)} points."
    verdict = "correct" if grade.passed else "incorrect"
    if view.feedback is Feedback.NONE:
        return f"{name}: {verdict}."
    tolerance = _tolerance(view)
    if grade.entries == 1:
        detail = f"{'within' if grade.passed else 'outside'} {tolerance}"
    elif grade.passed:
        detail = f"all {grade.entries} entries within {tolerance}"
    else:
        wrong = grade.entries - grade.correct
        detail = f"{wrong} of {grade.entries} entries outside {tolerance}"
    if view.feedback is Feedback.FULL:
        assert grade.max_abs_error is not None
        assert grade.max_rel_error is not None
        detail += (
            f" (max abs error {_number(grade.max_abs_error)}, "
            f"max rel error {_number(grade.max_rel_error)})"
        )
    message = f"{name}: {verdict}, {detail}."
    if not grade.passed and grade.score > 0:
        message += f" Partial credit: {_number(grade.score)} of {_number(grade.max_score)} points."
    if grade.mismatches and grade.entries > 1:
        shown = ", ".join(_mismatch_text(m, view.expected is not None) for m in grade.mismatches)
        message += f" First entries outside the tolerance (submitted value): {shown}."
    if len(grade.diagnoses) == 1:
        message += f" Likely mistake: {grade.diagnoses[0].message}"
    elif grade.diagnoses:
        message += " Likely two mistakes at once: " + " ".join(
            diagnosis.message for diagnosis in grade.diagnoses
        )
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
    errors = view.feedback is Feedback.FULL and grade.defect is None
    fields: dict[str, Any] = {
        "name": str(grade.part),
        "passed": grade.passed,
        "score": grade.score,
        "max_score": grade.max_score,
        "max_abs_error": grade.max_abs_error if errors else None,
        "max_rel_error": grade.max_rel_error if errors else None,
        "fraction_correct": None if view.feedback is Feedback.NONE else grade.fraction_correct,
        "message": part_message(grade, view),
    }
    if view.feedback is not Feedback.NONE:
        if grade.diagnoses:
            fields["diagnosis"] = grade.diagnoses[0].code
            fields["diagnoses"] = [diagnosis.code for diagnosis in grade.diagnoses]
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


HIDDEN_OUTPUT = {
    "hidden": "Your answer was received and graded; the results are not shown.",
    "after_due_date": "Your answer was received and graded; the results are shown after the "
    "due date.",
    "after_published": "Your answer was received and graded; the results are shown when the "
    "grades are published.",
}
"""Gradescope's top-level output when the tests are not visible: no verdict shows through it."""


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
        "output": HIDDEN_OUTPUT.get(visibility) or overall_message(grade),
        "output_format": "text",
        "visibility": visibility,
        "stdout_visibility": visibility,
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


def summary_fields(summary: ClassSummary) -> dict[str, Any]:
    """The class summary of a batch as JSON (see app.grading.summary): counts and scores only."""
    return {
        "submissions": summary.submissions,
        "gradable": summary.gradable,
        "scores": {
            "max_score": summary.max_score,
            "mean": summary.mean,
            "median": summary.median,
            "min": summary.minimum,
            "max": summary.maximum,
            "histogram": [
                {"low": score_bin.low, "high": score_bin.high, "count": score_bin.count}
                for score_bin in summary.histogram
            ],
        },
        "parts": [
            {
                "name": str(part.part),
                "submissions": part.submissions,
                "passed": part.passed,
                "unreadable": part.unreadable,
                "codes": dict(part.codes),
            }
            for part in summary.parts
        ],
    }
