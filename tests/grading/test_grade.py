"""Grading arithmetic: tolerance, partial credit, vectorised batches, and what is not gradable."""

import math

import numpy as np
import pytest

from app.grading.grade import (
    MISMATCHES_KEPT,
    Grade,
    GradingOptions,
    Part,
    Reference,
    grade_batch,
)
from app.numerics.compare import compare
from app.numerics.cross_entropy import Reduction, index_targets
from app.numerics.errors import InvalidProblem
from tests.grading.example import GRADIENT, LOSS, PROBABILITIES, reference


def options(partial_credit: bool = False, **points: float) -> GradingOptions:
    chosen = {Part(name): value for name, value in points.items()} or {
        Part.LOSS: 1.0,
        Part.GRADIENT: 1.0,
    }
    return GradingOptions(points=chosen, atol=1e-5, rtol=1e-3, partial_credit=partial_credit)


def grade_one(submission: object, grading: GradingOptions | None = None) -> Grade:
    return grade_batch(reference(), [submission], grading or options())[0]


def test_reference_values_match_the_textbook_formulas() -> None:
    ref = reference()
    np.testing.assert_allclose(ref.value(Part.PROBABILITIES), PROBABILITIES, rtol=1e-14)
    np.testing.assert_allclose(ref.value(Part.GRADIENT), GRADIENT, rtol=1e-13, atol=1e-17)
    assert float(ref.value(Part.LOSS)) == pytest.approx(LOSS, rel=1e-14)
    a = PROBABILITIES
    jacobian = np.stack([np.diag(row) - np.outer(row, row) for row in a])
    np.testing.assert_allclose(ref.value(Part.JACOBIAN), jacobian, rtol=1e-13, atol=1e-17)
    assert reference(Reduction.NONE).shape(Part.LOSS) == (4,)
    assert ref.shape(Part.LOSS) == ()


def test_a_correct_answer_gets_every_point() -> None:
    grade = grade_one({"loss": LOSS, "gradient": GRADIENT.tolist()}, options(loss=2, gradient=3))
    assert grade.gradable
    assert grade.score == 5.0
    assert grade.max_score == 5.0
    assert all(part.passed and part.fraction_correct == 1.0 for part in grade.parts)


@pytest.mark.parametrize("wrong", [1, 2, 5, 7, 12])
def test_partial_credit_is_points_times_the_fraction_correct(wrong: int) -> None:
    gradient = GRADIENT.copy()
    gradient.flat[:wrong] += 1.0
    grade = grade_one({"gradient": gradient.tolist()}, options(True, gradient=3.0))
    (part,) = grade.parts
    assert part.correct == 12 - wrong
    assert part.fraction_correct == pytest.approx((12 - wrong) / 12)
    assert part.score == pytest.approx(3.0 * (12 - wrong) / 12)
    assert not part.passed
    shown = [m.index for m in part.mismatches]
    assert shown == [tuple(int(i) for i in divmod(k, 3)) for k in range(min(wrong, 5))]
    assert len(part.mismatches) == min(wrong, MISMATCHES_KEPT)
    assert part.mismatches[0].submitted == pytest.approx(GRADIENT[0, 0] + 1.0)


def test_without_partial_credit_one_wrong_entry_costs_the_part() -> None:
    gradient = GRADIENT.copy()
    gradient[3, 2] *= -1
    grade = grade_one({"loss": LOSS, "gradient": gradient.tolist()}, options(loss=1, gradient=4))
    loss, part = grade.parts
    assert loss.score == 1.0
    assert part.score == 0.0
    assert part.correct == 11
    assert grade.score == 1.0


def test_the_tolerance_is_relative_to_the_expected_value() -> None:
    strict = GradingOptions({Part.LOSS: 1.0}, atol=0.0, rtol=1e-3, partial_credit=False)
    inside = grade_one({"loss": LOSS * (1 + 0.9e-3)}, strict).parts[0]
    outside = grade_one({"loss": LOSS * (1 + 1.1e-3)}, strict).parts[0]
    assert inside.passed
    assert not outside.passed
    assert outside.max_abs_error == pytest.approx(LOSS * 1.1e-3)


def test_error_measures_agree_with_the_numerics_compare() -> None:
    rng = np.random.default_rng(7)
    gradient = GRADIENT + rng.normal(scale=1e-3, size=GRADIENT.shape)
    part = grade_one({"gradient": gradient.tolist()}, options(gradient=1)).parts[0]
    expected = reference().value(Part.GRADIENT)
    agreement = compare(gradient, expected, atol=1e-5, rtol=1e-3)
    assert part.max_abs_error == agreement.max_abs_error
    assert part.max_rel_error == agreement.max_rel_error
    assert part.entries - part.correct == agreement.mismatches


def test_a_batch_grades_exactly_like_one_at_a_time() -> None:
    rng = np.random.default_rng(11)
    submissions: list[object] = []
    for i in range(300):
        gradient = GRADIENT + (rng.random(GRADIENT.shape) < 0.2) * rng.normal(size=(4, 3))
        loss = LOSS if i % 3 else LOSS + 0.1
        kind = i % 10
        if kind == 7:
            submissions.append({"loss": loss, "gradient": gradient[:, :2].tolist()})
        elif kind == 8:
            submissions.append({"gradient": gradient.tolist()})
        elif kind == 9:
            submissions.append([1, 2, 3])
        else:
            submissions.append({"loss": loss, "gradient": gradient.tolist()})
    grading = options(True, loss=1, gradient=2, probabilities=1)
    batch = grade_batch(reference(), submissions, grading)
    one_by_one = [grade_batch(reference(), [s], grading)[0] for s in submissions]
    assert batch == one_by_one
    assert len({grade.score for grade in batch}) >= 10  # the batch is not trivially uniform


def test_missing_and_unreadable_parts_score_zero_but_the_rest_is_graded() -> None:
    grade = grade_one({"loss": "0.5", "gradient": GRADIENT.tolist()}, options(loss=1, gradient=1))
    loss, gradient = grade.parts
    assert grade.gradable
    assert grade.format_errors == ()
    assert loss.score == 0.0
    assert loss.defect == 'loss is the string "0.5": expected a number'
    assert gradient.passed


@pytest.mark.parametrize(
    ("submission", "error"),
    [
        ([0.1, 0.2], "the submission must be a JSON object"),
        ("gradient", "the submission must be a JSON object"),
        (None, "the submission must be a JSON object"),
        ({}, "holds none of the graded parts (loss, gradient)"),
        ({"grad": [1]}, "holds none of the graded parts"),
        ({"loss": None, "gradient": [[1, 2]]}, "loss is null"),
    ],
)
def test_nothing_readable_is_not_gradable(submission: object, error: str) -> None:
    grade = grade_one(submission)
    assert not grade.gradable
    assert grade.score == 0.0
    assert any(error in message for message in grade.format_errors)


def test_unknown_keys_and_ungraded_parts_are_noted() -> None:
    grade = grade_one({"loss": LOSS, "jacobian": [], "Gradient": GRADIENT.tolist()})
    assert grade.gradable
    assert any('ignored "Gradient"' in note for note in grade.notes)
    assert any("jacobian: submitted but not graded" in note for note in grade.notes)
    assert grade.parts[1].defect is not None
    assert grade.parts[1].defect.startswith("gradient: missing")


def test_a_reference_that_is_not_finite_is_the_callers_problem() -> None:
    logits = np.array([[3e38, -3e38]], dtype=np.float32)
    targets = index_targets(
        np.array([1]),
        2,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.SUM,
        dtype=np.float32,
    )
    ref = Reference(logits, targets, Reduction.SUM)
    with pytest.raises(InvalidProblem, match="not finite"):
        grade_batch(ref, [{"loss": 1.0}], options(loss=1))


def test_scores_add_up_with_fsum() -> None:
    grading = options(True, probabilities=0.1, loss=0.2, gradient=0.7)
    grade = grade_one(
        {"probabilities": PROBABILITIES.tolist(), "loss": LOSS, "gradient": GRADIENT.tolist()},
        grading,
    )
    assert grade.score == math.fsum([0.1, 0.2, 0.7]) == 1.0
