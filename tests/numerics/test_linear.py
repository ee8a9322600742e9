"""Linear cross-entropy (app/numerics/linear.py) against independent references: torch float64
`F.linear_cross_entropy` on torch's own test inputs (OpInfo samples of its three variants and
`nn.LinearCrossEntropyLoss`'s module inputs), mpmath at 60 digits on dot products that cancel,
the HF causal-LM loss written out, and hypothesis properties of the head."""

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accuracy import linear as accuracy_linear
from app.numerics import linear
from app.numerics.cross_entropy import Reduction
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import LossRows, NumericOptions
from app.numerics.linear import (
    LinearOutput,
    LinearProblem,
    head_of,
    linear_directional_check,
    logit_error_bound,
)
from tests.helpers import optional_module, require_module

torch = optional_module("torch")
methods = optional_module("torch.testing._internal.common_methods_invocations")
modules = optional_module("torch.testing._internal.common_modules")

RTOL_NORMWISE = 1e-10
GRADCHECK_ATOL, GRADCHECK_RTOL = 1e-5, 1e-3
ALL = frozenset(LinearOutput)


def analyse_all(problem: LinearProblem) -> Any:
    """Every output of `problem` (typed Any: the tests read the optional arrays directly)."""
    return linear.analyse_linear(problem, ALL)


SAMPLE_COUNTS = {"": 119, "chunked": 133, "chunked_none": 77}
"""torch 2.13's OpInfo samples of nn.functional.linear_cross_entropy in float64, by variant."""


def require_torch() -> None:
    require_module("torch.testing._internal.common_methods_invocations")


def normwise_error(got: Any, expected: Any) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(float(np.linalg.norm(expected)), 1e-300)
    return float(np.linalg.norm(got - expected)) / scale


Sample = tuple[Any, Any, Any, Any, dict[str, Any]]


def op_samples(variant: str) -> Iterator[Sample]:
    """(input, linear_weight, target, linear_bias, cross-entropy options) of an OpInfo variant."""
    (op,) = [
        o
        for o in methods.op_db
        if o.name == "nn.functional.linear_cross_entropy" and o.variant_test_name == variant
    ]
    for sample in op.sample_inputs("cpu", torch.float64, requires_grad=True):
        options = dict(sample.kwargs)
        bias = options.pop("linear_bias", None)
        options.pop("options", None)
        yield sample.input, sample.args[0], sample.args[1], bias, options


def module_samples() -> Iterator[Sample]:
    """The module inputs of nn.LinearCrossEntropyLoss, its parameters as (C, d1…dK, d)."""
    (info,) = [m for m in modules.module_db if m.module_cls is torch.nn.LinearCrossEntropyLoss]
    for module_input in info.module_inputs_func(
        info, device="cpu", dtype=torch.float64, requires_grad=True, training=True
    ):
        args = module_input.constructor_input.args
        kwargs = dict(module_input.constructor_input.kwargs)
        module = torch.nn.LinearCrossEntropyLoss(*args, **kwargs)
        in_features, classes = args
        out = tuple(kwargs.get("out_features", ()))
        weight = module.linear.weight.detach().reshape(classes, *out, in_features)
        bias = None
        if module.linear.bias is not None:
            bias = module.linear.bias.detach().reshape(classes, *out)
        options = {
            name: kwargs[name]
            for name in ("weight", "reduction", "ignore_index", "label_smoothing")
            if name in kwargs
        }
        inputs = module_input.forward_input.args
        yield inputs[0], weight, inputs[1], bias, options


def ours(sample: Sample, include: frozenset[LinearOutput] = ALL) -> Any:
    x, w, target, bias, options = sample
    weight = options.get("weight")
    ignore_index = options.get("ignore_index")
    problem = LinearProblem(
        input=x.detach().numpy(),
        linear_weight=w.detach().numpy(),
        labels=target.detach().numpy(),
        linear_bias=None if bias is None else bias.detach().numpy(),
        weight=None if weight is None else weight.detach().numpy(),
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=options.get("label_smoothing", 0.0),
        reduction=Reduction(options.get("reduction", "mean")),
    )
    return linear.analyse_linear(problem, include)


def torch_reference(sample: Sample) -> tuple[Any, list[Any]]:
    """torch's loss and its gradients by input, weight and bias (None without a bias)."""
    x, w, target, bias, options = sample
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w)]
    b = None if bias is None else bias.detach().clone().requires_grad_(True)
    kwargs = {k: v for k, v in options.items() if not (k == "ignore_index" and v is None)}
    loss = torch.nn.functional.linear_cross_entropy(
        leaves[0], leaves[1], target, linear_bias=b, **kwargs
    )
    if not torch.isfinite(loss).all():
        return loss, []
    grads = torch.autograd.grad(loss.sum(), [*leaves, *([] if b is None else [b])])
    return loss.detach(), [*grads, *([None] if b is None else [])]


def check_sample(sample: Sample, directions: int) -> bool:
    """Compare one sample with torch (False when torch's loss is not finite and ours refused)."""
    loss, grads = torch_reference(sample)
    if not grads:
        with pytest.raises(InvalidProblem, match="reduction 'mean' divides"):
            ours(sample)
        return False
    report = ours(sample)
    assert report.loss.shape == tuple(loss.shape)
    assert normwise_error(report.loss, loss) <= RTOL_NORMWISE
    assert normwise_error(report.input_gradient, grads[0]) <= RTOL_NORMWISE
    assert normwise_error(report.linear_weight_gradient, grads[1]) <= RTOL_NORMWISE
    if grads[2] is not None:
        assert normwise_error(report.linear_bias_gradient, grads[2]) <= RTOL_NORMWISE
    x, w, _, bias, _ = sample
    logits = torch.nn.functional.linear(x.detach(), w.detach().reshape(-1, w.shape[-1]))
    if bias is not None:
        logits = logits + bias.detach().reshape(-1)
    shaped = logits.reshape(*x.shape[:-1], w.shape[0], *w.shape[1:-1])
    assert normwise_error(report.logits, shaped) <= RTOL_NORMWISE
    check = linear_directional_check(report, directions)
    torch_directional = np.empty(directions)  # ⟨torch's gradients, v⟩ of each direction
    for v_index, v in enumerate(linear.head_directions(report.head, directions, check.seed)):
        parts = [
            float(np.sum(grads[0].numpy().reshape(v.input.shape) * v.input)),
            float(np.sum(grads[1].numpy().reshape(v.weight.shape) * v.weight)),
        ]
        if v.bias is not None and grads[2] is not None:
            parts.append(float(np.sum(grads[2].numpy().reshape(-1) * v.bias)))
        torch_directional[v_index] = math.fsum(parts)
    bound = GRADCHECK_ATOL + GRADCHECK_RTOL * np.abs(torch_directional)
    assert np.all(np.abs(check.numeric - torch_directional) <= bound)
    assert check.check.agreement.passed
    return True


@pytest.mark.torch
@pytest.mark.parametrize("variant", sorted(SAMPLE_COUNTS))
def test_torch_opinfo_samples_match_torch_float64(variant: str) -> None:
    require_torch()
    torch.manual_seed(0)
    seen = answered = 0
    for sample in op_samples(variant):
        seen += 1
        answered += check_sample(sample, directions=2)
    assert seen == SAMPLE_COUNTS[variant]
    assert answered >= seen - 8, (answered, seen)


@pytest.mark.torch
def test_torch_module_inputs_match_torch_float64() -> None:
    require_torch()
    torch.manual_seed(0)
    seen = answered = 0
    for sample in module_samples():
        seen += 1
        answered += check_sample(sample, directions=1)
    assert seen >= 800 and answered >= seen - 60, (seen, answered)


# ----- blocks, options of LM training -----------------------------------------------------------


def random_problem(
    seed: int, n: int = 200, d: int = 6, c: int = 7, **options: Any
) -> LinearProblem:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    labels[rng.random(n) < 0.2] = -100
    return LinearProblem(
        input=rng.normal(size=(n, d)),
        linear_weight=rng.normal(size=(c, d)),
        labels=labels,
        linear_bias=rng.normal(size=c),
        **options,
    )


def test_blocks_give_the_numbers_of_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(1, z_loss=1e-2, softcap=4.0, label_smoothing=0.05)
    whole = analyse_all(problem)
    blocks: list[int] = []
    original = LossRows.of

    def counting(logits: Any, *args: Any, **kwargs: Any) -> LossRows:
        blocks.append(logits.shape[0])
        return original(logits, *args, **kwargs)

    monkeypatch.setattr(linear, "BLOCK_LOGITS", 1)
    monkeypatch.setattr(LossRows, "of", counting)
    blocked = analyse_all(problem)
    assert blocks == [64, 64, 64, 8]  # MIN_BLOCK_ROWS samples at a time
    np.testing.assert_array_equal(blocked.losses, whole.losses)
    np.testing.assert_array_equal(blocked.input_gradient, whole.input_gradient)
    assert blocked.loss == whole.loss
    for name in ("linear_weight_gradient", "linear_bias_gradient"):
        np.testing.assert_allclose(
            getattr(blocked, name), getattr(whole, name), rtol=1e-14, atol=1e-17
        )


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_causal_shift_is_hf_causal_lm_loss(reduction: str) -> None:
    require_torch()
    rng = np.random.default_rng(3)
    b, t, d, c = 3, 5, 4, 6
    x = rng.normal(size=(b, t, d))
    w, bias = rng.normal(size=(c, d)), rng.normal(size=c)
    labels = rng.integers(0, c, size=(b, t))
    labels[1, 2] = -100
    problem = LinearProblem(x, w, labels, bias, reduction=Reduction(reduction), causal_shift=True)
    report = analyse_all(problem)
    tx = torch.tensor(x, requires_grad=True)
    logits = torch.nn.functional.linear(tx, torch.tensor(w), torch.tensor(bias))
    shift_logits = logits[:, :-1, :].reshape(-1, c)  # HF: logits[..., :-1, :], labels[..., 1:]
    shift_labels = torch.tensor(labels)[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), [tx])
    assert report.input_gradient.shape == (b, t, d)
    assert report.losses.shape == (b, t) and np.all(report.losses[:, -1] == 0)
    assert report.logits.shape == (b, t, c)
    if reduction == "none":
        np.testing.assert_allclose(report.loss[:, :-1].ravel(), loss.detach(), rtol=1e-13)
    else:
        np.testing.assert_allclose(report.loss, loss.detach(), rtol=1e-13)
    np.testing.assert_allclose(report.input_gradient, grad, rtol=1e-12, atol=1e-16)


def test_denominator_replaces_the_mean_divisor() -> None:
    summed = analyse_all(random_problem(4, reduction=Reduction.SUM))
    shared = analyse_all(random_problem(4, denominator=1000.0))
    assert float(shared.loss) == pytest.approx(float(summed.loss) / 1000, rel=1e-15)
    np.testing.assert_allclose(
        shared.input_gradient, summed.input_gradient / 1000, rtol=1e-13, atol=1e-18
    )
    halves = [
        analyse_all(replace_rows(random_problem(4, denominator=1000.0), part))
        for part in (slice(0, 77), slice(77, 200))
    ]  # micro-batches with the global count: their losses add up to the step's mean
    assert math.fsum(float(h.loss) for h in halves) == pytest.approx(float(shared.loss), rel=1e-14)
    with pytest.raises(InvalidProblem, match="reduction 'mean' only"):
        head_of(random_problem(4, reduction=Reduction.SUM, denominator=3.0))


def replace_rows(problem: LinearProblem, part: slice) -> LinearProblem:
    return replace(problem, input=problem.input[part], labels=np.asarray(problem.labels)[part])


@pytest.mark.torch
def test_z_loss_and_softcap_are_liger_kernels_reference() -> None:
    require_torch()
    problem = random_problem(5, n=40, z_loss=1e-3, softcap=2.5)
    report = analyse_all(problem)
    tx = torch.tensor(problem.input, requires_grad=True)
    tw = torch.tensor(problem.linear_weight, requires_grad=True)
    z = torch.nn.functional.linear(tx, tw, torch.tensor(problem.linear_bias))
    capped = 2.5 * torch.tanh(z / 2.5)
    labels = torch.tensor(problem.labels)
    kept = labels != -100
    lse = torch.logsumexp(capped, dim=1)
    loss = torch.nn.functional.cross_entropy(capped, labels) + 1e-3 * (lse[kept] ** 2).mean()
    gx, gw = torch.autograd.grad(loss, [tx, tw])
    assert float(report.loss) == pytest.approx(float(loss.detach()), rel=1e-13)
    assert normwise_error(report.input_gradient, gx) <= 1e-12
    assert normwise_error(report.linear_weight_gradient, gw) <= 1e-12


def test_refusals_name_the_field() -> None:
    problem = random_problem(6, n=10)
    cases = [
        (replace(problem, input=np.zeros((10, 5))), ("input",)),
        (replace(problem, input=np.zeros((1, 10, 6))), ("input",)),  # (B, T, d): causal only
        (replace(problem, linear_bias=np.zeros(3)), ("linear_bias",)),
        (replace(problem, labels=np.full(10, 9)), ("labels", 0)),
        (replace(problem, labels=np.zeros((10, 2), np.int64)), ("labels",)),
        (replace(problem, input=np.full((10, 6), 1e200)), ("input", 0)),
    ]
    for bad, location in cases:
        with pytest.raises(InvalidProblem) as caught:
            analyse_all(bad)
        assert caught.value.location == location, caught.value.message


# ----- accuracy against mpmath: dot products that cancel ---------------------------------------


def exact_problem(seed: int) -> tuple[LinearProblem, list[list[Any]]]:
    """A head whose logits cancel: x·W_c of terms ~1e8 adding to ~1, and the exact logits."""
    rng = np.random.default_rng(seed)
    n, d, c = 5, 8, 4
    x = rng.normal(size=(n, d)) * 1e4
    w = rng.normal(size=(c, d)) * 1e4
    x[:, -1] = 1.0
    w[:, -1] = -np.round(x[0, :-1] @ w[:, :-1].T)  # the last feature cancels row 0 to O(1)
    mp.mp.dps = 60
    exact = [
        [
            mp.fsum(mp.mpf(float(x[i, j])) * mp.mpf(float(w[k, j])) for j in range(d))
            for k in range(c)
        ]
        for i in range(n)
    ]
    return LinearProblem(x, w, rng.integers(0, c, size=n), reduction=Reduction.SUM), exact


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_and_loss_within_the_matmul_bound_against_mpmath(seed: int) -> None:
    problem, exact = exact_problem(seed)
    report = analyse_all(problem)
    head = head_of(problem)
    bound = logit_error_bound(head, slice(0, head.samples))
    error = np.abs(
        np.array([[float(report.logits[i, k] - exact[i][k]) for k in range(4)] for i in range(5)])
    )
    assert np.all(error <= bound)
    assert np.max(np.abs(report.logits[0])) < 1e5 < np.max(bound[0]) / 1e-16  # row 0 cancels
    losses = []
    for i, row in enumerate(exact):
        top = max(row)
        total = mp.log(mp.fsum(mp.exp(v - top) for v in row)) + top
        losses.append(total - row[int(problem.labels[i])])
    exact_loss = float(mp.fsum(losses))
    allowed = float(np.sum(np.max(bound, axis=1))) * 2 + 1e-15 * abs(
        exact_loss
    )  # Σq·max|δ|, both ways
    assert abs(float(report.loss) - exact_loss) <= allowed


# ----- properties of the head ----------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 9),
    d=st.integers(1, 5),
    c=st.integers(2, 6),
    seed=st.integers(0, 2**31),
    smoothing=st.sampled_from([0.0, 0.1]),
    reduction=st.sampled_from(list(Reduction)),
)
def test_head_properties(
    n: int, d: int, c: int, seed: int, smoothing: float, reduction: Reduction
) -> None:
    rng = np.random.default_rng(seed)
    x, w, b = rng.normal(size=(n, d)), rng.normal(size=(c, d)), rng.normal(size=c)
    labels = rng.integers(0, c, size=n)
    problem = LinearProblem(x, w, labels, b, label_smoothing=smoothing, reduction=reduction)
    report = analyse_all(problem)
    # Σ_c (a_c·Σq − q_c) = 0: the bias gradient and the weight gradient sum to 0 over classes
    assert abs(float(np.sum(report.linear_bias_gradient))) <= 1e-12 * max(1, n)
    np.testing.assert_allclose(
        report.linear_weight_gradient.sum(axis=0), 0, atol=1e-12 * n * (1 + np.abs(x).max())
    )
    # moving every class's weights by the same vector shifts each row's logits by a constant
    shifted = analyse_all(
        LinearProblem(
            x, w + rng.normal(size=d), labels, b, label_smoothing=smoothing, reduction=reduction
        )
    )
    np.testing.assert_allclose(shifted.losses, report.losses, rtol=1e-9, atol=1e-9)
    # the input gradient is the logits gradient through the head
    np.testing.assert_allclose(
        report.input_gradient, report.logits_gradient @ w, rtol=1e-12, atol=1e-15
    )


def test_complex_step_checks_all_three_gradients_to_near_eps() -> None:
    problem = random_problem(7, n=30, z_loss=1e-3, softcap=5.0, label_smoothing=0.1)
    report = analyse_all(problem)
    check = linear_directional_check(report, 3, NumericOptions(Method.COMPLEX_STEP))
    np.testing.assert_allclose(check.numeric, check.analytic, rtol=1e-12)
    broken = analyse_all(problem)
    assert broken.linear_weight_gradient is not None
    broken.linear_weight_gradient[0, 0] += 1e-3  # a wrong weight gradient fails the check
    assert not linear_directional_check(broken, 3).check.agreement.passed


def test_make_accuracy_rows_of_the_head() -> None:
    """accuracy/linear.py (part of `make accuracy`), quick size: plain heads within 1e-13,
    every logit within the matmul bound, and the cancelling heads' loss visibly less accurate
    (the cancellation is measured, not hidden)."""
    worst = accuracy_linear.run("quick", 2026)
    assert all(
        worst["plain"][name] <= accuracy_linear.GUARANTEE for name in accuracy_linear.OUTPUTS[1:]
    )
    assert worst["plain"]["logits"] <= 1 and worst["cancelling"]["logits"] <= 1
    assert worst["cancelling"]["losses"] > 100 * worst["plain"]["losses"]


def test_float32_computes_in_float32_near_the_float64_answer() -> None:
    problem = random_problem(8, z_loss=1e-3, label_smoothing=0.1)
    exact = analyse_all(problem)
    single = analyse_all(replace(problem, dtype=np.float32))
    for name in ("loss", "losses", "input_gradient", "linear_weight_gradient", "logits"):
        value = getattr(single, name)
        assert value.dtype == np.float32, name
        assert 0 < normwise_error(value, getattr(exact, name)) <= 1e-5, name
