"""The Hessian of the loss, Hessian-vector products and the numeric Hessian, with and without
the z-loss and the logit soft-capping.

Against mpmath (60+ digits) on the adversarial cases, saturated rows included (1e-13 per block,
1e-12 per HVP row), against PyTorch's double backward in float64 when torch is importable, and
by their properties: symmetry, positive semi-definiteness with the null vector (1, …, 1),
H v = (formed H) @ v, and the numeric Hessian within gradgradcheck's tolerance.
"""

import re
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from accuracy import hessian as exact_hessian
from app.numerics.compare import compare
from app.numerics.cross_entropy import (
    Reduction,
    Targets,
    index_targets,
    probability_targets,
    softcap_logits,
)
from app.numerics.finite_diff import Method, choose_steps
from app.numerics.hessian import (
    GRADGRADCHECK_ATOL,
    GRADGRADCHECK_RTOL,
    LogitTerms,
    hessian_vector_product,
    logit_terms,
    loss_hessian,
    numeric_hessian,
    target_scale,
)
from app.numerics.softmax import softmax, softmax_jacobian
from tests.helpers import require_module
from tests.numerics.adversarial import Case, cases, exact_row, row_error

HESSIAN_GUARANTEE = 1e-13
HVP_GUARANTEE = 1e-12
QUICK = cases("quick")
RNG = np.random.default_rng(20)


def _case_id(case: Case) -> str:
    return re.sub(r"[^\w.=-]+", "_", f"{case.family}-{case.options()}-{case.logits.shape}")


def _hessian(case: Case) -> np.ndarray:
    targets = case.targets()
    return loss_hessian(
        softmax(case.logits), targets.q, divisor=targets.divisor, exact_q=targets.exact_q
    )


# ---------------------------------------------------------------- against mpmath


@pytest.mark.parametrize("case", QUICK, ids=[_case_id(c) for c in QUICK])
def test_hessian_and_hvp_are_within_the_guarantee_against_mpmath(case: Case) -> None:
    errors = exact_hessian.worst(exact_hessian.measure(case))
    assert errors.get("hessian", 0.0) <= HESSIAN_GUARANTEE, errors
    assert errors["hvp"] <= HVP_GUARANTEE, errors
    assert errors["hvp_near_constant"] <= HVP_GUARANTEE, errors


def test_the_adversarial_cases_include_saturated_rows_with_subnormal_probabilities() -> None:
    saturated = [c for c in QUICK if c.family.startswith("saturated")]
    assert saturated
    assert any(
        ((softmax(c.logits).probabilities < 2.0**-1022) & np.isfinite(c.logits)).any()
        for c in saturated
    )


def _saturated_case(scale: float, gap: float, reduction: Reduction) -> Case:
    """Rows whose argmax leads by `gap` (probabilities down to subnormal or 0) and whose
    Σq/D is `scale`-sized: the case where the subnormal rounding of a would be lifted by s."""
    rng = np.random.default_rng(int(gap))
    logits = rng.normal(0.0, 1.0, (5, 6))
    logits[np.arange(5), [0, 1, 2, 3, 4]] += gap
    logits[4, 5] = logits[4, 4] - 1.0  # one leader pair: a normal second probability
    weight = np.full(6, scale)
    labels = np.argmax(logits, axis=1)
    return Case("saturated, scaled", logits, labels=labels, weight=weight, reduction=reduction)


@pytest.mark.parametrize("gap", [700.0, 730.0, 742.0, 745.0, 760.0])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, 1e12, 1e250])
def test_saturated_rows_stay_exact_whatever_the_target_scale(scale: float, gap: float) -> None:
    case = _saturated_case(scale, gap, Reduction.SUM)
    errors = exact_hessian.worst(exact_hessian.measure(case))
    assert errors["hessian"] <= HESSIAN_GUARANTEE, errors
    assert errors["hvp"] <= HVP_GUARANTEE, errors
    assert errors["hvp_near_constant"] <= HVP_GUARANTEE, errors


def test_the_plain_product_would_fail_where_the_scaled_path_is_taken() -> None:
    """s·softmax_jacobian alone loses the subnormal probabilities' digits once s lifts them."""
    case = _saturated_case(1e12, 742.0, Reduction.SUM)
    targets = case.targets()
    sm = softmax(case.logits)
    plain = softmax_jacobian(sm) * target_scale(targets.q, targets.divisor)[:, None, None]
    rows = [exact_row(z) for z in case.logits]
    scales = exact_hessian.exact_scales(case)
    rng = np.random.default_rng(0)
    plain_error = max(
        exact_hessian.hessian_block_error(plain[n], rows[n], scales[n], rng) for n in range(4)
    )
    assert plain_error > 1e-6
    ours = _hessian(case)
    assert (
        max(exact_hessian.hessian_block_error(ours[n], rows[n], scales[n], rng) for n in range(4))
        <= 1e-15
    )


def test_large_vectors_on_saturated_rows_keep_their_digits() -> None:
    case = _saturated_case(1.0, 744.0, Reduction.SUM)
    targets = case.targets()
    v = np.random.default_rng(3).normal(0.0, 1e250, case.logits.shape)
    product = hessian_vector_product(softmax(case.logits), targets.q, v)
    scales = exact_hessian.exact_scales(case)
    for n, z in enumerate(case.logits):
        exact = exact_hessian.exact_hvp(exact_row(z), scales[n], v[n])
        assert row_error(product[n], exact) <= 1e-14


def test_target_scale_is_the_correctly_rounded_quotient() -> None:
    targets = index_targets(
        np.array([0, 2, 1, -100]),
        3,
        weight=np.array([0.1, 1 / 3, 7.0]),
        ignore_index=-100,
        label_smoothing=0.3,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    scale = target_scale(targets.q, targets.divisor, exact_q=targets.exact_q)
    weight = [mp.mpf(0.1), mp.mpf(1 / 3), mp.mpf(7.0)]
    with mp.workdps(50):
        divisor = mp.mpf(targets.divisor)
        for n, label in enumerate([0, 2, 1]):
            total = (1 - mp.mpf(0.3)) * weight[label] + mp.mpf(0.3) / 3 * mp.fsum(weight)
            assert scale[n] == float(total / divisor)
    assert scale[3] == 0.0


# ---------------------------------------------------------------- against PyTorch


def _torch_problem(
    reduction: Reduction, probability_labels: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Targets]:
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, 3.0, (4, 5))
    weight = rng.uniform(0.2, 2.0, 5)
    if probability_labels:
        p = rng.dirichlet(np.ones(5), 4)
        targets = probability_targets(
            p, weight=weight, label_smoothing=0.1, reduction=reduction, dtype=np.float64
        )
        label = p
    else:
        labels = np.array([0, 3, -100, 4])
        targets = index_targets(
            labels,
            5,
            weight=weight,
            ignore_index=-100,
            label_smoothing=0.1,
            reduction=reduction,
            dtype=np.float64,
        )
        label = labels
    return logits, weight, label, targets


@pytest.mark.torch
@pytest.mark.parametrize("reduction", list(Reduction))
@pytest.mark.parametrize("probability_labels", [False, True])
def test_blocks_equal_torch_autograd_hessian(
    reduction: Reduction, probability_labels: bool
) -> None:
    torch = require_module("torch")
    functional = torch.nn.functional

    logits, weight, label, targets = _torch_problem(reduction, probability_labels)
    target = torch.tensor(label)

    def loss(z: Any) -> Any:  # torch tensors (torch is optional: require_module)
        value = functional.cross_entropy(
            z,
            target,
            weight=torch.tensor(weight),
            ignore_index=-100,
            label_smoothing=0.1,
            reduction=str(reduction),
        )
        return value.sum()  # `none`: the blocks of Σ_n loss_n are those of each loss_n

    full = torch.autograd.functional.hessian(loss, torch.tensor(logits)).numpy()
    ours = loss_hessian(
        softmax(logits), targets.q, divisor=targets.divisor, exact_q=targets.exact_q
    )
    num_samples = logits.shape[0]
    for n in range(num_samples):
        block = full[n, :, n, :]
        assert np.max(np.abs(ours[n] - block)) <= 1e-14 * max(np.max(np.abs(block)), 1e-300)
        for m in range(num_samples):  # block-diagonal across samples
            if m != n:
                assert not full[n, :, m, :].any()
    v = np.random.default_rng(1).normal(size=logits.shape)
    _, torch_hvp = torch.autograd.functional.hvp(loss, torch.tensor(logits), torch.tensor(v))
    product = hessian_vector_product(
        softmax(logits), targets.q, v, divisor=targets.divisor, exact_q=targets.exact_q
    )
    np.testing.assert_allclose(product, torch_hvp.numpy(), rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- properties


def _random_problem(
    seed: int, num_samples: int = 6, num_classes: int = 7, sigma: float = 3.0
) -> tuple[np.ndarray, Targets]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, sigma, (num_samples, num_classes))
    p = rng.dirichlet(np.ones(num_classes), num_samples)
    targets = probability_targets(
        p, weight=None, label_smoothing=0.0, reduction=Reduction.MEAN, dtype=np.float64
    )
    return logits, targets


def test_blocks_are_exactly_symmetric_psd_with_the_ones_null_vector() -> None:
    logits, targets = _random_problem(1)
    hessian = loss_hessian(softmax(logits), targets.q, divisor=targets.divisor)
    assert np.array_equal(hessian, np.swapaxes(hessian, 1, 2))
    for block in hessian:
        size = np.max(np.abs(block))
        eigenvalues = np.linalg.eigvalsh(block)
        assert eigenvalues[0] >= -1e-15 * size
        assert abs(eigenvalues[0]) <= 1e-15 * size  # the zero eigenvalue ...
        assert np.max(np.abs(block @ np.ones(block.shape[0]))) <= 1e-15 * size  # ... along 1
        assert eigenvalues[1] > 1e-6 * size  # and only one: rank C − 1
        _, vectors = np.linalg.eigh(block)
        ones = np.ones(block.shape[0]) / np.sqrt(block.shape[0])
        assert abs(vectors[:, 0] @ ones) > 1 - 1e-10


def test_negative_zero_and_masked_targets_change_definiteness() -> None:
    logits = np.array([[0.3, -1.2, 2.0, 0.1], [0.3, -1.2, 2.0, 0.1], [0.5, -np.inf, 1.0, 0.0]])
    q = np.array([[-1.0, 0.5, -0.2, 0.1], [1.0, -1.0, 0.5, -0.5], [0.2, 0.0, 0.5, 0.3]])
    hessian = loss_hessian(softmax(logits), q)
    assert np.linalg.eigvalsh(hessian[0])[-1] <= 1e-16  # Σq < 0: negative semi-definite
    assert np.linalg.eigvalsh(hessian[0])[0] < -1e-3
    assert not hessian[1].any()  # Σq = 0: no curvature at all
    masked = hessian[2]
    assert not masked[1].any()
    assert not masked[:, 1].any()  # e_1 is a null vector too
    eigenvalues = np.linalg.eigvalsh(masked)
    assert np.sum(np.abs(eigenvalues) <= 1e-15) == 2  # rank: 3 unmasked classes − 1


def test_hessian_depends_on_the_targets_only_through_their_sum() -> None:
    logits, targets = _random_problem(2)
    other = np.roll(targets.q, 3, axis=1)
    sm = softmax(logits)
    assert np.array_equal(loss_hessian(sm, targets.q), loss_hessian(sm, other))


def test_reduction_none_gives_each_loss_its_own_hessian_and_mean_divides() -> None:
    logits, weight, labels, _ = _torch_problem(Reduction.NONE, False)
    sm = softmax(logits)
    blocks = {}
    for reduction in (Reduction.NONE, Reduction.MEAN):
        targets = index_targets(
            labels,
            5,
            weight=weight,
            ignore_index=-100,
            label_smoothing=0.0,
            reduction=reduction,
            dtype=np.float64,
        )
        blocks[reduction] = loss_hessian(sm, targets.q, divisor=targets.divisor)
        if reduction is Reduction.NONE:
            s = targets.q.sum(axis=1)
            np.testing.assert_allclose(
                blocks[reduction], s[:, None, None] * softmax_jacobian(sm), rtol=1e-15
            )
    divisor = weight[[0, 3, 4]].sum()
    np.testing.assert_allclose(blocks[Reduction.MEAN], blocks[Reduction.NONE] / divisor, 5e-16)


def test_hvp_equals_the_formed_hessian_times_v_and_is_zero_on_constants() -> None:
    logits, targets = _random_problem(3, num_samples=8, num_classes=9)
    sm = softmax(logits)
    hessian = loss_hessian(sm, targets.q, divisor=targets.divisor)
    v = RNG.normal(size=logits.shape)
    product = hessian_vector_product(sm, targets.q, v, divisor=targets.divisor)
    formed = np.einsum("nij,nj->ni", hessian, v)
    scale = np.max(np.abs(formed), axis=1, keepdims=True)
    assert np.all(np.abs(product - formed) <= 1e-14 * scale)
    constant = np.full_like(v, 1e12) * RNG.normal(size=(8, 1))
    assert not hessian_vector_product(sm, targets.q, constant, divisor=2.0).any()


def test_hvp_of_a_nearly_constant_vector_does_not_cancel() -> None:
    logits, targets = _random_problem(4, num_classes=50)
    sm = softmax(logits)
    v = 1e8 + RNG.normal(size=logits.shape) * 1e-4  # v − ⟨a, v⟩ ~ 1e-4: 12 digits cancel
    product = hessian_vector_product(sm, targets.q, v, divisor=targets.divisor)
    for n, z in enumerate(logits):
        s = mp.fsum(mp.mpf(float(x)) for x in targets.q[n]) / targets.divisor
        exact = exact_hessian.exact_hvp(exact_row(z), s, v[n])
        assert row_error(product[n], exact) <= 1e-15
    mean = np.sum(sm.probabilities * v, axis=1, keepdims=True)
    naive = targets.q.sum(axis=1, keepdims=True) / targets.divisor * sm.probabilities * (v - mean)
    assert np.max(np.abs(naive - product)) > 1e-6 * np.max(np.abs(product))  # what it avoids


def test_float32_inputs_give_float32_outputs() -> None:
    logits, targets = _random_problem(5)
    sm = softmax(logits.astype(np.float32))
    q = targets.q.astype(np.float32)
    hessian = loss_hessian(sm, q, divisor=targets.divisor)
    product = hessian_vector_product(sm, q, np.ones_like(q), divisor=targets.divisor)
    assert hessian.dtype == np.float32
    assert product.dtype == np.float32
    reference = loss_hessian(softmax(logits), targets.q, divisor=targets.divisor)
    np.testing.assert_allclose(hessian, reference, atol=1e-6)


# ---------------------------------------------------------------- the numeric Hessian


def _numeric_case(kind: str) -> tuple[np.ndarray, Targets]:
    rng = np.random.default_rng(9)
    logits = rng.normal(0.0, 2.0, (5, 6))
    if kind == "saturated":
        logits[:, 0] += 40.0
    elif kind == "masked":
        logits[:, 2] = -np.inf
    elif kind == "large":
        logits *= 50.0
    labels = rng.integers(0, 6, 5)
    if kind == "masked":
        labels[labels == 2] = 0
    targets = index_targets(
        labels,
        6,
        weight=rng.uniform(0.5, 2.0, 6) * (np.arange(6) != 2 if kind == "masked" else 1),
        ignore_index=-100,
        label_smoothing=0.1,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    return logits, targets


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("kind", ["random", "saturated", "masked", "large"])
def test_numeric_hessian_passes_gradgradcheck_tolerance(method: Method, kind: str) -> None:
    logits, targets = _numeric_case(kind)
    sm = softmax(logits)
    analytic = loss_hessian(sm, targets.q, divisor=targets.divisor, exact_q=targets.exact_q)
    numeric = numeric_hessian(logits, targets.q, divisor=targets.divisor, method=method, sm=sm)
    assert numeric.values.shape == analytic.shape
    assert numeric.steps.h.shape == logits.shape
    agreement = compare(analytic, numeric.values, atol=GRADGRADCHECK_ATOL, rtol=GRADGRADCHECK_RTOL)
    assert agreement.passed, agreement.worst
    estimate = numeric.estimate()
    assert agreement.max_abs_error <= 10 * (estimate.truncation + estimate.rounding) + 1e-300


@pytest.mark.parametrize("method", list(Method))
def test_numeric_hessian_reaches_each_methods_accuracy(method: Method) -> None:
    logits, targets = _numeric_case("random")
    analytic = loss_hessian(softmax(logits), targets.q, divisor=targets.divisor)
    numeric = numeric_hessian(logits, targets.q, divisor=targets.divisor, method=method)
    ceiling = {
        Method.COMPLEX_STEP: 1e-14,
        Method.FIVE_POINT: 1e-11,
        Method.CENTRAL: 1e-9,
        Method.FORWARD: 1e-6,
    }[method]
    assert np.max(np.abs(numeric.values - analytic)) <= ceiling * np.max(np.abs(analytic))
    estimate = numeric.estimate()
    error = np.max(np.abs(numeric.values - analytic))
    if method is not Method.COMPLEX_STEP:  # an estimate, not a wild overstatement
        assert estimate.truncation + estimate.rounding <= 1e4 * max(error, 1e-300)


def test_numeric_hessian_uses_the_gradient_step_rules() -> None:
    logits, targets = _numeric_case("large")
    central = numeric_hessian(logits, targets.q)
    assert central.steps.scaled
    assert central.steps.rule.startswith("h = 6.06e-06·max(1, max z − min z of the row)")
    fixed = numeric_hessian(logits, targets.q, step=1e-4)
    assert not fixed.steps.scaled
    assert np.array_equal(fixed.steps.h, choose_steps(logits, Method.CENTRAL, 1e-4).h)
    assert np.array_equal(central.steps.h, choose_steps(logits, Method.CENTRAL, None).h)
    rows = numeric_hessian(logits, targets.q).errors
    assert rows.truncation.shape == (logits.shape[0],)


def test_a_wrong_hessian_fails_the_check() -> None:
    logits, targets = _numeric_case("random")
    analytic = loss_hessian(softmax(logits), targets.q, divisor=targets.divisor)
    numeric = numeric_hessian(logits, targets.q, divisor=targets.divisor)
    unscaled = softmax_jacobian(softmax(logits)) / targets.divisor  # Σq dropped
    assert compare(analytic, numeric.values, atol=1e-5, rtol=1e-3).passed
    assert not compare(unscaled, numeric.values, atol=1e-5, rtol=1e-3).passed


# ---------------------------------------------------------------- hypothesis

_logit = st.floats(-60.0, 60.0, allow_nan=False, allow_infinity=False)


@st.composite
def _problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    num_samples = draw(st.integers(1, 4))
    num_classes = draw(st.integers(1, 8))
    shape = (num_samples, num_classes)
    logits = draw(arrays(np.float64, shape, elements=_logit))
    gap = draw(st.sampled_from([0.0, 30.0, 400.0, 740.0]))
    logits[:, 0] += gap
    q = draw(arrays(np.float64, shape, elements=st.floats(0.0, 10.0)))
    v = draw(arrays(np.float64, shape, elements=st.floats(-1e6, 1e6)))
    divisor = draw(st.floats(0.1, 100.0))
    return logits, q, v, divisor


@settings(max_examples=150, deadline=None)
@given(_problems())
def test_properties_hold_for_any_problem(
    problem: tuple[np.ndarray, np.ndarray, np.ndarray, float],
) -> None:
    logits, q, v, divisor = problem
    sm = softmax(logits)
    hessian = loss_hessian(sm, q, divisor=divisor)
    assert np.array_equal(hessian, np.swapaxes(hessian, 1, 2))
    scale = q.sum(axis=1) / divisor
    expected = scale[:, None, None] * softmax_jacobian(sm)
    size = np.max(np.abs(hessian), axis=(1, 2), initial=0.0)
    floor = np.maximum(size, 2.0**-1022)[:, None, None]
    plain_error = 4 * np.abs(scale)[:, None, None] * 2.0**-1074  # s·J's subnormal rounding
    assert np.all(np.abs(hessian - expected) <= 1e-14 * floor + plain_error)
    for block, s in zip(hessian, scale, strict=True):
        ones = block @ np.ones(block.shape[0])
        assert np.all(np.abs(ones) <= 1e-14 * max(np.max(np.abs(block)), 1e-300))
        if s > 0 and block.shape[0] > 1:
            # LAPACK's eigenvalues of a subnormal block carry an absolute error of a few
            # subnormal spacings (-5e-324 for a positive semi-definite block of 3e-311)
            subnormal_error = block.shape[0] * 2.0**-1074
            smallest = np.linalg.eigvalsh(block)[0]
            assert smallest >= -1e-14 * np.max(np.abs(block)) - subnormal_error
    product = hessian_vector_product(sm, q, v, divisor=divisor)
    formed = np.einsum("nij,nj->ni", hessian, v)
    row_scale = np.max(np.abs(hessian), axis=(1, 2)) * np.max(np.abs(v), axis=1, initial=0.0)
    assert np.all(np.abs(product - formed) <= 1e-13 * row_scale[:, None] + 1e-300)


@settings(max_examples=40, deadline=None)
@given(_problems())
def test_hvp_matches_mpmath_for_any_problem(
    problem: tuple[np.ndarray, np.ndarray, np.ndarray, float],
) -> None:
    logits, q, v, divisor = problem
    product = hessian_vector_product(softmax(logits), q, v, divisor=divisor)
    with mp.workdps(60):
        for n, z in enumerate(logits):
            s = mp.fsum(mp.mpf(float(x)) for x in q[n]) / mp.mpf(divisor)
            exact = exact_hessian.exact_hvp(exact_row(z), s, v[n])
            assert row_error(product[n], exact) <= HVP_GUARANTEE


# ---------------------------------------------------------------- z-loss and soft-capping

LLM_OPTIONS = [(1e-2, None), (0.0, 4.0), (0.3, 2.5), (1e-4, 30.0)]
"""(z_loss, softcap) pairs: each option alone, both strong, and PaLM's λ with Gemma 2's c."""
LLM_GUARANTEE = 1e-10
"""Normwise relative error of each block against torch float64 autograd (issue 18.3)."""


def _llm_problem(
    reduction: Reduction, probability_labels: bool, *, mask: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Targets]:
    """Weights, smoothing 0.1 and (index labels) an ignored sample; optionally a masked class."""
    rng = np.random.default_rng(18)
    logits = rng.normal(0.0, 3.0, (6, 5))
    weight = rng.uniform(0.2, 2.0, 5)
    if mask:
        logits[1, 3] = -np.inf
        weight[3] = 0.0  # no target mass on the masked class
    if probability_labels:
        p = rng.dirichlet(np.ones(5), 6)
        targets = probability_targets(
            p, weight=weight, label_smoothing=0.1, reduction=reduction, dtype=np.float64
        )
        return logits, weight, p, targets
    labels = np.array([0, 4, -100, 2, 1, 0])
    targets = index_targets(
        labels,
        5,
        weight=weight,
        ignore_index=-100,
        label_smoothing=0.1,
        reduction=reduction,
        dtype=np.float64,
    )
    return logits, weight, labels, targets


def _liger_loss(
    label: np.ndarray,
    weight: np.ndarray,
    reduction: Reduction,
    z_loss: float,
    softcap: float | None,
) -> Any:
    """Liger-Kernel's formula in torch: F.cross_entropy of the capped logits plus λ·lse² per
    non-ignored position (for `mean` over their number); `none` summed (its blocks are those
    of each loss_n)."""
    torch = require_module("torch")
    functional = torch.nn.functional

    index = label.ndim == 1
    target = torch.tensor(label)
    options: dict[str, Any] = {"weight": torch.tensor(weight), "label_smoothing": 0.1}
    if index:
        options["ignore_index"] = -100
    active = (target != -100).double() if index else torch.ones(label.shape[0], dtype=torch.float64)

    def loss(z: Any) -> Any:
        capped = z if softcap is None else softcap * torch.tanh(z / softcap)
        ce = functional.cross_entropy(capped, target, reduction=str(reduction), **options)
        z_terms = z_loss * torch.logsumexp(capped, dim=1) ** 2 * active
        if reduction is Reduction.MEAN:
            return ce + z_terms.sum() / active.sum()
        return ce.sum() + z_terms.sum()

    return loss


def _llm_outputs(
    logits: np.ndarray, targets: Targets, z_loss: float, softcap: float | None, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, LogitTerms | None]:
    terms = logit_terms(targets, logits, z_loss=z_loss, softcap=softcap)
    capped = logits if softcap is None else softcap_logits(logits, softcap)
    sm = softmax(capped)
    options: dict[str, Any] = {
        "divisor": targets.divisor,
        "exact_q": targets.exact_q,
        "terms": terms,
    }
    hessian = loss_hessian(sm, targets.q, **options)
    product = hessian_vector_product(sm, targets.q, v, **options)
    return hessian, product, terms


def _normwise(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.linalg.norm(ours - theirs)) / max(float(np.linalg.norm(theirs)), 1e-300)


@pytest.mark.torch
@pytest.mark.parametrize(("z_loss", "softcap"), LLM_OPTIONS)
@pytest.mark.parametrize("reduction", list(Reduction))
@pytest.mark.parametrize("probability_labels", [False, True], ids=["index", "probability"])
def test_llm_options_equal_torch_autograd_hessian(
    reduction: Reduction, probability_labels: bool, z_loss: float, softcap: float | None
) -> None:
    torch = require_module("torch")
    logits, weight, label, targets = _llm_problem(reduction, probability_labels)
    loss = _liger_loss(label, weight, reduction, z_loss, softcap)
    v = np.random.default_rng(2).normal(size=logits.shape)
    hessian, product, _ = _llm_outputs(logits, targets, z_loss, softcap, v)
    full = torch.autograd.functional.hessian(loss, torch.tensor(logits)).numpy()
    num_samples = logits.shape[0]
    for n in range(num_samples):
        assert _normwise(hessian[n], full[n, :, n, :]) <= LLM_GUARANTEE, n
        for m in range(num_samples):  # still block-diagonal across samples
            if m != n:
                assert not full[n, :, m, :].any()
    assert np.array_equal(hessian, hessian.transpose(0, 2, 1))  # exactly symmetric
    _, torch_hvp = torch.autograd.functional.hvp(loss, torch.tensor(logits), torch.tensor(v))
    expected = torch_hvp.numpy()
    for n in range(num_samples):
        assert _normwise(product[n], expected[n]) <= LLM_GUARANTEE, n
    np.testing.assert_allclose(product, np.einsum("nij,nj->ni", hessian, v), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("z_loss", "softcap"), LLM_OPTIONS)
def test_llm_hvp_equals_the_formed_hessian_times_v_with_masks(
    z_loss: float, softcap: float | None
) -> None:
    logits, _, _, targets = _llm_problem(Reduction.MEAN, False, mask=True)
    rng = np.random.default_rng(7)
    for v in (
        rng.normal(size=logits.shape),
        np.ones_like(logits),
        1e200 * rng.normal(size=logits.shape),
    ):
        hessian, product, _ = _llm_outputs(logits, targets, z_loss, softcap, v)
        formed = np.einsum("nij,nj->ni", hessian, v)
        scale = np.max(np.abs(hessian), axis=(1, 2)) * np.max(np.abs(v), axis=1)
        assert np.all(np.abs(product - formed) <= 1e-14 * scale[:, None])
        assert not hessian[1, 3].any() and not hessian[1, :, 3].any()  # the masked class
        assert product[1, 3] == 0


def test_the_ignored_sample_keeps_a_zero_block_without_softcap_only() -> None:
    logits, _, _, targets = _llm_problem(Reduction.SUM, False)
    zero_loss, _, _ = _llm_outputs(logits, targets, 0.1, None, np.ones_like(logits))
    assert not zero_loss[2].any()  # ignored: no cross-entropy, no z-loss
    capped, _, _ = _llm_outputs(logits, targets, 0.1, 3.0, np.ones_like(logits))
    assert not capped[2].any()  # g_y = 0 there too, so s′ adds nothing


def test_without_options_the_terms_change_nothing() -> None:
    logits, _, _, targets = _llm_problem(Reduction.MEAN, False)
    assert logit_terms(targets, logits) is None
    assert LogitTerms().plain
    sm = softmax(logits)
    v = np.random.default_rng(3).normal(size=logits.shape)
    options: dict[str, Any] = {"divisor": targets.divisor, "exact_q": targets.exact_q}
    plain = loss_hessian(sm, targets.q, **options)
    assert np.array_equal(loss_hessian(sm, targets.q, **options, terms=LogitTerms()), plain)
    assert np.array_equal(
        hessian_vector_product(sm, targets.q, v, **options, terms=LogitTerms()),
        hessian_vector_product(sm, targets.q, v, **options),
    )


def test_the_z_loss_breaks_the_ones_null_vector_and_definiteness_follows_its_coefficient() -> None:
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(5), 4)
    targets = probability_targets(
        p, weight=None, label_smoothing=0.0, reduction=Reduction.SUM, dtype=np.float64
    )
    ones = np.ones(5)
    positive = rng.normal(0.0, 2.0, (4, 5)) + 3.0  # ℓ > 0: σ = S + 2λℓ > 0
    hessian, _, _ = _llm_outputs(positive, targets, 0.05, None, ones[None].repeat(4, 0))
    for block in hessian:
        assert ones @ block @ ones == pytest.approx(2 * 0.05, rel=1e-12)  # 1ᵀH1 = 2w
        assert np.linalg.eigvalsh(block).min() > 0  # positive definite
    negative = rng.normal(0.0, 0.5, (4, 5)) - 40.0  # ℓ ≈ −38: σ = 1 + 2λℓ < 0
    hessian, _, _ = _llm_outputs(negative, targets, 0.05, None, ones[None].repeat(4, 0))
    for block in hessian:
        eigenvalues = np.linalg.eigvalsh(block)
        assert eigenvalues.min() < 0 < eigenvalues.max()  # indefinite


def test_the_softcap_makes_the_hessian_indefinite() -> None:
    logits, _, _, targets = _llm_problem(Reduction.SUM, True)
    logits = 3 * logits  # deep in the cap: large |s′|
    hessian, _, _ = _llm_outputs(logits, targets, 0.0, 2.0, np.ones_like(logits))
    plain, _, _ = _llm_outputs(logits, targets, 0.0, None, np.ones_like(logits))
    assert all(np.linalg.eigvalsh(block).min() >= -1e-15 for block in plain)
    assert any(np.linalg.eigvalsh(block).min() < -1e-3 for block in hessian)


def test_float32_llm_terms_give_float32_outputs() -> None:
    logits, _, _, targets = _llm_problem(Reduction.MEAN, True)
    small = logits.astype(np.float32)
    terms = logit_terms(targets, small, z_loss=1e-2, softcap=4.0)
    sm = softmax(softcap_logits(small, 4.0))
    q = targets.q.astype(np.float32)
    hessian = loss_hessian(sm, q, divisor=targets.divisor, terms=terms)
    product = hessian_vector_product(sm, q, np.ones_like(q), divisor=targets.divisor, terms=terms)
    assert hessian.dtype == np.float32 and product.dtype == np.float32
    reference, _, _ = _llm_outputs(logits, targets, 1e-2, 4.0, np.ones_like(logits))
    np.testing.assert_allclose(hessian, reference, atol=1e-6)


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize(("z_loss", "softcap"), LLM_OPTIONS)
@pytest.mark.parametrize("kind", ["random", "masked", "large"])
def test_numeric_hessian_with_llm_options_passes_gradgradcheck_tolerance(
    method: Method, z_loss: float, softcap: float | None, kind: str
) -> None:
    logits, _, _, targets = _llm_problem(Reduction.MEAN, False, mask=kind == "masked")
    if kind == "large":
        logits = 20 * logits
    terms = logit_terms(targets, logits, z_loss=z_loss, softcap=softcap)
    capped = logits if softcap is None else softcap_logits(logits, softcap)
    sm = softmax(capped)
    options: dict[str, Any] = {"divisor": targets.divisor, "terms": terms}
    analytic = loss_hessian(sm, targets.q, exact_q=targets.exact_q, **options)
    numeric = numeric_hessian(logits, targets.q, method=method, sm=sm, **options)
    agreement = compare(analytic, numeric.values, atol=GRADGRADCHECK_ATOL, rtol=GRADGRADCHECK_RTOL)
    assert agreement.passed, agreement.worst
    estimate = numeric.estimate()
    assert agreement.max_abs_error <= 10 * (estimate.truncation + estimate.rounding) + 1e-300
    ceiling = {
        Method.COMPLEX_STEP: 1e-14,
        Method.FIVE_POINT: 1e-10,
        Method.CENTRAL: 1e-8,
        Method.FORWARD: 1e-5,
    }[method]
    assert agreement.max_abs_error <= ceiling * np.max(np.abs(analytic))


@pytest.mark.parametrize(("z_loss", "softcap"), [(0.3, None), (0.0, 2.5), (0.3, 2.5)])
def test_the_numeric_check_sees_a_hessian_without_the_llm_terms(
    z_loss: float, softcap: float | None
) -> None:
    logits, _, _, targets = _llm_problem(Reduction.SUM, False)
    capped = logits if softcap is None else softcap_logits(logits, softcap)
    sm = softmax(capped)
    terms = logit_terms(targets, logits, z_loss=z_loss, softcap=softcap)
    numeric = numeric_hessian(logits, targets.q, sm=sm, terms=terms)
    right = loss_hessian(sm, targets.q, exact_q=targets.exact_q, terms=terms)
    without = loss_hessian(sm, targets.q, exact_q=targets.exact_q)
    assert compare(right, numeric.values, atol=1e-5, rtol=1e-3).passed
    assert not compare(without, numeric.values, atol=1e-5, rtol=1e-3).passed


@pytest.mark.parametrize(("z_loss", "softcap"), LLM_OPTIONS)
def test_analyse_cross_entropy_returns_the_llm_second_order_outputs(
    z_loss: float, softcap: float | None
) -> None:
    from app.numerics.gradcheck import NumericOptions, Output, analyse_cross_entropy

    logits, _, _, targets = _llm_problem(Reduction.MEAN, False)
    v = np.random.default_rng(5).normal(size=logits.shape)
    include = frozenset({Output.HESSIAN, Output.NUMERIC_HESSIAN, Output.HESSIAN_VECTOR_PRODUCT})
    report = analyse_cross_entropy(
        logits,
        targets,
        Reduction.MEAN,
        include,
        NumericOptions(Method.COMPLEX_STEP),
        z_loss=z_loss,
        softcap=softcap,
        vector=v,
    )
    hessian, product, _ = _llm_outputs(logits, targets, z_loss, softcap, v)
    assert report.hessian is not None and np.array_equal(report.hessian, hessian)
    assert report.hessian_vector_product is not None
    assert np.array_equal(report.hessian_vector_product, product)
    assert report.hessian_check is not None and report.hessian_check.agreement.passed
