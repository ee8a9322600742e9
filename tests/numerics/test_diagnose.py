"""Named mistakes: each recognised first where it changes the numbers, never claimed otherwise.

Reference values and mistaken candidates come from `outputs` below: the textbook formulas in
plain numpy (one sample at a time for the targets), written independently of app.numerics, with
the mistaken option put in (weights left out, labels shifted, softmax over the batch axis…).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.numerics.candidate import CandidateCheck, check_candidate
from app.numerics.cross_entropy import Reduction, index_targets, probability_targets
from app.numerics.diagnose import (
    PRIORITY,
    Observed,
    ProblemInputs,
    diagnose,
    docs_link,
    message,
)
from app.numerics.gradcheck import Output, Report, analyse_cross_entropy

Array = np.ndarray
ATOL, RTOL = 1e-5, 1e-3
RNG = np.random.default_rng(14)


# ----- an independent reference -----------------------------------------------------------


def softmax_rows(z: Array, axis: int = 1) -> tuple[Array, Array]:
    """(a, log a) along `axis`: exp(z − max) / Σ exp(z − max)."""
    shifted = z - z.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=axis, keepdims=True)
    return e / total, shifted - np.log(total)


def targets(
    labels: Array,
    num_classes: int,
    *,
    weight: Sequence[float] | None,
    ignore_index: int,
    smoothing: float,
) -> Array:
    """q sample by sample: (1 − ε)·w_y at y plus ε/C·w_c (0 for an ignored sample); for
    probability rows p: w·((1 − ε)·p + ε/C)."""
    w = np.ones(num_classes) if weight is None else np.asarray(weight, np.float64)
    if labels.ndim == 2:
        return w * ((1 - smoothing) * labels + smoothing / num_classes)
    q = np.zeros((len(labels), num_classes))
    for n, y in enumerate(labels.tolist()):
        if y == ignore_index:
            continue
        q[n] = smoothing / num_classes * w
        q[n, y] += (1 - smoothing) * w[y]
    return q


def divisor(
    labels: Array, *, weight: Sequence[float] | None, ignore_index: int, reduction: str
) -> float:
    """D: Σ w_y over the samples not ignored (index labels), N (probability labels); 1."""
    if reduction != "mean":
        return 1.0
    if labels.ndim == 2:
        return float(len(labels))
    kept = [y for y in labels.tolist() if y != ignore_index]
    return float(len(kept) if weight is None else sum(weight[y] for y in kept))


def outputs(
    z: Any,
    labels: Any = None,
    *,
    weight: Sequence[float] | None = None,
    ignore_index: int = -100,
    smoothing: float = 0.0,
    reduction: str = "mean",
    axis: int = 1,
    divide_by: float | None = None,
    a_minus_q: bool = False,
    smooth_ignored: bool = False,
    log_of: Any = None,
) -> dict[str, Array]:
    """Every output by the textbook formulas. The mistakes: `axis` 0 normalises over the batch,
    `divide_by` replaces D, `a_minus_q` takes the gradient as (a − q)/D, `smooth_ignored` keeps
    ε/C·w in the ignored samples' targets, `log_of(a)` replaces log a in the losses."""
    z = np.asarray(z, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a, log_a = softmax_rows(z, axis)
    result = {
        "probabilities": a,
        "log_probabilities": log_a,
        "jacobian": np.stack([np.diag(row) - np.outer(row, row) for row in a]),
    }
    if labels is None:
        return result
    labels = np.asarray(labels)
    q = targets(labels, z.shape[1], weight=weight, ignore_index=ignore_index, smoothing=smoothing)
    d = divisor(labels, weight=weight, ignore_index=ignore_index, reduction=reduction)
    d = d if divide_by is None else divide_by
    if smooth_ignored:
        w = np.ones(z.shape[1]) if weight is None else np.asarray(weight, np.float64)
        q[labels == ignore_index] = smoothing / z.shape[1] * w
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = log_a if log_of is None else log_of(a)
        losses = -np.where(q > 0, q * logs, 0.0).sum(axis=1)
    result["losses"] = losses
    result["loss"] = losses / d if reduction == "none" else np.asarray(losses.sum() / d)
    total = 1.0 if a_minus_q else q.sum(axis=1, keepdims=True)
    result["gradient"] = (a * total - q) / d
    sums = np.ones(len(z)) if a_minus_q else q.sum(axis=1)
    result["hessian"] = (sums / d)[:, None, None] * result["jacobian"]
    return result


# ----- problems -----------------------------------------------------------------------------

Z = RNG.normal(scale=2.0, size=(5, 4))
LABELS = np.array([0, 3, 1, 3, 2])
WEIGHT = [0.5, 2.0, 1.0, 3.0]


def problem(z: Any = Z, labels: Any = LABELS, **options: Any) -> dict[str, Any]:
    return {"z": np.asarray(z, np.float64), "labels": labels, **options}


def inputs_of(p: Mapping[str, Any]) -> ProblemInputs:
    labels = p["labels"]
    return ProblemInputs(
        p["z"],
        None if labels is None else np.asarray(labels),
        weight=None if p.get("weight") is None else np.asarray(p["weight"], np.float64),
        ignore_index=p.get("ignore_index", -100),
        label_smoothing=p.get("smoothing", 0.0),
        reduction=Reduction(p.get("reduction", "mean")),
    )


def reference_of(p: Mapping[str, Any]) -> dict[str, Array]:
    options = {k: v for k, v in p.items() if k not in ("z", "labels")}
    return outputs(p["z"], p["labels"], **options)


def check(
    p: Mapping[str, Any], candidate: Mapping[str, object], **tolerance: float
) -> CandidateCheck:
    return check_candidate(
        candidate,
        reference_of(p),
        atol=tolerance.get("atol", ATOL),
        rtol=tolerance.get("rtol", RTOL),
        inputs=inputs_of(p),
    )


def service_report(p: Mapping[str, Any]) -> Report:
    """The service's own analysis of `p` (the reference of a candidate check): every output a
    candidate may send."""
    inputs = inputs_of(p)
    common: dict[str, Any] = {
        "weight": inputs.weight,
        "label_smoothing": inputs.label_smoothing,
        "reduction": inputs.reduction,
        "dtype": np.float64,
    }
    if np.asarray(p["labels"]).ndim == 1:
        t = index_targets(
            np.asarray(inputs.labels, np.int64),
            p["z"].shape[1],
            ignore_index=inputs.ignore_index,
            **common,
        )
    else:
        t = probability_targets(np.asarray(inputs.labels, np.float64), **common)
    wanted = frozenset({Output.GRADIENT, Output.JACOBIAN, Output.LOSS, Output.HESSIAN})
    return analyse_cross_entropy(p["z"], t, inputs.reduction, wanted)


def service_outputs(report: Report) -> dict[str, Any]:
    """The outputs of `report` by the names a candidate sends them under."""
    assert report.loss is not None and report.losses is not None
    assert report.gradient is not None and report.jacobian is not None
    assert report.hessian is not None
    return {
        "probabilities": report.softmax.probabilities,
        "log_probabilities": report.softmax.log_probabilities,
        "loss": report.loss,
        "losses": report.losses,
        "gradient": report.gradient,
        "jacobian": report.jacobian,
        "hessian": report.hessian,
    }


def mistaken(p: Mapping[str, Any], **mistake: Any) -> dict[str, Array]:
    """The outputs of `p` with some of its options replaced by the mistake's."""
    merged = {**{k: v for k, v in p.items() if k not in ("z", "labels")}, **mistake}
    labels = merged.pop("labels", p["labels"])
    return outputs(merged.pop("z", p["z"]), labels, **merged)


def naive_softmax(z: Array) -> Array:
    """exp(z) / Σ exp(z) without the max: overflows for large logits."""
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(z)
        result: Array = e / e.sum(axis=1, keepdims=True)
        return result


WEIGHTED = problem(weight=WEIGHT)
IGNORED = problem(labels=np.array([0, -100, 1, 3, -100]))
SMOOTHED = problem(smoothing=0.2)
PADDING = problem(labels=np.array([0, 3, 1, 0, 2]), ignore_index=0)
SOFT = problem(labels=RNG.dirichlet(np.ones(4), size=5) * 1.5)
SOFTMAX_ONLY = problem(labels=None)
LARGE = problem(z=np.vstack([Z[:4], [[1000.0, 0.0, -3.0, 999.0]]]))
UNDERFLOW = problem(z=np.vstack([Z[:4], [[0.0, -800.0, 1.0, 2.0]]]), labels=[0, 3, 1, 3, 1])
CONFIDENT = problem(z=np.vstack([Z[:3], [[40.0, -5.0, 0.0, -1.0]], Z[4:]]))  # a_3 ≈ e^-41
SMOOTHED_IGNORED = problem(labels=np.array([0, -100, 1, 3, -100]), smoothing=0.2)
PLAIN = problem()


def one_hot_argmax(p: Array) -> Array:
    """Each row of probability targets replaced by the one-hot row of its first maximum."""
    result = np.zeros_like(p)
    for n, row in enumerate(p):
        result[n, int(np.argmax(row))] = 1.0
    return result


def backward_through_softmax(p: Mapping[str, Any]) -> Array:
    """dL/dz as the chain rule of a from-scratch library: dL/da = −q/a (where q ≠ 0), pushed
    through the softmax Jacobian, dL/dz_j = a_j(g_j − Σ_i a_i g_i), after a correct max-shift."""
    z = p["z"]
    a, _ = softmax_rows(z)
    labels = np.asarray(p["labels"])
    options = {"weight": p.get("weight"), "ignore_index": p.get("ignore_index", -100)}
    q = targets(labels, z.shape[1], smoothing=p.get("smoothing", 0.0), **options)
    d = divisor(labels, reduction=p.get("reduction", "mean"), **options)
    with np.errstate(divide="ignore", invalid="ignore"):
        upstream = np.where(q != 0, -q / a, 0.0)
        gradient: Array = a * (upstream - (a * upstream).sum(axis=1, keepdims=True)) / d
    return gradient


def nulls(value: Array) -> list[list[float | None]]:
    """A 2-D array as the API writes it: −inf as null."""
    return [[None if v == -np.inf else float(v) for v in row] for row in value]


def _naive_log_softmax(z: Any) -> Array:
    with np.errstate(divide="ignore"):
        result: Array = np.log(naive_softmax(np.asarray(z, np.float64)))
    return result


def _block_loss(p: Mapping[str, Any]) -> float:
    """−mean of log_softmax(z)[:, y]: the N×N block of every sample at every label."""
    _, log_a = softmax_rows(p["z"])
    return float(-np.mean(log_a[:, p["labels"]]))


# code → (problem, output, candidate value): the mistake in one of the outputs it changes
FIRST_CASES: dict[str, list[tuple[Mapping[str, Any], str, Any]]] = {
    "not_divided": [
        (IGNORED, "gradient", mistaken(IGNORED, divide_by=1.0)["gradient"]),
        (WEIGHTED, "loss", mistaken(WEIGHTED, reduction="sum")["loss"]),
        (SOFT, "gradient", mistaken(SOFT, divide_by=1.0)["gradient"]),
    ],
    "divided_by_batch_size": [
        (WEIGHTED, "gradient", mistaken(WEIGHTED, divide_by=5.0)["gradient"]),
        (IGNORED, "loss", mistaken(IGNORED, divide_by=5.0)["loss"]),
    ],
    "a_minus_y": [
        (WEIGHTED, "gradient", mistaken(WEIGHTED, a_minus_q=True)["gradient"]),
        (SOFT, "gradient", mistaken(SOFT, a_minus_q=True)["gradient"]),
        (
            {**WEIGHTED, "smoothing": 0.1, "reduction": "sum"},
            "gradient",
            mistaken(WEIGHTED, smoothing=0.1, reduction="sum", a_minus_q=True)["gradient"],
        ),
    ],
    "sign_flipped": [
        (WEIGHTED, "gradient", -reference_of(WEIGHTED)["gradient"]),
        (SOFTMAX_ONLY, "jacobian", -reference_of(SOFTMAX_ONLY)["jacobian"]),
        (SMOOTHED, "loss", -reference_of(SMOOTHED)["loss"]),
    ],
    "wrong_scale": [
        (WEIGHTED, "gradient", 3 * reference_of(WEIGHTED)["gradient"]),
        (
            SOFTMAX_ONLY,
            "log_probabilities",
            reference_of(SOFTMAX_ONLY)["log_probabilities"] / np.log(2),
        ),
        (IGNORED, "losses", 0.5 * reference_of(IGNORED)["losses"]),
    ],
    "weights_ignored": [
        (WEIGHTED, "gradient", mistaken(WEIGHTED, weight=None)["gradient"]),
        (WEIGHTED, "loss", mistaken(WEIGHTED, weight=None)["loss"]),
        ({**SOFT, "weight": WEIGHT}, "losses", reference_of(SOFT)["losses"]),
    ],
    "label_smoothing_ignored": [
        (SMOOTHED, "gradient", mistaken(SMOOTHED, smoothing=0.0)["gradient"]),
        (SMOOTHED, "losses", mistaken(SMOOTHED, smoothing=0.0)["losses"]),
    ],
    "ignore_index_not_applied": [
        (PADDING, "gradient", mistaken(PADDING, ignore_index=-100)["gradient"]),
        (PADDING, "loss", mistaken(PADDING, ignore_index=-100)["loss"]),
        (
            problem(labels=np.array([0, -1, 1, 3, 2]), ignore_index=-1),
            "gradient",  # label -1 wraps to class C − 1 = 3, as numpy indexing does
            outputs(Z, np.array([0, 3, 1, 3, 2]))["gradient"],
        ),
    ],
    "off_by_one_labels": [
        (WEIGHTED, "gradient", mistaken(WEIGHTED, labels=(LABELS - 1) % 4)["gradient"]),
        (IGNORED, "losses", mistaken(IGNORED, labels=np.array([3, -100, 0, 2, -100]))["losses"]),
    ],
    "jacobian_missing_diagonal": [
        (
            SOFTMAX_ONLY,
            "jacobian",
            -np.einsum("ni,nj->nij", *[reference_of(SOFTMAX_ONLY)["probabilities"]] * 2),
        ),
    ],
    "jacobian_diagonal_only": [
        (
            SOFTMAX_ONLY,
            "jacobian",
            np.stack([np.diag(a * (1 - a)) for a in reference_of(SOFTMAX_ONLY)["probabilities"]]),
        ),
    ],
    "hessian_missing_target_sum": [
        (WEIGHTED, "hessian", mistaken(WEIGHTED, a_minus_q=True)["hessian"]),
        (SOFT, "hessian", mistaken(SOFT, a_minus_q=True)["hessian"]),
    ],
    "hessian_not_divided": [
        (WEIGHTED, "hessian", mistaken(WEIGHTED, divide_by=1.0)["hessian"]),
        (IGNORED, "hessian", mistaken(IGNORED, divide_by=1.0)["hessian"]),
    ],
    "wrong_softmax_axis": [
        (SOFTMAX_ONLY, "probabilities", mistaken(SOFTMAX_ONLY, axis=0)["probabilities"]),
        (SOFTMAX_ONLY, "log_probabilities", mistaken(SOFTMAX_ONLY, axis=0)["log_probabilities"]),
        (WEIGHTED, "gradient", mistaken(WEIGHTED, axis=0)["gradient"]),
        (SOFTMAX_ONLY, "jacobian", mistaken(SOFTMAX_ONLY, axis=0)["jacobian"]),
    ],
    "probability_underflow": [
        (UNDERFLOW, "gradient", backward_through_softmax(UNDERFLOW)),
        (UNDERFLOW, "losses", mistaken(UNDERFLOW, log_of=np.log)["losses"]),
        (
            problem(z=[[0.0, -800.0, 1.0]], labels=None),
            "log_probabilities",
            nulls(_naive_log_softmax([[0.0, -800.0, 1.0]])),
        ),
    ],
    "smoothing_over_other_classes": [
        (SMOOTHED, "gradient", mistaken(SMOOTHED, smoothing=0.2 * 4 / 3)["gradient"]),
        (SMOOTHED, "losses", mistaken(SMOOTHED, smoothing=0.2 * 4 / 3)["losses"]),
    ],
    "ignored_rows_smoothed": [
        (
            SMOOTHED_IGNORED,
            "gradient",
            mistaken(SMOOTHED_IGNORED, smooth_ignored=True)["gradient"],
        ),
        (
            SMOOTHED_IGNORED,
            "loss",
            mistaken(SMOOTHED_IGNORED, smooth_ignored=True, divide_by=5.0)["loss"],
        ),
    ],
    "soft_labels_argmaxed": [
        (SOFT, "gradient", mistaken(SOFT, labels=one_hot_argmax(SOFT["labels"]))["gradient"]),
        (SOFT, "losses", mistaken(SOFT, labels=one_hot_argmax(SOFT["labels"]))["losses"]),
    ],
    "log_clipped": [
        (
            CONFIDENT,
            "losses",
            mistaken(CONFIDENT, log_of=lambda a: np.log(np.maximum(a, 1e-7)))["losses"],
        ),
        (CONFIDENT, "loss", mistaken(CONFIDENT, log_of=lambda a: np.log(a + 1e-15))["loss"]),
        (
            CONFIDENT,
            "losses",
            mistaken(CONFIDENT, log_of=lambda a: np.log(np.clip(a, 1e-12, 1 - 1e-12)))["losses"],
        ),
    ],
    "loss_wrong_entries": [
        (PLAIN, "loss", _block_loss(PLAIN)),
        (PLAIN, "loss", reference_of(PLAIN)["losses"][0] / 5),
    ],
    "overflow": [
        (LARGE, "probabilities", naive_softmax(LARGE["z"])),
        (LARGE, "gradient", np.where(np.isnan(naive_softmax(LARGE["z"])), np.nan, 0.1)),
        (LARGE, "loss", np.inf),
    ],
}
FIRST = [
    pytest.param(code, p, output, value, id=f"{code}-{output}-{i}")
    for code, cases in FIRST_CASES.items()
    for i, (p, output, value) in enumerate(cases)
]


def test_every_code_has_cases() -> None:
    assert set(FIRST_CASES) == set(PRIORITY)


@pytest.mark.parametrize(("code", "p", "output", "value"), FIRST)
def test_the_mistake_is_the_first_diagnosis(
    code: str, p: Mapping[str, Any], output: str, value: Any
) -> None:
    result = check(p, {output: np.asarray(value).tolist()})
    assert not result.passed
    assert result.diagnoses, result.notes
    first = result.diagnoses[0]
    assert (first.code, first.output) == (code, output)
    assert first.message.endswith(f"See {docs_link(_anchor(first.message))}.")


def _anchor(text: str) -> str:
    return text.rsplit("#", 1)[1].rstrip(".")


@pytest.mark.parametrize(("code", "p", "output", "value"), FIRST)
def test_the_right_answer_gets_no_diagnosis(
    code: str, p: Mapping[str, Any], output: str, value: Any
) -> None:
    right = reference_of(p)[output]
    result = check(p, {output: right.tolist()})
    assert result.passed, result.outputs[output]
    assert result.diagnoses == []


@pytest.mark.parametrize(("code", "p", "output", "value"), FIRST)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_errors_get_no_diagnosis(
    code: str, p: Mapping[str, Any], output: str, value: Any, seed: int
) -> None:
    right = reference_of(p)[output]
    rng = np.random.default_rng(seed)
    noisy = right * (1 + 0.2 * rng.standard_normal(right.shape)) + 0.01 * rng.standard_normal(
        right.shape
    )
    noisy = np.where(np.isfinite(right), noisy, right)
    result = check(p, {output: noisy.tolist()})
    assert not result.passed
    assert result.diagnoses == []
    assert any("no known mistake" in note for note in result.notes)


# ----- messages and evidence ------------------------------------------------------------------


def test_messages_leak_no_reference_number() -> None:
    """A message may not hold the factor, D or any value: only the formula's own constants."""
    for code, cases in FIRST_CASES.items():
        for p, output, value in cases:
            (first, *_) = check(p, {output: np.asarray(value).tolist()}).diagnoses
            body = first.message.split(" See ")[0]
            digits = {ch for ch in body if ch.isdigit()}
            assert digits <= {"1", "0", "2"}, (code, body)  # "1 − ε", "base 2", "0-based", "10"


def test_evidence_names_the_factor() -> None:
    gradient = reference_of(IGNORED)["gradient"]
    (first,) = check(IGNORED, {"gradient": (gradient * 7).tolist()}).diagnoses
    assert first.code == "wrong_scale"
    assert "× 7" in first.evidence
    # 3 samples are not ignored: × 3 is the named mistake, not a scale
    (divided,) = check(IGNORED, {"gradient": (gradient * 3).tolist()}).diagnoses
    assert divided.code == "not_divided"
    assert "× 3 = D" in divided.evidence
    (minus,) = check(IGNORED, {"gradient": (gradient * -5).tolist()}).diagnoses
    assert minus.code == "wrong_scale"
    assert "× -5 = −N, the number of samples" in minus.evidence


def test_a_log_base_factor_is_named() -> None:
    value = reference_of(SOFTMAX_ONLY)["log_probabilities"] / np.log(2)
    (first,) = check(SOFTMAX_ONLY, {"log_probabilities": value.tolist()}).diagnoses
    assert "log base 2" in first.evidence


def test_docs_url_gives_full_links() -> None:
    text = message("not_divided", "gradient", inputs_of(IGNORED), "https://gradcheck.dev/docs/")
    assert text.endswith("See https://gradcheck.dev/docs/maths/#reductions.")
    assert message("a_minus_y", "gradient", inputs_of(WEIGHTED)).endswith(
        "See docs/maths.md#a-minus-y."
    )


# ----- rules ----------------------------------------------------------------------------------


def test_wrong_scale_is_never_claimed_for_a_scalar() -> None:
    result = check(WEIGHTED, {"loss": float(reference_of(WEIGHTED)["loss"]) * 3})
    assert not result.passed
    assert result.diagnoses == []


def test_wrong_scale_needs_two_distinct_non_zero_entries() -> None:
    # one sample, two classes: the gradient row is (x, −x); its entries are distinct, but a
    # one-hot probability row like (0, 1, 0) is not: 0 and a single non-zero value
    p = problem(z=[[0.0, 0.0]], labels=np.array([0]), reduction="sum")
    ok = check(p, {"gradient": (reference_of(p)["gradient"] * 3).tolist()})
    assert [d.code for d in ok.diagnoses] == ["wrong_scale"]
    masked = problem(z=[[0.0, -np.inf, -np.inf]], labels=None)
    result = check(masked, {"probabilities": [[2.0, 0.0, 0.0]]})
    assert result.diagnoses == []


def test_a_mistake_that_changes_nothing_is_no_mistake() -> None:
    # weights all 2: w_y·(a − y)/Σ w_y = (a − y)/N, so leaving the weights out is harmless
    p = problem(weight=[2.0, 2.0, 2.0, 2.0])
    result = check(p, {"gradient": mistaken(p, weight=None)["gradient"].tolist()})
    assert result.passed
    assert result.diagnoses == []


def test_tied_mistakes_are_listed() -> None:
    # one sample: D = w_y and N = 1, so "not divided" and "divided by N" give the same numbers
    p = problem(z=Z[:1], labels=np.array([3]), weight=WEIGHT)
    result = check(p, {"gradient": mistaken(p, divide_by=1.0)["gradient"].tolist()})
    (first,) = result.diagnoses
    assert first.code == "not_divided"
    assert first.indistinguishable_from == ["divided_by_batch_size"]


def test_tie_between_weights_and_divisor() -> None:
    # every label of class 1 (weight 2): the reference is 2(a − y)/(2·5) = (a − y)/5, and so is
    # the gradient without weights: leaving them out changes nothing and is not listed, while
    # dividing by N = 5 instead of D = 10 gives 2(a − y)/5
    p = problem(labels=np.array([1, 1, 1, 1, 1]), weight=WEIGHT, reduction="mean")
    result = check(p, {"gradient": mistaken(p, divide_by=5.0)["gradient"].tolist()})
    (first,) = result.diagnoses
    assert first.code == "divided_by_batch_size"
    assert "weights_ignored" not in first.indistinguishable_from


def test_one_diagnosis_per_output_in_priority_order() -> None:
    wrong = mistaken(WEIGHTED, weight=None)
    result = check(
        WEIGHTED,
        {
            "gradient": wrong["gradient"].tolist(),
            "probabilities": mistaken(WEIGHTED, axis=0)["probabilities"].tolist(),
            "loss": float(-reference_of(WEIGHTED)["loss"]),
        },
    )
    assert [(d.code, d.output) for d in result.diagnoses] == [
        ("wrong_softmax_axis", "probabilities"),
        ("sign_flipped", "loss"),
        ("weights_ignored", "gradient"),
    ]


def test_overflow_evidence_names_the_logit() -> None:
    (first,) = check(LARGE, {"probabilities": naive_softmax(LARGE["z"]).tolist()}).diagnoses
    assert first.code == "overflow"
    assert "largest logit of sample 4 is 1000" in first.evidence


def test_overflow_is_only_claimed_in_the_rows_it_predicts() -> None:
    # NaN in sample 0 (largest logit about 3): exp overflows nowhere there
    value = naive_softmax(LARGE["z"])
    value[0, 0] = np.nan
    result = check(LARGE, {"probabilities": value.tolist()})
    assert result.diagnoses == []
    assert any("no known mistake" in note for note in result.notes)


def test_underflow_is_named_with_its_class() -> None:
    (first,) = check(UNDERFLOW, {"gradient": backward_through_softmax(UNDERFLOW)}).diagnoses
    assert first.code == "probability_underflow"
    assert "in exactly the one sample where the probability of a class" in first.evidence
    assert "sample 4: class 1" in first.evidence
    assert "a·Σq − q" in first.message


def test_underflow_of_a_class_without_target_through_the_whole_row() -> None:
    # −y/a over every class: in sample 4 class 1 underflows but its label is 3; 0/0 is NaN
    p = problem(z=UNDERFLOW["z"], labels=[0, 3, 1, 3, 3])
    a, _ = softmax_rows(p["z"])
    y = np.eye(4)[p["labels"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        upstream = -y / a / 5
        gradient = a * (upstream - (a * upstream).sum(axis=1, keepdims=True))
        losses = -(y * np.log(a)).sum(axis=1)
    for output, value in (("gradient", gradient), ("losses", losses)):
        (first,) = check(p, {output: value.tolist()}).diagnoses
        assert first.code == "probability_underflow"
        assert "where the probability of a class underflows to 0" in first.evidence
    # the fused gradient's answer, or −q/a at the label alone, is finite: nothing to name
    assert check(p, {"gradient": backward_through_softmax(p)}).passed


def test_overflow_and_underflow_in_the_same_rows_are_listed() -> None:
    # sample 4 of LARGE overflows exp, and its label's probability (class 2) underflows too
    value = np.where(np.isnan(naive_softmax(LARGE["z"])), np.nan, 0.1)
    (first,) = check(LARGE, {"gradient": value}).diagnoses
    assert first.code == "overflow"
    assert first.indistinguishable_from == ["probability_underflow"]


def test_overflow_follows_the_candidates_dtype() -> None:
    # a largest logit of 100 overflows exp in float32 (above 88.7), not in float64
    z = np.vstack([Z[:4], [[100.0, 0.0, 1.0, 2.0]]])
    p = problem(z=z, labels=None)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(z.astype(np.float32))
        naive = e / e.sum(axis=1, keepdims=True)
    reference = reference_of(p)["probabilities"]
    result = check_candidate(
        {"probabilities": naive},
        {"probabilities": reference},
        atol=1e-8,
        rtol=1e-5,
        inputs=inputs_of(p),
    )
    (first,) = result.diagnoses
    assert first.code == "overflow"
    assert "log(max float32) = 88.72" in first.evidence
    as_float64 = naive.astype(np.float64)
    assert check(p, {"probabilities": as_float64}).diagnoses == []


def test_softmax_only_problems_have_no_loss_hypotheses() -> None:
    value = -np.einsum("ni,nj->nij", *[reference_of(SOFTMAX_ONLY)["probabilities"]] * 2)
    found = diagnose(
        {},
        inputs_of(SOFTMAX_ONLY),
        atol=ATOL,
        rtol=RTOL,
    )
    assert found == []
    result = check(SOFTMAX_ONLY, {"jacobian": value.tolist()})
    assert [d.code for d in result.diagnoses] == ["jacobian_missing_diagonal"]


def test_masked_logits() -> None:
    z = Z.copy()
    z[1, 2] = z[3, 0] = -np.inf
    p = problem(z=z, weight=WEIGHT)
    ref = reference_of(p)
    assert check(p, {"gradient": ref["gradient"].tolist()}).passed
    (first,) = check(p, {"gradient": mistaken(p, weight=None)["gradient"].tolist()}).diagnoses
    assert first.code == "weights_ignored"
    log_a = [[None if v == -np.inf else float(v) for v in row] for row in ref["log_probabilities"]]
    assert check(p, {"log_probabilities": log_a}).passed


def test_reduction_none() -> None:
    p = problem(weight=WEIGHT, reduction="none")
    ref = reference_of(p)
    assert check(p, {"loss": ref["loss"].tolist(), "gradient": ref["gradient"].tolist()}).passed
    result = check(p, {"gradient": mistaken(p, weight=None)["gradient"].tolist()})
    assert [d.code for d in result.diagnoses] == ["weights_ignored"]
    result = check(p, {"loss": (-ref["loss"]).tolist()})
    assert [d.code for d in result.diagnoses] == ["sign_flipped"]


# ----- large inputs ---------------------------------------------------------------------------


def test_a_large_jacobian_is_diagnosed() -> None:
    rng = np.random.default_rng(3)
    p = problem(z=rng.normal(size=(64, 30)), labels=None)
    a = reference_of(p)["probabilities"]
    missing = -a[:, :, None] * a[:, None, :]
    result = check(p, {"jacobian": missing})
    assert [d.code for d in result.diagnoses] == ["jacobian_missing_diagonal"]


# ----- property: the reference itself is never diagnosed --------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    c = draw(st.integers(2, 6))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(n, c))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    weight = rng.uniform(0.1, 3.0, c).tolist() if draw(st.booleans()) else None
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))
    if draw(st.booleans()):
        labels: Any = rng.integers(0, c, n)
        ignore_index = draw(st.sampled_from([-100, 0]))
        if ignore_index == 0 and reduction == "mean" and np.all(labels == 0):
            labels[0] = 1
    else:
        labels = rng.dirichlet(np.ones(c), size=n) * draw(st.sampled_from([1.0, 0.5, 2.0]))
        ignore_index = -100
    return problem(
        z=z,
        labels=labels,
        weight=weight,
        smoothing=smoothing,
        reduction=reduction,
        ignore_index=ignore_index,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_the_reference_passes_with_no_diagnosis(p: dict[str, Any]) -> None:
    ref = reference_of(p)
    report = service_report(p)
    service = service_outputs(report)
    # the independent reference, sent as the candidate, against the service's values
    result = check_candidate(
        {name: np.asarray(value).tolist() for name, value in ref.items()},
        service,
        atol=ATOL,
        rtol=RTOL,
        inputs=inputs_of(p),
        softmax=report.softmax,
    )
    assert result.passed, result
    assert result.diagnoses == []


def test_a_mistake_in_the_last_block_of_a_large_batch() -> None:
    # 2000 samples of 50 classes are compared in several blocks; the one ignored sample is last
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 50, 2000)
    labels[labels == 7] = 8
    labels[-1] = 7  # only the last sample is labelled ignore_index
    p = problem(z=rng.normal(size=(2000, 50)), labels=labels, ignore_index=7)
    wrong = mistaken(p, ignore_index=-100)["gradient"]
    result = check(p, {"gradient": wrong})
    assert [d.code for d in result.diagnoses] == ["ignore_index_not_applied"]
    noisy = reference_of(p)["gradient"].copy()
    noisy[-1] *= 1.5
    assert check(p, {"gradient": noisy}).diagnoses == []


def test_diagnose_finds_its_own_probe_rows() -> None:
    ref = reference_of(WEIGHTED)
    wrong = mistaken(WEIGHTED, weight=None)["gradient"]
    (found,) = diagnose(
        {"gradient": Observed(wrong, ref["gradient"])}, inputs_of(WEIGHTED), atol=ATOL, rtol=RTOL
    )
    assert found.code == "weights_ignored"
    assert found.evidence == "the candidate equals the gradient computed without the class weights"
