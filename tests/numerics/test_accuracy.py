"""Accuracy of every float64 output against 60-digit mpmath, on adversarial cases.

The guarantee (README, Accuracy): for each sample, the largest error in its row (its C×C block
for the Jacobian) is at most 1e-13 of the row's largest exact magnitude, for probabilities,
log-probabilities, 1 − a, the Jacobian, per-sample and reduced losses, and the gradient, however
much its row cancels. The numeric derivatives' error estimates bound their actual error.
"""

import re

import numpy as np
import pytest

from app.numerics.cross_entropy import Reduction
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import NumericOptions, Output, analyse_cross_entropy
from tests.numerics.adversarial import Case, cases, exact, measure, row_error

GUARANTEE = 1e-13

QUICK = cases("quick")


def _case_id(case: Case) -> str:
    return re.sub(r"[^\w.=-]+", "_", f"{case.family}-{case.options()}-{case.logits.shape}")


@pytest.mark.parametrize("case", QUICK, ids=[_case_id(c) for c in QUICK])
def test_every_output_is_within_the_guarantee(case: Case) -> None:
    measurement = measure(case)
    for output, error in measurement.errors.items():
        assert error <= GUARANTEE, f"{output}: {error:.3g} (row {measurement.worst_row})"
    rows = zip(measurement.gradient_rows, measurement.condition, strict=True)
    for n, (error, condition) in enumerate(rows):
        assert error <= GUARANTEE, f"gradient row {n}: {error:.3g}, cancellation {condition:.3g}"


def test_the_generator_covers_every_family_and_loss_option() -> None:
    families = {case.family for case in QUICK}
    assert {"saturated", "near-tie", "huge C", "tiny scale", "huge scale", "-inf masks"} <= families
    assert {case.reduction for case in QUICK} == set(Reduction)
    assert any(c.labels is not None and (c.labels == c.ignore_index).any() for c in QUICK)
    assert any(c.weight is not None and c.label_smoothing for c in QUICK)
    assert any(c.probabilities is not None and c.label_smoothing for c in QUICK)
    assert any(np.isneginf(c.logits).any() for c in QUICK)
    assert max(condition for c in QUICK for condition in measure_conditions(c)) > 1e15


def measure_conditions(case: Case) -> list[float]:
    return exact(case).condition


def test_soft_labels_equal_to_the_rounded_prediction_need_the_double_double_path() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 2.0, (6, 7))
    reference_case = Case("soft", logits, probabilities=np.zeros_like(logits))
    predicted = np.asarray(
        [[float(v) for v in row.probabilities] for row in exact(reference_case).rows]
    )
    case = Case("soft", logits, probabilities=predicted, reduction=Reduction.SUM)
    report = analyse_cross_entropy(logits, case.targets(), case.reduction, frozenset())
    reference = exact(case).gradient
    a = report.softmax.probabilities
    float64_formula = a * predicted.sum(axis=1, keepdims=True) - predicted
    assert report.gradient is not None
    for n, row in enumerate(reference):
        assert row_error(report.gradient[n], row) <= GUARANTEE
        assert row_error(float64_formula[n], row) > 1e-4  # what the refinement saves


TINY_NEAR_UNIFORM = {
    "1e-200, smoothed index labels": (1e-200, "index"),
    "1e-310 (subnormal), smoothed index labels": (1e-310, "index"),
    "1e-200, uniform probabilities": (1e-200, "probability"),
    "1e-20, uniform probabilities, -inf mask": (1e-20, "probability"),
    "1e-18, random probabilities": (1e-18, "random"),
}


@pytest.mark.parametrize("name", list(TINY_NEAR_UNIFORM))
def test_tiny_logits_with_near_uniform_targets_keep_their_gradient(name: str) -> None:
    """a_c − 1/C is about (z_c − mean z)/C: with logits of 1e-200 it lies far below what
    double-double resolves, and the gradient comes from the linear form of a near 1/C."""
    scale, kind = TINY_NEAR_UNIFORM[name]
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, scale, (4, 6))
    if "mask" in name:
        logits[:, 0] = -np.inf
    finite = np.isfinite(logits)
    if kind == "index":
        case = Case(name, logits, labels=np.arange(4), label_smoothing=1.0, reduction=Reduction.SUM)
    else:
        q = finite / finite.sum(axis=1, keepdims=True)
        if kind == "random":
            q = q * rng.uniform(0.5, 1.5, q.shape)
        case = Case(name, logits, probabilities=q, reduction=Reduction.NONE)
    report = analyse_cross_entropy(logits, case.targets(), case.reduction, frozenset())
    assert report.gradient is not None
    for n, row in enumerate(exact(case).gradient):
        assert row_error(report.gradient[n], row) <= GUARANTEE, n


@pytest.mark.parametrize("labels", ["probability", "index"])
def test_subnormal_weighted_targets_are_not_rounded_before_the_log(labels: str) -> None:
    """Saturated rows (gap 745) with small class weights: q = w·p or (ε/C)·w is subnormal
    and its own rounding, multiplied by −log a ≈ 745, would cost hundreds of subnormal ulps
    (or all of a term, when q underflows to 0); the loss forms (w·(−log a))·p instead."""
    logits = np.array([[0.0, 0.66, 744.1, -1.2, 0.0], [0.4, 1.7, 0.7, 746.4, -0.3]])
    weight = np.array([0.28, 1.69, 2.28, 1.59, 1e-3])
    if labels == "probability":
        p = np.array([[2.5e-323, 1e-323, 0.44, 0.0, 6.5e-321], [0.0, 0.0, 0.0, 0.63, 1e-321]])
        case = Case("subnormal", logits, probabilities=p, weight=weight, reduction=Reduction.SUM)
    else:  # (ε/C)·w = 1.5 subnormal ulps on six classes, each rounded by half an ulp
        logits = np.hstack([logits, np.zeros((2, 3))])
        logits[0, [2, 3]] = logits[0, [3, 2]]  # both rows lead at class 3, their label
        weight = np.full(8, 5.93e-322)
        weight[3] = 2.28
        case = Case(
            "subnormal",
            logits,
            labels=np.array([3, 3]),
            weight=weight,
            label_smoothing=0.1,
            reduction=Reduction.SUM,
        )
    report = analyse_cross_entropy(logits, case.targets(), case.reduction, frozenset())
    reference = exact(case)
    assert report.losses is not None and reference.loss is not None
    for n, value in enumerate(reference.losses):
        assert row_error(report.losses[n : n + 1], [value]) <= GUARANTEE, n
    assert row_error(np.asarray(report.loss).reshape(1), [reference.loss]) <= GUARANTEE


# ---------------------------------------------------------------- numeric derivatives

ESTIMATE_CASES = {
    "random": np.random.default_rng(11).normal(0.0, 3.0, (4, 6)),
    "near-uniform": np.random.default_rng(12).normal(0.0, 1e-3, (3, 8)),
    "around 1e3": 1e3 + np.random.default_rng(13).normal(0.0, 3.0, (3, 5)),
    "around 1e5": 1e5 + np.random.default_rng(14).normal(0.0, 1.0, (3, 5)),
    "saturated": np.array([[30.0, 0.0, 1.0, -1.0], [0.0, 30.5, 2.0, 0.3]]),
}
"""In saturated rows the loss moves by less than an ulp: the numeric derivative is 0 and its
error, the tiny true derivative, sits far below the rounding estimate (which is what it could
have been): there only "never underestimates" is asserted."""
SETTINGS = [(method, None) for method in Method] + [(Method.CENTRAL, 1e-9)]


def _exact_derivatives(case: Case) -> tuple[np.ndarray, np.ndarray]:
    reference = exact(case)
    gradient = np.asarray([[float(v) for v in row] for row in reference.gradient])
    jacobians = []
    for row in reference.rows:
        a, complement = row.probabilities, row.complement
        size = len(a)
        jacobians.append(
            [
                [float(a[i] * complement[i] if i == j else -a[i] * a[j]) for j in range(size)]
                for i in range(size)
            ]
        )
    return gradient, np.asarray(jacobians)


@pytest.mark.parametrize("name", list(ESTIMATE_CASES))
@pytest.mark.parametrize(("method", "step"), SETTINGS, ids=[f"{m}-{s}" for m, s in SETTINGS])
def test_error_estimates_match_the_actual_error_against_mpmath(
    name: str, method: Method, step: float | None
) -> None:
    logits = ESTIMATE_CASES[name]
    soft = np.random.default_rng(15).dirichlet(np.ones(logits.shape[1]), logits.shape[0])
    case = Case(name, logits, probabilities=soft, label_smoothing=0.1, reduction=Reduction.MEAN)
    if name == "saturated":
        case = Case(name, logits, labels=np.argmax(logits, axis=1), reduction=Reduction.SUM)
    gradient, jacobian = _exact_derivatives(case)
    report = analyse_cross_entropy(
        logits,
        case.targets(),
        case.reduction,
        frozenset({Output.NUMERIC_GRADIENT, Output.NUMERIC_JACOBIAN}),
        NumericOptions(method, step),
    )
    assert report.gradient_check is not None
    assert report.jacobian_check is not None
    for numeric, reference, check in (
        (report.numeric_gradient, gradient, report.gradient_check),
        (report.numeric_jacobian, jacobian, report.jacobian_check),
    ):
        actual = float(np.max(np.abs(np.asarray(numeric) - reference)))
        estimate = check.estimate.truncation + check.estimate.rounding
        assert actual <= 2 * estimate, f"underestimated: {actual:.3g} > 2 × {estimate:.3g}"
        if name != "saturated":
            assert estimate <= 100 * actual, f"overstated: {estimate:.3g} ≫ {actual:.3g}"
