"""The LM head fused with its loss: `F.linear_cross_entropy` of PyTorch 2.13, by blocks of rows.

The head maps hidden states x to logits, and the loss is the cross-entropy of those logits:

    z = x·Wᵀ + b                     x (N, d), W (C, d), b (C,)            → z (N, C)
    z_ncj = Σ_i x_ni·W_cji + b_cj     W (C, d1, …, dK, d), b (C, d1, …, dK)  → z (N, C, d1, …, dK)
    L = cross_entropy(z, labels; weight, ignore_index, label_smoothing, reduction, z_loss, softcap)

as `torch.nn.functional.linear_cross_entropy` defines it (K-dimensional loss: `out_features`
(d1, …, dK) = J positions per sample, each a row of C classes). With G = ∂L/∂z (the gradient
of `app.numerics.cross_entropy`, a·Σq − q divided by the reduction's D, plus the z-loss and
soft-capping terms), W₂ = W as (C·J, d) and G₂ = G as (N, C·J):

    ∂L/∂x = G₂·W₂           (N, d)
    ∂L/∂W = G₂ᵀ·x           (C·J, d), returned as (C, d1, …, dK, d)
    ∂L/∂b = Σ_n G₂[n]       (C·J,),   returned as (C, d1, …, dK)

For `reduction="none"` these are the derivatives of Σ_n loss_n (what `loss.backward(ones)` gives).

Options of language-model training (extensions beyond torch):

- `causal_shift`: x (B, T, d) and labels (B, T); position t predicts label t + 1 of its
  sequence and the last position of every sequence is ignored (HF transformers' causal-LM
  loss, which shifts the labels left by one).
- `denominator`: with `mean`, a number replacing the divisor D = Σ w_y of the non-ignored
  samples (and the z-loss's D_z): HF's `num_items_in_batch`, the count over every micro-batch
  of an accumulated step, so that per-micro-batch losses add up to the step's mean.

Blocks
------
Everything is computed by blocks of consecutive samples (`sample_blocks`: about
BLOCK_LOGITS logits, at least MIN_BLOCK_ROWS samples, so that each matmul is large enough to
run at BLAS speed): a block's logits are formed, its losses and G come from
`gradcheck.LossRows.of` (the cross-entropy numerics, unchanged), and its G feeds ∂L/∂x of
its rows and the running sums ∂L/∂W, ∂L/∂b. The N×C float64 logits are never held at once
unless they are asked for as an output.

Accuracy
--------
Each logit is a float64 dot product of length d plus the bias. Whatever the order BLAS sums
in (with or without FMA), the computed ẑ satisfies (Higham 2002, eq. 3.5)

    |ẑ_ncj − z_ncj| ≤ γ_{d+1}·(Σ_i |x_ni|·|W_cji| + |b_cj|),    γ_m = m·u / (1 − m·u),  u = 2⁻⁵³

so a logit is accurate to ~1e-16 of |x|·|W| (relative to itself only where there is no
cancellation in the dot product: a logit much smaller than Σ|x||W| carries that bound as an
absolute error; `logit_error_bound` computes it). The loss and G are then those of the
computed logits, to the accuracy of `app.numerics.cross_entropy` (~1e-15 of each gradient
row's largest entry); since ∂loss/∂z is bounded by Σq, a logit error δ moves the loss by at
most Σq·max|δ| / D. The three gradients are sums of N or C·J products of G with x or W,
each within γ_m·|G|·|W| (m = C·J) or γ_N·|G|ᵀ·|x| of its exact value from the computed G.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from app.numerics.compare import compare
from app.numerics.cross_entropy import (
    Reduction,
    Targets,
    check_index_labels,
    index_divisors,
    index_targets,
    probability_targets,
    reduce_losses,
)
from app.numerics.deadline import NEVER, Deadline
from app.numerics.directional import (
    DIRECTION_SEED,
    DirectionalDerivatives,
    DirectionSteps,
    LogitChanges,
    directional_error,
)
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import COMPLEX_STEP, STENCILS, ErrorEstimate, Method
from app.numerics.gradcheck import (
    MAX_MAGNITUDE,
    Check,
    LossProblem,
    LossRows,
    NumericOptions,
    Output,
    Tolerance,
)
from app.numerics.softmax import FloatArray

BLOCK_LOGITS = 1 << 22
"""A block of samples holds about this many logits (32 MiB of float64): at C = 32,000 that is
131 rows. The three matmuls of a block run about twice as fast per row as in blocks of 65
rows (and 3× faster than in blocks of 8), while a candidate's check holds about 7 such arrays
at once (`cost.LINEAR_CANDIDATE_ARRAYS`)."""
MIN_BLOCK_ROWS = 64
"""The fewest samples in a block (except the last): below ~64 rows a matmul with a
32,000-class head runs far below BLAS speed (8 rows: 6 s for a forward that takes 1 s in
128-row blocks at N = 1,024, d = 1,024, C = 32,000)."""


class LinearOutput(StrEnum):
    """The arrays of a linear cross-entropy analysis a caller can ask for."""

    LOSS = "loss"
    LOSSES = "losses"
    INPUT_GRADIENT = "input_gradient"
    LINEAR_WEIGHT_GRADIENT = "linear_weight_gradient"
    LINEAR_BIAS_GRADIENT = "linear_bias_gradient"
    LOGITS = "logits"
    LOGITS_GRADIENT = "logits_gradient"
    PROBABILITIES = "probabilities"


DEFAULT_OUTPUTS = frozenset(
    {
        LinearOutput.LOSS,
        LinearOutput.LOSSES,
        LinearOutput.INPUT_GRADIENT,
        LinearOutput.LINEAR_BIAS_GRADIENT,
    }
)
"""Returned when nothing is asked: the weight gradient is C·d numbers and is asked for."""
FULL_LOGITS_OUTPUTS = frozenset(
    {LinearOutput.LOGITS, LinearOutput.LOGITS_GRADIENT, LinearOutput.PROBABILITIES}
)
"""Outputs as large as the logits (N·C·J numbers): kept whole only when asked for."""


@dataclass(frozen=True)
class LinearProblem:
    """One linear cross-entropy problem, in the caller's (torch's) shapes, float64.

    `input` is (d,) or (N, d), or (B, T, d) with `causal_shift`; `linear_weight` (C, d) or
    (C, d1, …, dK, d) (K ≥ 1 needs a batched input); `linear_bias` (C,) or (C, d1, …, dK);
    `labels` class indices of shape (), (N,), (N, d1, …, dK) or (B, T), or probabilities of
    shape (C,), (N, C) or (N, C, d1, …, dK).
    """

    input: FloatArray
    linear_weight: FloatArray
    labels: NDArray[np.generic]
    linear_bias: FloatArray | None = None
    weight: FloatArray | None = None
    ignore_index: int = -100
    label_smoothing: float = 0.0
    reduction: Reduction = Reduction.MEAN
    z_loss: float = 0.0
    softcap: float | None = None
    denominator: float | None = None
    """With `mean`: replaces the divisor D (and D_z) of the mean (HF's num_items_in_batch)."""
    causal_shift: bool = False
    """x (B, T, d), index labels (B, T): position t is scored against label t + 1."""
    dtype: type[np.floating] = np.float64
    """The precision of every computation (float32 shows what a float32 kernel can reach)."""


@dataclass(frozen=True)
class Head:
    """A problem as rows: x (N, d), W₂ (C·J, d), b₂ (C·J,) and the labels of the N·J rows.

    Row n·J + j is position j of sample n: its C logits are z₂[n, c·J + j] for c < C."""

    x: FloatArray
    w: FloatArray
    b: FloatArray | None
    index_labels: NDArray[np.integer] | None
    """(N·J,) class indices (None with probability labels)."""
    probability_rows: FloatArray | None
    """(N·J, C) probability labels (None with class indices)."""
    classes: int
    out_features: tuple[int, ...]
    problem: LinearProblem
    divisors: Targets
    """The reduction's D and D_z (its q is empty): every block's targets carry them."""

    @property
    def samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def positions(self) -> int:
        """J = d1·…·dK (1 without K-dimensional loss)."""
        return math.prod(self.out_features)

    def rows(self, part: slice) -> slice:
        """The rows of the samples `part`."""
        return slice(part.start * self.positions, part.stop * self.positions)

    def targets(self, part: slice) -> Targets:
        """The effective targets of the rows of the samples `part`, with the whole batch's
        divisors (the cross-entropy formulas, applied to a block)."""
        p = self.problem
        rows = self.rows(part)
        weight = None if p.weight is None else np.asarray(p.weight, p.dtype)
        if self.index_labels is not None:
            block = index_targets(
                self.index_labels[rows],
                self.classes,
                weight=weight,
                ignore_index=p.ignore_index,
                label_smoothing=p.label_smoothing,
                reduction=Reduction.SUM,
                dtype=p.dtype,
            )
        else:
            assert self.probability_rows is not None
            block = probability_targets(
                self.probability_rows[rows],
                weight=weight,
                label_smoothing=p.label_smoothing,
                reduction=Reduction.SUM,
                dtype=p.dtype,
            )
        return replace(block, divisor=self.divisors.divisor, z_divisor=self.divisors.z_divisor)

    def logits(self, part: slice) -> FloatArray:
        """z of the samples `part` as rows (rows(part), C): x·W₂ᵀ + b₂, class axis last."""
        z: FloatArray = self.x[part] @ self.w.T
        if self.b is not None:
            z += self.b
        return self.to_rows(z)

    def to_rows(self, flat: FloatArray) -> FloatArray:
        """(n, C·J) → (n·J, C)."""
        if self.positions == 1:
            return flat
        n = flat.shape[0]
        moved = flat.reshape(n, self.classes, self.positions).transpose(0, 2, 1)
        return np.ascontiguousarray(moved).reshape(n * self.positions, self.classes)

    def from_rows(self, rows: FloatArray) -> FloatArray:
        """(n·J, C) → (n, C·J), the inverse of `to_rows`."""
        if self.positions == 1:
            return rows
        n = rows.shape[0] // self.positions
        moved = rows.reshape(n, self.positions, self.classes).transpose(0, 2, 1)
        return np.ascontiguousarray(moved).reshape(n, self.classes * self.positions)


def shift_labels(labels: NDArray[np.integer], ignore_index: int) -> NDArray[np.integer]:
    """HF's causal-LM shift of labels (B, T): position t gets label t + 1 of its sequence,
    the last position `ignore_index`."""
    shifted = np.empty_like(labels)
    shifted[:, :-1] = labels[:, 1:]
    shifted[:, -1] = ignore_index
    return shifted


def head_of(problem: LinearProblem) -> Head:
    """The rows of `problem` (`Head`), its labels checked and its divisors computed.

    Raises InvalidProblem for shapes that do not fit together (naming the field), a label
    outside [0, C), a `mean` over nothing, or a `denominator` without `mean`."""
    x = np.asarray(problem.input, problem.dtype)
    w = np.asarray(problem.linear_weight, problem.dtype)
    labels = np.asarray(problem.labels)
    if w.ndim < 2:
        raise InvalidProblem(("linear_weight",), "linear_weight must be (C, d) or (C, d1…dK, d)")
    classes, features, out_features = w.shape[0], w.shape[-1], tuple(w.shape[1:-1])
    expected_input = "(B, T, d)" if problem.causal_shift else "(d,) or (N, d)"
    axes = (3,) if problem.causal_shift else (1, 2)
    if x.ndim not in axes or x.shape[-1] != features:
        raise InvalidProblem(
            ("input",),
            f"input has shape {list(x.shape)}: expected {expected_input} with d = {features} "
            f"(the last axis of linear_weight {list(w.shape)})",
        )
    if out_features and x.ndim != 2:
        raise InvalidProblem(
            ("input",), "a K-dimensional linear_weight (C, d1…dK, d) needs input (N, d)"
        )
    if problem.causal_shift:
        if labels.shape != x.shape[:2] or labels.dtype.kind not in "iu":
            raise InvalidProblem(
                ("labels",),
                f"causal_shift needs class-index labels of shape {list(x.shape[:2])} (B, T)",
            )
        labels = shift_labels(labels, problem.ignore_index)
        x = x.reshape(-1, features)
        labels = labels.reshape(-1)
    batched = x.ndim == 2
    x2 = x if batched else x[None]
    samples = x2.shape[0]
    bias = None
    if problem.linear_bias is not None:
        bias = np.asarray(problem.linear_bias, problem.dtype)
        if bias.shape != (classes, *out_features):
            raise InvalidProblem(
                ("linear_bias",),
                f"linear_bias has shape {list(bias.shape)}: expected {[classes, *out_features]}",
            )
        bias = bias.reshape(-1)
    positions = math.prod(out_features)
    index_shape = (samples, *out_features) if batched else ()
    probability_shape = (samples, classes, *out_features) if batched else (classes,)
    index_labels = probability_rows = None
    if labels.dtype.kind in "iu" and labels.shape == index_shape:
        index_labels = labels.astype(np.int64).reshape(-1)
    elif labels.dtype.kind == "f" and labels.shape == probability_shape:
        p = np.asarray(labels, problem.dtype).reshape(samples, classes, positions)
        probability_rows = np.ascontiguousarray(p.transpose(0, 2, 1)).reshape(-1, classes)
    else:
        raise InvalidProblem(
            ("labels",),
            f"labels have shape {list(labels.shape)} ({labels.dtype}): expected class indices "
            f"of shape {list(index_shape)} or probabilities of shape {list(probability_shape)}",
        )
    if problem.weight is not None and np.shape(problem.weight) != (classes,):
        raise InvalidProblem(
            ("weight",), f"weight has shape {list(np.shape(problem.weight))}: expected [{classes}]"
        )
    divisor = z_divisor = 1.0
    if problem.reduction is Reduction.MEAN:
        if index_labels is not None:
            try:
                active = check_index_labels(index_labels, classes, problem.ignore_index)
            except InvalidProblem as error:
                raise _at_label(error, labels.shape) from None
            weight = None if problem.weight is None else np.asarray(problem.weight, np.float64)
            divisor, z_divisor = index_divisors(index_labels, active, weight)
        else:
            divisor = z_divisor = float(samples * positions)
    elif index_labels is not None:
        try:
            check_index_labels(index_labels, classes, problem.ignore_index)
        except InvalidProblem as error:
            raise _at_label(error, labels.shape) from None
    if problem.denominator is not None:
        if problem.reduction is not Reduction.MEAN:
            raise InvalidProblem(
                ("denominator",), "denominator replaces the divisor of reduction 'mean' only"
            )
        if not (math.isfinite(problem.denominator) and problem.denominator > 0):
            raise InvalidProblem(("denominator",), "denominator must be a positive number")
        divisor = z_divisor = float(problem.denominator)
    return Head(
        x=x2,
        w=w.reshape(-1, features),
        b=bias,
        index_labels=index_labels,
        probability_rows=probability_rows,
        classes=classes,
        out_features=out_features,
        problem=problem,
        divisors=Targets(np.zeros((0, classes)), divisor, z_divisor=z_divisor),
    )


def _at_label(error: InvalidProblem, shape: tuple[int, ...]) -> InvalidProblem:
    """The label error of a flat row index, at the label's position in the caller's shape."""
    where = error.location
    if len(where) == 2 and shape:
        position = tuple(int(i) for i in np.unravel_index(int(where[1]), shape))
        return InvalidProblem(("labels", *position), error.message)
    return error


def sample_blocks(samples: int, row_size: int) -> Iterator[slice]:
    """Consecutive samples holding about BLOCK_LOGITS logits, at least MIN_BLOCK_ROWS."""
    step = max(MIN_BLOCK_ROWS, BLOCK_LOGITS // max(1, row_size))
    for start in range(0, samples, step):
        yield slice(start, min(samples, start + step))


@dataclass(frozen=True)
class LinearReport:
    """Everything computed for one linear cross-entropy problem, in torch's shapes; outputs
    not asked for are None."""

    loss: FloatArray
    """The reduced loss (0-d), or the per-position losses for `none`."""
    losses: FloatArray
    """Per-position losses (cross-entropy plus z-loss term), the positions' shape."""
    input_gradient: FloatArray | None
    linear_weight_gradient: FloatArray | None
    linear_bias_gradient: FloatArray | None
    logits: FloatArray | None
    logits_gradient: FloatArray | None
    probabilities: FloatArray | None
    head: Head
    largest_row_range: float
    """max over rows of max z − min z (the numeric check's step rule)."""

    def refuse_non_finite(self, include: frozenset[LinearOutput]) -> None:
        """Raise InvalidProblem naming the first output of `include` (or the losses) that is
        not finite in the precision it was computed in (float32 can overflow where float64
        does not)."""
        for name in [LinearOutput.LOSSES, *sorted(include)]:
            value = getattr(self, name.value)
            if value is not None and not np.isfinite(value).all():
                raise InvalidProblem(
                    ("input",),
                    f"the {name.value} are not finite in {value.dtype}: the logits are too "
                    "large for this precision (use dtype float64 or smaller inputs)",
                )


def logits_shape(head: Head) -> tuple[int, ...]:
    """torch's shape of the logits: (C,), (N, C), (B, T, C) or (N, C, d1, …, dK)."""
    x = np.shape(head.problem.input)
    if head.problem.causal_shift:
        return (*x[:2], head.classes)
    if len(x) == 1:
        return (head.classes,)
    return (head.samples, head.classes, *head.out_features)


def _per_class(head: Head, rows: FloatArray) -> FloatArray:
    """(N·J, C) rows in torch's logits shape."""
    shape = logits_shape(head)
    if head.positions == 1:
        return rows.reshape(shape)
    return head.from_rows(rows).reshape(shape)


def _positions_shape(head: Head) -> tuple[int, ...]:
    """torch's shape of per-position values: (), (N,), (B, T) or (N, d1, …, dK)."""
    return logits_shape(head)[:-1] if head.positions == 1 else (head.samples, *head.out_features)


BlockObserver = Callable[[slice, FloatArray, LossRows, FloatArray], None]
"""Called once per block with (samples, logits as rows, the block's LossRows, G₂ of the block
(n, C·J)): what a candidate check computes in the same pass (`app.numerics.linear_candidate`)."""


def analyse_linear(
    problem: LinearProblem,
    include: frozenset[LinearOutput] = DEFAULT_OUTPUTS,
    *,
    observe: BlockObserver | None = None,
    deadline: Deadline = NEVER,
) -> LinearReport:
    """Loss, per-position losses and the gradients by input, weight and bias of `problem`
    (module docstring), by blocks of samples; the outputs of `include` (the loss and losses
    are always computed; the weight gradient, one more N·C·J·d matmul, only if asked).
    `deadline` is checked before each block; `observe` sees each block (`BlockObserver`).

    Raises InvalidProblem as `head_of`, and when logits are not finite or exceed
    MAX_MAGNITUDE (inputs too large for the loss to be resolved).

    References
    ----------
    .. [1] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., SIAM,
       2002, §3.1 (inner products) and §3.5 (matrix multiplication).
    .. [2] PyTorch 2.13, `torch.nn.functional.linear_cross_entropy`.
    .. [3] M. Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", 2024
       (blockwise logits, never materialised).
    """
    head = head_of(problem)
    n, features = head.x.shape
    row_size = head.classes * head.positions
    total_rows = n * head.positions
    want_weight = LinearOutput.LINEAR_WEIGHT_GRADIENT in include
    keep = include & FULL_LOGITS_OUTPUTS
    rows_include = frozenset({Output.LOSS, Output.GRADIENT})
    if LinearOutput.PROBABILITIES in include:
        rows_include |= {Output.PROBABILITIES}
    dtype = problem.dtype
    cross_entropy = np.empty(total_rows, dtype)
    z_terms = np.empty(total_rows, dtype) if problem.z_loss else None
    input_gradient = np.empty((n, features), dtype)
    weight_gradient = np.zeros((row_size, features), dtype) if want_weight else None
    bias_gradient = np.zeros(row_size, dtype)
    kept = {name: np.empty((total_rows, head.classes), dtype) for name in keep}
    largest_row_range = 0.0
    for part in sample_blocks(n, row_size):
        deadline.check()
        rows = head.rows(part)
        z = head.logits(part)
        _refuse_unresolvable(z, part.start, head)
        largest_row_range = max(largest_row_range, float(np.max(np.ptp(z, axis=1))))
        targets = head.targets(part)
        block = LossRows.of(
            z,
            targets,
            np.full(z.shape[0], targets.divisor),
            rows_include,
            NumericOptions(),
            z_loss=problem.z_loss,
            softcap=problem.softcap,
        )
        cross_entropy[rows] = block.cross_entropy
        if z_terms is not None and block.z_terms is not None:
            z_terms[rows] = block.z_terms
        g = head.from_rows(block.gradient)
        input_gradient[part] = g @ head.w
        if weight_gradient is not None:
            accumulate_outer(weight_gradient, g, head.x[part])
        bias_gradient += g.sum(axis=0)
        if observe is not None:
            observe(part, z, block, g)
        if LinearOutput.LOGITS in kept:
            kept[LinearOutput.LOGITS][rows] = z
        if LinearOutput.LOGITS_GRADIENT in kept:
            kept[LinearOutput.LOGITS_GRADIENT][rows] = block.gradient
        if LinearOutput.PROBABILITIES in kept:
            assert block.softmax is not None
            kept[LinearOutput.PROBABILITIES][rows] = block.softmax.probabilities
    losses = cross_entropy if z_terms is None else cross_entropy + z_terms
    loss = reduce_losses(cross_entropy, head.divisors, problem.reduction, z_terms=z_terms)
    positions = _positions_shape(head)
    weight_shape = np.shape(problem.linear_weight)
    return LinearReport(
        loss=loss.reshape(positions) if problem.reduction is Reduction.NONE else loss,
        losses=losses.reshape(positions),
        input_gradient=input_gradient.reshape(np.shape(problem.input)),
        linear_weight_gradient=None
        if weight_gradient is None
        else weight_gradient.reshape(weight_shape),
        linear_bias_gradient=bias_gradient.reshape(head.classes, *head.out_features),
        logits=_kept(head, kept, LinearOutput.LOGITS),
        logits_gradient=_kept(head, kept, LinearOutput.LOGITS_GRADIENT),
        probabilities=_kept(head, kept, LinearOutput.PROBABILITIES),
        head=head,
        largest_row_range=largest_row_range,
    )


def accumulate_outer(total: FloatArray, g: FloatArray, x: FloatArray) -> None:
    """total += gᵀ·x, (C·J, d) += (n, C·J)ᵀ·(n, d), by slices of total's rows through one
    scratch array of about BLOCK_LOGITS numbers: no temporary as large as the weight (at
    C = 32,000 and d = 1,024 that would be another 262 MB, allocated and faulted in for every
    block)."""
    rows, features = total.shape
    step = max(1, min(rows, BLOCK_LOGITS // max(1, features)))
    scratch = np.empty((step, features), total.dtype)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        product = scratch[: stop - start]
        np.matmul(g[:, start:stop].T, x, out=product)
        total[start:stop] += product


def _kept(
    head: Head, kept: dict[LinearOutput, FloatArray], name: LinearOutput
) -> FloatArray | None:
    return _per_class(head, kept[name]) if name in kept else None


def _refuse_unresolvable(z: FloatArray, first_sample: int, head: Head) -> None:
    """Raise InvalidProblem at the first sample of the block whose logits are not finite or
    exceed MAX_MAGNITUDE (float64 cannot resolve a unit change of such a logit)."""
    if np.max(z) <= MAX_MAGNITUDE and np.min(z) >= -MAX_MAGNITUDE:  # NaN fails both
        return
    bad = ~(np.abs(z) <= MAX_MAGNITUDE)
    row = int(np.argwhere(bad)[0][0])
    sample = first_sample + row // head.positions
    raise InvalidProblem(
        ("input", sample),
        f"the logits of sample {sample} exceed {MAX_MAGNITUDE:g} in magnitude (or overflow): "
        "input and linear_weight are too large for the loss to be resolved",
    )


def logit_error_bound(head: Head, part: slice) -> FloatArray:
    """γ_{d+1}·(|x|·|W₂|ᵀ + |b₂|) of the samples `part`, shape (n, C·J): the bound of the
    module docstring on |ẑ − z| of each computed logit (Higham 2002, eq. 3.5)."""
    features = head.x.shape[1]
    u = float(np.finfo(np.float64).eps) / 2
    m = features + 1
    gamma = m * u / (1 - m * u)
    magnitude: FloatArray = np.abs(head.x[part]) @ np.abs(head.w).T
    if head.b is not None:
        magnitude += np.abs(head.b)
    magnitude *= gamma
    return magnitude


# ----- the numeric check along random directions of (input, weight, bias) ---------------------


@dataclass(frozen=True)
class HeadDirection:
    """One unit direction of (x, W₂, b₂) jointly: ‖v_x‖² + ‖v_W‖² + ‖v_b‖² = 1."""

    input: FloatArray
    weight: FloatArray
    bias: FloatArray | None


def head_directions(head: Head, count: int, seed: int) -> Iterator[HeadDirection]:
    """The `count` directions of `linear_directional_check`, one at a time: v_x (N, d),
    v_W (C·J, d) and v_b (C·J,) (only with a bias) drawn in that order from
    `numpy.random.default_rng(seed).standard_normal(…, dtype=float32)` (exact in float64),
    then scaled together to unit norm in float64."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        parts = [rng.standard_normal(head.x.shape, dtype=np.float32).astype(np.float64)]
        parts.append(rng.standard_normal(head.w.shape, dtype=np.float32).astype(np.float64))
        if head.b is not None:
            parts.append(rng.standard_normal(head.b.shape, dtype=np.float32).astype(np.float64))
        norm = math.sqrt(math.fsum(float(np.sum(part * part)) for part in parts))
        for part in parts:
            part /= norm
        yield HeadDirection(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def linear_directional_check(
    report: LinearReport,
    directions: int,
    numeric: NumericOptions | None = None,
    tolerance: Tolerance | None = None,
    *,
    seed: int = DIRECTION_SEED,
) -> DirectionalDerivatives:
    """Check the report's gradients by input, weight and bias along `directions` random unit
    directions v = (v_x, v_W, v_b) of all three jointly (`head_directions`).

    Along x + t·v_x, W + t·v_W, b + t·v_b the logits move exactly by

        z(t) − z = t·z′ + t²·z″,    z′ = v_x·Wᵀ + x·v_Wᵀ + v_b,    z″ = v_x·v_Wᵀ

    so each stencil point L(t) − L(0) is evaluated from the move t·z′ + t²·z″ of the logits
    (`directional.LogitChanges`, the cross-entropy's own differences: no cancellation against L),
    and dL/dt(0) = ⟨∂L/∂x, v_x⟩ + ⟨∂L/∂W, v_W⟩ + ⟨∂L/∂b, v_b⟩ is compared with it at the
    request's tolerance. Each direction costs four N·C·J·d matmuls per pass over the blocks
    (z, the two terms of z′ and z″), against three for the whole analysis: k directions cost
    about 4k/3 times the analysis, which is why the check is asked for, never implied.

    The step h (unless `numeric.step` fixes it) makes the root-mean-square move of a logit
    the per-element rule's step (`directional.directional_check`): h = base·max(1, largest
    row range)^(1/(p+1))·√(N·C·J) / ‖z′‖, with ‖z′‖² estimated as
    (‖v_x‖²·‖W‖² + ‖x‖²·‖v_W‖²)/d + N·‖v_b‖² (its mean over random directions). The error
    estimate is `directional.directional_error` of each block along z′, summed over blocks.
    """
    numeric = numeric or NumericOptions()
    tolerance = tolerance or Tolerance()
    head = report.head
    assert report.input_gradient is not None and report.linear_weight_gradient is not None
    assert report.linear_bias_gradient is not None
    problem = head.problem
    method = numeric.method
    n, features = head.x.shape
    row_size = head.classes * head.positions
    blocks = list(sample_blocks(n, row_size))
    x_norm2 = float(np.sum(head.x * head.x))
    w_norm2 = float(np.sum(head.w * head.w))
    dx = report.input_gradient.reshape(head.x.shape)
    dw = report.linear_weight_gradient.reshape(head.w.shape)
    db = report.linear_bias_gradient.reshape(-1)
    order = 2 if method is Method.COMPLEX_STEP else STENCILS[method].order
    base = h = COMPLEX_STEP if method is Method.COMPLEX_STEP else 0.0
    scaled = numeric.step is None and method is not Method.COMPLEX_STEP
    numeric_values, analytic_values, truncations, roundings, steps = [], [], [], [], []
    for v in head_directions(head, directions, seed):
        numeric.deadline.check()
        analytic = math.fsum(
            [
                float(np.sum(dx * v.input)),
                float(np.sum(dw * v.weight)),
                0.0 if v.bias is None else float(np.sum(db * v.bias)),
            ]
        )
        if numeric.step is not None:
            h = base = numeric.step
        elif scaled:
            base = float(np.finfo(head.x.dtype).eps ** (1 / (order + 1)))
            speed2 = (float(np.sum(v.input * v.input)) * w_norm2) / features
            speed2 += x_norm2 * float(np.sum(v.weight * v.weight)) / features
            if v.bias is not None:
                speed2 += n * float(np.sum(v.bias * v.bias))
            scale = max(1.0, report.largest_row_range) ** (1 / (order + 1))
            h = base * scale * math.sqrt(n * row_size) / max(math.sqrt(speed2), 1e-300)
        value = 0.0
        truncation = rounding = 0.0
        for part in blocks:
            z = head.logits(part)
            moved: FloatArray = v.input[part] @ head.w.T + head.x[part] @ v.weight.T
            if v.bias is not None:
                moved += v.bias
            first = head.to_rows(moved)
            second = head.to_rows(v.input[part] @ v.weight.T)
            changes = LogitChanges(
                LossProblem(
                    z, head.targets(part), problem.reduction, problem.z_loss, problem.softcap
                )
            )
            if method is Method.COMPLEX_STEP:
                value += float(np.imag(changes(1j * h * first - h * h * second))) / h
            else:
                stencil = STENCILS[method]
                value += (
                    math.fsum(
                        weight
                        * float(np.real(changes(offset * h * first + (offset * h) ** 2 * second)))
                        for offset, weight in zip(stencil.offsets, stencil.weights, strict=True)
                        if offset
                    )
                    / h
                )
            spread = [np.max(first, axis=1) - np.min(first, axis=1)]
            estimate = directional_error(changes, method, h, spread, np.asarray([analytic]))
            truncation += estimate.truncation
            rounding += estimate.rounding
        numeric_values.append(value)
        analytic_values.append(analytic)
        truncations.append(truncation)
        roundings.append(rounding)
        steps.append(h)
    numeric_array, analytic_array = np.asarray(numeric_values), np.asarray(analytic_values)
    agreement = compare(analytic_array, numeric_array, atol=tolerance.atol, rtol=tolerance.rtol)
    estimate = ErrorEstimate(max(truncations, default=0.0), max(roundings, default=0.0))
    direction_steps = DirectionSteps(np.asarray(steps), base, scaled, order)
    check = Check(agreement, method, direction_steps, tolerance, estimate, directions=directions)
    return DirectionalDerivatives(check, numeric_array, analytic_array, seed)
