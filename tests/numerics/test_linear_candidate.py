"""Candidates of the LM head: the right answer passes, each named mistake is the first diagnosis
of the outputs it changes (its candidate built independently, by the chunked computation that
makes the mistake), and random errors are not given a name."""

import re
from dataclasses import replace
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from app.numerics import linear
from app.numerics.candidate import DEFAULT_TOLERANCE
from app.numerics.cross_entropy import Reduction
from app.numerics.linear import LinearOutput, LinearProblem
from app.numerics.linear_candidate import check_linear_candidate

ALL = frozenset(LinearOutput)


def analyse_all(problem: LinearProblem) -> Any:
    """Every output of `problem` (typed Any: the tests read the optional arrays directly)."""
    return linear.analyse_linear(problem, ALL)


FLOAT32 = DEFAULT_TOLERANCE["float32"]
N, D, C = 96, 6, 9


def problem_of(seed: int, **options: Any) -> LinearProblem:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=N)
    labels[rng.random(N) < 0.3] = -100
    problem = LinearProblem(
        input=rng.normal(size=(N, D)),
        linear_weight=rng.normal(size=(C, D)),
        labels=labels,
        linear_bias=rng.normal(size=C),
    )
    return replace(problem, **options)


def logits_and_targets(problem: LinearProblem) -> tuple[Any, Any, float]:
    """z, q and D written out plainly (index labels, optional weight): an independent head."""
    x, w, b = problem.input, problem.linear_weight, problem.linear_bias
    z = x @ w.T + (0 if b is None else b)
    labels = np.asarray(problem.labels)
    weight = np.ones(C) if problem.weight is None else problem.weight
    active = labels != problem.ignore_index
    q = np.zeros((N, C))
    q[np.flatnonzero(active), labels[active]] = weight[labels[active]]
    return z, q, float(q.sum())


def chunked_gradients(problem: LinearProblem, chunk: int, bug: str = "") -> dict[str, Any]:
    """A chunked pure-numpy kernel of the kind LM codebases ship, with `bug` injected."""
    z, q, divisor = logits_and_targets(problem)
    x, w = problem.input, problem.linear_weight
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros(C)
    loss = 0.0
    starts = range(0, N, chunk)
    for start in starts:
        part = slice(start, start + chunk)
        shifted = z[part] - z[part].max(axis=1, keepdims=True)
        log_a = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        a = np.exp(log_a)
        g = a * q[part].sum(axis=1, keepdims=True) - q[part]
        chunk_divisor = q[part].sum() * len(starts) if bug == "normalized_per_chunk" else divisor
        g /= chunk_divisor
        loss += float(-(q[part] * log_a).sum() / chunk_divisor)
        dx[part] = g @ w
        if bug == "weight_gradient_not_accumulated":
            dw, db = g.T @ x[part], g.sum(axis=0)
        else:
            dw += g.T @ x[part]
            db += g.sum(axis=0)
    if bug == "bias_gradient_missing":
        db = np.zeros(C)
    return {
        "loss": np.asarray(loss),
        "input_gradient": dx,
        "linear_weight_gradient": dw,
        "linear_bias_gradient": db,
    }


def first_codes(result: Any) -> dict[str, str]:
    return {d.output: d.code for d in result.check.diagnoses}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_right_answer_passes_in_float32_and_float64(seed: int) -> None:
    problem = problem_of(seed, weight=np.linspace(0.5, 2, C))
    candidate = chunked_gradients(problem, 32)
    result = check_linear_candidate(problem, candidate, atol=1e-12, rtol=1e-10)
    assert result.check.passed, result.check.outputs
    as_float32 = {k: v.astype(np.float32) for k, v in candidate.items()}
    result = check_linear_candidate(problem, as_float32, atol=FLOAT32[0], rtol=FLOAT32[1])
    assert result.check.passed and not result.check.diagnoses


@pytest.mark.parametrize(
    ("bug", "outputs"),
    [
        ("weight_gradient_not_accumulated", ["linear_weight_gradient", "linear_bias_gradient"]),
        ("bias_gradient_missing", ["linear_bias_gradient"]),
        ("normalized_per_chunk", ["loss", "input_gradient", "linear_weight_gradient"]),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_each_chunked_kernel_bug_is_the_first_diagnosis(
    bug: str, outputs: list[str], seed: int
) -> None:
    problem = problem_of(seed)
    candidate = chunked_gradients(problem, 32, bug)
    result = check_linear_candidate(problem, candidate, atol=FLOAT32[0], rtol=FLOAT32[1])
    codes = first_codes(result)
    assert all(codes.get(name) == bug for name in outputs), codes
    assert codes.get("input_gradient") in (None, bug)
    evidence = {d.output: d.evidence for d in result.check.diagnoses}
    if bug == "weight_gradient_not_accumulated":
        named = [int(n) for n in re.findall(r"\d+", evidence["linear_weight_gradient"])]
        first, last = (named[1], named[1]) if len(named) == 2 else (named[1], named[2])
        assert first <= 64 <= last, evidence  # the true start of the last chunk is named
    if bug == "normalized_per_chunk":
        assert "chunks of 32 samples" in evidence["input_gradient"]


def test_per_chunk_means_with_equal_counts_are_no_mistake() -> None:
    problem = problem_of(3, labels=np.arange(N) % C)  # every chunk of 32 holds 32 tokens
    candidate = chunked_gradients(problem, 32, "normalized_per_chunk")
    result = check_linear_candidate(problem, candidate, atol=1e-12, rtol=1e-10)
    assert result.check.passed


@pytest.mark.parametrize("bug", ["labels_not_shifted", "labels_shifted_twice", "right"])
def test_causal_shift_mistakes(bug: str) -> None:
    rng = np.random.default_rng(9)
    b, t = 4, 12
    labels = rng.integers(0, C, size=(b, t))
    problem = LinearProblem(
        rng.normal(size=(b, t, D)),
        rng.normal(size=(C, D)),
        labels,
        rng.normal(size=C),
        causal_shift=True,
    )
    used = {"right": 1, "labels_not_shifted": 0, "labels_shifted_twice": 2}[bug]
    scored = np.full((b, t), -100)
    scored[:, : t - used] = labels[:, used:]
    mistaken = LinearProblem(
        problem.input.reshape(-1, D), problem.linear_weight, scored.reshape(-1), problem.linear_bias
    )
    report = analyse_all(mistaken)
    candidate = {
        "input_gradient": report.input_gradient.reshape(b, t, D),
        "linear_weight_gradient": report.linear_weight_gradient,
        "loss": report.loss,
    }
    result = check_linear_candidate(problem, candidate, atol=1e-12, rtol=1e-10)
    if bug == "right":
        assert result.check.passed
        return
    assert first_codes(result) == {
        "input_gradient": bug,
        "linear_weight_gradient": bug,
        "loss": bug,
    }


@pytest.mark.parametrize(
    ("code", "changes"),
    [
        ("weights_ignored", {"weight": None}),
        ("label_smoothing_ignored", {"label_smoothing": 0.0}),
        ("off_by_one_labels", "off_by_one"),
        ("ignore_index_not_applied", "not_ignored"),
    ],
)
def test_logits_level_codes_are_carried_through_the_head(code: str, changes: Any) -> None:
    problem = problem_of(4, weight=np.linspace(0.5, 2, C), label_smoothing=0.1)
    labels = np.asarray(problem.labels)
    if changes == "off_by_one":
        changes = {"labels": np.where(labels == -100, labels, (labels - 1) % C)}
    elif changes == "not_ignored":
        problem = replace(problem, ignore_index=2)
        labels = np.where(labels == -100, 2, labels)
        problem = replace(problem, labels=labels)
        changes = {"ignore_index": -100}
    wrong = analyse_all(replace(problem, **changes))
    candidate = {
        name: getattr(wrong, name)
        for name in ("input_gradient", "linear_weight_gradient", "linear_bias_gradient", "loss")
    }
    result = check_linear_candidate(problem, candidate, atol=FLOAT32[0], rtol=FLOAT32[1])
    codes = first_codes(result)
    assert codes["input_gradient"] == code and codes["linear_weight_gradient"] == code, codes
    message = next(d.message for d in result.check.diagnoses if d.output == "input_gradient")
    assert message.startswith("Your input gradient comes from a logits gradient with this mistake")


@pytest.mark.parametrize("factor", [-1.0, "D", 0.37])
def test_scaled_gradients(factor: Any) -> None:
    problem = problem_of(5)
    report = analyse_all(problem)
    k = report.head.divisors.divisor if factor == "D" else factor
    candidate = {"linear_weight_gradient": report.linear_weight_gradient * k}
    result = check_linear_candidate(problem, candidate, atol=FLOAT32[0], rtol=FLOAT32[1])
    expected = {-1.0: "sign_flipped", "D": "not_divided", 0.37: "wrong_scale"}[factor]
    assert first_codes(result) == {"linear_weight_gradient": expected}


@pytest.mark.parametrize("seed", range(5))
def test_random_errors_get_no_name(seed: int) -> None:
    problem = problem_of(seed, weight=np.linspace(0.5, 2, C), label_smoothing=0.1)
    report = analyse_all(problem)
    rng = np.random.default_rng(100 + seed)
    candidate = {}
    for name in ("input_gradient", "linear_weight_gradient", "linear_bias_gradient"):
        value = np.array(getattr(report, name))
        value *= 1 + 0.05 * rng.standard_normal(value.shape)
        candidate[name] = value
    result = check_linear_candidate(problem, candidate, atol=FLOAT32[0], rtol=FLOAT32[1])
    assert not result.check.passed
    assert result.check.diagnoses == []
    assert len(result.check.notes) == 3


def test_bfloat16_logits_are_a_precision_finding_with_its_improvement() -> None:
    rng = np.random.default_rng(6)
    problem = LinearProblem(
        rng.normal(size=(N, D)) * 3, rng.normal(size=(C, D)), rng.integers(0, C, size=N)
    )
    z, q, divisor = logits_and_targets(problem)
    rounded = z.astype(ml_dtypes.bfloat16).astype(np.float64)  # the forward's bfloat16 logits
    e = np.exp(rounded - rounded.max(axis=1, keepdims=True))
    g = (e / e.sum(axis=1, keepdims=True) - q) / divisor
    candidate = {
        "input_gradient": g @ problem.linear_weight,
        "linear_weight_gradient": g.T @ problem.input,
    }
    result = check_linear_candidate(problem, candidate, atol=FLOAT32[0], rtol=FLOAT32[1])
    assert not result.check.passed and not result.check.diagnoses
    notes = [n for n in result.check.notes if "rounded to bfloat16" in n]
    assert len(notes) == 2
    improvement = float(notes[0].split("bfloat16 ")[1].split("×")[0])
    assert improvement >= 4


@pytest.mark.parametrize(
    "options",
    [{}, {"z_loss": 1e-2, "softcap": 3.0}, {"reduction": "sum"}],
    ids=["mean", "z_loss-softcap", "sum"],
)
def test_k_dimensional_heads_are_diagnosed_in_their_own_shapes(options: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    n, positions = 80, 3
    labels = rng.integers(0, C, size=(n, positions))
    labels[rng.random((n, positions)) < 0.3] = -100
    if "reduction" in options:
        options = {"reduction": Reduction(options["reduction"])}
    problem = LinearProblem(
        rng.normal(size=(n, D)),
        rng.normal(size=(C, positions, D)),
        labels,
        rng.normal(size=(C, positions)),
        label_smoothing=0.1,
        **options,
    )
    report = analyse_all(problem)
    g = report.logits_gradient.reshape(n, -1)  # (N, C·J), as the head's rows
    x = problem.input
    right = {"input_gradient": report.input_gradient, "losses": report.losses}
    assert check_linear_candidate(problem, right, atol=1e-10, rtol=1e-8).check.passed
    last_chunk = {
        "linear_weight_gradient": (g[64:].T @ x[64:]).reshape(problem.linear_weight.shape),
        "linear_bias_gradient": g[64:].sum(axis=0).reshape(C, positions),
    }
    result = check_linear_candidate(problem, last_chunk, atol=1e-10, rtol=1e-8)
    assert first_codes(result) == dict.fromkeys(last_chunk, "weight_gradient_not_accumulated")
    flipped = {"input_gradient": -report.input_gradient, "losses": -report.losses}
    result = check_linear_candidate(problem, flipped, atol=1e-10, rtol=1e-8)
    assert first_codes(result) == dict.fromkeys(flipped, "sign_flipped")


def test_noise_within_the_absolute_tolerance_is_not_named() -> None:
    """A bfloat16-tolerance candidate of pure noise, every entry within atol of 0: hypotheses
    whose entries are also tiny would fit random probes; the probes at the candidate's own
    largest entries, and the rule that the reference must not fit them, leave it unnamed."""
    problem = problem_of(8)
    report = analyse_all(problem)
    atol, rtol = DEFAULT_TOLERANCE["bfloat16"]
    rng = np.random.default_rng(9)
    noise = rng.standard_normal(problem.linear_weight.shape) * atol / 4
    assert np.max(np.abs(report.linear_weight_gradient)) > 4 * atol  # the reference is not tiny
    result = check_linear_candidate(
        problem, {"linear_weight_gradient": noise}, atol=atol, rtol=rtol
    )
    assert not result.check.passed and result.check.diagnoses == []
