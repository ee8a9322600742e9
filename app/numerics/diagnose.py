"""The named mistakes a wrong candidate output can be explained by.

A *candidate* is an output (probabilities, log-probabilities, loss, per-sample losses, gradient,
Jacobian) computed by the caller. When it disagrees with the reference, each known mistake is
tried as a *hypothesis*: the output is recomputed under the mistaken assumption, and the
hypothesis explains the candidate when

1. its values differ from the reference somewhere by more than MARGIN (8) times the tolerance,

    |h − r| > MARGIN·(atol + rtol·|r|) for some entry,

   and
2. the candidate agrees with them everywhere within the tolerance,

    |candidate − h| ≤ atol + rtol·|h| + SLACK·max|h|

where the tiny SLACK absorbs the rounding of the hypothesis itself (it is computed in plain
float64, without the reference's care for cancellation). Nothing else is ever claimed: when no
hypothesis explains a wrong candidate there is no diagnosis.

The margin of 1. makes a mistake nameable only where its numbers are distinguishable from the
right ones at the candidate's tolerance: a mistake that does not change the numbers on this
input, or changes them by only a few tolerances, is no mistake here. Together with 2. it means
a named candidate is wrong somewhere by more than (MARGIN·(1 − rtol) − 1) tolerances (over 6 at
bfloat16's rtol 5e-2), so errors of a few tolerances — rounding, noise, a loose dtype's
tolerance — never land on a mistake's numbers by chance. The price: a mistake whose effect on
this input stays within MARGIN tolerances everywhere is not named (at bfloat16's rtol, one that
moves no value by more than about 40 %, such as label smoothing 0.1 left out, in the loss of most
inputs). The rule is the same for every code, for pairs, for `wrong_scale` (whose factor k must
then lie farther than that from 1) and for a scalar loss.

Every hypothesis is built from quantities of the problem computed once — the softmax a and
log a, the effective targets q of the options (and of the mistaken options), the divisor D —
and is evaluated first on a few *probe* rows (the samples with the largest errors and one
sample without error), so that the hypotheses that fail, nearly all of them, cost a few rows
each; only a hypothesis that fits its probe rows is computed on the whole output.

Priority (the most likely explanation first, when several fit):

====  ============================  ========================================================
 1    overflow                      facts, not fits: NaN/Infinity exactly in the samples
 2    probability_underflow         whose largest logit overflows exp in the candidate's
                                    dtype, or where a probability with a nonzero target
                                    underflows to 0 (then divided by, or its log taken)
 3    wrong_softmax_axis            a mistake in the softmax, upstream of every output
 4    sign_flipped                  the commonest backward-pass slips, in the order they
 5    not_divided                   are usually made: sign, the mean's divisor, the
 6    divided_by_batch_size         textbook a − y
 7    a_minus_y
 8    weights_ignored               an option of the loss left out or misread
 9    label_smoothing_ignored
10    smoothing_over_other_classes
11    ignored_rows_smoothed
12    ignore_index_not_applied
13    soft_labels_argmaxed
14    off_by_one_labels
15    log_clipped                   the loss's log taken of a clipped probability, or of the
16    loss_wrong_entries            wrong entries
17    jacobian_missing_diagonal     the Jacobian's and the Hessian's structure
18    jacobian_diagonal_only
19    hessian_missing_target_sum
20    hessian_not_divided
21    wrong_scale                   the catch-all: any other constant factor; tried only
                                    when no named mistake (or pair) fits
====  ============================  ========================================================

Two mistakes at once: where no single code explains an array output with at least two
failing samples, pairs are tried — one scale or sign mistake (sign_flipped, not_divided,
divided_by_batch_size) on top of one semantic mistake (a_minus_y, weights_ignored,
label_smoothing_ignored, smoothing_over_other_classes, ignored_rows_smoothed,
ignore_index_not_applied) or of the other kind of scale mistake — on the probe rows first, as
every hypothesis is. A pair that fits gives two diagnoses of that output, each with its
evidence; a single code always beats a pair.

A scalar loss is one number: any hypothesis could land within a loose tolerance of it by
chance. It is named only when the candidate matches a hypothesis to SCALAR_MATCH relative and
no hypothesis that differs from it by more than that is within the tolerance; `wrong_scale`
then applies to it for the factors −N, 1/N and C only.

Several codes can give the same numbers on one input (with a single sample, "not divided" and
"divided by the batch size" coincide): the first in priority order is the diagnosis and the
others are listed in its `indistinguishable_from`.

Messages say what was done and what the right step is, with a link to the section of the maths
page; they contain no number derived from the reference (grading shows them to students).
`evidence` may: it says how the mistake was recognised.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from types import EllipsisType

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from app.numerics.cross_entropy import Reduction
from app.numerics.layout import row_blocks
from app.numerics.softmax import FloatArray, Softmax, softmax

SLACK = 2.0**-42
"""Relative (to the output's largest magnitude) allowance for the hypotheses' own rounding."""

MARGIN = 8.0
"""How many tolerances a hypothesis must differ from the reference by, somewhere, to be named:
errors of a few tolerances (rounding, noise, a loose dtype's tolerance) can then never fit it."""

SCALAR_MATCH = 1e-6
"""How close (relative) a scalar loss must be to a hypothesis for the hypothesis to be named."""

CLIP_EPSILONS: tuple[tuple[float, str], ...] = (
    (1e-7, "1e-7"),
    (1e-8, "1e-8"),
    (1e-10, "1e-10"),
    (1e-12, "1e-12"),
    (1e-15, "1e-15"),
    (1e-16, "1e-16"),
    (float(np.finfo(np.float32).eps), "float32 eps"),
    (float(np.finfo(np.float32).tiny), "float32 tiny"),
)
"""The ε of `log_clipped`: the constants that implementations clip or shift probabilities by."""

SEMANTIC_CODES = (
    "a_minus_y",
    "weights_ignored",
    "label_smoothing_ignored",
    "smoothing_over_other_classes",
    "ignored_rows_smoothed",
    "ignore_index_not_applied",
)
"""The mistakes a scale or sign mistake is paired with; they stand together in PRIORITY."""

PRIORITY: tuple[str, ...] = (
    "overflow",
    "probability_underflow",
    "wrong_softmax_axis",
    "sign_flipped",
    "not_divided",
    "divided_by_batch_size",
    *SEMANTIC_CODES,
    "soft_labels_argmaxed",
    "off_by_one_labels",
    "log_clipped",
    "loss_wrong_entries",
    "jacobian_missing_diagonal",
    "jacobian_diagonal_only",
    "hessian_missing_target_sum",
    "hessian_not_divided",
    "wrong_scale",
)
"""Every diagnosis code, the most likely first."""

ROW_OUTPUTS = frozenset(
    {"probabilities", "log_probabilities", "losses", "gradient", "jacobian", "hessian"}
)
"""Outputs whose first axis is the sample (`loss` too, with reduction `none`)."""

PROBE_ROWS = 4
"""How many of the worst samples a hypothesis must fit before it is computed everywhere."""
Rows = slice | NDArray[np.intp] | EllipsisType
"""Samples of an output: a block, chosen ones, or all of it (`...`, also for a scalar)."""


@dataclass(frozen=True)
class ProblemInputs:
    """The raw inputs of a softmax or cross-entropy problem, as the caller gave them.

    The hypotheses need the options themselves, not only the effective targets q they fold
    into: "weights ignored" recomputes q without `weight`, "off by one" with other labels.
    """

    logits: FloatArray
    """z, shape (N, C); −inf entries are masks."""
    labels: NDArray[np.integer] | FloatArray | None = None
    """Class indices (N,) or probability rows (N, C); None for a softmax-only problem."""
    weight: FloatArray | None = None
    """Class weights w, shape (C,), or None."""
    ignore_index: int = -100
    label_smoothing: float = 0.0
    reduction: Reduction = Reduction.MEAN
    denominator: float | None = None
    """With `mean`: the divisor D given by the caller (HF's num_items_in_batch), whatever the
    labels and options; every hypothesis keeps it."""


@dataclass(frozen=True)
class Diagnosis:
    """One named mistake that explains a candidate output."""

    code: str
    """One of PRIORITY."""
    output: str
    """The output it was found in ("gradient", "loss", …)."""
    message: str
    """What was done and the right step, for a student; no number from the reference."""
    evidence: str
    """How it was recognised; may hold numbers (the factor, D, N…)."""
    indistinguishable_from: list[str] = field(default_factory=list)
    """Other codes giving the same numbers on this input."""


@dataclass(frozen=True)
class Observed:
    """A candidate output and its reference, both float64 of one shape."""

    candidate: FloatArray
    reference: FloatArray
    probe_rows: NDArray[np.intp] | None = None
    """Samples to try hypotheses on first (worst first); None: found from the two arrays."""
    nonfinite: int | None = None
    """How many candidate entries are NaN/±inf other than an exact infinite reference; None:
    not counted yet."""
    dtype: np.dtype[np.generic] = field(default_factory=lambda: np.dtype(np.float64))
    """The dtype the candidate was sent in (where exp overflows, where a probability
    underflows to 0)."""


@dataclass(frozen=True)
class _Hypothesis:
    code: str
    values: Callable[[Rows], FloatArray]
    """The output under the mistake, for the sample rows given (all of it for a scalar)."""
    evidence: str
    factor: float | None = None
    """k when the mistake is the reference × k (its effect is then known from k alone)."""
    divisor: float = 1.0
    """D the values are divided by (a scale mistake paired with this one undoes or changes
    it)."""


def _scaled(code: str, reference: FloatArray, factor: float, evidence: str) -> _Hypothesis:
    """The hypothesis "the reference × factor"."""

    def values(rows: Rows) -> FloatArray:
        part: FloatArray = (reference if reference.ndim == 0 else reference[rows]) * factor
        return part

    return _Hypothesis(code, values, evidence, factor)


# ----- messages ---------------------------------------------------------------------------

_ANCHORS = {
    "overflow": "softmax",
    "wrong_softmax_axis": "softmax",
    "not_divided": "reductions",
    "divided_by_batch_size": "reductions",
    "a_minus_y": "a-minus-y",
    "weights_ignored": "effective-targets",
    "label_smoothing_ignored": "effective-targets",
    "ignore_index_not_applied": "effective-targets",
    "off_by_one_labels": "effective-targets",
    "smoothing_over_other_classes": "effective-targets",
    "ignored_rows_smoothed": "effective-targets",
    "soft_labels_argmaxed": "effective-targets",
    "log_clipped": "softmax",
    "loss_wrong_entries": "effective-targets",
    "jacobian_missing_diagonal": "jacobian",
    "hessian_missing_target_sum": "hessian",
    "hessian_not_divided": "hessian",
    "jacobian_diagonal_only": "jacobian",
}
_OUTPUT_ANCHORS = {
    "hessian": "hessian",
    "probabilities": "softmax",
    "log_probabilities": "softmax",
    "loss": "effective-targets",
    "losses": "effective-targets",
    "gradient": "gradient",
    "jacobian": "jacobian",
}
_OUTPUT_NAMES = {
    "hessian": "Hessian",
    "probabilities": "probabilities",
    "log_probabilities": "log-probabilities",
    "loss": "loss",
    "losses": "per-sample losses",
    "gradient": "gradient",
    "jacobian": "Jacobian",
}


def docs_link(anchor: str, docs_url: str | None = None) -> str:
    """`docs/maths.md#<anchor>`, or `<docs_url>/maths/#<anchor>` for a published site."""
    if docs_url:
        return f"{docs_url.rstrip('/')}/maths/#{anchor}"
    return f"docs/maths.md#{anchor}"


def _divisor_words(inputs: ProblemInputs) -> str:
    if inputs.labels is not None and np.asarray(inputs.labels).ndim == 2:
        return "the number of samples N"
    if inputs.weight is None:
        return "the number of samples that are not ignored"
    return "the sum of the class weights w_y of the samples that are not ignored"


def message(code: str, output: str, inputs: ProblemInputs, docs_url: str | None = None) -> str:
    """The student-facing sentence of `code` found in `output`, ending with its docs link."""
    name = _OUTPUT_NAMES.get(output, output)
    derivative = output in ("gradient", "jacobian")
    plural = output in ("probabilities", "log_probabilities", "losses")
    has, comes, is_, leaves, treats, reads = (
        ("have", "come", "are", "leave", "treat", "read")
        if plural
        else ("has", "comes", "is", "leaves", "treats", "reads")
    )

    texts = {
        "overflow": f"Your {name} {has} NaN or Infinity where the exact value is finite: exp of "
        "large logits overflowed. Subtract each row's largest logit before exp, and take "
        "log-probabilities as z − log-sum-exp(z).",
        "probability_underflow": (
            f"Your {name} {has} NaN or Infinity in the samples where a probability underflows "
            "to 0: the backward pass through −q/a divides by it. Use the fused gradient "
            "a·Σq − q, which never divides by a probability."
            if derivative or output == "hessian"
            else f"Your {name} {has} NaN or Infinity in the samples where a probability "
            "underflows to 0 before its log. Take log-probabilities as z − log-sum-exp(z) "
            "(log_softmax), never as the log of the softmax."
        ),
        "wrong_softmax_axis": f"Your {name} {comes} from a softmax normalised over the batch "
        "(each class's column sums to 1) instead of over the classes. Normalise each sample's "
        "row: a_i = exp(z_i) / Σ_j exp(z_j) over the classes j of that sample.",
        "sign_flipped": (
            f"Your {name} {has} the wrong sign (for example y − a instead of a − y). "
            + (
                "The derivative of the loss is a·Σq − q."
                if output == "gradient"
                else "The Jacobian is a_i(δ_ij − a_j), positive on the diagonal."
                if derivative
                else "Cross-entropy is −Σ q·log a, which is never negative."
            )
        ),
        "not_divided": f"With reduction 'mean' the loss and its gradient are divided by D, "
        f"{_divisor_words(inputs)}; your {name} is the sum, not divided. Divide it by D.",
        "divided_by_batch_size": f"Your {name} {is_} divided by the batch size N, but with class "
        "weights or ignored samples reduction 'mean' divides by D = Σ w_y over the samples "
        "that are not ignored.",
        "a_minus_y": "Your gradient is a − y (or a − q), which is right only when every target "
        "row sums to 1; here some do not (weights, ignored samples or unnormalised targets). "
        "Use a·Σq − q, with q the effective targets.",
        "weights_ignored": f"Your {name} {leaves} out the class weights: each target is weighted "
        "by w of its class (q = w_y·onehot(y)), and reduction 'mean' divides by Σ w_y.",
        "label_smoothing_ignored": f"Your {name} {leaves} out label smoothing: with smoothing ε "
        "the target of a sample is (1 − ε)·onehot(y) + ε/C, not onehot(y).",
        "ignore_index_not_applied": f"Your {name} {treats} samples labelled ignore_index as "
        "ordinary samples: they must contribute no loss and no gradient, and not count in the "
        "mean's divisor.",
        "smoothing_over_other_classes": f"Your {name} {treats} label smoothing as (1 − ε) on "
        "the label and ε/(C − 1) on each other class. Label smoothing ε (PyTorch's) spreads ε "
        "over all C classes, the label's included: q = (1 − ε)·onehot(y) + ε/C.",
        "ignored_rows_smoothed": f"Your {name} {leaves} the label-smoothing term in the samples "
        "labelled ignore_index: an ignored sample contributes no loss and no gradient at all, "
        "its smoothing included, and does not count in the mean's divisor.",
        "soft_labels_argmaxed": f"Your {name} {treats} the probability targets as one-hot rows "
        "of their most likely class. With probability targets the loss is −Σ_c q_c·log a_c "
        "over every class c, with the rows q as given.",
        "log_clipped": f"Your {name} {is_} the log of a clipped or shifted probability (log "
        "max(p, ε), log(p + ε) or log clip(p, ε, 1 − ε)), which caps the loss of a confident "
        "wrong prediction. Take log-probabilities as z − log-sum-exp(z) (log_softmax): they "
        "are finite without any ε.",
        "loss_wrong_entries": "Your loss is taken over the wrong entries: every sample at every "
        "label (logits[:, y] is an N×N block) or only the first sample. Pick log a[n, y_n] of "
        "each sample n (logits[arange(N), y]) and reduce over all N of them.",
        "off_by_one_labels": f"Your {name} {reads} the labels as 1-based (class y − 1 for label "
        "y). Labels are 0-based class indices: label y is class y.",
        "hessian_missing_target_sum": "Your Hessian leaves out the factor Σ_c q_c of each "
        "row: the Hessian of the loss is (Σ_c q_c / D)·(diag a − a·aᵀ), and the targets' sum is "
        "not 1 here (weights, smoothing or unnormalised targets).",
        "hessian_not_divided": "Your Hessian is not divided by D of reduction 'mean': the "
        "Hessian of the reduced loss is (Σ_c q_c / D)·(diag a − a·aᵀ).",
        "jacobian_missing_diagonal": "Your Jacobian is −a·aᵀ without the diagonal term: "
        "∂a_i/∂z_j = a_i(δ_ij − a_j), so J = diag(a) − a·aᵀ.",
        "jacobian_diagonal_only": "Your Jacobian has only the diagonal a_i(1 − a_i): the "
        "off-diagonal entries −a_i·a_j are missing (J = diag(a) − a·aᵀ).",
        "wrong_scale": f"Your {name} {is_} off from the right values by one constant factor that "
        "is none of the usual mistakes: look for a stray or missing constant multiplier (a "
        "division, a log base, a factor of 2).",
    }
    anchor = _ANCHORS.get(code) or _OUTPUT_ANCHORS.get(output, "gradient")
    return f"{texts[code]} See {docs_link(anchor, docs_url)}."


# ----- quantities shared by the hypotheses ---------------------------------------------------


class _Problem:
    """The quantities of one problem that hypotheses are built from, each computed once."""

    def __init__(self, inputs: ProblemInputs, sm: Softmax | None) -> None:
        self.inputs = inputs
        self.z = np.asarray(inputs.logits, np.float64)
        self.num_samples, self.num_classes = self.z.shape
        if sm is not None and sm.probabilities.dtype == np.float64:
            self.sm = sm
        else:
            self.sm = softmax(self.z)
        labels = None if inputs.labels is None else np.asarray(inputs.labels)
        self.labels = labels
        self.index_labels = labels is not None and labels.ndim == 1
        self.probability_labels = labels is not None and labels.ndim == 2

    @property
    def a(self) -> FloatArray:
        return self.sm.probabilities

    @property
    def log_a(self) -> FloatArray:
        return self.sm.log_probabilities

    @cached_property
    def column_softmax(self) -> tuple[FloatArray, FloatArray]:
        """(a′, log a′): softmax over axis 0 (the samples), the wrong-axis mistake."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            shifted = self.z - self.z.max(axis=0, keepdims=True)
            exp = np.exp(shifted)
            total = exp.sum(axis=0, keepdims=True)
            return exp / total, shifted - np.log(total)

    def variant(self, name: str) -> ProblemInputs | None:
        """The inputs under a mistaken option, or None where the mistake changes nothing."""
        inputs = self.inputs
        if name == "reference":
            return inputs
        if name == "weights_ignored":
            return None if inputs.weight is None else replace(inputs, weight=None)
        if name == "label_smoothing_ignored":
            return replace(inputs, label_smoothing=0.0) if inputs.label_smoothing else None
        if name == "soft_labels_argmaxed":
            return self._argmaxed(one_hot_rows=False)
        if name == "soft_labels_argmaxed_one_hot":
            return self._argmaxed(one_hot_rows=True)
        if not self.index_labels:
            return None
        if name == "smoothing_over_other_classes":
            eps, c = inputs.label_smoothing, self.num_classes
            return replace(inputs, label_smoothing=eps * c / (c - 1)) if eps else None
        assert self.labels is not None
        labels = self.labels.astype(np.int64)
        ignored = labels == inputs.ignore_index
        if name == "ignore_index_not_applied":
            c = self.num_classes
            if not ignored.any() or not -c <= inputs.ignore_index < c:
                return None
            never = int(labels.min()) - 1 if labels.min() > -(2**62) else 2**62
            fixed = np.where(ignored, inputs.ignore_index % c, labels)
            return replace(inputs, labels=fixed, ignore_index=never)
        if name == "off_by_one_labels":
            if ignored.all():
                return None
            shifted = np.where(ignored, labels, (labels - 1) % self.num_classes)
            return replace(inputs, labels=shifted)
        raise ValueError(name)

    def _argmaxed(self, *, one_hot_rows: bool) -> ProblemInputs | None:
        """Probability targets replaced by their argmax (the first maximum of a tie): as index
        labels, or as one-hot probability rows (which differ only in the divisor of a weighted
        mean, N instead of Σ w_y). None unless some target row is not one-hot."""
        if not self.probability_labels:
            return None
        assert self.labels is not None
        p = np.asarray(self.labels, np.float64)
        winners = np.argmax(p, axis=1)
        one_hot = np.zeros_like(p)
        one_hot[np.arange(self.num_samples), winners] = 1.0
        if np.array_equal(one_hot, p):
            return None
        if one_hot_rows:
            weighted_mean = self.inputs.weight is not None
            weighted_mean &= self.inputs.reduction is Reduction.MEAN
            return replace(self.inputs, labels=one_hot) if weighted_mean else None
        return replace(self.inputs, labels=winners, ignore_index=-1)

    def targets(
        self, inputs: ProblemInputs, rows: Rows, *, smooth_ignored: bool = False
    ) -> FloatArray:
        """Effective targets q of `rows` under `inputs` (float64), by the formulas of
        cross_entropy (index labels: (1 − ε)·w_y·onehot(y) + (ε/C)·w, 0 where ignored, or
        (ε/C)·w there with `smooth_ignored`; probability rows p: w·((1 − ε)·p + ε/C)) in a few
        whole-array steps: a hypothesis asks for the targets of a handful of probe rows, where
        call overheads dominate."""
        labels = np.asarray(inputs.labels)[rows]
        c = self.num_classes
        eps = inputs.label_smoothing
        w = None if inputs.weight is None else np.asarray(inputs.weight, np.float64)
        if labels.ndim == 2:
            base = (1 - eps) * labels + eps / c if eps else labels.astype(np.float64)
            return base if w is None else base * w
        q = np.zeros((labels.shape[0], c))
        active = np.flatnonzero(labels != inputs.ignore_index)
        classes = labels[active]
        if eps:
            smoothed = slice(None) if smooth_ignored else active
            q[smoothed] = eps / c if w is None else (eps / c) * w
        q[active, classes] += (1 - eps) if w is None else (1 - eps) * w[classes]
        return q

    def divisor(self, inputs: ProblemInputs) -> float:
        """D of `mean` under `inputs` (1 for `sum` and `none`; NaN when it would be 0)."""
        if inputs.reduction is not Reduction.MEAN:
            return 1.0
        if inputs.denominator is not None:
            return inputs.denominator
        labels = np.asarray(inputs.labels)
        if labels.ndim == 2:
            return float(self.num_samples)
        kept = labels[labels != inputs.ignore_index]
        if inputs.weight is None:
            total = float(kept.size)
        else:
            total = math.fsum(np.asarray(inputs.weight, np.float64)[kept].tolist())
        return total if total > 0 else math.nan

    @cached_property
    def reference_divisor(self) -> float:
        return self.divisor(self.inputs)

    @cached_property
    def target_sums(self) -> FloatArray:
        """Σ_c q_nc of the reference targets, shape (N,)."""
        sums: FloatArray = self.targets(self.inputs, slice(None)).sum(axis=1)
        return sums


def _gradient(
    a: FloatArray, q: FloatArray, divisor: float, *, a_minus_q: bool = False
) -> FloatArray:
    """(a·Σq − q)/D, or (a − q)/D for the a − y mistake."""
    scaled = a if a_minus_q else a * q.sum(axis=1, keepdims=True)
    result: FloatArray = (scaled - q) / divisor
    return result


def _losses(log_a: FloatArray, q: FloatArray) -> FloatArray:
    """−Σ_c q_c·log a_c per row, 0·log 0 taken as 0."""
    with np.errstate(invalid="ignore"):
        terms = np.where(q > 0, q * log_a, 0.0)
    result: FloatArray = -terms.sum(axis=1)
    return result


def _jacobian(a: FloatArray, *, diagonal: bool = True, off_diagonal: bool = True) -> FloatArray:
    """a_i(δ_ij − a_j) of each row, optionally without one of its two parts."""
    n, c = a.shape
    if off_diagonal:
        jacobian: FloatArray = -a[:, :, None] * a[:, None, :]
    else:
        jacobian = np.zeros((n, c, c))
    if diagonal:
        index = np.arange(c)
        jacobian[:, index, index] += a
    return jacobian


# ----- the hypotheses of each output ---------------------------------------------------------


def _scalar_loss(problem: _Problem, output: str) -> bool:
    return output == "loss" and problem.inputs.reduction is not Reduction.NONE


def _hypotheses(problem: _Problem, output: str, reference: FloatArray) -> list[_Hypothesis]:
    """Every hypothesis that applies to `output` of this problem, in priority order (overflow,
    probability_underflow and the wrong_scale of an array are handled apart)."""
    inputs = problem.inputs
    found: list[_Hypothesis] = []
    labelled = inputs.labels is not None
    scalar = _scalar_loss(problem, output)
    if output in ("loss", "losses", "gradient", "hessian") and not labelled:
        return found
    divisor = problem.reference_divisor if output != "losses" else 1.0

    def divisor_of(variant: ProblemInputs) -> float:
        """D of `output` under `variant` (1 for the outputs that are not reduced)."""
        if output in ("losses", "probabilities", "log_probabilities", "jacobian"):
            return 1.0
        return problem.divisor(variant)

    def compute(
        variant: ProblemInputs,
        rows: Rows,
        *,
        column: bool = False,
        smooth_ignored: bool = False,
        d: float | None = None,
    ) -> FloatArray:
        """`output` under `variant`, with a softmax over the wrong axis if `column`, the
        smoothing term kept in ignored samples if `smooth_ignored`, divided by `d` if given."""
        a, log_a = problem.column_softmax if column else (problem.a, problem.log_a)
        if output == "probabilities":
            return a[rows]
        if output == "log_probabilities":
            return log_a[rows]
        if output == "jacobian":
            return _jacobian(a[rows])
        d = divisor_of(variant) if d is None else d
        if output == "hessian":
            sums = problem.targets(variant, rows).sum(axis=1) / d
            hessian: FloatArray = sums[:, None, None] * _jacobian(a[rows])
            return hessian
        if scalar:
            rows = slice(None)
        q = problem.targets(variant, rows, smooth_ignored=smooth_ignored)
        if output == "gradient":
            return _gradient(a[rows], q, d)
        losses = _losses(log_a[rows], q)
        if scalar:
            return np.asarray(math.fsum(losses.tolist()) / d)
        return losses

    found.append(
        _Hypothesis(
            "wrong_softmax_axis",
            lambda rows: compute(inputs, rows, column=True),
            f"the candidate equals the {output} computed from a softmax over axis 0 (the "
            "samples) instead of axis 1 (the classes)",
        )
    )
    if output in ("loss", "losses", "gradient", "jacobian", "hessian"):
        found.append(
            _scaled("sign_flipped", reference, -1.0, "the candidate equals −1 × the reference")
        )
    mean = inputs.reduction is Reduction.MEAN and output in ("loss", "gradient")
    if mean and divisor != 1:
        evidence = (
            f"the candidate equals the reference × {divisor:.6g} = D, the divisor of reduction "
            f"'mean' ({_divisor_words(inputs)})"
        )
        found.append(_scaled("not_divided", reference, divisor, evidence))
    n = problem.num_samples
    if mean and problem.index_labels and divisor != n:
        evidence = (
            f"the candidate equals the reference × D/N = {divisor:.6g}/{n}: divided by the {n} "
            f"samples instead of D = {divisor:.6g}{_ignored_words(problem)}"
        )
        found.append(_scaled("divided_by_batch_size", reference, divisor / n, evidence))
    if output == "gradient":
        sums = problem.target_sums
        if not np.all(sums == 1):
            low, high = float(sums.min()), float(sums.max())
            where = f"{low:.6g}" if low == high else f"between {low:.6g} and {high:.6g}"
            for masked in (False, True) if np.any(sums == 0) else (False,):
                found.append(
                    _Hypothesis(
                        "a_minus_y",
                        partial(_a_minus_q, problem, masked=masked),
                        "the candidate equals (a − q)/D"
                        + (", with 0 in the rows without target" if masked else "")
                        + f"; the effective target rows sum to {where}, not 1",
                        divisor=divisor,
                    )
                )
    if labelled and output not in ("probabilities", "log_probabilities", "jacobian"):
        c = problem.num_classes
        eps = inputs.label_smoothing
        option_words = {
            "weights_ignored": "without the class weights",
            "label_smoothing_ignored": f"with label_smoothing 0 instead of {eps:g}",
            "smoothing_over_other_classes": f"with (1 − ε) on the label and ε/(C − 1) on the "
            f"other classes, ε = {eps:g}: PyTorch's label_smoothing ε′ = εC/(C − 1) = "
            f"{eps * c / max(c - 1, 1):.6g}",
            "ignored_rows_smoothed": "",
            "ignore_index_not_applied": f"with the samples labelled {inputs.ignore_index} "
            f"counted as class {inputs.ignore_index % c}",
            "soft_labels_argmaxed": "with each probability target row replaced by the one-hot "
            "row of its first largest entry",
            "soft_labels_argmaxed_one_hot": "with each probability target row replaced by the "
            "one-hot row of its first largest entry (a weighted mean over N)",
            "off_by_one_labels": "with class y − 1 for every label y (label 0 → class C − 1)",
        }
        for name, words in option_words.items():
            if name == "ignored_rows_smoothed":
                if output != "hessian":
                    found.extend(_ignored_rows_smoothed(problem, output, divisor, compute))
                continue
            if name.startswith("soft_labels_argmaxed") and output == "hessian":
                continue  # seen only through Σ_c q_c: hessian_missing_target_sum's numbers
            variant = problem.variant(name)
            if variant is None:
                continue
            found.append(
                _Hypothesis(
                    name.removesuffix("_one_hot"),
                    partial(compute, variant),
                    f"the candidate equals the {output} computed {words}",
                    divisor=divisor_of(variant),
                )
            )
    if output in ("loss", "losses") and labelled:
        found.extend(_log_clipped(problem, output, scalar))
    if scalar and problem.index_labels:
        found.extend(_loss_wrong_entries(problem))
    if scalar:
        scales = ((-float(n), "−N"), (1 / n, "1/N"), (float(problem.num_classes), "C"))
        for factor, words in scales:
            if factor not in (1.0, -1.0, divisor):
                found.append(
                    _scaled(
                        "wrong_scale",
                        reference,
                        factor,
                        f"the candidate equals the reference × {factor:.6g} = {words}",
                    )
                )
    if output == "hessian" and labelled:
        sums = problem.target_sums
        if not np.all(sums == 1):
            found.append(
                _Hypothesis(
                    "hessian_missing_target_sum",
                    lambda rows: _jacobian(problem.a[rows]) / divisor,
                    "the candidate equals (diag a − a·aᵀ)/D of every sample, without Σ_c q_c",
                )
            )
        if inputs.reduction is Reduction.MEAN and divisor != 1:
            evidence = (
                f"the candidate equals the reference × {divisor:.6g} = D, the divisor of "
                f"reduction 'mean' ({_divisor_words(inputs)})"
            )
            found.append(_scaled("hessian_not_divided", reference, divisor, evidence))
    if output == "jacobian":
        found.append(
            _Hypothesis(
                "jacobian_missing_diagonal",
                lambda rows: _jacobian(problem.a[rows], diagonal=False),
                "the candidate equals −a·aᵀ of every sample (no diag(a))",
            )
        )
        found.append(
            _Hypothesis(
                "jacobian_diagonal_only",
                lambda rows: _diagonal_only(problem, rows),
                "the candidate equals diag(a(1 − a)) of every sample, zero off the diagonal",
            )
        )
    return found


def _ignored_words(problem: _Problem) -> str:
    """'; N counts k ignored samples' where some samples are labelled ignore_index."""
    if not problem.index_labels:
        return ""
    assert problem.labels is not None
    ignored = int(np.count_nonzero(problem.labels == problem.inputs.ignore_index))
    if not ignored:
        return ""
    return f"; N counts {ignored} ignored sample{'s' if ignored > 1 else ''}"


def _ignored_rows_smoothed(
    problem: _Problem, output: str, divisor: float, compute: Callable[..., FloatArray]
) -> list[_Hypothesis]:
    """The smoothing term ε/C·w kept in the samples labelled ignore_index, the mean divided
    by D (the weight of the samples not ignored) or by N (all of them)."""
    inputs = problem.inputs
    if not (problem.index_labels and inputs.label_smoothing):
        return []
    assert problem.labels is not None
    ignored = int(np.count_nonzero(problem.labels == inputs.ignore_index))
    if not ignored:
        return []
    words = (
        f"the candidate equals the {output} computed with the smoothing term ε/C kept in the "
        f"{ignored} sample{'s' if ignored > 1 else ''} labelled {inputs.ignore_index}"
    )
    divisors = [(divisor, f", divided by D = {divisor:.6g}" if divisor != 1 else "")]
    n = float(problem.num_samples)
    if inputs.reduction is Reduction.MEAN and output in ("loss", "gradient") and n != divisor:
        divisors.append((n, f", divided by N = {n:g} (which counts the ignored samples)"))
    return [
        _Hypothesis(
            "ignored_rows_smoothed",
            partial(compute, inputs, smooth_ignored=True, d=d),
            words + where,
            divisor=d,
        )
        for d, where in divisors
    ]


_CLIPS: dict[str, tuple[str, Callable[[FloatArray, float], FloatArray]]] = {
    "max": ("log max(p, ε)", lambda a, eps: np.log(np.maximum(a, eps))),
    "plus": ("log(p + ε)", lambda a, eps: np.log(a + eps)),
    "clip": ("log clip(p, ε, 1 − ε)", lambda a, eps: np.log(np.clip(a, eps, 1 - eps))),
}
"""The variants of `log_clipped`: words, and log f(a, ε)."""


def _log_clipped(problem: _Problem, output: str, scalar: bool) -> list[_Hypothesis]:
    """The loss with log a replaced by the log of a clipped or shifted probability, for every
    ε of CLIP_EPSILONS below which some sample's target probability lies (elsewhere the
    change is invisible): −Σ_c q_c·log f(a_c, ε).

    Only the entries with q_c > 0 count, found once: a scalar loss sums over them alone (N
    entries for index labels without smoothing, not N·C), per ε and variant."""
    q = problem.targets(problem.inputs, slice(None))
    rows, classes = np.nonzero(q > 0)
    q_kept, a_kept = q[rows, classes], problem.a[rows, classes]
    floor = np.full(problem.num_samples, np.inf)
    np.minimum.at(floor, rows, a_kept)
    highest = float(a_kept.max(initial=0.0))
    d = problem.reference_divisor if scalar else 1.0
    found = []
    for eps, eps_words in CLIP_EPSILONS:
        capped = int(np.count_nonzero(floor < eps))
        if not capped:
            continue
        same_clip = highest <= 1 - eps  # then clip(p, ε, 1 − ε) = max(p, ε)
        for variant, (words, log_of) in _CLIPS.items():
            if variant == "clip" and same_clip:
                continue
            if variant == "max" and same_clip:
                words += f" (or {_CLIPS['clip'][0]}, the same here)"

            def values(
                part: Rows, log_of: Callable[..., FloatArray] = log_of, eps: float = eps
            ) -> FloatArray:
                if scalar:
                    terms = q_kept * log_of(a_kept, eps)
                    return np.asarray(-math.fsum(terms.tolist()) / d)
                with np.errstate(divide="ignore"):
                    log_f = log_of(problem.a[part], eps)
                return _losses(log_f, problem.targets(problem.inputs, part))

            found.append(
                _Hypothesis(
                    "log_clipped",
                    values,
                    f"the candidate equals the {output} with {words}, ε = {eps_words}: capped "
                    f"near −log ε = {-math.log(eps):.3g} in {capped} sample"
                    f"{'s' if capped > 1 else ''} whose target probability is below ε",
                )
            )
    return found


def _constant(value: float, rows: Rows) -> FloatArray:
    """A scalar hypothesis's value, whatever the rows."""
    return np.asarray(value)


def _times(factor: float, base: _Hypothesis, rows: Rows) -> FloatArray:
    """factor × the base hypothesis's values (a scale mistake on top of another)."""
    result: FloatArray = factor * base.values(rows)
    return result


def _loss_wrong_entries(problem: _Problem) -> list[_Hypothesis]:
    """The mean loss of the wrong entries: the N×N block log a[i, y_j] of `logits[:, y]`
    (its mean, or its sum / N), or the first sample's loss alone (or / N). Only for index
    labels all in [0, C) (such code cannot index with ignore_index)."""
    assert problem.labels is not None
    labels = problem.labels.astype(np.int64)
    if np.any(labels < 0) or np.any(labels >= problem.num_classes):
        return []
    n = problem.num_samples
    with np.errstate(invalid="ignore"):
        block = -math.fsum(problem.log_a.sum(axis=0)[labels].tolist())
    first = float(_losses(problem.log_a[:1], problem.targets(problem.inputs, slice(0, 1)))[0])
    variants = (
        (block / n**2, "the mean over the N×N block logits[:, y] (every sample at every label)"),
        (block / n, "the sum over the N×N block logits[:, y], divided by N"),
        (first, "the first sample's loss alone"),
        (first / n, "the first sample's loss divided by N"),
    )
    return [
        _Hypothesis(
            "loss_wrong_entries",
            partial(_constant, value),
            f"the candidate equals {words}",
        )
        for value, words in variants
    ]


def _a_minus_q(problem: _Problem, rows: Rows, *, masked: bool) -> FloatArray:
    q = problem.targets(problem.inputs, rows)
    a = problem.a[rows]
    if masked:
        a = a * (q.sum(axis=1, keepdims=True) != 0)
    return _gradient(a, q, problem.reference_divisor, a_minus_q=True)


def _diagonal_only(problem: _Problem, rows: Rows) -> FloatArray:
    a = problem.a[rows]
    n, c = a.shape
    jacobian = np.zeros((n, c, c))
    index = np.arange(c)
    jacobian[:, index, index] = a * problem.sm.complement[rows]
    return jacobian


# ----- matching -------------------------------------------------------------------------------


def _close(
    got: FloatArray, expected: FloatArray, atol: float, rtol: float, slack: float = 0.0
) -> NDArray[np.bool_]:
    """|got − expected| ≤ atol + rtol·|expected| + slack entry by entry, in place where it can;
    an infinite expected value is matched only by itself."""
    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.asarray(np.subtract(got, expected))  # 0-d stays an array
        np.abs(difference, out=difference)
        bound = np.asarray(np.abs(expected))
        finite = bool(np.isfinite(bound).all())
        bound *= rtol
        bound += atol + slack
        close: NDArray[np.bool_] = difference <= bound
    if not finite:
        close &= np.isfinite(expected)
        close |= got == expected
    return close


def _distinct(values: FloatArray, reference: FloatArray, atol: float, rtol: float) -> bool:
    """The hypothesis's `values` differ from the reference by more than MARGIN tolerances
    somewhere, |h − r| > MARGIN·(atol + rtol·|r|): only then can the mistake be named."""
    return not np.all(_close(values, reference, MARGIN * atol, MARGIN * rtol))


def probe_rows(row_ok: NDArray[np.bool_], row_error: FloatArray) -> NDArray[np.intp]:
    """The samples to try hypotheses on first: the PROBE_ROWS with the largest error among
    those with an entry outside the tolerance (`row_ok` False), then the first sample within
    it, if any."""
    failing = np.flatnonzero(~row_ok)
    worst = failing[np.argsort(-row_error[failing], kind="stable")[:PROBE_ROWS]]
    clean = np.flatnonzero(row_ok)[:1]
    return np.concatenate([worst, clean]).astype(np.intp)


class _Matcher:
    """Tests hypotheses against one candidate output: first on its probe rows, then on blocks
    of samples, stopping at the first block the candidate does not fit."""

    def __init__(self, observed: Observed, row_wise: bool, atol: float, rtol: float) -> None:
        self.x, self.r = observed.candidate, observed.reference
        self.atol, self.rtol = atol, rtol
        self.row_wise = row_wise and self.x.ndim >= 1
        self.chunks = list(row_blocks(self.x.shape[0], self.x[0].size)) if self.row_wise else [...]
        self.scale = 0.0
        """max |reference| over its finite entries."""
        row_ok, row_error = [], []
        for part in self.chunks:
            magnitude = np.abs(self.r[part])
            top = np.max(magnitude, where=np.isfinite(magnitude), initial=0.0)
            self.scale = max(self.scale, float(top))
            if self.row_wise and observed.probe_rows is None:
                rows = self.x[part].shape[0]
                row_ok.append(_close(self.x[part], self.r[part], atol, rtol).reshape(rows, -1))
                with np.errstate(invalid="ignore"):
                    difference = np.abs(self.x[part] - self.r[part]).reshape(rows, -1)
                row_error.append(np.nan_to_num(difference.max(axis=1), nan=np.inf))
        self.probes: NDArray[np.intp] | None = None
        if self.row_wise:
            self.probes = observed.probe_rows
            if self.probes is None:
                ok = np.concatenate([block.all(axis=1) for block in row_ok])
                self.probes = probe_rows(ok, np.concatenate(row_error))

    def slack(self, values: FloatArray) -> float:
        """SLACK × the larger of the output's and `values`' largest finite magnitude."""
        magnitude = np.abs(values)
        top = float(np.max(magnitude, where=np.isfinite(magnitude), initial=0.0))
        return SLACK * max(self.scale, top)

    def fits(self, hypothesis: "_Hypothesis") -> bool:
        """The hypothesis differs from the reference by more than MARGIN tolerances
        somewhere and the candidate agrees with it everywhere."""
        x, r, atol, rtol = self.x, self.r, self.atol, self.rtol
        with np.errstate(all="ignore"):
            changes: bool | None = None
            if hypothesis.factor is not None:
                changes = self._factor_changes(hypothesis.factor)
                if not changes:
                    return False
            slack = None
            if self.probes is not None:
                probes = self.probes
                probe_values = hypothesis.values(probes)
                slack = self.slack(probe_values)
                if not np.all(_close(x[probes], probe_values, atol, rtol, slack)):
                    return False
                if _distinct(probe_values, r[probes], atol, rtol):
                    changes = True
            for part in self.chunks:
                values = hypothesis.values(part)
                if slack is None:
                    slack = self.slack(values)
                if not np.all(_close(x[part], values, atol, rtol, slack)):
                    return False
                if not changes and _distinct(values, r[part], atol, rtol):
                    changes = True
            return bool(changes)

    def _factor_changes(self, factor: float) -> bool:
        """k·r differs from r by more than MARGIN tolerances somewhere (_distinct):
        |k − 1|·|r| > MARGIN·(atol + rtol·|r|) for the largest |r| (the difference grows
        with |r| faster than the bound, if at all)."""
        return abs(factor - 1) * self.scale > MARGIN * (self.atol + self.rtol * self.scale)


def _non_finite_words(value: float) -> str:
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def _nonfinite_facts(problem: _Problem, output: str, observed: Observed) -> list[tuple[str, str]]:
    """(code, evidence) of each fact that predicts exactly where the candidate is NaN/±inf
    while the reference is finite: `overflow`, the samples whose largest logit exceeds
    log(max) of the candidate's dtype (exp overflows there), and `probability_underflow`, the
    samples where the probability of a class with q_c ≠ 0 (−q/a, q·log a), or of any unmasked
    class (−y/a or y·log a over every class, where 0/0 and 0·log 0 are NaN; log a itself),
    rounds to 0 in that dtype. Row outputs must fail in exactly those samples; a scalar loss
    in any of them."""
    x, r = observed.candidate, observed.reference
    bad = ~np.isfinite(x) & np.isfinite(r)
    count = int(np.count_nonzero(bad))
    if not count:
        return []
    dtype = observed.dtype
    info = ml_dtypes.finfo(dtype)  # type: ignore[no-untyped-call]
    z = problem.z
    largest = np.max(z, axis=1, where=np.isfinite(z), initial=-np.inf)
    log_max = math.log(float(info.max))
    unmasked = np.isfinite(z)
    overflowing = largest > log_max
    predicted: list[tuple[str, NDArray[np.bool_], NDArray[np.bool_] | None, str]] = [
        ("overflow", overflowing, None, "")
    ]
    if output == "log_probabilities" or (
        output in ("loss", "losses", "gradient", "hessian") and problem.inputs.labels is not None
    ):
        with np.errstate(under="ignore"):
            zero = (problem.a.astype(dtype) == 0) & unmasked
        if output != "log_probabilities":  # −q/a or q·log a: only where q ≠ 0
            targeted = zero & (problem.targets(problem.inputs, slice(None)) != 0)
            words = "a class with a nonzero target"
            predicted.append(("probability_underflow", targeted.any(axis=1), targeted, words))
        # −y/a or y·log a over every class: 0/0 and 0·log 0 are NaN too
        predicted.append(("probability_underflow", zero.any(axis=1), zero, "a class"))
    row_wise = x.ndim >= 1
    failing = bad.reshape(x.shape[0], -1).any(axis=1) if row_wise else None
    found = []
    for code, rows, classes, class_words in predicted:
        if not rows.any() or (failing is not None and not np.array_equal(failing, rows)):
            continue
        sample = int(np.flatnonzero(rows)[0])
        k = int(np.count_nonzero(rows))
        where = (
            (f"in exactly the {k} samples" if k > 1 else "in exactly the one sample")
            if row_wise
            else f"from {k} sample{'s' if k > 1 else ''}"
        )
        entries = (
            f"{count} {'entry is' if count == 1 else 'entries are'} NaN or ±Infinity"
            if row_wise
            else f"the {output} is {_non_finite_words(float(x))},"
        )
        if classes is None:
            logit = f"the largest logit of sample {sample} is {largest[sample]:.6g}"
            evidence = (
                f"{entries} {where} whose largest logit exceeds log(max {dtype}) = "
                f"{log_max:.2f}, where exp overflows ({logit})"
            )
        else:
            cls = int(np.flatnonzero(classes[sample])[0])
            evidence = (
                f"{entries} {where} where the probability of {class_words} underflows to 0 "
                f"in {dtype} (sample {sample}: class {cls}, log a = "
                f"{problem.log_a[sample, cls]:.6g})"
            )
        found.append((code, evidence))
    return found


def _known_factor(factor: float, problem: _Problem) -> str:
    """Names a factor that is a simple constant of the problem, or ''."""
    n, c, d = problem.num_samples, problem.num_classes, problem.reference_divisor
    named = {
        "N, the number of samples": n,
        "C, the number of classes": c,
        "D, the divisor of 'mean'": d,
        "1/N": 1 / n,
        "1/C": 1 / c,
        "1/D": 1 / d if d else math.nan,
        "N/D": n / d if d else math.nan,
        "2": 2.0,
        "1/2": 0.5,
        "1/ln 2 (a log base 2)": 1 / math.log(2),
        "1/ln 10 (a log base 10)": 1 / math.log(10),
    }
    for sign, prefix in ((1.0, ""), (-1.0, "−")):
        for words, value in named.items():
            if math.isfinite(value) and math.isclose(factor, sign * value, rel_tol=1e-6):
                return f" = {prefix}{words}"
    return ""


def _wrong_scale(problem: _Problem, output: str, matcher: _Matcher) -> str | None:
    """Evidence that the candidate is a constant multiple k of the reference (k ≠ 0, k·r
    farther from r than MARGIN tolerances, as every hypothesis): only for outputs with at
    least two distinct non-zero reference entries, which all agree on k.

    k is fitted by least squares, Σ x·r / Σ r², on the probe rows (then tested everywhere)."""
    if _scalar_loss(problem, output):
        return None
    x, r = matcher.x, matcher.r
    rows = slice(None) if matcher.probes is None else matcher.probes
    x_part, r_part = x[rows], r[rows]
    if not (np.all(np.isfinite(x_part)) and np.all(np.isfinite(r_part))):
        return None
    # no BLAS dot: its threads cost more than they save at these sizes
    norm = float(np.sum(np.square(r_part)))
    if norm == 0:  # the probe rows' reference is all zero: no factor to fit
        return None
    factor = float(np.sum(x_part * r_part)) / norm
    if not math.isfinite(factor) or factor == 0:
        return None
    if not matcher.fits(_scaled("wrong_scale", r, factor, "")):
        return None
    entries = r[r != 0]
    if not entries.size or np.all(entries == entries[0]):
        return None  # fewer than two distinct non-zero entries: any value is some multiple
    return f"the candidate equals the reference × {factor:.6g}{_known_factor(factor, problem)}"


def diagnose(
    outputs: Mapping[str, Observed],
    inputs: ProblemInputs,
    *,
    atol: float,
    rtol: float,
    softmax: Softmax | None = None,
    docs_url: str | None = None,
) -> list[Diagnosis]:
    """The diagnoses of the wrong candidate outputs `outputs` (name → candidate, reference).

    Parameters
    ----------
    outputs
        Only the outputs that failed their comparison; each candidate as float64 in the
        reference's shape (a lower-precision candidate converted exactly, its dtype in
        `Observed.dtype`).
    inputs
        The raw problem; `labels` None for a softmax-only problem (probabilities,
        log_probabilities and jacobian are diagnosed then).
    atol, rtol
        The request's tolerance: |candidate − h| ≤ atol + rtol·|h|.
    softmax
        The problem's float64 softmax if already computed (else it is computed here).
    docs_url
        Base URL of the published docs, for the links in messages.

    Returns
    -------
    list of Diagnosis
        One per output (the first fitting code in PRIORITY, the others that fit in its
        `indistinguishable_from`), or two for an output explained by a pair of mistakes;
        sorted by priority then output. Empty when nothing fits.
    """
    if not outputs:
        return []
    problem = _Problem(inputs, softmax)
    found: list[Diagnosis] = []
    for output, observed in outputs.items():
        found += _diagnose_output(problem, output, observed, atol, rtol, docs_url)
    order = list(outputs)
    found.sort(key=lambda d: (PRIORITY.index(d.code), order.index(d.output)))
    return found


def _first_of(fitting: Sequence[tuple[str, str]]) -> tuple[str, str, list[str]] | None:
    """The first (code, evidence) in priority order and the other codes, each once."""
    if not fitting:
        return None
    ranked = sorted(fitting, key=lambda item: PRIORITY.index(item[0]))
    (code, evidence), *others = ranked
    rest = [other for other, _ in others if other != code]
    return code, evidence, list(dict.fromkeys(rest))


def _diagnose_output(
    problem: _Problem,
    output: str,
    observed: Observed,
    atol: float,
    rtol: float,
    docs_url: str | None,
) -> list[Diagnosis]:
    """The diagnoses of one output: none, one, or the two of a pair."""
    x, r = observed.candidate, observed.reference

    def make(code: str, evidence: str, others: Sequence[str] = ()) -> Diagnosis:
        return Diagnosis(
            code, output, message(code, output, problem.inputs, docs_url), evidence, [*others]
        )

    if observed.nonfinite != 0 and not np.all(np.isfinite(x) | (x == r)):
        first = _first_of(_nonfinite_facts(problem, output, observed))
        return [] if first is None else [make(*first)]
    hypotheses = _hypotheses(problem, output, r)
    if x.size == 1:  # a scalar loss, or an output of one entry: judged as one number
        first = _first_of(_scalar_fits(hypotheses, x, r, atol, rtol))
        return [] if first is None else [make(*first)]
    row_wise = output in ROW_OUTPUTS or output == "loss"
    matcher = _Matcher(observed, row_wise, atol, rtol)
    fitting: list[tuple[str, str]] = []
    for hypothesis in hypotheses:
        if any(code == hypothesis.code for code, _ in fitting):
            continue  # a second variant of a code already found
        if matcher.fits(hypothesis):
            fitting.append((hypothesis.code, hypothesis.evidence))
    first = _first_of(fitting)
    if first is not None:
        return [make(*first)]
    pair = _pair(problem, output, hypotheses, matcher)
    if pair is not None:
        return [make(*found) for found in pair]
    scale = _wrong_scale(problem, output, matcher)
    return [] if scale is None else [make("wrong_scale", scale)]


def _scalar_fits(
    hypotheses: Sequence[_Hypothesis], x: FloatArray, r: FloatArray, atol: float, rtol: float
) -> list[tuple[str, str]]:
    """The hypotheses a single number (a scalar loss, or an output of one entry) matches to
    SCALAR_MATCH relative (each differing from the reference by more than MARGIN
    tolerances), or none when a hypothesis of another code is within the tolerance without
    being one of those (one number cannot tell them apart)."""
    exact: list[tuple[str, str]] = []
    loose: set[str] = set()
    with np.errstate(all="ignore"):
        for hypothesis in hypotheses:
            value = hypothesis.values(...)
            sizes = np.abs([float(value.flat[0]), float(r.flat[0])])
            slack = SLACK * float(np.max(sizes, initial=0.0, where=np.isfinite(sizes)))
            if not np.all(_close(x, value, atol, rtol, slack)):
                continue
            if _distinct(value, r, atol, rtol) and np.all(
                _close(x, value, 0.0, SCALAR_MATCH, slack)
            ):
                exact.append((hypothesis.code, hypothesis.evidence))
            else:
                loose.add(hypothesis.code)
    if loose - {code for code, _ in exact}:
        return []
    return exact


PAIR_SCALES = ("sign_flipped", "not_divided", "divided_by_batch_size")
"""The scale or sign mistakes a pair is made of, the most likely first."""


def _pair(
    problem: _Problem, output: str, hypotheses: Sequence[_Hypothesis], matcher: _Matcher
) -> list[tuple[str, str, list[str]]] | None:
    """Two mistakes at once: a scale or sign mistake (factor k) applied to a semantic
    mistake's values h (or −1 applied to a divisor mistake), k·h, tried only when at least
    two probe samples fail. Each base is computed once on the probe rows and scaled by every
    k; only a pair that fits them is computed on the whole output. Returns the
    (code, evidence, indistinguishable) of the scale mistake and of the base, or None."""
    probes = matcher.probes
    if probes is None or output not in ("loss", "losses", "gradient", "hessian"):
        return None
    x, r = matcher.x, matcher.r
    with np.errstate(all="ignore"):
        failing = ~_close(x[probes], r[probes], matcher.atol, matcher.rtol)
    if np.count_nonzero(failing.reshape(len(probes), -1).any(axis=1)) < 2:
        return None
    inputs = problem.inputs
    mean = inputs.reduction is Reduction.MEAN and output == "gradient"
    n = problem.num_samples
    fitting: list[tuple[str, float, _Hypothesis]] = []
    for base in hypotheses:
        semantic = base.code in SEMANTIC_CODES
        if not semantic and base.code not in ("not_divided", "divided_by_batch_size"):
            continue
        scales = [("sign_flipped", -1.0)]
        d = base.divisor
        if semantic and mean and math.isfinite(d) and d != 1:
            scales.append(("not_divided", d))
            if problem.index_labels and d != n:
                scales.append(("divided_by_batch_size", d / n))
        with np.errstate(all="ignore"):
            probe_values = base.values(probes)
            slack = matcher.slack(probe_values)
            for scale, factor in scales:
                scaled = factor * probe_values
                if not np.all(_close(x[probes], scaled, matcher.atol, matcher.rtol, slack)):
                    continue
                pair = _Hypothesis(
                    f"{scale}+{base.code}",
                    partial(_times, factor, base),
                    "",
                )
                if matcher.fits(pair):
                    fitting.append((scale, factor, base))
    if not fitting:
        return None
    fitting.sort(key=lambda item: (PAIR_SCALES.index(item[0]), PRIORITY.index(item[2].code)))
    scale, factor, base = fitting[0]
    scale_words = {
        "sign_flipped": "−1",
        "not_divided": f"{factor:.6g} = D, the divisor it should have been divided by",
        "divided_by_batch_size": f"{factor:.6g} = D/N: divided by the {n} samples instead of D",
    }[scale]
    scale_others = [s for s, _, b in fitting[1:] if s != scale and b.code == base.code]
    base_others = [b.code for s, _, b in fitting[1:] if b.code != base.code and s == scale]
    return [
        (
            scale,
            f"together with {base.code}: the candidate equals that mistake's {output} × "
            f"{scale_words}",
            list(dict.fromkeys(scale_others)),
        ),
        (
            base.code,
            f"{base.evidence}, then × {factor:.6g} ({scale}): two mistakes together",
            list(dict.fromkeys(base_others)),
        ),
    ]
