"""Numeric derivatives: accuracy per method, batching, steps and honest error estimates."""

import numpy as np
import pytest

from app.numerics.cross_entropy import Reduction, index_targets
from app.numerics.finite_diff import (
    LossColumns,
    Method,
    SoftmaxColumns,
    choose_steps,
    derivative_by_column,
    plain_losses,
)
from app.numerics.gradcheck import (
    NumericOptions,
    Output,
    Report,
    Tolerance,
    analyse_cross_entropy,
)
from tests.numerics import reference

RNG = np.random.default_rng(11)
LOGITS = RNG.normal(scale=2.0, size=(16, 7))
LABELS = RNG.integers(0, 7, size=16)

# float64 relative-error ceilings (cs231n's rel_error) that each method must reach here
CEILINGS = {
    Method.COMPLEX_STEP: 1e-13,
    Method.FIVE_POINT: 1e-8,
    Method.CENTRAL: 1e-7,
    Method.FORWARD: 1e-3,
}


def _report(method: Method, dtype: type = np.float64, logits: np.ndarray = LOGITS) -> Report:
    targets = index_targets(
        LABELS[: len(logits)] % logits.shape[1],
        logits.shape[1],
        weight=None,
        ignore_index=-100,
        label_smoothing=0.05,
        reduction=Reduction.MEAN,
        dtype=dtype,
    )
    return analyse_cross_entropy(
        logits.astype(dtype),
        targets,
        Reduction.MEAN,
        frozenset({Output.NUMERIC_GRADIENT, Output.NUMERIC_JACOBIAN}),
        NumericOptions(method),
        Tolerance(),
    )


@pytest.mark.parametrize("method", list(Method))
def test_each_method_reaches_its_accuracy_in_float64(method: Method) -> None:
    report = _report(method)
    assert report.gradient_check is not None
    assert report.jacobian_check is not None
    assert report.gradient_check.agreement.max_rel_error <= CEILINGS[method]
    assert report.jacobian_check.agreement.max_rel_error <= CEILINGS[method]
    assert report.gradient_check.agreement.passed


@pytest.mark.parametrize("method", list(Method))
def test_error_estimate_bounds_the_actual_error(method: Method) -> None:
    check = _report(method).gradient_check
    assert check is not None
    estimate = check.estimate.truncation + check.estimate.rounding
    assert check.agreement.max_abs_error <= 10 * estimate
    if method is not Method.COMPLEX_STEP:  # an estimate, not a wild overstatement
        assert estimate <= 1e4 * max(check.agreement.max_abs_error, 1e-300)


def test_float32_central_is_clearly_worse_than_float64() -> None:
    logits = np.array([[8.0, 1.0, -3.0, 0.5], [2.0, 2.0, 9.0, -1.0]] * 4)
    worse = _report(Method.CENTRAL, np.float32, logits).gradient_check
    better = _report(Method.CENTRAL, np.float64, logits).gradient_check
    assert worse is not None
    assert better is not None
    assert worse.agreement.max_rel_error > 1000 * better.agreement.max_rel_error
    assert worse.agreement.max_rel_error > 1e-6


def test_complex_step_matches_mpmath_to_the_last_digits() -> None:
    z = LOGITS[:3]
    numeric = derivative_by_column(
        SoftmaxColumns(z), z, choose_steps(z, Method.COMPLEX_STEP, None), Method.COMPLEX_STEP
    )
    for row, block in zip(z, numeric, strict=True):
        exact = [x for r in reference.jacobian(row) for x in r]
        assert reference.relative_row_error(block.ravel(), exact) <= 1e-14


def test_batched_columns_equal_one_element_at_a_time() -> None:
    z = LOGITS[:4, :5]
    q = np.eye(5)[[0, 1, 2, 3]]
    steps = choose_steps(z, Method.CENTRAL, None)
    batched = derivative_by_column(LossColumns(z, q), z, steps, Method.CENTRAL)
    for n in range(4):
        for j in range(5):
            plus, minus = z.copy(), z.copy()
            plus[n, j] += steps.h[n, j]
            minus[n, j] -= steps.h[n, j]
            one = (plain_losses(plus, q)[n] - plain_losses(minus, q)[n]) / (2 * steps.h[n, j])
            # the two sum in different orders: they agree to the differences' rounding eps/h
            assert batched[n, j] == pytest.approx(one, rel=1e-9, abs=1e-9)


def test_steps_follow_the_row_range_and_are_exactly_representable() -> None:
    z = np.array([[0.5, -3.0, 1e3, -np.inf], [3e5, 3e5 + 1e-3, 3e5, 3e5], [1e15, 1e15, 0.0, 0.0]])
    z[2, 2:] = 1e15 + 0.5  # a row of huge logits an ulp or so apart: the floor decides
    steps = choose_steps(z, Method.CENTRAL, None)
    base = np.finfo(np.float64).eps ** (1 / 3)
    assert steps.base == pytest.approx(base)
    assert steps.rule == "h = 6.06e-06·max(1, max z − min z of the row)^(1/3), at least 4 ulp(z)"
    np.testing.assert_allclose(
        steps.h[0], base * 1003.0 ** (1 / 3), rtol=1e-8
    )  # the masked one too
    np.testing.assert_allclose(steps.h[1], base, rtol=1e-5)  # range 1e-3 < 1: base itself
    np.testing.assert_array_equal(steps.h[2], 4 * np.spacing(1e15))  # 0.5, not 6e9
    finite = np.isfinite(z)
    np.testing.assert_array_equal((z[finite] + steps.h[finite]) - z[finite], steps.h[finite])
    np.testing.assert_allclose(choose_steps(z[:1], Method.FORWARD, 1e-4).h, 1e-4, rtol=1e-9)
    assert choose_steps(z, Method.FORWARD, 1e-4).rule == "h = 0.0001"
    assert choose_steps(z, Method.COMPLEX_STEP, None).rule == "h = 1e-20"


@pytest.mark.parametrize("method", [Method.CENTRAL, Method.FIVE_POINT, Method.FORWARD])
@pytest.mark.parametrize("center", [3e5, -3e5, 1e8, 1.0])
def test_large_logits_get_steps_of_their_row_scale(method: Method, center: float) -> None:
    """Issue 17: softmax is shift-invariant, so [3e5, 3e5 + 1e-3] varies on the scale of 1,
    not 3e5. ∛eps·|z| ≈ 1.8 there gave 1e-4 relative error; the row's own scale gives ~1e-12."""
    z = center + np.array([[0.0, 1e-3], [0.0, -2.0], [1.5, 0.0]])
    z = np.hstack([z, center + np.array([[0.5], [3.0], [-1.0]])])
    targets = index_targets(
        np.array([0, 1, 2]),
        3,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.1,
        reduction=Reduction.SUM,
        dtype=np.float64,
    )
    report = analyse_cross_entropy(
        z, targets, Reduction.SUM, frozenset({Output.NUMERIC_GRADIENT}), NumericOptions(method)
    )
    assert report.gradient is not None and report.numeric_gradient is not None
    error = np.max(np.abs(report.numeric_gradient - report.gradient), axis=1)
    relative = error / np.max(np.abs(report.gradient), axis=1)
    ceiling = {Method.CENTRAL: 1e-6, Method.FIVE_POINT: 1e-6, Method.FORWARD: 1e-4}[method]
    assert relative.max() <= ceiling, relative


def test_the_issue_row_3e5_is_differentiated_to_1e_minus_6() -> None:
    z = np.array([[3e5, 3e5 + 1e-3]])
    q = np.array([[1.0, 0.0]])
    steps = choose_steps(z, Method.CENTRAL, None)
    numeric = derivative_by_column(LossColumns(z, q), z, steps, Method.CENTRAL)
    exact = np.array([[reference.softmax(z[0])[0] - 1, reference.softmax(z[0])[1]]], float)
    assert np.max(np.abs(numeric - exact)) / np.max(np.abs(exact)) <= 1e-6
    assert steps.h.max() < 1e-5  # ∛eps·max(1, r)^(1/3), r = 1e-3


@pytest.mark.parametrize("offset", [0.37, -2.0, 1e-20j, 2000.0, -2000.0, 1e5 + 1e-20j])
def test_one_replaced_column_equals_evaluating_the_whole_row(offset: complex) -> None:
    """Also for moves of thousands (the steps of logits near 1e8), which take the largest entry
    far above the row's maximum, or the maximum far below the next entry; and for a row with
    one finite entry."""
    z = np.array(
        [[0.5, -np.inf, 2.0, 40.0], [1.0, 1.0, -3.0, 0.0], [-np.inf, 7.0, -np.inf, -np.inf]]
    )
    q = np.array([[0.2, 0.0, 1.0, 0.3], [0.0, 2.0, 0.0, 0.5], [0.0, 1.5, 0.0, 0.0]])
    for j in range(4):
        moved = z.astype(complex)
        moved[:, j] = z[:, j] + offset
        values = moved[:, j].reshape(1, 1, 3)
        whole_losses: np.ndarray = plain_losses(moved, q)
        np.testing.assert_allclose(  # both carry rounding errors of the size of the move
            LossColumns(z, q)(np.array([j]), values)[0, 0],
            whole_losses,
            rtol=1e-14,
            atol=1e-14 * abs(offset),
        )
        real = np.real(moved)
        exp = np.where(np.isneginf(real), 0, np.exp(moved - real.max(axis=1, keepdims=True)))
        whole_softmax = exp / exp.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(
            SoftmaxColumns(z)(np.array([j]), values)[0, 0], whole_softmax, rtol=1e-14, atol=1e-300
        )
