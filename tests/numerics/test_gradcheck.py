"""One check from start to end (`analyse_softmax`, `analyse_cross_entropy`), how a check
describes itself (`Check.message`) and the refusal of outputs that are not finite."""

import numpy as np
import pytest

from app.numerics.compare import Agreement
from app.numerics.cross_entropy import OneHot, Reduction, index_targets, probability_targets
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import ErrorEstimate, Method, choose_steps
from app.numerics.gradcheck import (
    BY_BLOCKS,
    SECOND_ORDER,
    Check,
    LossRows,
    NumericOptions,
    Output,
    Report,
    Tolerance,
    analyse_cross_entropy,
    analyse_softmax,
)
from app.numerics.layout import BLOCK_ENTRIES
from app.numerics.softmax import softmax
from tests.numerics import reference
from tests.numerics.test_cross_entropy import hard_targets

RNG = np.random.default_rng(11)
LOGITS = RNG.normal(scale=2.0, size=(16, 7))
LABELS = RNG.integers(0, 7, size=16)


def test_softmax_check_reports_the_jacobian_agreement() -> None:
    report = analyse_softmax(
        LOGITS, frozenset({Output.NUMERIC_JACOBIAN}), NumericOptions(Method.FIVE_POINT)
    )
    assert report.jacobian is not None
    assert report.numeric_jacobian is not None
    assert report.jacobian_check is not None
    assert report.jacobian_check.agreement.passed


def test_masked_logit_without_target_mass_is_fine() -> None:
    z = np.array([[0.0, -np.inf, 1.0]])
    targets = hard_targets([2], 3)
    report = analyse_cross_entropy(z, targets, Reduction.SUM, frozenset(Output) - SECOND_ORDER)
    assert report.loss is not None and report.gradient is not None
    assert report.numeric_gradient is not None
    exact = reference.losses_index(z.tolist(), [2])[0]
    assert float(report.loss) == pytest.approx(float(exact), rel=1e-15)
    assert report.gradient[0, 1] == 0
    assert report.gradient_check is not None
    assert report.gradient_check.agreement.passed
    assert np.all(np.isfinite(report.numeric_gradient))


def test_softmax_computes_only_what_is_asked() -> None:
    plain = analyse_softmax(LOGITS, frozenset())
    assert plain.jacobian is None and plain.numeric_jacobian is None
    assert plain.jacobian_check is None and plain.gradient_check is None
    np.testing.assert_array_equal(plain.softmax.probabilities, softmax(LOGITS).probabilities)
    analytic = analyse_softmax(LOGITS, frozenset({Output.JACOBIAN}))
    assert analytic.jacobian is not None and analytic.jacobian.shape == (16, 7, 7)
    assert analytic.numeric_jacobian is None and analytic.jacobian_check is None


def test_cross_entropy_checks_what_is_asked_with_the_options_given() -> None:
    targets = hard_targets(LABELS, 7, reduction=Reduction.MEAN)
    report = analyse_cross_entropy(
        LOGITS,
        targets,
        Reduction.MEAN,
        frozenset({Output.NUMERIC_GRADIENT}),
        NumericOptions(Method.FORWARD, step=1e-6),
        Tolerance(atol=1e-4, rtol=1e-2),
    )
    check = report.gradient_check
    assert check is not None and report.jacobian_check is None
    assert check.method is Method.FORWARD
    assert check.tolerance == Tolerance(atol=1e-4, rtol=1e-2)
    assert check.steps.rule == "h = 1e-06"
    assert check.agreement.passed and check.agreement.checked == 16 * 7
    assert report.gradient is not None and report.numeric_gradient is not None
    assert report.loss is not None and report.losses is not None
    # the mean divides by the number of samples: the gradient rows and the loss by 16
    assert float(report.loss) == pytest.approx(float(report.losses.mean()), rel=1e-15)
    np.testing.assert_allclose(report.numeric_gradient, report.gradient, atol=1e-6)


# ---------------------------------------------------------------- Check.message


SMALL_ESTIMATE = ErrorEstimate(1e-9, 1e-9)


def failing(
    method: Method,
    dtype: type[np.floating] = np.float32,
    estimate: ErrorEstimate = SMALL_ESTIMATE,
    passed: bool = False,
) -> Check:
    """A check of a 2 × 3 batch whose verdict is given, with the steps `method` chooses."""
    agreement = Agreement(passed, 2.5e-3, 1.25e-2, 0 if passed else 2, 6, [])
    steps = choose_steps(np.zeros((2, 3), dtype), method, None)
    return Check(agreement, method, steps, Tolerance(), estimate)


@pytest.mark.parametrize(
    ("method", "power"),
    [(Method.FORWARD, "1/2"), (Method.CENTRAL, "2/3"), (Method.FIVE_POINT, "4/5")],
)
def test_float32_advice_names_the_methods_own_order(method: Method, power: str) -> None:
    """A stencil of order p reaches about eps^(p/(p+1)) in float32, whatever the method."""
    message = failing(method).message()
    eps = float(np.finfo(np.float32).eps)
    order = {"1/2": 1 / 2, "2/3": 2 / 3, "4/5": 4 / 5}[power]
    assert message.startswith("failed: 2 element(s) differ by more than atol + rtol·|numeric|")
    assert (
        f"in float32 (eps = 1.2e-07) a {method} difference cannot be much better than "
        f"eps^({power}) ≈ {eps**order:.1e}: use dtype float64 or method complex_step"
    ) in message
    assert message.count("eps^(") == 1


def test_the_float32_advice_is_never_given_for_the_complex_step() -> None:
    message = failing(Method.COMPLEX_STEP).message()
    assert message.startswith("failed:")
    assert "float32" not in message and "eps^" not in message
    assert "Note:" not in message


def test_no_float32_advice_in_float64() -> None:
    assert "Note:" not in failing(Method.CENTRAL, np.float64).message()


def test_the_summary_states_errors_estimate_method_and_step_rule() -> None:
    check = failing(Method.CENTRAL, np.float64, ErrorEstimate(3e-10, 4e-11), passed=True)
    assert check.message() == (
        "passed: every element within atol + rtol·|numeric| (max abs error 2.50e-03, max rel "
        "error 1.25e-02; estimated truncation error 3.0e-10, rounding error 4.0e-11 for central "
        f"with {check.steps.rule})."
    )


def test_a_method_whose_own_error_exceeds_atol_is_suspected() -> None:
    check = failing(Method.FORWARD, np.float64, ErrorEstimate(2e-5, 1e-6))
    assert check.message().endswith(
        " Note: the numeric method's own estimated error (2.1e-05) exceeds atol (1e-05), so the "
        "numeric side may be the one that is off."
    )
    both = failing(Method.CENTRAL, np.float32, ErrorEstimate(2e-5, 1e-6)).message()
    assert "eps^(2/3)" in both and "own estimated error" in both
    assert both.index("eps^(2/3)") < both.index("own estimated error")


# ---------------------------------------------------------------- finiteness


def test_an_output_asked_for_that_is_not_finite_is_refused_by_sample() -> None:
    logits = np.zeros((3, 2), np.float32)
    gradient = np.zeros((3, 2), np.float32)
    gradient[2, 1] = np.inf
    report = Report(logits, gradient=gradient)
    with pytest.raises(InvalidProblem) as error:
        report.refuse_non_finite(frozenset({Output.GRADIENT}))
    assert error.value.location == ("logits", 2)
    assert error.value.message == (
        "the gradient of sample 2 is not finite in float32: the logits are too large for this "
        "precision (use dtype float64 or smaller logits)"
    )
    report.refuse_non_finite(frozenset({Output.PROBABILITIES}))  # not asked for: no refusal


def test_per_sample_losses_are_always_checked_and_a_scalar_has_no_sample() -> None:
    logits = np.zeros((2, 2))
    with pytest.raises(InvalidProblem) as error:
        Report(logits, losses=np.array([0.0, np.nan])).refuse_non_finite(frozenset())
    assert error.value.location == ("logits", 1)
    assert "the losses of sample 1 is not finite in float64" in error.value.message
    with pytest.raises(InvalidProblem) as error:
        Report(logits, loss=np.array(np.inf)).refuse_non_finite(frozenset({Output.LOSS}))
    assert error.value.location == ("logits",)
    assert error.value.message.startswith("the loss is not finite in float64:")


def test_masked_log_probabilities_are_not_refused() -> None:
    report = analyse_softmax(np.array([[0.0, -np.inf]]), frozenset(Output) - SECOND_ORDER)
    assert report.softmax.log_probabilities[0, 1] == -np.inf
    report.refuse_non_finite(frozenset(Output) - SECOND_ORDER)


@pytest.mark.parametrize(
    ("z_loss", "softcap"), [(0.0, None), (1e-4, None), (0.0, 30.0), (1e-4, 30.0)]
)
@pytest.mark.parametrize(
    ("probability_labels", "label_smoothing"), [(False, 0.3), (False, 0.0), (True, 0.3)]
)
def test_rows_computed_by_blocks_are_the_rows_computed_whole(
    z_loss: float, softcap: float | None, probability_labels: bool, label_smoothing: float
) -> None:
    """A loss and gradient alone, over several blocks of rows (`layout.BLOCK_ENTRIES`), are
    computed block by block and keep no softmax; every number is the one computed whole (with
    the probabilities asked for), bit for bit: weights and smoothing (q's exact definition and
    factors, asked with the block's rows), ignored samples, the z-loss's divisor, the
    soft-capping, and rows of the later blocks that cancel (uniform logits, uniform targets)
    and are recomputed in double-double. Index labels without smoothing form each block's q
    alone, never the whole matrix."""
    rng = np.random.default_rng(5)
    rows, classes = 3 * BLOCK_ENTRIES // 700 + 5, 700  # four blocks, the last one short
    logits = rng.normal(scale=4.0, size=(rows, classes))
    logits[-7:] = 0.25  # cancelling rows: a = 1/C, q = w/C below
    weight = rng.uniform(0.5, 2.0, classes)
    if probability_labels:
        p = rng.dirichlet(np.ones(classes), rows)
        p[-7:] = 1 / classes
        targets = probability_targets(
            p,
            weight=None,
            label_smoothing=label_smoothing,
            reduction=Reduction.MEAN,
            dtype=np.float64,
        )
    else:
        labels = rng.integers(0, classes, rows)
        labels[::9] = -100
        targets = index_targets(
            labels,
            classes,
            weight=weight,
            ignore_index=-100,
            label_smoothing=label_smoothing,
            reduction=Reduction.MEAN,
            dtype=np.float64,
        )
    divisors = np.full(rows, targets.divisor)
    numeric = NumericOptions()
    by_blocks = LossRows.of(
        logits, targets, divisors, BY_BLOCKS, numeric, z_loss=z_loss, softcap=softcap
    )
    if not (probability_labels or label_smoothing):  # `Targets.q` is a cached property
        assert isinstance(targets.effective, OneHot) and "q" not in vars(targets)
    whole = LossRows.of(
        logits,
        targets,
        divisors,
        BY_BLOCKS | {Output.PROBABILITIES},
        numeric,
        z_loss=z_loss,
        softcap=softcap,
    )
    assert by_blocks.softmax is None and whole.softmax is not None
    np.testing.assert_array_equal(by_blocks.gradient, whole.gradient, strict=True)
    np.testing.assert_array_equal(by_blocks.cross_entropy, whole.cross_entropy, strict=True)
    if z_loss:
        assert by_blocks.z_terms is not None and whole.z_terms is not None
        np.testing.assert_array_equal(by_blocks.z_terms, whole.z_terms, strict=True)
    # the report forms the softmax only when asked, and it is the one computed whole
    report = analyse_cross_entropy(
        logits, targets, Reduction.MEAN, BY_BLOCKS, z_loss=z_loss, softcap=softcap
    )
    assert report.kept_softmax is None
    np.testing.assert_array_equal(report.softmax.probabilities, whole.softmax.probabilities)
    np.testing.assert_array_equal(report.softmax.log_probabilities, whole.softmax.log_probabilities)
