"""`make accuracy`, the LM head: linear cross-entropy against mpmath, with and without
cancellation in the matmul.

Two families of heads (x (N, d), W (C, d), b (C,), class-index labels, 10% ignored):

- `plain`: x, W, b ~ N(0, 1); the dot products do not cancel.
- `cancelling`: W_c = u + w_c with ‖u‖ ~ 1e4·√d shared by every class and x_n = v_n − (v_n·u /
  u·u)·u (rounded), so that every logit x_n·W_c = x_n·u + x_n·w_c is O(1) while its terms are
  O(1e4): about 4 of the 16 digits of float64 cancel.

The reference takes the float64 inputs as exact and computes everything at 60 digits (mpmath):
z = x·Wᵀ + b, a = softmax(z), G = (a·Σq − q)/D, dx = G·W, dW = Gᵀ·x, db = Σ_n G_n. Measured:

- `logits`: the worst |ẑ − z| / (γ_{d+1}·(|x|·|W|ᵀ + |b|)) over every logit: the bound of
  `app.numerics.linear` holds where this is ≤ 1.
- `loss`, `losses`: worst relative error (per sample for losses, floored at 1e-300).
- `input_gradient`, `linear_weight_gradient`, `linear_bias_gradient`: normwise relative error
  ‖ours − exact‖ / ‖exact‖.

In `plain` heads every output is held to 1e-13; in `cancelling` heads the logits to their bound
and the rest are reported: their error is the cancellation's, carried by the exact functions of
the computed logits (each within Σq·max|δ|/D of the loss, with δ the logits' bound).
"""

from collections import defaultdict
from dataclasses import dataclass

import mpmath as mp
import numpy as np
from numpy.typing import NDArray

from app.numerics.cross_entropy import Reduction
from app.numerics.linear import (
    LinearOutput,
    LinearProblem,
    analyse_linear,
    head_of,
    logit_error_bound,
)

FloatArray = NDArray[np.float64]
DIGITS = 60
FAMILIES = ("plain", "cancelling")
OUTPUTS = (
    "logits",
    "loss",
    "losses",
    "input_gradient",
    "linear_weight_gradient",
    "linear_bias_gradient",
)
GUARANTEE = 1e-13
"""Every output of a `plain` head; `logits` of every head: ratio to the bound ≤ 1."""
SIZES = {"quick": [(6, 8, 5)], "full": [(6, 8, 5), (24, 32, 17), (40, 64, 33)]}
"""(N, d, C) of the heads of each size of the report."""


def head_case(family: str, n: int, d: int, c: int, seed: int) -> LinearProblem:
    """One head of `family` (module docstring), deterministic in its shape and seed."""
    rng = np.random.default_rng([seed, n, d, c, FAMILIES.index(family)])
    labels = rng.integers(0, c, size=n)
    labels[rng.random(n) < 0.1] = -100
    labels[0] = 0  # never a mean over nothing
    if family == "plain":
        x, w = rng.normal(size=(n, d)), rng.normal(size=(c, d))
    else:
        u = rng.normal(size=d) * 1e4
        w = u + rng.normal(size=(c, d))
        v = rng.normal(size=(n, d))
        x = v - np.outer(v @ u / (u @ u), u)
    return LinearProblem(x, w, labels, rng.normal(size=c), reduction=Reduction.MEAN)


@dataclass(frozen=True)
class Exact:
    """The reference outputs at DIGITS digits, rounded to float64 only at the end."""

    logits: FloatArray
    loss: float
    losses: FloatArray
    input_gradient: FloatArray
    linear_weight_gradient: FloatArray
    linear_bias_gradient: FloatArray


def exact(problem: LinearProblem) -> Exact:
    """Every output of a head with index labels and `mean`, from the definition."""
    mp.mp.dps = DIGITS
    x = [[mp.mpf(float(v)) for v in row] for row in problem.input]
    w = [[mp.mpf(float(v)) for v in row] for row in problem.linear_weight]
    assert problem.linear_bias is not None
    b = [mp.mpf(float(v)) for v in problem.linear_bias]
    labels = [int(y) for y in np.asarray(problem.labels)]
    n, d, c = len(x), len(x[0]), len(w)
    z = [[mp.fsum(x[i][k] * w[j][k] for k in range(d)) + b[j] for j in range(c)] for i in range(n)]
    active = [y != problem.ignore_index for y in labels]
    divisor = mp.mpf(sum(active))
    losses, gradient = [], []
    for i in range(n):
        top = max(z[i])
        e = [mp.exp(v - top) for v in z[i]]
        total = mp.fsum(e)
        if not active[i]:
            losses.append(mp.mpf(0))
            gradient.append([mp.mpf(0)] * c)
            continue
        losses.append(mp.log(total) + top - z[i][labels[i]])
        row = [e[j] / total / divisor for j in range(c)]
        row[labels[i]] -= 1 / divisor
        gradient.append(row)
    dx = [[mp.fsum(gradient[i][j] * w[j][k] for j in range(c)) for k in range(d)] for i in range(n)]
    dw = [[mp.fsum(gradient[i][j] * x[i][k] for i in range(n)) for k in range(d)] for j in range(c)]
    db = [mp.fsum(gradient[i][j] for i in range(n)) for j in range(c)]

    def array(values: list[list[mp.mpf]] | list[mp.mpf]) -> FloatArray:
        return np.array(values, dtype=object).astype(np.float64)

    return Exact(
        logits=array(z),
        loss=float(mp.fsum(losses) / divisor),
        losses=array(losses),
        input_gradient=array(dx),
        linear_weight_gradient=array(dw),
        linear_bias_gradient=array(db),
    )


def errors(problem: LinearProblem) -> dict[str, float]:
    """The measures of the module docstring for one head."""
    report = analyse_linear(problem, frozenset(LinearOutput))
    reference = exact(problem)
    head = head_of(problem)
    assert report.logits is not None
    bound = logit_error_bound(head, slice(0, head.samples))
    found = {
        "logits": float(np.max(np.abs(report.logits - reference.logits) / bound)),
        "loss": abs(float(report.loss) - reference.loss) / abs(reference.loss),
        "losses": float(
            np.max(
                np.abs(report.losses - reference.losses)
                / np.maximum(np.abs(reference.losses), 1e-300)
            )
        ),
    }
    for name in OUTPUTS[3:]:
        ours = np.asarray(getattr(report, name))
        theirs = getattr(reference, name)
        found[name] = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    return found


def run(size: str, seed: int) -> dict[str, dict[str, float]]:
    """The worst figure of each output over the heads of each family."""
    worst: dict[str, dict[str, float]] = {family: defaultdict(float) for family in FAMILIES}
    for family in FAMILIES:
        for n, d, c in SIZES[size]:
            for output, error in errors(head_case(family, n, d, c, seed)).items():
                worst[family][output] = max(worst[family][output], error)
    return {family: dict(figures) for family, figures in worst.items()}


def section(size: str, seed: int) -> str:
    """The markdown of the LM head rows; raises SystemExit outside the guarantees."""
    worst = run(size, seed)
    lines = [
        "",
        "## LM head (linear cross-entropy)",
        "",
        "x·Wᵀ + b then the loss, against mpmath at 60 digits (`accuracy/linear.py`): `logits` "
        "is the worst ratio of the error to the matmul bound γ_{d+1}·(|x|·|W|ᵀ + |b|) (≤ 1 "
        "holds the bound), the others worst relative (normwise for gradients) errors.",
        "",
        "| family | " + " | ".join(OUTPUTS) + " |",
        "|---|" + "---|" * len(OUTPUTS),
    ]
    for family in FAMILIES:
        lines.append(
            f"| {family} | " + " | ".join(f"{worst[family][o]:.1e}" for o in OUTPUTS) + " |"
        )
    failing = [
        f"{family} {output}"
        for family in FAMILIES
        for output in OUTPUTS
        if not worst[family][output] <= (1.0 if output == "logits" else GUARANTEE)
        and (output == "logits" or family == "plain")
    ]
    if failing:
        raise SystemExit(f"LM head outside the guarantee: {', '.join(failing)}")
    return "\n".join(lines) + "\n"
