"""Adversarial softmax / cross-entropy problems, their exact answers (mpmath), and per-row errors.

`cases(size)` draws problems from families that break textbook formulas (saturated rows,
near-ties, huge C, tiny and huge scales, −inf masks, soft labels equal to the prediction up
to its float64 rounding), each under varied loss options (index or probability labels,
weights, ignore_index, label smoothing, every reduction). `exact(case)` evaluates every output
at 60 significant digits from the float64 inputs taken as exact; `measure(case)` runs the
service's numerics on the case and returns the worst per-row relative error of each output:

    error of row n = max_c |ours_nc − exact_nc| / max_c |exact_nc|     (0 if both rows are 0)

For the Jacobian the "row" is sample n's C×C block; for per-sample losses it is one number.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import mpmath as mp
import numpy as np
from numpy.typing import NDArray

from app.numerics.cross_entropy import (
    Reduction,
    Targets,
    check_target_support,
    index_targets,
    probability_targets,
)
from app.numerics.errors import InvalidProblem
from app.numerics.gradcheck import Output, Report, analyse_cross_entropy

DIGITS = 60
MAX_JACOBIAN_CLASSES = 1000
SMALLEST_NORMAL = mp.mpf(2) ** -1022
FloatArray = NDArray[np.float64]
Size = Literal["quick", "full"]
OUTPUTS = (
    "probabilities",
    "log_probabilities",
    "complement",
    "jacobian",
    "losses",
    "loss",
    "gradient",
)


@dataclass(frozen=True)
class Case:
    """One cross-entropy problem: float64 logits and the loss options of the request."""

    family: str
    logits: FloatArray
    labels: NDArray[np.int64] | None = None
    """Class-index labels (N,), or None for probability labels."""
    probabilities: FloatArray | None = None
    """Probability labels (N, C), or None for index labels."""
    weight: FloatArray | None = None
    label_smoothing: float = 0.0
    ignore_index: int = -100
    reduction: Reduction = Reduction.MEAN

    def targets(self) -> Targets:
        """The service's effective targets for this case."""
        num_classes = self.logits.shape[1]
        if self.labels is not None:
            return index_targets(
                self.labels,
                num_classes,
                weight=self.weight,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                reduction=self.reduction,
                dtype=np.float64,
            )
        assert self.probabilities is not None
        return probability_targets(
            self.probabilities,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
            dtype=np.float64,
        )

    def options(self) -> str:
        """The loss options in a few words, for reports."""
        words = ["index" if self.labels is not None else "probability", str(self.reduction)]
        if self.weight is not None:
            words.append("weights")
        if self.label_smoothing:
            words.append(f"ε={self.label_smoothing:g}")
        if self.labels is not None and (self.labels == self.ignore_index).any():
            words.append("ignored")
        return " ".join(words)


# ---------------------------------------------------------------- exact answers (mpmath)

Row = list[mp.mpf]


@dataclass
class ExactRow:
    """Exact softmax quantities of one row (all 60-digit mpf; −inf logits give a = 0)."""

    probabilities: Row
    log_probabilities: Row
    complement: Row
    tail: mp.mpf
    """t = Σ_{i≠k} exp(z_i − z_k), kept separately so that 1 + t never rounds t away."""
    exp_shifted: Row
    argmax: int


def precision_bits(logits: FloatArray) -> int:
    """60 digits, plus as many bits as the smallest nonzero |z_i − max| lies below 1.

    exp(s) = 1 + s + … must resolve s itself: logits 1e-310 apart need ~1030 more bits.
    """
    z = np.where(np.isfinite(logits), logits, 0.0)
    spread = np.abs(z - z.max(axis=-1, keepdims=True))
    smallest = spread[spread > 0]
    extra = 0 if smallest.size == 0 else max(0, -int(np.frexp(smallest.min())[1]))
    return int(DIGITS * 3.33) + extra


def exact_row(logits: FloatArray) -> ExactRow:
    """a, log a and 1 − a of one row, without cancellation (at precision_bits)."""
    with mp.workprec(precision_bits(logits)):
        k = int(np.argmax(logits))
        top = mp.mpf(float(logits[k]))
        shifted = [mp.mpf(float(v)) - top if np.isfinite(v) else mp.ninf for v in logits]
        e = [mp.exp(s) if s != mp.ninf else mp.mpf(0) for s in shifted]
        tail = mp.fsum(e[:k] + e[k + 1 :])
        log_total = mp.log1p(tail)
        total = 1 + tail
        a = [v / total for v in e]
        log_a = [s - log_total if s != mp.ninf else mp.ninf for s in shifted]
        complement = [(total - v) / total for v in e]  # no cancellation for i ≠ k: e_i ≤ e_k
        complement[k] = tail / total
        return ExactRow(a, log_a, complement, tail, e, k)


def exact_targets(case: Case) -> tuple[list[Row], mp.mpf]:
    """The effective targets q (exact from the float inputs) and the divisor D."""
    num_samples, num_classes = case.logits.shape
    with mp.workprec(precision_bits(case.logits)):
        eps = mp.mpf(case.label_smoothing)
        w = [mp.mpf(1)] * num_classes
        if case.weight is not None:
            w = [mp.mpf(float(v)) for v in case.weight]
        q: list[Row] = []
        if case.labels is not None:
            divisor = mp.mpf(0)
            for label in case.labels:
                if label == case.ignore_index:
                    q.append([mp.mpf(0)] * num_classes)
                    continue
                row = [eps / num_classes * w_c for w_c in w]
                row[label] += (1 - eps) * w[label]
                q.append(row)
                divisor += w[label]
        else:
            assert case.probabilities is not None
            for p in case.probabilities:
                q.append(
                    [
                        w[c] * ((1 - eps) * mp.mpf(float(p[c])) + eps / num_classes)
                        for c in range(num_classes)
                    ]
                )
            divisor = mp.mpf(num_samples)
        if case.reduction is not Reduction.MEAN:
            divisor = mp.mpf(1)
        return q, divisor


@dataclass
class Exact:
    """Every output of a case, exactly (lists of mpf rows)."""

    rows: list[ExactRow]
    losses: Row
    loss: mp.mpf | None
    """The reduced loss; None for reduction `none` (the losses are the output)."""
    gradient: list[Row]
    condition: list[float] = field(default_factory=list)
    """Per row: max_c (a_c·Σq + q_c) / max_c |gradient_c|, how much the gradient cancels."""


def exact(case: Case) -> Exact:
    """All outputs of `case` at 60 digits (more for logits closer than 1e-60)."""
    rows = [exact_row(z) for z in case.logits]
    q, divisor = exact_targets(case)
    losses: Row = []
    gradient: list[Row] = []
    condition: list[float] = []
    with mp.workprec(precision_bits(case.logits)):
        for row, q_n in zip(rows, q, strict=True):
            losses.append(
                mp.fsum(
                    -q_c * la
                    for q_c, la in zip(q_n, row.log_probabilities, strict=True)
                    if q_c != 0
                )
            )
            k, t = row.argmax, row.tail
            total_q = mp.fsum(q_n)
            # a_c·S − q_c = (e_c·S − q_c − q_c·t) / (1 + t); at the argmax e_k = 1 and
            # S − q_k is summed without q_k, so no step cancels more than the true value.
            g = [
                mp.fsum([e_c * total_q, -q_c, -q_c * t]) / (1 + t)
                for e_c, q_c in zip(row.exp_shifted, q_n, strict=True)
            ]
            g[k] = (mp.fsum(q_n[:k] + q_n[k + 1 :]) - q_n[k] * t) / (1 + t)
            gradient.append([v / divisor for v in g])
            terms = max(
                a_c * total_q + q_c for a_c, q_c in zip(row.probabilities, q_n, strict=True)
            )
            biggest = max(abs(v) for v in g)
            condition.append(float(terms / biggest) if biggest else (0.0 if not terms else np.inf))
        loss = None if case.reduction is Reduction.NONE else mp.fsum(losses) / divisor
    return Exact(rows, losses, loss, gradient, condition)


# ---------------------------------------------------------------- errors


def row_error(ours: NDArray[np.floating], exact_row: Row) -> float:
    """max |ours − exact| / max(max |exact|, 2^-1022) over one row (−inf must match −inf).

    The floor 2^-1022 (the smallest normal float64) counts errors in rows whose every value
    is subnormal in units of the subnormals' fixed spacing: below it float64 has fewer bits,
    and no result can be more accurate than its rounding.
    """
    if np.isnan(ours).any():
        return float("inf")
    worst = mp.mpf(0)
    scale = mp.mpf(0)
    for value, reference in zip(ours.ravel().tolist(), exact_row, strict=True):
        if reference == mp.ninf or value == -np.inf:
            if value != reference:
                return float("inf")
            continue
        worst = max(worst, abs(mp.mpf(value) - reference))
        scale = max(scale, abs(reference))
    return float(worst / max(scale, SMALLEST_NORMAL))


def jacobian_block_error(
    ours: FloatArray, row: ExactRow, rng: np.random.Generator, factor: mp.mpf | int = 1
) -> float:
    """Row error of sample n's C×C block factor·a_i(δ_ij − a_j): the Jacobian (factor 1), or a
    Hessian block (factor s = Σq/D).

    Small C: every entry. Large C: the diagonal, the rows and columns of the three largest
    probabilities (where the largest entries are) and 4000 random entries; the denominator
    (the block's largest exact magnitude) is always exact.
    """
    if np.isnan(ours).any():
        return float("inf")
    a, complement = row.probabilities, row.complement
    num_classes = len(a)
    with mp.workdps(DIGITS):
        ordered = sorted(a, reverse=True)
        second = ordered[1] if num_classes > 1 else mp.mpf(0)
        diagonal = [factor * a_i * c_i for a_i, c_i in zip(a, complement, strict=True)]
        scale = max(max(abs(d) for d in diagonal), abs(factor) * ordered[0] * second)
        if num_classes <= 80:
            pairs = [(i, j) for i in range(num_classes) for j in range(num_classes)]
        else:
            top = np.argsort(np.asarray([float(v) for v in a]))[-3:]
            pairs = [(i, i) for i in range(num_classes)]
            pairs += [(int(i), j) for i in top for j in range(num_classes)]
            pairs += [(j, int(i)) for i in top for j in range(num_classes)]
            pairs += [tuple(p) for p in rng.integers(0, num_classes, (4000, 2)).tolist()]
        worst = mp.mpf(0)
        for i, j in pairs:
            reference = diagonal[i] if i == j else -factor * a[i] * a[j]
            worst = max(worst, abs(mp.mpf(float(ours[i, j])) - reference))
        return float(worst / max(scale, SMALLEST_NORMAL))


@dataclass
class Measurement:
    """Worst per-row error of each output on one case, and where it happened."""

    case: Case
    errors: dict[str, float]
    worst_row: dict[str, int]
    condition: list[float]
    """Per row, the gradient's cancellation factor (see Exact.condition)."""
    gradient_rows: list[float]
    """Per row, the gradient's error."""


def _worst(values: list[float]) -> tuple[float, int]:
    index = int(np.argmax(values)) if values else 0
    return (max(values) if values else 0.0), index


def measure(case: Case, report: Report | None = None, seed: int = 0) -> Measurement:
    """Per-row errors of the service's numerics (or of `report`, e.g. another library's)."""
    if report is None:
        include = (
            frozenset({Output.JACOBIAN})
            if case.logits.shape[1] <= MAX_JACOBIAN_CLASSES
            else frozenset()
        )
        report = analyse_cross_entropy(case.logits, case.targets(), case.reduction, include)
    reference = exact(case)
    rng = np.random.default_rng(seed)
    sm = report.softmax
    per_output: dict[str, list[float]] = {
        "probabilities": [
            row_error(sm.probabilities[n], r.probabilities) for n, r in enumerate(reference.rows)
        ],
        "log_probabilities": [
            row_error(sm.log_probabilities[n], r.log_probabilities)
            for n, r in enumerate(reference.rows)
        ],
        "complement": [
            row_error(sm.complement[n], r.complement) for n, r in enumerate(reference.rows)
        ],
        "losses": [
            row_error(np.asarray([report.losses[n]]), [v])  # type: ignore[index]
            for n, v in enumerate(reference.losses)
        ],
        "gradient": [
            row_error(report.gradient[n], g)  # type: ignore[index]
            for n, g in enumerate(reference.gradient)
        ],
    }
    if report.jacobian is not None:
        per_output["jacobian"] = [
            jacobian_block_error(report.jacobian[n], r, rng) for n, r in enumerate(reference.rows)
        ]
    if reference.loss is not None and report.loss is not None:
        per_output["loss"] = [row_error(np.asarray(report.loss).reshape(1), [reference.loss])]
    errors: dict[str, float] = {}
    worst_row: dict[str, int] = {}
    for name, values in per_output.items():
        errors[name], worst_row[name] = _worst(values)
    return Measurement(case, errors, worst_row, reference.condition, per_output["gradient"])


# ---------------------------------------------------------------- the generator


def _exact_probabilities(logits: FloatArray) -> list[Row]:
    return [exact_row(z).probabilities for z in logits]


def _rounded(rows: list[Row]) -> FloatArray:
    """The float64 rounding of exact rows."""
    return np.asarray([[float(v) for v in row] for row in rows])


@dataclass(frozen=True)
class LossOption:
    """A way of attaching targets to logits."""

    name: str
    make: Callable[[FloatArray, np.random.Generator], dict[str, object]]


def _index(
    *,
    weighted: bool = False,
    smoothing: float = 0.0,
    reduction: Reduction = Reduction.MEAN,
    ignore: bool = False,
    on_argmax: float = 0.5,
) -> Callable[[FloatArray, np.random.Generator], dict[str, object]]:
    """Index labels: the argmax (tiny losses in saturated rows) with probability `on_argmax`."""

    def make(logits: FloatArray, rng: np.random.Generator) -> dict[str, object]:
        num_samples = logits.shape[0]
        finite = np.isfinite(logits)
        labels = np.empty(num_samples, np.int64)
        for n in range(num_samples):
            choices = np.flatnonzero(finite[n])
            labels[n] = (
                int(np.argmax(logits[n])) if rng.random() < on_argmax else rng.choice(choices)
            )
        if ignore and num_samples > 1:
            labels[rng.choice(num_samples, max(1, num_samples // 3), replace=False)] = -100
            labels[0] = int(np.argmax(logits[0]))
        weight = _weight(logits, rng) if weighted else None
        if smoothing and weight is None and not finite.all():
            weight = np.where(finite.all(axis=0), 1.0, 0.0)
        return {
            "labels": labels,
            "weight": weight,
            "label_smoothing": smoothing,
            "reduction": reduction,
        }

    return make


def _weight(logits: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Random positive class weights, 0 on classes masked in some row (no mass on −inf)."""
    w = np.asarray(rng.uniform(0.1, 3.0, logits.shape[1]), np.float64)
    w[rng.random(w.size) < 0.2] = float(rng.choice([1e-3, 7.0, 1.0 / 3.0]))
    return np.where(np.isfinite(logits).all(axis=0), w, 0.0)


def _probabilities(
    kind: Literal["dirichlet", "onehot", "prediction", "prediction_options"],
    *,
    weighted: bool = False,
    smoothing: float = 0.0,
    reduction: Reduction = Reduction.MEAN,
) -> Callable[[FloatArray, np.random.Generator], dict[str, object]]:
    """Probability labels: random, one-hot, or the prediction itself rounded to float64.

    `prediction_options` chooses p so that the effective target w·((1 − ε)p + ε/C) equals the
    prediction (to float64 rounding) wherever p ≥ 0 allows: the gradient is then mostly
    rounding residue.
    """

    def make(logits: FloatArray, rng: np.random.Generator) -> dict[str, object]:
        num_samples, num_classes = logits.shape
        finite = np.isfinite(logits)
        weight = _weight(logits, rng) if weighted else None
        eps = smoothing
        if kind == "dirichlet":
            p = rng.dirichlet(np.ones(num_classes), num_samples) * finite
        elif kind == "onehot":
            p = np.zeros(logits.shape)
            p[np.arange(num_samples), np.argmax(logits, axis=1)] = 1.0
        elif kind == "prediction":
            p = _rounded(_exact_probabilities(logits))
        else:
            weight = _weight(logits, rng)
            weight[weight == 0] = 1.0
            if not finite.all():
                eps = 0.0  # smoothing would put mass on the masked classes
            with mp.workdps(DIGITS):
                rows = []
                for a in _exact_probabilities(logits):
                    # w_c((1 − ε)p_c + ε/C) = a_c wherever that leaves p_c ≥ 0
                    rows.append(
                        [
                            max(
                                mp.mpf(0),
                                (a_c / mp.mpf(float(w_c)) - mp.mpf(eps) / num_classes)
                                / (1 - mp.mpf(eps)),
                            )
                            for a_c, w_c in zip(a, weight, strict=True)
                        ]
                    )
                p = _rounded(rows)
        return {
            "probabilities": p,
            "weight": weight,
            "label_smoothing": eps,
            "reduction": reduction,
        }

    return make


LOSS_OPTIONS = (
    LossOption("index", _index()),
    LossOption("index+weights+ε", _index(weighted=True, smoothing=0.1, reduction=Reduction.SUM)),
    LossOption(
        "index+tiny ε+ignored", _index(smoothing=1e-12, reduction=Reduction.NONE, ignore=True)
    ),
    LossOption("index+weights+big ε+ignored", _index(weighted=True, smoothing=0.97, ignore=True)),
    LossOption("index+ε=1", _index(smoothing=1.0, reduction=Reduction.SUM, on_argmax=1.0)),
    LossOption("dirichlet", _probabilities("dirichlet")),
    LossOption(
        "onehot+weights+ε",
        _probabilities("onehot", weighted=True, smoothing=0.2, reduction=Reduction.SUM),
    ),
    LossOption("prediction", _probabilities("prediction", reduction=Reduction.NONE)),
    LossOption("prediction+weights+ε", _probabilities("prediction_options", smoothing=0.05)),
    LossOption("prediction+weights", _probabilities("prediction_options", reduction=Reduction.SUM)),
)


def _families(rng: np.random.Generator, size: Size) -> Iterator[tuple[str, FloatArray]]:
    """(family, logits) pairs; `size` sets the number of rows and the largest C."""
    rows = 3 if size == "quick" else 6
    huge_classes = 1000 if size == "quick" else 10_000
    for num_classes in (2, 3, 10, 40):
        for sigma in (0.3, 3.0, 30.0):
            yield "random", rng.normal(0.0, sigma, (rows, num_classes))
    for gap in (20.0, 40.0, 100.0, 300.0, 700.0, 745.0, 1000.0, 1e5):
        num_classes = int(rng.choice([2, 5, 30]))
        z = rng.normal(0.0, 1.0, (rows, num_classes))
        z[np.arange(rows), rng.integers(0, num_classes, rows)] += gap
        yield "saturated", z
        z = rng.normal(0.0, 1.0, (rows, num_classes))
        z[:, :2] += gap  # two leaders, far ahead of the rest
        yield "saturated, two leaders", z
    for base in (0.0, 1.0, -3.0, 1e5, -1e5, 1e-300):
        num_classes = int(rng.choice([2, 4, 25]))
        steps = rng.integers(-3, 4, (rows, num_classes)).astype(np.float64)
        z = base + steps * np.spacing(max(abs(base), 1e-300))
        yield "near-tie", z
    yield "huge C", rng.normal(0.0, 3.0, (2, huge_classes))
    z = rng.normal(0.0, 3.0, (2, huge_classes))
    z[:, 0] += 60.0
    yield "huge C, saturated", z
    yield "huge C, near-uniform", rng.normal(0.0, 1e-3, (2, huge_classes))
    for scale in (1e-300, 1e-310, 5e-324, 1e-200, 1e-16):
        num_classes = int(rng.choice([2, 6, 20]))
        yield "tiny scale", rng.normal(0.0, 1.0, (rows, num_classes)) * scale
    for center, spread in ((0.0, 1e5), (1e5, 1.0), (-1e5, 30.0), (1e5, 1e3), (5e4, 1e5)):
        num_classes = int(rng.choice([2, 5, 20]))
        yield "huge scale", center + rng.normal(0.0, 1.0, (rows, num_classes)) * spread
    for num_classes in (3, 12):
        z = rng.normal(0.0, 3.0, (rows, num_classes))
        masked = rng.random(z.shape) < 0.3
        masked[:, 0] = False
        masked[:, 1] = True  # one class masked in every row
        z[masked] = -np.inf
        yield "-inf masks", z
        z = z.copy()
        z[:, 0] += 500.0
        yield "-inf masks, saturated", z


def cases(size: Size = "quick", seed: int = 2026) -> list[Case]:
    """Every family under a rotating choice of loss options (all options in every family for
    `full`; two per family for `quick`)."""
    rng = np.random.default_rng(seed)
    result: list[Case] = []
    options: tuple[LossOption, ...]
    for index, (family, logits) in enumerate(_families(rng, size)):
        if size == "full":
            options = LOSS_OPTIONS
        else:
            options = tuple(LOSS_OPTIONS[(2 * index + j) % len(LOSS_OPTIONS)] for j in (0, 1))
        for option in options:
            case = Case(family, logits, **option.make(logits, rng))  # type: ignore[arg-type]
            try:
                check_target_support(case.logits, case.targets())
            except InvalidProblem:
                continue  # e.g. every label weighs 0 under `mean`
            result.append(case)
    return result
