"""Reading a student's part: every defect becomes a message naming where it is."""

import numpy as np
import pytest

from app.numerics.candidate import MAX_NESTING, read_part

ROWS = [[0.1, 0.2, -0.3], [0.0, 1.0, -1.0]]


def test_a_well_formed_part_becomes_a_float64_array() -> None:
    array = read_part("gradient", ROWS, (2, 3))
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.float64
    np.testing.assert_array_equal(array, ROWS)


def test_integers_are_numbers() -> None:
    array = read_part("gradient", [[0, 1, -1], [2, 0, 0]], (2, 3))
    assert isinstance(array, np.ndarray)
    assert array.tolist() == [[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    ("value", "shape", "expected_shape"),
    [
        ([0.1, 0.2, 0.7], (1, 3), (1, 3)),  # a flat row for a one-sample problem
        ([[0.5]], (), ()),  # a single number wrapped in lists
        ([0.5], (), ()),
        ([[[0.1, 0.2], [0.3, 0.4]]], (2, 2), (2, 2)),
    ],
)
def test_axes_of_length_one_are_forgiven(
    value: object, shape: tuple[int, ...], expected_shape: tuple[int, ...]
) -> None:
    array = read_part("part", value, shape)
    assert isinstance(array, np.ndarray)
    assert array.shape == expected_shape


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[0.1, 0.2], [0.3, 0.4]], "gradient: expected shape [2, 3], got [2, 2]"),
        ([0.1] * 6, "gradient: expected shape [2, 3], got [6]"),
        (0.5, "gradient: expected shape [2, 3], got a single number"),
        ([[0.1, 0.2, 0.3]], "gradient: expected shape [2, 3], got [1, 3]"),
        ([[0.1, 0.2, 0.3], [0.4, 0.5]], "gradient[1] has 2 entries but gradient[0] has 3 entries"),
        ([[0.1, "0.2", 0.3], ROWS[1]], 'gradient[0][1] is the string "0.2", not a number'),
        ([[0.1, True, 0.3], ROWS[1]], "gradient[0][1] is true, not a number"),
        ([[0.1, None, 0.3], ROWS[1]], "gradient[0][1] is null, not a number"),
        ([ROWS[0], [0.1, {"x": 1}, 0.3]], "gradient[1][1] is an object, not a number"),
        ([ROWS[0], [0.1, float("nan"), 0.3]], "gradient[1][1] is NaN"),
        ([ROWS[0], [0.1, 0.2, float("inf")]], "gradient[1][2] is Infinity"),
        ([[-float("inf"), 0.2, 0.3], ROWS[1]], "gradient[0][0] is -Infinity"),
        ([ROWS[0], [0.1, 0.2, 10**400]], "integer too large"),
        (None, "gradient is null: expected an array of shape [2, 3]"),
        ("[[0.1]]", 'gradient is the string "[[0.1]]": expected an array of shape [2, 3]'),
        ({"values": ROWS}, "gradient is an object: expected an array of shape [2, 3]"),
        ([], "gradient: expected shape [2, 3], got [0]"),
    ],
)
def test_defects_are_described(value: object, message: str) -> None:
    result = read_part("gradient", value, (2, 3))
    assert isinstance(result, str)
    assert message in result


def test_a_long_string_is_cut_in_the_message() -> None:
    result = read_part("loss", "x" * 1000, ())
    assert isinstance(result, str)
    assert len(result) < 80
    assert result == 'loss is the string "xxxxxxxxxxxxxxxxxxxx"…: expected a number'


def test_scalar_shapes_are_worded() -> None:
    assert read_part("loss", [0.1, 0.2], ()) == "loss: expected a single number, got shape [2]"
    assert read_part("loss", 0.1, (4,)) == "loss: expected shape [4], got a single number"


def test_deep_nesting_stops_with_a_message() -> None:
    value: object = 0.5
    for _ in range(MAX_NESTING + 5):
        value = [value]
    result = read_part("loss", value, ())
    assert isinstance(result, str)
    assert "nested more than" in result
