"""Cross-entropy (every PyTorch option) and its gradient against the mpmath reference."""

import itertools

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.numerics.cross_entropy import (
    OneHot,
    Reduction,
    Targets,
    index_targets,
    per_sample_gradient,
    per_sample_losses,
    probability_targets,
)
from app.numerics.errors import InvalidProblem
from app.numerics.gradcheck import Output, analyse_cross_entropy
from app.numerics.softmax import softmax
from tests.numerics import reference

RNG = np.random.default_rng(2024)
LOGITS = np.vstack([RNG.normal(scale=3, size=(3, 4)), [[0.0, 40.0, -5.0, 1.0]]])
INDEX_LABELS = [2, 1, -100, 1]  # sample 2 is ignored; sample 3 is saturated on its label
PROBABILITY_LABELS = RNG.dirichlet(np.ones(4), size=4)
PROBABILITY_LABELS[1] *= 1.7  # a soft target that does not sum to one
WEIGHT = [0.5, 2.0, 1.0, 0.0]


def hard_targets(
    labels: list[int] | np.ndarray,
    num_classes: int,
    *,
    smoothing: float = 0.0,
    reduction: Reduction = Reduction.SUM,
) -> Targets:
    """Unweighted float64 targets of class-index labels (ignore_index −100)."""
    return index_targets(
        np.asarray(labels),
        num_classes,
        weight=None,
        ignore_index=-100,
        label_smoothing=smoothing,
        reduction=reduction,
        dtype=np.float64,
    )


def targets_for(
    kind: str, weight: list[float] | None, smoothing: float, reduction: Reduction
) -> Targets:
    w = None if weight is None else np.array(weight)
    if kind == "index":
        return index_targets(
            np.array(INDEX_LABELS),
            4,
            weight=w,
            ignore_index=-100,
            label_smoothing=smoothing,
            reduction=reduction,
            dtype=np.float64,
        )
    return probability_targets(
        PROBABILITY_LABELS,
        weight=w,
        label_smoothing=smoothing,
        reduction=reduction,
        dtype=np.float64,
    )


def reference_losses(
    kind: str,
    weight: list[float] | None,
    smoothing: float,
    rows: list[list[float]] | None = None,
) -> list[mpmath.mpf]:
    rows = LOGITS.tolist() if rows is None else rows
    if kind == "index":
        return reference.losses_index(rows, INDEX_LABELS, weight=weight, smoothing=smoothing)
    return reference.losses_probabilities(
        rows, PROBABILITY_LABELS.tolist(), weight=weight, smoothing=smoothing
    )


def reference_divisor(kind: str, weight: list[float] | None, reduction: Reduction) -> mpmath.mpf:
    if reduction is not Reduction.MEAN:
        return mpmath.mpf(1)
    if kind == "probabilities":
        return mpmath.mpf(len(LOGITS))
    kept = [y for y in INDEX_LABELS if y != -100]
    return (
        mpmath.mpf(len(kept))
        if weight is None
        else mpmath.fsum(mpmath.mpf(weight[y]) for y in kept)
    )


COMBINATIONS = list(
    itertools.product(["index", "probabilities"], [None, WEIGHT], [0.0, 0.1, 1.0], list(Reduction))
)


@pytest.mark.parametrize(("kind", "weight", "smoothing", "reduction"), COMBINATIONS)
def test_loss_and_gradient_match_mpmath(
    kind: str, weight: list[float] | None, smoothing: float, reduction: Reduction
) -> None:
    targets = targets_for(kind, weight, smoothing, reduction)
    report = analyse_cross_entropy(LOGITS, targets, reduction, frozenset({Output.GRADIENT}))
    exact_losses = reference_losses(kind, weight, smoothing)
    assert report.losses is not None and report.loss is not None and report.gradient is not None
    divisor = reference_divisor(kind, weight, reduction)

    for computed, exact in zip(report.losses, exact_losses, strict=True):
        assert abs(computed - exact) <= 1e-14 * abs(exact) + 1e-300
    if reduction is Reduction.NONE:
        np.testing.assert_array_equal(report.loss, report.losses)
    else:
        exact_loss = mpmath.fsum(exact_losses) / divisor
        assert float(report.loss) == pytest.approx(float(exact_loss), rel=1e-14)

    def loss_of_row(n: int, row: list[mpmath.mpf]) -> mpmath.mpf:
        # no workdps here: mpmath.diff raises the working precision for its own steps
        if kind == "index":
            if INDEX_LABELS[n] == -100:
                return mpmath.mpf(0)
            value = reference._sample_terms_index(row, INDEX_LABELS[n], weight, smoothing)
        else:
            value = reference.losses_probabilities(
                [row], [PROBABILITY_LABELS[n].tolist()], weight=weight, smoothing=smoothing
            )[0]
        return value / divisor

    exact_gradient = reference.gradient_by_differentiation(loss_of_row, LOGITS.tolist())
    for computed, exact in zip(report.gradient, exact_gradient, strict=True):
        assert reference.relative_row_error(computed, exact) <= 1e-13


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(2, 9),
    st.booleans(),
    st.sampled_from([np.float64, np.float32]),
    st.integers(0, 2**32 - 1),
)
def test_index_labels_without_smoothing_keep_one_class_a_row_and_form_the_same_q(
    rows: int, classes: int, weighted: bool, dtype: type[np.floating], seed: int
) -> None:
    """q of index labels without smoothing is kept as one class a row (`OneHot`); the matrix
    it forms, and the rows of any block, are w_y at the label and 0 elsewhere, 0 on an ignored
    row, in the dtype."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    labels[rng.random(rows) < 0.3] = -100
    weight = rng.uniform(0.0, 3.0, classes) if weighted else None
    targets = index_targets(
        labels,
        classes,
        weight=weight,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.SUM,
        dtype=dtype,
    )
    assert isinstance(targets.effective, OneHot)
    expected = np.zeros((rows, classes), dtype)
    for n, label in enumerate(labels):
        if label != -100:
            expected[n, label] = 1.0 if weight is None else dtype(weight[label])
    np.testing.assert_array_equal(targets.q, expected, strict=True)
    part = slice(rows // 3, rows // 3 + 2)
    np.testing.assert_array_equal(targets.rows(part).q, expected[part], strict=True)


def test_label_smoothing_keeps_q_as_a_matrix() -> None:
    targets = hard_targets([0, 2], 3, smoothing=0.1)
    assert isinstance(targets.effective, np.ndarray)
    assert targets.q is targets.effective


def test_gradient_is_a_minus_y_only_when_the_target_sums_to_one() -> None:
    z = np.array([[1.0, 2.0, 0.5]])
    one_hot = np.array([[0.0, 1.0, 0.0]])
    sm = softmax(z)
    np.testing.assert_allclose(
        per_sample_gradient(sm, one_hot), sm.probabilities - one_hot, atol=1e-16
    )
    doubled = 2 * one_hot  # Σq = 2: the gradient is 2a − q, not a − q
    gradient = per_sample_gradient(sm, doubled)
    np.testing.assert_allclose(gradient, 2 * sm.probabilities - doubled, atol=1e-16)
    assert not np.allclose(gradient, sm.probabilities - doubled)


def test_weighted_mean_divides_by_summed_weights_of_kept_targets() -> None:
    targets = index_targets(
        np.array([0, 1, 5]),
        3,
        weight=np.array([2.0, 3.0, 7.0]),
        ignore_index=5,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    assert targets.divisor == 5.0
    np.testing.assert_array_equal(targets.q[2], 0.0)


def test_probability_mean_divides_by_batch_size() -> None:
    targets = probability_targets(
        np.full((4, 2), 0.5),
        weight=None,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    assert targets.divisor == 4.0


@pytest.mark.parametrize(
    ("labels", "weight", "message"),
    [
        ([-100, -100], None, "every sample is ignored"),
        ([0, 0], [0.0, 1.0], "weigh 0"),
    ],
)
def test_mean_with_nothing_to_average_is_refused(
    labels: list[int], weight: list[float] | None, message: str
) -> None:
    with pytest.raises(InvalidProblem, match=message):
        index_targets(
            np.array(labels),
            2,
            weight=None if weight is None else np.array(weight),
            ignore_index=-100,
            label_smoothing=0.0,
            reduction=Reduction.MEAN,
            dtype=np.float64,
        )


def test_label_out_of_range_is_refused_with_its_position() -> None:
    with pytest.raises(InvalidProblem) as error:
        hard_targets([0, 3], 3)
    assert error.value.location == ("labels", 1)


def test_target_mass_on_masked_logit_is_refused() -> None:
    z = np.array([[0.0, -np.inf, 1.0]])
    targets = hard_targets([0], 3, smoothing=0.1)
    with pytest.raises(InvalidProblem) as error:
        analyse_cross_entropy(z, targets, Reduction.SUM, frozenset())
    assert error.value.location == ("logits", 0, 1)


def test_saturated_loss_and_gradient_are_not_flushed_to_zero() -> None:
    z = np.array([[0.0, 48.0, -10.0]])
    targets = hard_targets([1], 3)
    report = analyse_cross_entropy(z, targets, Reduction.SUM, frozenset())
    assert report.loss is not None and report.gradient is not None
    exact = reference.losses_index(z.tolist(), [1])[0]
    assert exact < 1e-20
    assert float(report.loss) == pytest.approx(float(exact), rel=1e-14)
    exact_complement = 1 - reference.softmax(z[0])[1]
    assert report.gradient[0, 1] == pytest.approx(-float(exact_complement), rel=1e-14)


@given(
    arrays(
        np.float64, st.tuples(st.integers(1, 4), st.integers(2, 8)), elements=st.floats(-300, 300)
    ),
    st.floats(0, 1),
)
def test_gradient_rows_sum_to_zero_when_targets_sum_to_one(z: np.ndarray, smoothing: float) -> None:
    labels = np.arange(z.shape[0]) % z.shape[1]
    targets = hard_targets(labels, z.shape[1], smoothing=smoothing)
    gradient = per_sample_gradient(softmax(z), targets.q)
    assert np.all(np.abs(gradient.sum(axis=1)) <= 1e-14 * z.shape[1])
    losses = per_sample_losses(softmax(z), targets.q)
    assert np.all(losses >= 0)
    assert np.all(np.isfinite(losses))
