"""z-loss and logit soft-capping (issue 18): exact against mpmath, equal to PyTorch float64
autograd of the same formula, checked by the numeric gradient, stacked bit for bit; and the
directional numeric check."""

import re
from typing import Any

import numpy as np
import pytest

from app.numerics.batch import analyse_cross_entropy_batch
from app.numerics.cross_entropy import Reduction, index_targets, probability_targets
from app.numerics.directional import (
    DirectionSteps,
    directional_check,
    directions_of,
    numeric_gradient_evaluations,
    prefer_directions,
)
from app.numerics.finite_diff import LossColumns, Method, plain_losses
from app.numerics.gradcheck import (
    SECOND_ORDER,
    LossProblem,
    NumericOptions,
    Output,
    Report,
    analyse_problem,
)
from tests.helpers import require_module
from tests.numerics.llm_reference import LlmCase, llm_cases, measure_llm
from tests.numerics.test_batch import assert_identical

GUARANTEE = 1e-13
SOFTCAP_GRADIENT_GUARANTEE = 1e-12
"""Under a softcap the capped logits carry one rounding (≤ ~eps·c absolute), which a gradient
row that partly cancels amplifies a little."""
QUICK = llm_cases("quick")
EVERY_OUTPUT = frozenset(Output) - SECOND_ORDER


def _id(item: LlmCase) -> str:
    return re.sub(r"[^\w.=-]+", "_", item.name())


@pytest.mark.parametrize("item", QUICK, ids=[_id(item) for item in QUICK])
def test_z_loss_and_softcap_are_exact_against_mpmath(item: LlmCase) -> None:
    errors = measure_llm(item)
    for output, error in errors.items():
        bound = GUARANTEE
        if output == "gradient" and item.softcap is not None:
            bound = SOFTCAP_GRADIENT_GUARANTEE
        assert error <= bound, f"{output}: {error:.3g}"


def test_the_cases_cover_every_option() -> None:
    assert {(item.z_loss, item.softcap) for item in QUICK} == {
        (1e-4, None),
        (0.0, 30.0),
        (1e-4, 30.0),
        (0.5, 2.0),
    }
    assert {item.case.reduction for item in QUICK if item.z_loss} == set(Reduction)
    assert any(
        item.z_loss
        and item.case.labels is not None
        and (item.case.labels == item.case.ignore_index).any()
        for item in QUICK
    )


# ---------------------------------------------------------------- PyTorch


def _problem(
    reduction: Reduction,
    *,
    probabilities: bool = False,
    z_loss: float = 1e-2,
    softcap: float | None = 4.0,
    seed: int = 3,
    mask: bool = True,
) -> tuple[LossProblem, dict[str, Any]]:
    """Weights (one 0), smoothing 0.1, two ignored samples (index labels) and, with `mask`,
    a −inf logit (PyTorch answers NaN for smoothing over a −inf logit, even of weight 0)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 5.0, (7, 6))
    if mask:
        logits[2, 4] = -np.inf
    weight = rng.uniform(0.2, 2.0, 6)
    weight[4] = 0.0
    smoothing = 0.1
    if probabilities:
        p = rng.dirichlet(np.ones(6), 7)
        p[:, 4] = 0.0
        targets = probability_targets(
            p, weight=weight, label_smoothing=smoothing, reduction=reduction, dtype=np.float64
        )
        labels: np.ndarray = p
    else:
        labels = rng.integers(0, 4, 7)
        labels[[1, 5]] = -100
        targets = index_targets(
            labels,
            6,
            weight=weight,
            ignore_index=-100,
            label_smoothing=smoothing,
            reduction=reduction,
            dtype=np.float64,
        )
    problem = LossProblem(logits, targets, reduction, z_loss, softcap)
    return problem, {"labels": labels, "weight": weight, "smoothing": smoothing}


def _torch_outputs(problem: LossProblem, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Liger-Kernel's reference formula in torch float64, differentiated by autograd."""
    torch = require_module("torch")
    functional = torch.nn.functional
    z = torch.tensor(problem.logits, dtype=torch.float64, requires_grad=True)
    capped = z if problem.softcap is None else problem.softcap * torch.tanh(z / problem.softcap)
    weight = torch.tensor(inputs["weight"], dtype=torch.float64)
    labels = inputs["labels"]
    index = labels.ndim == 1
    target = torch.tensor(labels, dtype=torch.int64 if index else torch.float64)
    options = {"weight": weight, "label_smoothing": inputs["smoothing"]}
    if index:
        options["ignore_index"] = -100
    reduction = str(problem.reduction)
    ce = functional.cross_entropy(capped, target, reduction=reduction, **options)
    ce_each = functional.cross_entropy(capped, target, reduction="none", **options)
    lse = torch.logsumexp(capped, dim=1)
    active = (
        torch.tensor(labels != -100, dtype=torch.float64)
        if index
        else torch.ones(labels.shape[0], dtype=torch.float64)
    )
    z_each = problem.z_loss * lse**2 * active
    losses = ce_each + z_each
    if reduction == "mean":
        loss = ce + z_each.sum() / active.sum()
    elif reduction == "sum":
        loss = ce + z_each.sum()
    else:
        loss = losses
    (gradient,) = torch.autograd.grad(loss.sum(), z)

    def probabilities_of(raw: Any) -> Any:
        capped_row = (
            raw if problem.softcap is None else problem.softcap * torch.tanh(raw / problem.softcap)
        )
        return torch.softmax(capped_row, dim=-1)

    jacobian = torch.func.vmap(torch.func.jacrev(probabilities_of))(z.detach())
    return {
        "loss": loss.detach().numpy(),
        "losses": losses.detach().numpy(),
        "gradient": np.nan_to_num(gradient.numpy()),
        "jacobian": np.nan_to_num(jacobian.numpy()),
    }


@pytest.mark.torch
@pytest.mark.parametrize("reduction", list(Reduction))
@pytest.mark.parametrize("probabilities", [False, True], ids=["index", "probability"])
@pytest.mark.parametrize(("z_loss", "softcap"), [(1e-2, None), (0.0, 4.0), (1e-2, 4.0)])
def test_matches_torch_float64_autograd_of_the_same_formula(
    reduction: Reduction, probabilities: bool, z_loss: float, softcap: float | None
) -> None:
    problem, inputs = _problem(
        reduction, probabilities=probabilities, z_loss=z_loss, softcap=softcap, mask=False
    )
    theirs = _torch_outputs(problem, inputs)
    report = analyse_problem(problem, frozenset({Output.JACOBIAN}))
    ours = {
        "loss": report.loss,
        "losses": report.losses,
        "gradient": report.gradient,
        "jacobian": report.jacobian,
    }
    for name, value in ours.items():
        assert value is not None
        mine = np.asarray(value)
        other = theirs[name]
        assert mine.shape == other.shape, name
        error = np.max(np.abs(mine - other)) / max(np.max(np.abs(other)), 1e-300)
        assert error <= 1e-10, f"{name}: {error:.3g}"


# ---------------------------------------------------------------- numeric checks, batching


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("reduction", list(Reduction))
def test_the_numeric_gradient_and_jacobian_include_z_loss_and_softcap(
    method: Method, reduction: Reduction
) -> None:
    problem, _ = _problem(reduction)
    report = analyse_problem(problem, EVERY_OUTPUT, NumericOptions(method))
    assert report.gradient_check is not None and report.jacobian_check is not None
    assert report.gradient_check.agreement.passed, report.gradient_check.message()
    assert report.jacobian_check.agreement.passed, report.jacobian_check.message()


def test_a_gradient_without_the_softcap_or_the_z_loss_fails_the_check() -> None:
    problem, _ = _problem(Reduction.SUM, z_loss=0.3, softcap=3.0)
    right = analyse_problem(problem, frozenset({Output.NUMERIC_GRADIENT}))
    assert right.gradient_check is not None and right.gradient_check.agreement.passed
    assert right.numeric_gradient is not None
    for wrong_problem in (
        LossProblem(problem.logits, problem.targets, problem.reduction, 0.3, None),
        LossProblem(problem.logits, problem.targets, problem.reduction, 0.0, 3.0),
    ):
        wrong = analyse_problem(wrong_problem, frozenset({Output.GRADIENT}))
        assert wrong.gradient is not None
        assert not np.allclose(wrong.gradient, right.numeric_gradient, atol=1e-5, rtol=1e-3)


def test_loss_columns_equal_the_whole_modified_loss() -> None:
    problem, _ = _problem(Reduction.NONE, z_loss=0.2, softcap=3.0)
    z, q = problem.logits, problem.targets.q
    weights = problem.targets.z_weights(0.2)
    columns = LossColumns(z, q, z_weights=weights, softcap=3.0)
    base = np.asarray(plain_losses(z, q, z_weights=weights, softcap=3.0), float)
    for j in range(z.shape[1]):
        moved = z.copy()
        moved[:, j] += 0.37
        whole = np.asarray(plain_losses(moved, q, z_weights=weights, softcap=3.0), float) - base
        # LossColumns leaves out λ·ℓ² of the unperturbed row (and the rest is unchanged)
        unperturbed = columns(np.array([j]), z[:, j].reshape(1, 1, -1))[0, 0]
        mine = np.asarray(columns(np.array([j]), moved[:, j].reshape(1, 1, -1))[0, 0], float)
        mine = mine - np.asarray(unperturbed, float)
        np.testing.assert_allclose(mine, np.where(np.isnan(whole), 0, whole), atol=1e-12)


def test_problems_with_z_loss_and_softcap_stacked_match_their_lone_reports() -> None:
    problems = [_problem(reduction, seed=seed)[0] for seed, reduction in enumerate(Reduction)]
    problems += [_problem(Reduction.MEAN, probabilities=True, seed=9)[0]]
    other, _ = _problem(Reduction.SUM, z_loss=0.0, softcap=None, seed=4)
    problems.append(other)  # a different (z_loss, softcap): computed in its own pass
    for method in (Method.CENTRAL, Method.COMPLEX_STEP):
        numeric = NumericOptions(method)
        together = analyse_cross_entropy_batch(problems, EVERY_OUTPUT, numeric)
        for problem, report in zip(problems, together, strict=True):
            assert isinstance(report, Report)
            assert_identical(report, analyse_problem(problem, EVERY_OUTPUT, numeric))
            if problem.softcap is not None:
                assert report.logit_slope is not None


def test_softcap_keeps_masks_and_its_slope_does_not_cancel() -> None:
    from app.numerics.cross_entropy import softcap_logits, softcap_slope

    z = np.array([[-np.inf, 0.0, 30.0, 600.0, -900.0]])
    assert softcap_logits(z, 30.0)[0, 0] == -np.inf
    slope = softcap_slope(z, 30.0)[0]
    assert slope[0] == 0.0 and slope[1] == 1.0
    assert slope[2] == pytest.approx(1 / np.cosh(1.0) ** 2, rel=1e-15)
    assert slope[3] == pytest.approx(4 * np.exp(-40.0), rel=1e-14)  # 1 − tanh² would give 0
    assert slope[4] == pytest.approx(4 * np.exp(-60.0), rel=1e-14)


# ---------------------------------------------------------------- directional check


@pytest.mark.parametrize("method", list(Method))
def test_directional_check_passes_a_right_gradient(method: Method) -> None:
    problem, _ = _problem(Reduction.MEAN)
    report = analyse_problem(problem, frozenset({Output.GRADIENT}))
    assert report.gradient is not None
    result = directional_check(problem, report.gradient, 5, NumericOptions(method))
    assert result.check.directions == 5
    assert result.numeric.shape == result.analytic.shape == (5,)
    assert result.check.agreement.passed, result.check.message()
    ceiling = {
        Method.COMPLEX_STEP: 1e-13,
        Method.FIVE_POINT: 1e-10,
        Method.CENTRAL: 1e-8,
        Method.FORWARD: 1e-4,
    }
    scale = np.max(np.abs(result.analytic))
    assert np.max(np.abs(result.numeric - result.analytic)) <= ceiling[method] * scale
    assert isinstance(result.check.steps, DirectionSteps)
    assert "direction" in result.check.steps.rule and "direction" in result.check.message()
    estimate = result.check.estimate
    error = result.check.agreement.max_abs_error
    assert error <= 10 * (estimate.truncation + estimate.rounding) + 1e-300


def test_directional_check_fails_a_gradient_without_the_softcap() -> None:
    problem, _ = _problem(Reduction.SUM, z_loss=0.0, softcap=3.0)
    uncapped = LossProblem(problem.logits, problem.targets, problem.reduction)
    wrong = analyse_problem(uncapped, frozenset({Output.GRADIENT})).gradient
    assert wrong is not None
    result = directional_check(problem, wrong, 4)
    assert not result.check.agreement.passed
    assert result.check.message().startswith("failed: ")


def test_directions_are_seeded_unit_and_skip_masks() -> None:
    problem, _ = _problem(Reduction.MEAN)
    gradient = analyse_problem(problem, frozenset({Output.GRADIENT})).gradient
    assert gradient is not None
    first = directional_check(problem, gradient, 3, seed=7)
    again = directional_check(problem, gradient, 3, seed=7)
    other = directional_check(problem, gradient, 3, seed=8)
    np.testing.assert_array_equal(first.numeric, again.numeric)
    np.testing.assert_array_equal(first.analytic, again.analytic)
    assert not np.array_equal(first.analytic, other.analytic)
    masked = np.isneginf(problem.logits)
    vs = list(directions_of(problem.logits.shape, masked, 3, 7))
    expected = np.random.default_rng(7).standard_normal(problem.logits.shape, dtype=np.float32)
    expected = expected.astype(np.float64)
    expected[masked] = 0
    np.testing.assert_allclose(vs[0], expected / np.linalg.norm(expected), rtol=1e-15)
    for v in vs:
        assert np.linalg.norm(v) == pytest.approx(1.0, rel=1e-15)
        assert (v[masked] == 0).all()


def test_directional_check_on_large_logits_follows_the_row_scale() -> None:
    logits = np.array([[3e5, 3e5 + 1e-3], [3e5 + 1.0, 3e5]])
    targets = index_targets(
        np.array([0, 1]),
        2,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.SUM,
        dtype=np.float64,
    )
    problem = LossProblem(logits, targets, Reduction.SUM, 1e-4)
    gradient = analyse_problem(problem, frozenset({Output.GRADIENT})).gradient
    assert gradient is not None
    result = directional_check(problem, gradient, 4)
    error = np.abs(result.numeric - result.analytic) / np.abs(result.analytic)
    assert error.max() <= 1e-6


def test_the_cost_rule_prefers_directions_beyond_the_limit() -> None:
    assert numeric_gradient_evaluations(256, 32_000, Method.CENTRAL) == 2 * 256 * 32_000
    assert numeric_gradient_evaluations(4, 10, Method.COMPLEX_STEP) == 40
    assert prefer_directions(256, 32_000, Method.CENTRAL, limit=10_000_000)
    assert not prefer_directions(64, 1000, Method.CENTRAL, limit=10_000_000)
