"""Reading a candidate output and comparing it with the reference, entry by entry."""

import math

import ml_dtypes
import numpy as np
import pytest

from app.numerics.candidate import (
    MAX_NESTING,
    CandidateCheck,
    check_candidate,
    compare_output,
    float_format,
    read_candidate,
    read_part,
    ulp,
)
from app.numerics.cross_entropy import Reduction
from app.numerics.diagnose import ProblemInputs
from tests.numerics.test_diagnose import outputs

ROWS = [[0.1, 0.2, -0.3], [0.0, 1.0, -1.0]]
Z = np.array([[2.0, 1.0, 0.1], [0.0, -1.0, 3.0], [0.5, 0.5, -2.0]])
LABELS = np.array([0, 2, 1])
REFERENCE = outputs(Z, LABELS)
INPUTS = ProblemInputs(Z, LABELS, reduction=Reduction.MEAN)


def check(candidate: dict[str, object], **tolerance: float) -> CandidateCheck:
    return check_candidate(
        candidate,
        REFERENCE,
        atol=tolerance.get("atol", 1e-5),
        rtol=tolerance.get("rtol", 1e-3),
        inputs=INPUTS,
    )


# ----- reading --------------------------------------------------------------------------------


def test_a_candidate_keeps_nan_and_infinity() -> None:
    array = read_candidate("gradient", [[0.1, math.nan, 0.3], [-math.inf, 0, math.inf]], (2, 3))
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.float64
    assert np.isnan(array[0, 1])
    assert array[1].tolist() == [-math.inf, 0.0, math.inf]


def test_grading_still_refuses_nan() -> None:
    result = read_part("gradient", [[0.1, math.nan, 0.3], ROWS[1]], (2, 3))
    assert result == "gradient[0][1] is NaN: every entry must be a finite number"


def test_null_reads_as_minus_infinity_only_where_the_response_writes_null() -> None:
    value = [[None, -0.5, None], [-1.0, -2.0, -3.0]]
    array = read_candidate("log_probabilities", value, (2, 3), null_as=-math.inf)
    assert isinstance(array, np.ndarray)
    assert array[0].tolist() == [-math.inf, -0.5, -math.inf]
    assert read_candidate("gradient", value, (2, 3)) == "gradient[0][0] is null, not a number"
    flat = read_candidate("log_probabilities", [None, 1.0, 2.0], (1, 3), null_as=-math.inf)
    assert isinstance(flat, np.ndarray)
    assert flat.tolist() == [[-math.inf, 1.0, 2.0]]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[0.1, 0.2], [0.3, 0.4]], "gradient: expected shape [2, 3], got [2, 2]"),
        ([[0.1, 0.2, 0.3]], "gradient: expected shape [2, 3], got [1, 3]"),  # a missing row
        ([[0.1, 0.2, 0.3], [0.4, 0.5]], "gradient[1] has 2 entries but gradient[0] has 3 entries"),
        ([[0.1, "0.2", 0.3], ROWS[1]], 'gradient[0][1] is the string "0.2", not a number'),
        ([[0.1, True, 0.3], ROWS[1]], "gradient[0][1] is true, not a number"),
        ("[[0.1]]", 'gradient is the string "[[0.1]]": expected an array of shape [2, 3]'),
        (None, "gradient is null: expected an array of shape [2, 3]"),
        ({"x": 1}, "gradient is an object: expected an array of shape [2, 3]"),
    ],
)
def test_defects_are_described(value: object, message: str) -> None:
    result = read_candidate("gradient", value, (2, 3), null_as=-math.inf)
    assert isinstance(result, str)
    assert message in result


def test_deep_nesting_stops() -> None:
    value: object = 0.5
    for _ in range(MAX_NESTING + 3):
        value = [value]
    result = read_candidate("loss", value, ())
    assert isinstance(result, str)
    assert "nested more than" in result


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ml_dtypes.bfloat16], ids=str)
def test_arrays_keep_their_float_dtype(dtype: type) -> None:
    array = read_candidate("gradient", np.zeros((1, 2, 3), dtype), (2, 3))
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.dtype(dtype)
    assert array.shape == (2, 3)


def test_arrays_of_other_kinds() -> None:
    ints = read_candidate("gradient", np.zeros((2, 3), np.int32), (2, 3))
    assert isinstance(ints, np.ndarray)
    assert ints.dtype == np.float64
    assert read_candidate("gradient", np.zeros((2, 3), bool), (2, 3)) == (
        "gradient is an array of bool: expected floating-point numbers"
    )
    assert read_candidate("gradient", np.zeros((3, 2)), (2, 3)) == (
        "gradient: expected shape [2, 3], got [3, 2]"
    )


# ----- units in the last place ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float64, (52, -1022)),
        (np.float32, (23, -126)),
        (np.float16, (10, -14)),
        (ml_dtypes.bfloat16, (7, -126)),
        (ml_dtypes.float8_e4m3fn, (3, -6)),
    ],
    ids=str,
)
def test_float_formats(dtype: type, expected: tuple[int, int]) -> None:
    assert float_format(np.dtype(dtype)) == expected


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_ulp_is_numpy_spacing(dtype: type) -> None:
    values = np.array([0.0, 1.0, 1.5, 0.75, 3e-5, -2.0, 1e-40, 6e4])
    with np.errstate(over="ignore"):
        typed: np.ndarray = values.astype(dtype)
    finite = np.isfinite(typed)
    expected = np.spacing(np.abs(typed[finite])).astype(np.float64)
    np.testing.assert_array_equal(ulp(typed[finite].astype(np.float64), np.dtype(dtype)), expected)


def test_bfloat16_ulp() -> None:
    assert ulp(np.array([1.0, 3.0, 0.0]), np.dtype(ml_dtypes.bfloat16)).tolist() == [
        2.0**-7,
        2.0**-6,
        2.0**-133,
    ]


# ----- comparing --------------------------------------------------------------------------------


def test_a_correct_candidate_passes() -> None:
    result = check({name: value.tolist() for name, value in REFERENCE.items()})
    assert result.passed
    assert result.diagnoses == []
    assert result.notes == []
    gradient = result.outputs["gradient"]
    assert (gradient.checked, gradient.mismatches, gradient.nonfinite) == (9, 0, 0)
    assert gradient.max_abs_error is not None
    assert gradient.max_abs_error < 1e-15
    assert gradient.worst == []


def test_error_sizes_and_worst_entries() -> None:
    expected = np.array([[1.0, 2.0, 4.0], [0.5, -1.0, 0.0]])
    got = expected.copy()
    got[0, 2] = 4.5
    got[1, 0] = 0.5000001
    check_ = compare_output(got, expected, atol=1e-5, rtol=1e-3)
    assert not check_.passed
    assert (check_.checked, check_.mismatches, check_.nonfinite) == (6, 1, 0)
    assert check_.max_abs_error == pytest.approx(0.5)
    assert check_.max_rel_error == pytest.approx(0.5 / 8.5)
    assert check_.max_ulp_error == pytest.approx(0.5 / 2.0**-50)
    assert [(e.index, e.expected, e.got) for e in check_.worst] == [((0, 2), 4.0, 4.5)]


def test_non_finite_candidates() -> None:
    got = np.array([[math.nan, 0.2, math.inf], [0.0, -math.inf, 1.0]])
    check_ = compare_output(got, np.full((2, 3), 0.5), atol=1e-5, rtol=1e-3)
    assert (check_.mismatches, check_.nonfinite) == (6, 3)
    assert (check_.max_abs_error, check_.max_rel_error, check_.max_ulp_error) == (None,) * 3
    assert [e.index for e in check_.worst[:3]] == [(0, 0), (0, 2), (1, 1)]


def test_equal_infinities_pass() -> None:
    expected = np.array([[-math.inf, -0.5], [-1.0, -0.3]])
    check_ = compare_output(expected.copy(), expected, atol=0.0, rtol=0.0)
    assert check_.passed
    assert (check_.nonfinite, check_.max_abs_error) == (0, 0.0)
    finite = expected.copy()
    finite[0, 0] = -1e300
    other = compare_output(finite, expected, atol=1e-5, rtol=1e-3)
    assert (other.passed, other.mismatches, other.max_abs_error) == (False, 1, None)


def test_nan_where_nothing_overflows_is_not_named_overflow() -> None:
    # small logits: neither exp overflows nor a probability underflows, so a NaN is no fact
    # of either (diagnose names them only in the rows they predict)
    value = REFERENCE["gradient"].tolist()
    value[1][2] = math.nan
    result = check({"gradient": value})
    assert not result.passed
    assert result.outputs["gradient"].nonfinite == 1
    assert result.outputs["gradient"].max_abs_error is None
    assert result.diagnoses == []
    assert result.notes == [
        "gradient: no known mistake explains these values; compare the worst entries"
    ]


def test_wrong_shapes_are_defects_not_errors() -> None:
    result = check({"gradient": [[0.1, 0.2]], "loss": "high", "probabilities": [[1, 2, 3]] * 3})
    assert not result.passed
    assert result.outputs["gradient"].defect == "gradient: expected shape [3, 3], got [1, 2]"
    assert result.outputs["gradient"].checked == 0
    assert result.outputs["loss"].defect == 'loss is the string "high": expected a number'
    assert result.outputs["probabilities"].defect is None
    assert result.diagnoses == []


def test_an_output_without_reference_is_a_defect() -> None:
    result = check_candidate({"hessian": [[1.0]]}, {"gradient": np.zeros((1, 1))}, atol=0, rtol=0)
    assert result.outputs["hessian"].defect == "hessian: not an output of this problem (gradient)"
    assert not result.passed


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16], ids=str)
def test_a_low_precision_candidate_passes_with_a_note(dtype: type) -> None:
    rtol = 1e-3 if dtype is np.float32 else 1e-2
    result = check({"gradient": REFERENCE["gradient"].astype(dtype)}, rtol=rtol)
    assert result.passed
    assert result.diagnoses == []
    gradient = result.outputs["gradient"]
    assert gradient.dtype == np.dtype(dtype).name
    assert gradient.max_ulp_error is not None
    assert gradient.max_ulp_error <= 0.5
    (note,) = result.notes
    assert note.startswith(f"gradient: {np.dtype(dtype).name} values, within the tolerance")


def test_float32_values_sent_as_json_pass_with_a_note() -> None:
    value = REFERENCE["gradient"].astype(np.float32).astype(np.float64).tolist()
    result = check({"gradient": value})
    assert result.passed
    assert result.diagnoses == []
    assert result.outputs["gradient"].dtype == "float64"
    (note,) = result.notes
    assert "float32" in note


def test_a_float32_candidate_with_a_mistake_is_diagnosed() -> None:
    wrong = (-REFERENCE["gradient"]).astype(np.float32)
    result = check({"gradient": wrong})
    assert [d.code for d in result.diagnoses] == ["sign_flipped"]


def test_a_zero_reference_measured_in_ulps_stays_finite() -> None:
    check_ = compare_output(np.array([1e-3]), np.array([0.0]), atol=1e-2, rtol=0)
    assert check_.passed
    assert check_.max_ulp_error is not None
    assert math.isfinite(check_.max_ulp_error)


def test_a_bfloat16_candidate_beyond_a_tight_tolerance_is_precision_not_a_mistake() -> None:
    result = check({"gradient": REFERENCE["gradient"].astype(ml_dtypes.bfloat16)}, rtol=1e-4)
    assert not result.passed
    assert result.diagnoses == []
    (note,) = result.notes
    largest = result.outputs["gradient"].max_abs_error
    assert note == (
        "gradient: every difference is within 1 ulp of bfloat16 at the scale of its row, the "
        "candidate's own rounding; a tolerance for bfloat16 needs rtol ≥ 0.0078125 (and atol ≥ "
        f"{largest:.3g} where the expected values are small)"
    )
