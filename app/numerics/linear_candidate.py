"""A caller's loss and gradients of the LM head checked, and their mistakes named.

The candidate outputs (`loss`, `losses`, `input_gradient`, `linear_weight_gradient`,
`linear_bias_gradient`) are compared entry by entry with the reference exactly as a
cross-entropy candidate is (`candidate.compare_output`, the per-dtype DEFAULT_TOLERANCE).
A failing gradient is then explained by the named mistakes of the head, each a *hypothesis*
about how it was computed. The weight gradient is C·J·d numbers and one more N·C·J·d matmul:
no hypothesis recomputes it. Each is tested through projections, computed in the reference's
own pass over the blocks (`linear.analyse_linear(observe=…)`) from the hypothesis's logits
gradient Gʰ of each block:

    input gradient    (Gʰ₂·W₂)·s = Gʰ₂·(W₂·s)             per sample n, for columns s of S_x
    weight gradient   rᵀ·(Gʰ₂ᵀ·x)·s = Σ_n (Gʰ₂[n]·r)(x_n·s)  for pairs (r, s)
    bias gradient     rᵀ·Σ_n Gʰ₂[n] = Σ_n Gʰ₂[n]·r

A quarter of the vectors are random coordinate vectors, a quarter the coordinates of the
candidate's own largest entries (where a wrong hypothesis shows most; chosen from the candidate
alone, before the reference exists), half Gaussian ones (they see every entry). Per-sample
contributions are kept, so that hypotheses that weight or drop samples (a per-chunk mean, a
weight gradient of the last chunk only) are sums of the same numbers. A hypothesis h explains
the candidate when, for every projection p,

    |p(candidate) − p(h)| ≤ atol·‖r‖₁‖s‖₁ + rtol·max(|r|ᵀ·|candidate|·|s|, |p(h)|) + SLACK·scale

(the entry-wise test summed over the entries the projection sees: a candidate within the
tolerance of h always passes) and h differs from the reference beyond that bound somewhere.
Nothing is named when the reference itself passes that test (the projections do not see where
the candidate fails) or when 0 does (the candidate is as close to 0 as to any hypothesis; only
a bias gradient of exact zeros is named, `bias_gradient_missing`).

Named mistakes of the head, in priority order (then the logits-level codes of
`app.numerics.diagnose`, carried through the head: the gradient by input, weight or bias of a
logits gradient computed with that mistake):

- `weight_gradient_not_accumulated`: the weight (or bias) gradient of a suffix of the samples
  only (the last chunk of a chunked kernel); evidence names where the suffix starts.
- `bias_gradient_missing`: zeros sent for the bias gradient.
- `normalized_per_chunk`: the mean of per-chunk means, Σ_k (S_k / D_k) / K for chunks of c
  samples, instead of Σ S / D (recognisable when chunks hold different numbers of non-ignored
  tokens; evidence gives c); their sum instead of their mean is the same with factor K.
- `labels_not_shifted`, `labels_shifted_twice` (with `causal_shift`).

Precision is told apart from mistakes: when the candidate is far closer to the reference
computed from logits rounded to bfloat16 than to the exact one (the forward formed the logits
in bfloat16), a note gives the measured improvement.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from app.numerics.candidate import CandidateCheck, OutputCheck, compare_output, read_candidate
from app.numerics.cross_entropy import Reduction, reduce_losses
from app.numerics.deadline import NEVER, Deadline
from app.numerics.diagnose import SLACK, Diagnosis, ProblemInputs, docs_link, message
from app.numerics.gradcheck import LossRows, NumericOptions, Output
from app.numerics.layout import row_blocks
from app.numerics.linear import (
    Head,
    LinearOutput,
    LinearProblem,
    LinearReport,
    analyse_linear,
    head_of,
    logits_shape,
    shift_labels,
)
from app.numerics.softmax import FloatArray, softmax

GRADIENTS = (
    LinearOutput.INPUT_GRADIENT,
    LinearOutput.LINEAR_WEIGHT_GRADIENT,
    LinearOutput.LINEAR_BIAS_GRADIENT,
)
CANDIDATE_OUTPUTS = frozenset({LinearOutput.LOSS, LinearOutput.LOSSES, *GRADIENTS})
"""The outputs a candidate may hold."""
PROJECTIONS = 8
"""Projections per gradient: half coordinate vectors (entries), half Gaussian."""
TOP_BLOCK = 1 << 20
"""Entries of a sent gradient read at a time while its largest ones are found."""
PRECISION_IMPROVEMENT = 4.0
"""A candidate this many times closer to the bfloat16-logits reference gets a precision note."""
HEAD_PRIORITY = (
    "bias_gradient_missing",
    "sign_flipped",
    "not_divided",
    "divided_by_batch_size",
    "weight_gradient_not_accumulated",
    "normalized_per_chunk",
    "labels_not_shifted",
    "labels_shifted_twice",
    "a_minus_y",
    "weights_ignored",
    "label_smoothing_ignored",
    "ignore_index_not_applied",
    "off_by_one_labels",
    "wrong_scale",
)
"""Every code a head gradient can be diagnosed with, the most likely first."""
HEAD_CODES = frozenset(
    {
        "weight_gradient_not_accumulated",
        "bias_gradient_missing",
        "normalized_per_chunk",
        "labels_not_shifted",
        "labels_shifted_twice",
    }
)
"""The codes of the head itself (the others are the logits-level codes of diagnose.py)."""


@dataclass(frozen=True)
class Projections:
    """The projection vectors of the three gradients (module docstring)."""

    x_columns: FloatArray
    """S_x (d, k)."""
    w_rows: FloatArray
    """r of each weight pair (C·J, k)."""
    w_columns: FloatArray
    """s of each weight pair (d, k)."""
    b_rows: FloatArray
    """r of the bias (C·J, k)."""
    through_weight: FloatArray
    """[R_w | W₂·S_x | R_b] (C·J, 3k): one matmul gives every per-sample projection of G."""

    @classmethod
    def draw(
        cls, head: Head, count: int, seed: int, sent: Mapping[LinearOutput, FloatArray]
    ) -> "Projections":
        """`count` vectors per gradient: a quarter random coordinate vectors, a quarter the
        coordinates where the sent gradient is largest (where a wrong hypothesis shows
        most), half Gaussian. Chosen from the candidate alone, before the reference exists."""
        rng = np.random.default_rng(seed)
        features, width = head.x.shape[1], head.w.shape[0]
        picks = count // 2

        def vectors(size: int, largest: NDArray[np.intp] | None = None) -> FloatArray:
            chosen = rng.integers(0, size, picks)
            if largest is not None:
                chosen[: largest.size] = largest
            picked = np.zeros((size, picks))
            picked[chosen, np.arange(picks)] = 1.0
            return np.concatenate([picked, rng.standard_normal((size, count - picks))], axis=1)

        def top(values: FloatArray | None) -> NDArray[np.intp] | None:
            """Flat indices of the picks // 2 largest |values| (None without a candidate),
            found block by block (a bfloat16 weight gradient is never copied whole)."""
            if values is None or values.size == 0:
                return None
            flat = np.asarray(values).reshape(-1)
            keep = min(picks // 2, flat.size)
            scores, indices = [], []
            for start in range(0, flat.size, TOP_BLOCK):
                block = np.abs(flat[start : start + TOP_BLOCK].astype(np.float64))
                np.nan_to_num(block, copy=False, nan=np.inf)
                best = np.argpartition(-block, min(keep, block.size) - 1)[:keep]
                scores.append(block[best])
                indices.append(best + start)
            score, index = np.concatenate(scores), np.concatenate(indices)
            return index[np.argpartition(-score, keep - 1)[:keep]].astype(np.intp)

        def largest_columns(values: FloatArray | None) -> NDArray[np.intp] | None:
            """The columns (features) holding the largest |values| of a (N, d) gradient."""
            found = top(values)
            return None if found is None else found % features

        x_columns = vectors(features, largest_columns(sent.get(LinearOutput.INPUT_GRADIENT)))
        weight = sent.get(LinearOutput.LINEAR_WEIGHT_GRADIENT)
        entries = top(weight)  # its largest entries (c, i): the pairs (e_c, e_i) come first
        w_rows = vectors(width, None if entries is None else entries // features)
        w_columns = vectors(features, None if entries is None else entries % features)
        b_rows = vectors(width, top(sent.get(LinearOutput.LINEAR_BIAS_GRADIENT)))
        through = np.concatenate([w_rows, head.w @ x_columns, b_rows], axis=1)
        return cls(x_columns, w_rows, w_columns, b_rows, through)


@dataclass
class Contributions:
    """Per-sample projections of one hypothesis's gradients, and its losses."""

    x: FloatArray
    """(N, k): (Gʰ₂[n]·W₂)·s_j."""
    w: FloatArray
    """(N, k): (Gʰ₂[n]·r_j)(x_n·s_j)."""
    b: FloatArray
    """(N, k): Gʰ₂[n]·r_j."""
    cross_entropy: FloatArray
    z_terms: FloatArray | None
    head: Head
    """The hypothesis's problem (its divisors reduce the losses)."""

    def of(self, output: LinearOutput) -> FloatArray:
        return {
            LinearOutput.INPUT_GRADIENT: self.x,
            LinearOutput.LINEAR_WEIGHT_GRADIENT: self.w,
            LinearOutput.LINEAR_BIAS_GRADIENT: self.b,
        }[output]


@dataclass(frozen=True)
class Variant:
    """A mistaken computation of G: its code, its head (targets and divisors) and how G is
    formed from the block's logits."""

    code: str
    head: Head
    evidence: str
    logits: Callable[[FloatArray], FloatArray] = field(default=lambda z: z)
    a_minus_q: bool = False


def _bfloat16(z: FloatArray) -> FloatArray:
    rounded: FloatArray = z.astype(ml_dtypes.bfloat16).astype(np.float64)
    return rounded


def variants(head: Head) -> list[Variant]:
    """The mistaken computations of G that apply to this problem."""
    p = head.problem
    found: list[Variant] = []

    def add(code: str, evidence: str, **changes: object) -> None:
        found.append(Variant(code, head_of(replace(p, **changes)), evidence))  # type: ignore[arg-type]

    if p.causal_shift:
        raw = np.asarray(p.labels)
        flat_input = np.asarray(p.input).reshape(-1, np.shape(p.input)[-1])
        common = {"causal_shift": False, "input": flat_input}
        add(
            "labels_not_shifted",
            "the candidate equals the gradient with position t scored against label t",
            labels=raw.reshape(-1),
            **common,
        )
        twice = shift_labels(shift_labels(raw, p.ignore_index), p.ignore_index)
        add(
            "labels_shifted_twice",
            "the candidate equals the gradient with position t scored against label t + 2",
            labels=twice.reshape(-1),
            **common,
        )
    index = head.index_labels is not None
    plain = not p.z_loss and p.softcap is None  # a − y is modelled without them
    if index and plain and head.divisors.divisor != 1:
        found.append(
            Variant(
                "a_minus_y",
                head,
                "the candidate equals the head's gradients of (a − q)/D",
                a_minus_q=True,
            )
        )
    if p.weight is not None:
        add(
            "weights_ignored",
            "the candidate equals the gradients without the class weights",
            weight=None,
        )
    if p.label_smoothing:
        add(
            "label_smoothing_ignored",
            f"the candidate equals the gradients with label_smoothing 0, not {p.label_smoothing:g}",
            label_smoothing=0.0,
        )
    if index and not p.causal_shift:
        labels = np.asarray(p.labels).astype(np.int64)
        ignored = labels == p.ignore_index
        c = head.classes
        if ignored.any() and -c <= p.ignore_index < c:
            fixed = np.where(ignored, p.ignore_index % c, labels)
            never = int(labels.min()) - 1
            add(
                "ignore_index_not_applied",
                f"the candidate equals the gradients with the samples labelled {p.ignore_index} "
                f"counted as class {p.ignore_index % c}",
                labels=fixed,
                ignore_index=never,
            )
        if not ignored.all():
            add(
                "off_by_one_labels",
                "the candidate equals the gradients with class y − 1 for every label y",
                labels=np.where(ignored, labels, (labels - 1) % c),
            )
    found.append(
        Variant(
            "precision",
            head,
            "logits rounded to bfloat16",
            logits=_bfloat16,
        )
    )
    return found


class _Pass:
    """The observer of `analyse_linear`: per-sample projections of the reference and of every
    variant, in the reference's pass."""

    def __init__(self, head: Head, projections: Projections, found: list[Variant]) -> None:
        self.head, self.projections, self.variants = head, projections, found
        n, k = head.samples, projections.x_columns.shape[1]
        rows = n * head.positions
        self.x_w = head.x @ projections.w_columns  # (N, k): x_n·s_j of the weight pairs
        names = ["reference", *(v.code for v in found)]
        self.results = {
            name: Contributions(
                np.empty((n, k)),
                np.empty((n, k)),
                np.empty((n, k)),
                np.empty(rows),
                np.empty(rows) if head.problem.z_loss else None,
                head,
            )
            for name in names
        }
        for v in found:
            self.results[v.code].head = v.head

    def _store(self, name: str, part: slice, g: FloatArray, block: LossRows) -> None:
        k = self.projections.x_columns.shape[1]
        projected = g @ self.projections.through_weight
        result = self.results[name]
        result.w[part] = projected[:, :k] * self.x_w[part]
        result.x[part] = projected[:, k : 2 * k]
        result.b[part] = projected[:, 2 * k :]
        rows = self.head.rows(part)
        result.cross_entropy[rows] = block.cross_entropy
        if result.z_terms is not None and block.z_terms is not None:
            result.z_terms[rows] = block.z_terms

    def __call__(self, part: slice, z: FloatArray, block: LossRows, g: FloatArray) -> None:
        self._store("reference", part, g, block)
        p = self.head.problem
        for v in self.variants:
            targets = v.head.targets(part)
            logits = v.logits(z)
            rows = LossRows.of(
                logits,
                targets,
                np.full(z.shape[0], targets.divisor),
                frozenset({Output.LOSS, Output.GRADIENT}),
                NumericOptions(),
                z_loss=p.z_loss,
                softcap=p.softcap,
            )
            gradient = rows.gradient
            if v.a_minus_q:  # (a − q)/D = (a·Σq − q)/D + a·(1 − Σq)/D, softmax by sub-blocks
                missing = (1 - targets.q.sum(axis=1)) / targets.divisor
                for sub in row_blocks(*logits.shape):
                    gradient[sub] += softmax(logits[sub]).probabilities * missing[sub, None]
            self._store(v.code, part, self.head.from_rows(gradient), rows)


@dataclass(frozen=True)
class _Observed:
    """A candidate gradient's projections and their bounds."""

    output: LinearOutput
    projections: FloatArray
    """(N, k) per sample for the input gradient, (k,) for the weight and bias gradients."""
    scale_bound: FloatArray
    """atol·‖·‖₁ + rtol·|r|ᵀ|candidate||s|, the projections' shape."""
    atol_part: FloatArray
    rtol: float


def _observe(
    output: LinearOutput,
    candidate: FloatArray,
    head: Head,
    projections: Projections,
    atol: float,
    rtol: float,
) -> _Observed:
    """The candidate's projections and their bounds, from blocks of its rows in float64 (a
    low-precision weight gradient is never copied whole to float64)."""
    if output is LinearOutput.LINEAR_BIAS_GRADIENT:
        r = projections.b_rows
        bias = np.asarray(candidate, np.float64).reshape(-1)
        atol_part = atol * np.abs(r).sum(axis=0)
        return _Observed(output, bias @ r, rtol * (np.abs(bias) @ np.abs(r)), atol_part, rtol)
    gradient = output is LinearOutput.INPUT_GRADIENT
    height, width = head.x.shape if gradient else head.w.shape
    rows = np.asarray(candidate).reshape(height, width)
    s = projections.x_columns if gradient else projections.w_columns
    count = s.shape[1]
    projected = np.empty((height, count))
    magnitude = np.empty((height, count))
    for part in row_blocks(height, width):
        block = rows[part].astype(np.float64)
        projected[part] = block @ s
        np.abs(block, out=block)
        magnitude[part] = block @ np.abs(s)
    if output is LinearOutput.INPUT_GRADIENT:
        atol_part = np.broadcast_to(atol * np.abs(s).sum(axis=0), projected.shape)
        return _Observed(output, projected, rtol * magnitude, np.asarray(atol_part), rtol)
    r = projections.w_rows
    values = np.einsum("ck,ck->k", r, projected)
    bound = rtol * np.einsum("ck,ck->k", np.abs(r), magnitude)
    atol_part = atol * np.abs(r).sum(axis=0) * np.abs(s).sum(axis=0)
    return _Observed(output, values, bound, atol_part, rtol)


def _bound(observed: _Observed, values: FloatArray, reference: FloatArray) -> FloatArray:
    """The projections' tolerance around `values` (module docstring), with SLACK."""
    scale = float(np.max(np.abs(reference), initial=0.0))
    bound = observed.atol_part + np.maximum(observed.scale_bound, observed.rtol * np.abs(values))
    slack = SLACK * max(scale, float(np.max(np.abs(values), initial=0.0)))
    result: FloatArray = bound + slack
    return result


def _within(observed: _Observed, values: FloatArray, reference: FloatArray) -> bool:
    """The candidate's projections are within the tolerance of `values`."""
    bound = _bound(observed, values, reference)
    return bool(np.all(np.abs(observed.projections - values) <= bound))


def _fits(observed: _Observed, values: FloatArray, reference: FloatArray) -> bool:
    """The candidate's projections are within the bound of `values`, which differ from the
    reference's beyond it somewhere."""
    if not _within(observed, values, reference):
        return False
    bound = _bound(observed, values, reference)
    return bool(np.any(np.abs(values - reference) > bound))


def _total(
    output: LinearOutput, contributions: FloatArray, weights: FloatArray | None = None
) -> FloatArray:
    """Per-sample contributions as the output's projections (weighted by sample)."""
    if weights is not None:
        contributions = contributions * weights[:, None]
    if output is LinearOutput.INPUT_GRADIENT:
        return contributions
    total: FloatArray = contributions.sum(axis=0)
    return total


def _chunk_factors(head: Head, size: int) -> FloatArray | None:
    """D / (K·D_k) of each sample for chunks of `size` samples (None where that is 1)."""
    p = head.problem
    if head.index_labels is None or p.reduction is not Reduction.MEAN:
        return None
    labels = head.index_labels.reshape(head.samples, head.positions)
    active = labels != p.ignore_index
    weight = np.ones(head.classes) if p.weight is None else np.asarray(p.weight, np.float64)
    per_sample = np.where(active, weight[np.where(active, labels, 0)], 0.0).sum(axis=1)
    starts = np.arange(0, head.samples, size)
    chunk_totals = np.add.reduceat(per_sample, starts)
    chunks = starts.size
    with np.errstate(divide="ignore", invalid="ignore"):
        per_chunk = np.where(
            chunk_totals != 0, head.divisors.divisor / (chunks * chunk_totals), 0.0
        )
    factors = np.repeat(per_chunk, size)[: head.samples]
    if np.allclose(factors[per_sample != 0], 1.0, rtol=1e-12):
        return None
    return factors


def _chunk_sizes(samples: int) -> list[int]:
    if samples <= 2048:
        return list(range(1, samples))
    return sorted(
        {*(2**i for i in range(int(math.log2(samples)) + 1)), *range(64, samples, 64)} - {samples}
    )


def _head_message(code: str, output: LinearOutput, docs_url: str | None) -> str:
    name = output.value.replace("_", " ")
    texts = {
        "weight_gradient_not_accumulated": f"Your {name} holds only the last chunk's "
        "contribution: each chunk's Gᵀ·x (and Σ G for the bias) must be added to the "
        "gradient, not assigned to it.",
        "bias_gradient_missing": "Your bias gradient is zero: dL/db is the sum over samples of "
        "the logits' gradient, Σ_n G_n.",
        "normalized_per_chunk": f"Your {name} divides each chunk by its own count of tokens: "
        "the mean is over all tokens of the batch (one divisor D for every chunk; HF's "
        "num_items_in_batch across micro-batches).",
        "labels_not_shifted": f"Your {name} scores position t against label t: for next-token "
        "prediction position t predicts label t + 1 (shift the labels left by one and ignore "
        "the last position).",
        "labels_shifted_twice": f"Your {name} shifts the labels twice: position t must be "
        "scored against label t + 1, shifted once (by the loss or by the data, not both).",
    }
    return f"{texts[code]} See {docs_link('linear-cross-entropy', docs_url)}."


def _shape_of(head: Head, output: LinearOutput) -> tuple[int, ...]:
    """The shape of an output of the head, as the report gives it (torch's)."""
    problem = head.problem
    positions = (
        logits_shape(head)[:-1]
        if head.positions == 1
        else (
            head.samples,
            *head.out_features,
        )
    )
    shapes = {
        LinearOutput.LOSS: positions if problem.reduction is Reduction.NONE else (),
        LinearOutput.LOSSES: positions,
        LinearOutput.INPUT_GRADIENT: np.shape(problem.input),
        LinearOutput.LINEAR_WEIGHT_GRADIENT: np.shape(problem.linear_weight),
        LinearOutput.LINEAR_BIAS_GRADIENT: (head.classes, *head.out_features),
    }
    return tuple(int(n) for n in shapes[output])


@dataclass(frozen=True)
class LinearCandidateResult:
    """The reference report and the candidate's verdict."""

    report: LinearReport
    check: CandidateCheck


def check_linear_candidate(
    problem: LinearProblem,
    candidate: Mapping[str, object],
    *,
    atol: float,
    rtol: float,
    include: frozenset[LinearOutput] = frozenset(),
    seed: int = 0,
    docs_url: str | None = None,
    deadline: Deadline = NEVER,
) -> LinearCandidateResult:
    """Compute the reference (with every output `include` or the candidate asks for), compare
    each candidate output and name the mistakes of the failing gradients and losses (module
    docstring), in one pass over the blocks.

    Returns the report and a CandidateCheck: `outputs` per candidate output, `diagnoses` (at
    most one per output, its other fitting codes in `indistinguishable_from`), `notes` (the
    precision finding, outputs no mistake explains, unknown outputs).
    """
    head = head_of(problem)
    outputs: dict[str, OutputCheck] = {}
    sent: dict[LinearOutput, FloatArray] = {}
    for name, value in candidate.items():
        if name not in CANDIDATE_OUTPUTS:
            known = ", ".join(sorted(CANDIDATE_OUTPUTS))
            defect = f"{name}: not an output of this problem ({known})"
            outputs[name] = OutputCheck(False, 0, 0, 0, None, None, None, [], defect)
            continue
        array = read_candidate(name, value, _shape_of(head, LinearOutput(name)))
        if isinstance(array, str):
            outputs[name] = OutputCheck(False, 0, 0, 0, None, None, None, [], array)
        else:
            sent[LinearOutput(name)] = array
    projections = Projections.draw(head, PROJECTIONS, seed, sent)
    found = variants(head)
    observer = _Pass(head, projections, found)
    report = analyse_linear(
        problem, include | set(sent) | {LinearOutput.LOSS}, observe=observer, deadline=deadline
    )
    notes: list[str] = []
    diagnoses: list[Diagnosis] = []
    inputs = ProblemInputs(
        logits=np.zeros((1, head.classes)),
        labels=head.index_labels if head.index_labels is not None else head.probability_rows,
        weight=problem.weight,
        ignore_index=problem.ignore_index,
        label_smoothing=problem.label_smoothing,
        reduction=problem.reduction,
    )
    for output, array in sent.items():
        name = output.value
        reference = np.asarray(getattr(report, name), np.float64)
        check = compare_output(array, reference, atol=atol, rtol=rtol)
        outputs[name] = check
        if check.passed:
            continue
        if output in GRADIENTS:
            diagnosis, note = _diagnose_gradient(
                output, array, head, projections, observer, atol, rtol, inputs, docs_url
            )
        else:
            diagnosis, note = _diagnose_loss(
                output, array, report, observer, atol, rtol, inputs, docs_url
            )
        if diagnosis is not None:
            diagnoses.append(diagnosis)
        if note is not None:
            notes.append(note)
        if diagnosis is None and note is None:
            notes.append(
                f"{name}: no known mistake explains these values; compare the worst entries"
            )
    diagnoses.sort(key=lambda d: HEAD_PRIORITY.index(d.code))
    passed = all(check.passed for check in outputs.values())
    verdict = CandidateCheck(passed, outputs, diagnoses, notes, atol, rtol)
    return LinearCandidateResult(report, verdict)


def _diagnose_gradient(
    output: LinearOutput,
    array: FloatArray,
    head: Head,
    projections: Projections,
    observer: _Pass,
    atol: float,
    rtol: float,
    inputs: ProblemInputs,
    docs_url: str | None,
) -> tuple[Diagnosis | None, str | None]:
    observed = _observe(output, array, head, projections, atol, rtol)
    results = observer.results
    ref_rows = results["reference"].of(output)
    reference = _total(output, ref_rows)
    rounded = _total(output, results["precision"].of(output))
    note = _precision_note(output, observed.projections, reference, rounded)
    if _within(observed, reference, reference):  # the projections do not see the failure
        return None, note
    if output is LinearOutput.LINEAR_BIAS_GRADIENT and not np.any(array):
        evidence = "every entry of the candidate is 0"
        return _make("bias_gradient_missing", output, evidence, [], inputs, docs_url), note
    if _within(observed, np.zeros_like(reference), reference):
        return None, note  # as close to 0 as to anything: no hypothesis can be told apart
    fitting: list[tuple[str, str]] = []
    divisor = head.divisors.divisor
    scaled = [("sign_flipped", -1.0, "the candidate equals −1 × the reference")]
    if head.problem.reduction is Reduction.MEAN and divisor != 1:
        scaled.append(
            ("not_divided", divisor, f"the candidate equals the reference × D = {divisor:.6g}")
        )
        rows = head.samples * head.positions
        if head.index_labels is not None and divisor != rows:
            scaled.append(
                (
                    "divided_by_batch_size",
                    divisor / rows,
                    f"the candidate equals the reference × D/N = {divisor:.6g}/{rows}",
                )
            )
    for code, factor, evidence in scaled:
        if _fits(observed, reference * factor, reference):
            fitting.append((code, evidence))
    if output is not LinearOutput.INPUT_GRADIENT:
        suffix = _suffix_start(observed, ref_rows, reference)
        if suffix is not None:
            first, last = suffix
            where = (
                f"starts at sample {last}"
                if first == last
                else f"starts at a sample from {first} to {last}: samples {first}…{last - 1} "
                "contribute nothing"
            )
            fitting.append(
                (
                    "weight_gradient_not_accumulated",
                    f"the candidate equals the gradient of the last samples only, "
                    f"…{head.samples - 1} (the last chunk {where})",
                )
            )
    chunk = _chunk_size(observed, head, ref_rows, reference)
    if chunk is not None:
        fitting.append(chunk)
    for v in observer.variants:
        if v.code == "precision":
            continue
        values = _total(output, results[v.code].of(output))
        if _fits(observed, values, reference):
            fitting.append((v.code, v.evidence))
    if not fitting:
        fitted = _fitted_factor(observed.projections, reference)
        if fitted is not None and _fits(observed, reference * fitted, reference):
            fitting.append(("wrong_scale", f"the candidate equals the reference × {fitted:.6g}"))
    if not fitting:
        return None, note
    fitting.sort(key=lambda item: HEAD_PRIORITY.index(item[0]))
    (code, evidence), *others = fitting
    return _make(code, output, evidence, [c for c, _ in others], inputs, docs_url), note


def _make(
    code: str,
    output: LinearOutput,
    evidence: str,
    others: list[str],
    inputs: ProblemInputs,
    docs_url: str | None,
) -> Diagnosis:
    if code in HEAD_CODES:
        text = _head_message(code, output, docs_url)
    else:  # a logits-level mistake, carried through the head
        logits_output = "gradient" if output in GRADIENTS else output.value
        text = (
            f"Your {output.value.replace('_', ' ')} comes from a logits gradient with this "
            f"mistake: {message(code, logits_output, inputs, docs_url)}"
        )
    return Diagnosis(code, output.value, text, evidence, others)


def _suffix_start(
    observed: _Observed, rows: FloatArray, reference: FloatArray
) -> tuple[int, int] | None:
    """The first samples s at which a suffix of the samples, alone, gives the candidate's
    projections: (first, last) of the fitting starts with the same contributions (samples
    between them contribute nothing, such as ignored ones), or None. A suffix contributing
    nothing at all is left to `bias_gradient_missing` and the other codes."""
    suffix = np.cumsum(rows[::-1], axis=0)[::-1]  # suffix[s] = Σ_{n ≥ s}
    fitting = [
        start
        for start in range(1, rows.shape[0])
        if np.any(suffix[start]) and _fits(observed, suffix[start], reference)
    ]
    if not fitting:
        return None
    errors = [float(np.max(np.abs(observed.projections - suffix[s]))) for s in fitting]
    best = fitting[int(np.argmin(errors))]
    same = [s for s in fitting if np.array_equal(suffix[s], suffix[best])]
    return min(same), max(same)


def _chunk_size(
    observed: _Observed, head: Head, rows: FloatArray, reference: FloatArray
) -> tuple[str, str] | None:
    """normalized_per_chunk: the chunk size c whose per-chunk means (or their sum) fit."""
    for size in _chunk_sizes(head.samples):
        factors = _chunk_factors(head, size)
        if factors is None:
            continue
        chunks = math.ceil(head.samples / size)
        for multiple, words in ((1.0, "mean"), (float(chunks), "sum")):
            values = _total(observed.output, rows, factors * multiple)
            if _fits(observed, values, reference):
                return (
                    "normalized_per_chunk",
                    f"the candidate equals the {words} of per-chunk means over chunks of {size} "
                    f"samples ({chunks} chunks, each divided by its own count)",
                )
    return None


def _fitted_factor(values: FloatArray, reference: FloatArray) -> float | None:
    norm = float(np.sum(reference * reference))
    if norm == 0:
        return None
    factor = float(np.sum(values * reference)) / norm
    if not math.isfinite(factor) or factor == 0 or math.isclose(factor, 1.0, rel_tol=1e-12):
        return None
    return factor


def _precision_note(
    output: LinearOutput, got: FloatArray, reference: FloatArray, rounded: FloatArray
) -> str | None:
    """The precision finding: `got` (the candidate, or its projections) is PRECISION_IMPROVEMENT
    times closer to the reference of bfloat16-rounded logits than to the exact one."""
    exact_error = float(np.linalg.norm(got - reference))
    rounded_error = float(np.linalg.norm(got - rounded))
    if exact_error == 0 or rounded_error * PRECISION_IMPROVEMENT > exact_error:
        return None
    improvement = exact_error / max(rounded_error, 1e-300)
    return (
        f"{output.value}: matches the reference computed from logits rounded to bfloat16 "
        f"{improvement:.3g}× better than the exact one: the logits were formed in bfloat16 "
        "(precision, not a mistake of the formula); form them, or recompute them in the "
        "backward, in float32"
    )


def _diagnose_loss(
    output: LinearOutput,
    array: FloatArray,
    report: LinearReport,
    observer: _Pass,
    atol: float,
    rtol: float,
    inputs: ProblemInputs,
    docs_url: str | None,
) -> tuple[Diagnosis | None, str | None]:
    """The loss and losses under each variant, compared entry-wise (they are small)."""
    head = report.head
    problem = head.problem
    reference = np.asarray(getattr(report, output.value), np.float64)
    got = np.asarray(array, np.float64)
    fitting: list[tuple[str, str]] = []

    def value_of(name: str) -> FloatArray:
        result = observer.results[name]
        if output is LinearOutput.LOSSES:
            losses = (
                result.cross_entropy
                if result.z_terms is None
                else result.cross_entropy + result.z_terms
            )
            return losses.reshape(reference.shape)
        return reduce_losses(
            result.cross_entropy, result.head.divisors, problem.reduction, z_terms=result.z_terms
        ).reshape(reference.shape)

    def close(values: FloatArray) -> bool:
        bound = atol + rtol * np.abs(values) + SLACK * float(np.max(np.abs(values), initial=0.0))
        return bool(np.all(np.abs(got - values) <= bound)) and not bool(
            np.all(np.abs(values - reference) <= atol + rtol * np.abs(reference))
        )

    scalar = output is LinearOutput.LOSS and problem.reduction is not Reduction.NONE
    if close(-reference):
        fitting.append(("sign_flipped", "the candidate equals −1 × the reference"))
    divisor = head.divisors.divisor
    if scalar and problem.reduction is Reduction.MEAN and close(reference * divisor):
        fitting.append(("not_divided", f"the candidate equals the reference × D = {divisor:.6g}"))
    for v in observer.variants:
        if v.code not in ("precision", "a_minus_y") and close(value_of(v.code)):
            fitting.append((v.code, v.evidence.replace("gradients", output.value)))
    if scalar and problem.z_loss == 0:
        losses = observer.results["reference"].cross_entropy.reshape(head.samples, -1).sum(axis=1)
        for size in _chunk_sizes(head.samples):
            factors = _chunk_factors(head, size)
            if factors is None:
                continue
            chunks = math.ceil(head.samples / size)
            mean_of_means = math.fsum((losses * factors).tolist()) / divisor
            if close(np.asarray(mean_of_means)):
                fitting.append(
                    (
                        "normalized_per_chunk",
                        f"the candidate equals the mean of per-chunk means over chunks of {size} "
                        f"samples ({chunks} chunks, each divided by its own count)",
                    )
                )
                break
    note = _precision_note(output, got, reference, value_of("precision"))
    if not fitting:
        return None, note
    fitting.sort(key=lambda item: HEAD_PRIORITY.index(item[0]))
    (code, evidence), *others = fitting
    return _make(code, output, evidence, [c for c, _ in others], inputs, docs_url), note
