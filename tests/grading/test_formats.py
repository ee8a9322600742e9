"""Result formats against the fields their documentation lists, and the feedback levels.

Gradescope, "Autograder Specifications" (gradescope-autograders.readthedocs.io/en/latest/specs/):
results.json has `score`, `output`, `output_format`, `tests[]`; each test `score`, `max_score`,
`status` ("passed" or "failed"), `name`, `output`, `output_format` (one of "text",
"simple_format", "html", "md", "ansi"), `visibility` ("hidden", "after_due_date",
"after_published", "visible") and optional `extra_data` (an object).

PrairieLearn, "External Grading" (docs/externalGrading.md): `gradable` (boolean; false means
"invalid, not gradable"), `score` a float in [0.0, 1.0], `message`, `format_errors` (a string or
an array of strings), `tests[]` with `name`, `description`, `points`, `max_points`, `message`.
"""

import json
from typing import Any

import numpy as np
import orjson
import pytest

from app.grading.formats import Feedback, Presentation, gradescope, native, prairielearn
from app.grading.grade import Grade, GradingOptions, Part, grade_batch
from tests.grading.example import GRADIENT, LOSS, reference

GRADESCOPE_TEST_FIELDS = {"name", "score", "max_score", "status", "output", "output_format"}
GRADESCOPE_OUTPUT_FORMATS = {"text", "simple_format", "html", "md", "ansi"}
GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
PRAIRIELEARN_TEST_FIELDS = {"name", "description", "points", "max_points", "message"}

OPTIONS = GradingOptions({Part.LOSS: 1.0, Part.GRADIENT: 3.0}, 1e-5, 1e-3, partial_credit=True)


def grade(submission: object) -> Grade:
    return grade_batch(reference(), [submission], OPTIONS)[0]


def view(feedback: Feedback = Feedback.FULL, reveal: bool = False) -> Presentation:
    ref = reference()
    expected = {part: ref.value(part) for part in OPTIONS.points} if reveal else None
    return Presentation(feedback, OPTIONS.atol, OPTIONS.rtol, expected)


def wrong_gradient() -> list[list[float]]:
    gradient = GRADIENT.copy()
    gradient[1, 2] = 0.5
    gradient[3, 0] = -0.25
    rows: list[list[float]] = gradient.tolist()
    return rows


def as_json(body: dict[str, Any]) -> Any:
    """Serialised as the service does, then parsed back strictly (no NaN literals)."""

    def refuse(literal: str) -> None:
        raise AssertionError(f"non-JSON literal {literal}")

    return json.loads(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), parse_constant=refuse)


def check_gradescope(body: dict[str, Any]) -> None:
    assert isinstance(body["score"], float)
    assert isinstance(body["output"], str)
    assert body["output_format"] in GRADESCOPE_OUTPUT_FORMATS
    assert body.get("visibility", "visible") in GRADESCOPE_VISIBILITY
    assert body.get("stdout_visibility", "visible") in GRADESCOPE_VISIBILITY
    for test in body["tests"]:
        assert set(test) >= GRADESCOPE_TEST_FIELDS
        assert test["status"] in {"passed", "failed"}
        assert test["visibility"] in GRADESCOPE_VISIBILITY
        assert test["output_format"] in GRADESCOPE_OUTPUT_FORMATS
        assert 0 <= test["score"] <= test["max_score"]
    assert body["score"] == pytest.approx(sum(test["score"] for test in body["tests"]))


def check_prairielearn(body: dict[str, Any]) -> None:
    assert isinstance(body["gradable"], bool)
    assert 0.0 <= body["score"] <= 1.0
    assert isinstance(body["message"], str)
    assert isinstance(body["format_errors"], list)
    assert all(isinstance(error, str) for error in body["format_errors"])
    for test in body["tests"]:
        assert set(test) >= PRAIRIELEARN_TEST_FIELDS
        assert 0 <= test["points"] <= test["max_points"]


def test_gradescope_results_json() -> None:
    body = as_json(
        gradescope(grade({"loss": LOSS, "gradient": wrong_gradient()}), view(), "after_due_date")
    )
    check_gradescope(body)
    loss, gradient = body["tests"]
    assert loss == {
        "name": "loss",
        "score": 1.0,
        "max_score": 1.0,
        "status": "passed",
        "output": loss["output"],
        "output_format": "text",
        "visibility": "after_due_date",
    }
    assert gradient["status"] == "failed"
    assert gradient["score"] == pytest.approx(3.0 * 10 / 12)
    assert "2 of 12 entries outside" in gradient["output"]
    assert "[1, 2] = 0.5" in gradient["output"]
    assert body["score"] == pytest.approx(1.0 + 2.5)
    # the top level says nothing a test hidden until the due date would
    assert body["visibility"] == body["stdout_visibility"] == "after_due_date"
    assert "parts correct" not in body["output"]
    assert "after the due date" in body["output"]


@pytest.mark.parametrize("visibility", ["hidden", "after_due_date", "after_published"])
def test_gradescope_visibility_covers_the_top_level_output(visibility: str) -> None:
    result = grade({"loss": LOSS, "gradient": wrong_gradient()})
    body = as_json(gradescope(result, view(), visibility))
    check_gradescope(body)
    assert body["visibility"] == body["stdout_visibility"] == visibility
    assert "correct" not in body["output"]
    assert "1 of 2" not in body["output"]
    assert {test["visibility"] for test in body["tests"]} == {visibility}
    visible = as_json(gradescope(result, view(), "visible"))
    assert "1 of 2 parts correct" in visible["output"]


def test_prairielearn_result() -> None:
    body = as_json(prairielearn(grade({"loss": LOSS, "gradient": wrong_gradient()}), view()))
    check_prairielearn(body)
    assert body["gradable"] is True
    assert body["format_errors"] == []
    assert body["score"] == pytest.approx((1.0 + 2.5) / 4.0)
    assert [(t["name"], t["points"], t["max_points"]) for t in body["tests"]] == [
        ("loss", 1.0, 1.0),
        ("gradient", pytest.approx(2.5), 3.0),
    ]


def test_not_gradable_in_every_format() -> None:
    result = grade({"loss": float("nan"), "gradient": "see attached"})
    pl = as_json(prairielearn(result, view()))
    check_prairielearn(pl)
    assert pl["gradable"] is False
    assert pl["score"] == 0.0
    assert pl["format_errors"] == [
        "loss is NaN: every entry must be a finite number",
        'gradient is the string "see attached": expected an array of shape [4, 3]',
    ]
    gs = as_json(gradescope(result, view(), "visible"))
    check_gradescope(gs)
    assert gs["score"] == 0.0
    assert gs["output"].startswith("Not gradable: loss is NaN")
    assert [test["status"] for test in gs["tests"]] == ["failed", "failed"]
    nat = as_json(native(result, view()))
    assert nat["gradable"] is False
    assert nat["format_errors"] == pl["format_errors"]
    assert [part["max_abs_error"] for part in nat["parts"]] == [None, None]


def test_feedback_levels() -> None:
    result = grade({"loss": LOSS + 1, "gradient": wrong_gradient()})
    none, verdict, full = (native(result, view(level)) for level in Feedback)
    assert [level.value for level in Feedback] == ["none", "verdict", "full"]
    # verdict: counts, wrong positions with the submitted value, no error sizes
    assert [m["index"] for m in verdict["parts"][1]["mismatches"]] == [[1, 2], [3, 0]]
    assert verdict["parts"][1]["mismatches"][0] == {"index": [1, 2], "submitted": 0.5}
    assert "2 of 12 entries outside" in verdict["parts"][1]["message"]
    assert "[1, 2] = 0.5" in verdict["parts"][1]["message"]
    assert "error" not in verdict["parts"][1]["message"]
    assert verdict["parts"][1]["max_abs_error"] is None
    assert verdict["parts"][0]["max_rel_error"] is None
    assert verdict["parts"][1]["fraction_correct"] == pytest.approx(10 / 12)
    # full: the same and the error sizes
    assert full["parts"][1]["mismatches"] == verdict["parts"][1]["mismatches"]
    assert full["parts"][0]["max_abs_error"] == pytest.approx(1.0)
    assert "max abs error 1," in full["parts"][0]["message"]
    # none: correct / incorrect only
    assert none["parts"][1]["message"] == "gradient: incorrect."
    assert none["parts"][0]["message"] == "loss: incorrect."
    assert "mismatches" not in none["parts"][1]
    for key in ("max_abs_error", "max_rel_error", "fraction_correct"):
        assert none["parts"][1][key] is None
    assert none["score"] == verdict["score"] == full["score"]


def test_the_default_level_is_verdict() -> None:
    from app.api.schemas.grading import GradeRequest

    assert GradeRequest(problem_id="x", submission={}).feedback is Feedback.VERDICT


def test_unknown_keys_make_one_short_note() -> None:
    submission = {"loss": LOSS, "gradient": GRADIENT.tolist()} | {f"k{i}": 0 for i in range(10_000)}
    result = grade(submission)
    assert len(result.notes) == 1
    assert result.notes[0].startswith('ignored "k0", "k1", "k2" and 9997 more: not parts')
    assert len(native(result, view())["message"]) < 300


def test_expected_values_only_when_revealed() -> None:
    result = grade({"loss": LOSS, "gradient": wrong_gradient()})
    hidden = json.dumps(as_json(native(result, view())))
    assert "expected" not in json.loads(hidden)["parts"][1]
    assert f"{GRADIENT[1, 2]!r}"[:10] not in hidden
    revealed = as_json(native(result, view(reveal=True)))
    np.testing.assert_allclose(revealed["parts"][1]["expected"], GRADIENT, rtol=1e-13, atol=1e-17)
    assert revealed["parts"][0]["expected"] == pytest.approx(LOSS)
    assert revealed["parts"][1]["mismatches"][0]["expected"] == pytest.approx(GRADIENT[1, 2])
    gs = as_json(gradescope(result, view(reveal=True), "visible"))
    assert set(gs["tests"][1]["extra_data"]) == {"expected"}


def test_student_strings_are_plain_text_for_gradescope() -> None:
    result = grade({"loss": "<script>alert(1)</script>", "gradient": GRADIENT.tolist()})
    body = as_json(gradescope(result, view(), "visible"))
    assert body["output_format"] == "text"
    assert body["tests"][0]["output_format"] == "text"
    assert "<script>alert(1)</sc" in body["tests"][0]["output"]
