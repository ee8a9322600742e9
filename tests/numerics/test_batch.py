"""Problems computed together (`analyse_cross_entropy_batch`) get exactly the reports they get
alone."""

from collections import defaultdict
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.numerics.batch import analyse_cross_entropy_batch, joined_targets
from app.numerics.cross_entropy import OneHot, Reduction, index_targets, probability_targets
from app.numerics.errors import InvalidProblem
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import (
    SECOND_ORDER,
    Check,
    LossProblem,
    NumericOptions,
    Output,
    Report,
    analyse_cross_entropy,
)
from app.numerics.softmax import Softmax
from tests.numerics.adversarial import cases
from tests.numerics.test_cross_entropy import hard_targets

EVERY_OUTPUT = frozenset(Output) - SECOND_ORDER


def assert_identical(together: Report, alone: Report) -> None:
    """Every array bit for bit, every check field for field; a batch that says its rows are
    finite is right to (the flag only spares `refuse_non_finite` its per-report passes)."""
    for field in fields(Report):
        mine, theirs = getattr(together, field.name), getattr(alone, field.name)
        if field.name == "rows_finite":
            assert not theirs
            if mine:
                assert_rows_finite(alone)
        elif isinstance(theirs, Softmax):
            for part in fields(Softmax):
                np.testing.assert_array_equal(
                    getattr(mine, part.name), getattr(theirs, part.name), strict=True
                )
        elif isinstance(theirs, Check):
            assert mine.agreement == theirs.agreement
            assert mine.estimate == theirs.estimate
            np.testing.assert_array_equal(mine.steps.h, theirs.steps.h, strict=True)
            assert (mine.steps.base, mine.steps.scaled) == (theirs.steps.base, theirs.steps.scaled)
        elif theirs is None:
            assert mine is None, field.name
        else:
            np.testing.assert_array_equal(mine, theirs, err_msg=field.name, strict=True)


def assert_rows_finite(report: Report) -> None:
    """Every array of `report` but the reduced loss is finite."""
    for field in fields(Report):
        value = getattr(report, field.name)
        if isinstance(value, Softmax):
            assert np.isfinite(value.probabilities).all()
        elif isinstance(value, np.ndarray) and field.name not in {"loss", "logits"}:
            assert np.isfinite(value).all(), field.name


def by_width(problems: list[LossProblem]) -> list[list[LossProblem]]:
    groups: dict[int, list[LossProblem]] = defaultdict(list)
    for problem in problems:
        groups[problem.logits.shape[1]].append(problem)
    return list(groups.values())


ADVERSARIAL = by_width([LossProblem(c.logits, c.targets(), c.reduction) for c in cases("quick")])


@pytest.mark.parametrize("method", list(Method))
def test_adversarial_cases_batched_by_width_match_their_lone_reports(method: Method) -> None:
    """Cancelling, tiny, huge, masked and near-uniform rows under every loss option, mixed in
    one batch per number of classes."""
    numeric = NumericOptions(method)
    assert sum(len(group) > 1 for group in ADVERSARIAL) >= 3
    for group in ADVERSARIAL:
        together = analyse_cross_entropy_batch(group, EVERY_OUTPUT, numeric)
        for problem, report in zip(group, together, strict=True):
            assert isinstance(report, Report)
            alone = analyse_cross_entropy(
                problem.logits, problem.targets, problem.reduction, EVERY_OUTPUT, numeric
            )
            assert_identical(report, alone)


@st.composite
def loss_problems(draw: st.DrawFn, num_classes: int, dtype: type[np.floating]) -> LossProblem:
    """A small random problem with random loss options, masks included."""
    rows = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(
        scale=draw(st.sampled_from([1e-300, 1e-9, 1.0, 30.0])), size=(rows, num_classes)
    )
    mask = rng.random((rows, num_classes)) < draw(st.sampled_from([0.0, 0.3]))
    mask[:, 0] = False
    logits[mask] = -np.inf
    weight = rng.uniform(0, 3, num_classes).astype(dtype) if draw(st.booleans()) else None
    smoothing = draw(st.sampled_from([0.0, 0.1, 1.0]))
    reduction = draw(st.sampled_from(list(Reduction)))
    if draw(st.booleans()):
        labels = np.zeros(rows, np.int64)
        labels[rng.random(rows) < 0.3] = -100
        targets = index_targets(
            labels,
            num_classes,
            weight=None if weight is None else weight + 1,
            ignore_index=-100,
            label_smoothing=smoothing,
            reduction=Reduction.SUM if reduction is Reduction.MEAN else reduction,
            dtype=dtype,
        )
    else:
        probabilities = rng.dirichlet(np.ones(num_classes), rows) * ~mask
        targets = probability_targets(
            probabilities, weight=weight, label_smoothing=0.0, reduction=reduction, dtype=dtype
        )
    return LossProblem(logits.astype(dtype), targets, reduction)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    num_classes=st.integers(2, 6),
    dtype=st.sampled_from([np.float64, np.float32]),
    method=st.sampled_from(list(Method)),
)
def test_random_problems_batched_match_their_lone_reports(
    data: st.DataObject, num_classes: int, dtype: type[np.floating], method: Method
) -> None:
    problems = data.draw(st.lists(loss_problems(num_classes, dtype), min_size=1, max_size=5))
    numeric = NumericOptions(method)
    together = analyse_cross_entropy_batch(problems, EVERY_OUTPUT, numeric)
    for problem, result in zip(problems, together, strict=True):
        if isinstance(result, InvalidProblem):
            with pytest.raises(InvalidProblem) as refused:
                analyse_cross_entropy(
                    problem.logits, problem.targets, problem.reduction, EVERY_OUTPUT, numeric
                )
            assert (result.location, str(result)) == (refused.value.location, str(refused.value))
        else:
            alone = analyse_cross_entropy(
                problem.logits, problem.targets, problem.reduction, EVERY_OUTPUT, numeric
            )
            assert_identical(result, alone)


def labelled(logits: np.ndarray, labels: list[int]) -> LossProblem:
    """Unweighted class-index labels under `mean`."""
    return LossProblem(
        logits, hard_targets(labels, logits.shape[1], reduction=Reduction.MEAN), Reduction.MEAN
    )


def test_a_refused_problem_leaves_the_others_of_its_batch_their_reports() -> None:
    logits = np.array([[0.0, 1.0, -np.inf], [2.0, 0.0, 1.0]])
    fine, on_a_mask = labelled(logits, [0, 1]), labelled(logits, [2, 1])
    first, refused, last = analyse_cross_entropy_batch([fine, on_a_mask, fine], EVERY_OUTPUT)
    assert isinstance(refused, InvalidProblem)
    assert refused.location == ("logits", 0, 2)
    alone = analyse_cross_entropy(logits, fine.targets, Reduction.MEAN, EVERY_OUTPUT)
    for report in (first, last):
        assert isinstance(report, Report)
        assert_identical(report, alone)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow is the point of it
def test_a_batch_checks_the_finiteness_of_its_rows_once_and_refuses_as_alone() -> None:
    """A batch checks its stacked rows at once; when one problem's outputs overflow its float32,
    every report is checked alone again, and each gets what it gets alone: the overflowing one
    its refusal naming the sample, the others their reports."""
    fine = labelled(np.array([[0.0, 1.0], [2.0, 0.0]], np.float32), [0, 1])
    huge = labelled(np.array([[0.0, 1.0], [3e38, -3e38]], np.float32), [0, 1])
    together = analyse_cross_entropy_batch([fine, fine], EVERY_OUTPUT)
    assert all(isinstance(report, Report) and report.rows_finite for report in together)
    first, overflowing, last = analyse_cross_entropy_batch([fine, huge, fine], EVERY_OUTPUT)
    for report in (first, overflowing, last):
        assert isinstance(report, Report) and not report.rows_finite
    assert isinstance(overflowing, Report)
    per_sample = EVERY_OUTPUT - {Output.LOSS}  # the reduced loss would be named first
    with pytest.raises(InvalidProblem) as refused:
        overflowing.refuse_non_finite(per_sample)
    alone = analyse_cross_entropy(huge.logits, huge.targets, Reduction.MEAN, EVERY_OUTPUT)
    with pytest.raises(InvalidProblem) as refused_alone:
        alone.refuse_non_finite(per_sample)
    assert refused.value.location == refused_alone.value.location == ("logits", 1)
    assert str(refused.value) == str(refused_alone.value)
    assert isinstance(first, Report)
    first.refuse_non_finite(EVERY_OUTPUT)


def test_rows_known_finite_leave_only_the_reduced_loss_to_check() -> None:
    """`rows_finite` spares every per-row array its pass, never the reduced loss (a sum of
    finite losses may still overflow)."""
    logits = np.zeros((2, 2))
    gradient = np.array([[np.inf, 0.0], [0.0, 0.0]])
    Report(logits, gradient=gradient, rows_finite=True).refuse_non_finite(EVERY_OUTPUT)
    with pytest.raises(InvalidProblem) as error:
        Report(logits, loss=np.array(np.inf), rows_finite=True).refuse_non_finite(EVERY_OUTPUT)
    assert error.value.message.startswith("the loss is not finite in float64:")


def test_joined_one_hot_targets_stay_one_class_a_row_and_mixed_ones_form_q() -> None:
    """Index labels without smoothing are joined as one class a row; a batch with smoothing
    among them makes the joined q a matrix; either way it is every batch's q, row after row."""
    plain = [hard_targets(labels, 4, reduction=Reduction.MEAN) for labels in ([0, 3], [-100, 2, 1])]
    smoothed = hard_targets([1], 4, smoothing=0.2, reduction=Reduction.MEAN)
    joined = joined_targets(plain)
    assert isinstance(joined.effective, OneHot)
    np.testing.assert_array_equal(joined.q, np.concatenate([part.q for part in plain]))
    mixed = joined_targets([*plain, smoothed])
    assert isinstance(mixed.effective, np.ndarray)
    np.testing.assert_array_equal(mixed.q, np.concatenate([part.q for part in [*plain, smoothed]]))
