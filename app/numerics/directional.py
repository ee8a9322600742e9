"""The gradient checked along k random directions, as jax's `check_grads` does.

For a unit direction v (‖v‖ = 1 over the whole (N, C) array of logits),

    central       ⟨∇L, v⟩ ≈ (L(z + h v) − L(z − h v)) / 2h
    forward       ⟨∇L, v⟩ ≈ (L(z + h v) − L(z)) / h
    five_point    ⟨∇L, v⟩ ≈ (L(z − 2hv) − 8L(z − hv) + 8L(z + hv) − L(z + 2hv)) / 12h
    complex_step  ⟨∇L, v⟩ ≈ Im L(z + ih v) / h

where L is the scalar whose gradient the report gives: the reduced loss for `mean` and `sum`,
Σ_n loss_n for `none` (whose gradient row n is ∂loss_n/∂z_n), z-loss and soft-capping included.
Each direction costs one evaluation of L per stencil point, O(N·C): k directions cost
O(k·N·C), against C evaluations of N per-sample losses per stencil point for the full numeric
gradient (`finite_diff.derivative_by_column`).

Directions are reproducible: direction i (i = 0 … k−1) is the i-th array of shape (N, C) drawn
by `numpy.random.default_rng(seed).standard_normal(shape, dtype=numpy.float32)` (float32 draws
are twice as fast; each is converted exactly to float64), zeroed on −inf (masked) logits and
scaled to unit Frobenius norm in float64. The same seed, shape and mask give the same
directions on every machine (numpy's PCG64 stream and its ziggurat normal sampler are stable
across versions).

Each evaluation is taken relative to the unperturbed logits (L(z + d) − L(z) row by row, from
the shifted logits y − max y and the change of log Σ exp), so that neither large logits nor a
large z-loss term λ·ℓ² enter its rounding error.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.numerics.compare import compare
from app.numerics.cross_entropy import Reduction, log_sum_exp, softcap_logits, softcap_slope
from app.numerics.finite_diff import (
    COMPLEX_STEP,
    STENCILS,
    ErrorEstimate,
    Method,
    Steps,
    loss_rounding_scale,
    row_ranges,
)
from app.numerics.gradcheck import Check, LossProblem, NumericOptions, Tolerance
from app.numerics.softmax import FloatArray, softmax

DEFAULT_DIRECTIONS = 8
"""k when directions replace the full numeric gradient without the caller asking for a k."""
DIRECTION_SEED = 0
"""The default seed of the directions."""
BLOCK_ENTRIES = 1 << 20
"""Rows are evaluated in blocks of at most this many logits (bounds the temporary memory)."""
CUMULANT_BOUND = 0.1
"""|κ_k| of a distribution on an interval of length 1, k = 2 … 5, is at most ~0.1 (κ_2 ≤ 1/4
is the exception that no stencil here needs): the truncation estimate's constant."""


@dataclass(frozen=True)
class DirectionSteps(Steps):
    """The step along each unit direction (h has one entry per direction)."""

    @property
    def rule(self) -> str:
        """The step rule in words, for the response."""
        if not self.scaled:
            return f"h = {self.base:.3g} along each unit direction"
        return (
            f"h = {self.base:.3g}·max(1, largest row range max z − min z)^(1/{self.order + 1})"
            "·√(number of finite logits), along each unit direction"
        )


@dataclass(frozen=True)
class DirectionalDerivatives:
    """The check of the gradient along k random directions, and its 2k numbers."""

    check: Check
    """The verdict over the k directional derivatives (`Check.directions` = k)."""
    numeric: FloatArray
    """(k,) finite-difference directional derivatives of L."""
    analytic: FloatArray
    """(k,) ⟨gradient, v_i⟩ from the analytic gradient."""
    seed: int


def numeric_gradient_evaluations(num_samples: int, num_classes: int, method: Method) -> int:
    """Per-sample loss evaluations of the full numeric gradient: points·C columns of N samples
    (points = 1 complex step, 2 forward and central, 4 five-point). Time is about proportional
    (≈ 0.2 µs each in float64 here: 256 × 32,000 central ≈ 3.5 s)."""
    points = 1 if method is Method.COMPLEX_STEP else len(STENCILS[method].offsets)
    return points * num_samples * num_classes


def directional_evaluations(
    num_samples: int, num_classes: int, method: Method, directions: int
) -> int:
    """Logit evaluations (exp and sums of one entry) of a directional check: points·k·N·C, plus
    one unperturbed pass (forward differences reuse it)."""
    return (_points(method) * directions + 1) * num_samples * num_classes


def prefer_directions(num_samples: int, num_classes: int, method: Method, limit: int) -> bool:
    """True when the full numeric gradient would exceed `limit` evaluations
    (`numeric_gradient_evaluations`): the caller then checks along directions instead."""
    return numeric_gradient_evaluations(num_samples, num_classes, method) > limit


def _points(method: Method) -> int:
    """Evaluations of L per direction (the stencil's offset 0 is L(z) − L(z) = 0: free)."""
    if method is Method.COMPLEX_STEP:
        return 1
    return sum(1 for offset in STENCILS[method].offsets if offset != 0)


def directions_of(
    shape: tuple[int, ...], masked: NDArray[np.bool_], count: int, seed: int
) -> Iterator[FloatArray]:
    """The `count` unit directions of the module docstring (0 on masked entries), one at a
    time (a direction is as large as the logits)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        v = rng.standard_normal(shape, dtype=np.float32).astype(np.float64)
        v[masked] = 0.0
        norm = float(np.linalg.norm(v))
        if norm > 0:
            v /= norm
        yield v


class LogitChanges:
    """L(z + d) − L(z) of a problem for moves d of its logits (real or complex), row block by
    row block: Σ_n [(S_n·δ_n − Σ_c q_nc·Δy_nc) / D_n + λ_n·δ_n·(2ℓ_n + δ_n) / D_z,n] with
    Δy = y(z + d) − y(z) and δ_n = ℓ_n(z + d) − ℓ_n(z)."""

    def __init__(self, problem: LossProblem) -> None:
        self.problem = problem
        z = np.asarray(problem.logits)
        self.raw = z
        self.masked = z == -np.inf
        softcap = problem.softcap
        capped = z if softcap is None else softcap_logits(z, softcap)
        self.capped = capped
        if softcap is not None:
            self.tanh = np.where(self.masked, 0.0, capped / softcap)
            self.slope = softcap_slope(z, softcap)
        sm = softmax(capped)
        self.softmax = sm
        self.top = np.max(capped, axis=1)
        shifted = np.where(self.masked, 0.0, capped - self.top[:, None])
        self.shifted = shifted
        self.log_total = np.log1p(sm.tail)
        targets = problem.targets
        self.q = targets.q
        self.target_total = targets.q.sum(axis=1)
        mean = problem.reduction is Reduction.MEAN
        self.inverse_divisor = 1 / targets.divisor if mean else 1.0
        self.z_weights: FloatArray | None = None
        if problem.z_loss:
            z_divisor = targets.z_divisor if mean else 1.0
            self.z_weights = targets.z_weights(problem.z_loss) / z_divisor
            self.lse = log_sum_exp(sm)
        rows = max(1, BLOCK_ENTRIES // max(1, z.shape[1]))
        self.blocks = [slice(start, start + rows) for start in range(0, z.shape[0], rows)]

    def __call__(self, move: NDArray[np.generic]) -> complex:
        """L(z + move) − L(z), summed over every sample."""
        total: complex = 0.0
        for block in self.blocks:
            total += self._block(block, move[block])
        return total

    def _block(self, block: slice, move: NDArray[np.generic]) -> complex:
        masked = self.masked[block]
        softcap = self.problem.softcap
        if softcap is None:
            change = np.where(masked, 0, move)
        else:  # tanh(a + b) − tanh(a) = tanh(b)·(1 − tanh²a) / (1 + tanh a·tanh b): no cancellation
            moved = np.tanh(np.where(masked, 0, move) / softcap)
            change = softcap * moved * self.slope[block] / (1 + self.tanh[block] * moved)
        shifted = self.shifted[block] + change
        lift = np.max(np.where(masked, -np.inf, np.real(shifted)), axis=1)
        e = np.exp(shifted - lift[:, None])
        e[masked] = 0
        delta = lift + np.log(e.sum(axis=1)) - self.log_total[block]
        q = self.q[block]
        dot = np.sum(q * change, axis=1)
        values = (self.target_total[block] * delta - dot) * self.inverse_divisor
        if self.z_weights is not None:
            values = values + self.z_weights[block] * delta * (2 * self.lse[block] + delta)
        return complex(np.sum(values)) if np.iscomplexobj(values) else float(np.sum(values))


def directional_check(
    problem: LossProblem,
    gradient: FloatArray,
    directions: int,
    numeric: NumericOptions | None = None,
    tolerance: Tolerance | None = None,
    *,
    seed: int = DIRECTION_SEED,
) -> DirectionalDerivatives:
    """Check `gradient` (the report's, by the raw logits) along `directions` random unit
    directions (module docstring), at O(k·N·C) cost.

    The step h along each direction (unless `numeric.step` fixes it) is the largest step the
    per-element rule (`finite_diff.choose_steps`) gives any row, times √m for the m finite
    logits: the root-mean-square move of an entry, h/√m, is then that rule's step, while the
    directional third derivative, a sum over rows of cumulants of v_n under a_n, stays far
    below a coordinate's. No rounding of z + hv is needed: every evaluation works on the move
    hv itself (`LogitChanges`), so that the direction is exactly the one the analytic side uses,
    ⟨gradient, p⟩/h with p = fl(h·v).

    References
    ----------
    .. [1] JAX, jax.test_util.check_grads: checking a gradient along random directions.
    """
    numeric = numeric or NumericOptions()
    tolerance = tolerance or Tolerance()
    z = np.asarray(problem.logits)
    method = numeric.method
    changes = LogitChanges(problem)
    masked = changes.masked
    finite_count = int(np.count_nonzero(~masked))
    order = 2
    if method is Method.COMPLEX_STEP:
        h = COMPLEX_STEP if numeric.step is None else numeric.step
        base, scaled = h, False
    elif numeric.step is not None:
        h = base = numeric.step
        scaled = False
        order = STENCILS[method].order
    else:
        order = STENCILS[method].order
        base = float(np.finfo(z.dtype).eps ** (1 / (order + 1)))
        scale = max(1.0, float(np.max(row_ranges(z)))) ** (1 / (order + 1))
        h = base * scale * math.sqrt(max(1, finite_count))
        scaled = True
    g = np.asarray(gradient, np.float64)
    numeric_values, analytic_values, spreads = [], [], []
    for v in directions_of(z.shape, masked, directions, seed):
        numeric.deadline.check()
        p = (h * v).astype(z.dtype, copy=False)
        analytic_values.append(
            float(np.dot(g.ravel(), p.astype(np.float64, copy=False).ravel())) / h
        )
        if method is Method.COMPLEX_STEP:
            numeric_values.append(float(np.imag(changes(1j * p))) / h)
        else:
            stencil = STENCILS[method]
            value = math.fsum(
                weight * float(np.real(changes(offset * p))) if offset else 0.0
                for offset, weight in zip(stencil.offsets, stencil.weights, strict=True)
            )
            numeric_values.append(value / h)
        finite_v = np.where(masked, np.nan, v)
        spreads.append(np.nanmax(finite_v, axis=1) - np.nanmin(finite_v, axis=1))
    numeric_array = np.asarray(numeric_values)
    analytic_array = np.asarray(analytic_values)
    estimate = directional_error(changes, method, h, spreads, analytic_array)
    steps = DirectionSteps(np.full(directions, h), base, scaled, order)
    agreement = compare(analytic_array, numeric_array, atol=tolerance.atol, rtol=tolerance.rtol)
    check = Check(agreement, method, steps, tolerance, estimate, directions=directions)
    return DirectionalDerivatives(check, numeric_array, analytic_array, seed)


def directional_error(
    changes: LogitChanges,
    method: Method,
    h: float,
    spreads: list[FloatArray],
    analytic: FloatArray,
) -> ErrorEstimate:
    """Truncation ≈ c·h^p·Σ_n scale_n·0.1·(max v_n − min v_n)^(p+1) (the (p+1)-th directional
    derivative of ℓ_n is a cumulant of v_n under a_n), rounding ≈ (Σ|w|)·eps·Σ_n V_n/h with V_n
    the rows' rounding scales (`finite_diff.loss_rounding_scale`); the complex step rounds to
    eps·|⟨g, v⟩|. Largest over the directions."""
    eps = float(np.finfo(changes.raw.dtype).eps)
    sm = changes.softmax
    q = changes.q
    scale = changes.target_total.astype(np.float64) * changes.inverse_divisor
    value = loss_rounding_scale(changes.capped, q, sm.probabilities) * changes.inverse_divisor
    if changes.z_weights is not None:
        z_scale = 2 * changes.z_weights * (np.abs(changes.lse) + 1)
        scale = scale + z_scale
        value = value + z_scale * (2 + changes.log_total)
    if method is Method.COMPLEX_STEP:
        rounding = eps * float(np.max(np.abs(analytic))) if analytic.size else 0.0
        truncation = max(
            (h * h / 6 * float(np.sum(scale * CUMULANT_BOUND * r**3)) for r in spreads),
            default=0.0,
        )
        return ErrorEstimate(truncation, rounding)
    stencil = STENCILS[method]
    power = stencil.order + 1
    truncation = max(
        (
            stencil.truncation_coefficient
            * h**stencil.order
            * float(np.sum(scale * CUMULANT_BOUND * r**power))
            for r in spreads
        ),
        default=0.0,
    )
    weight_sum = sum(abs(w) for w in stencil.weights)
    rounding = weight_sum * eps * float(np.sum(value)) / h
    return ErrorEstimate(min(truncation, float(np.finfo(np.float64).max)), rounding)
