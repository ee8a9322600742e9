"""The LM head's cost model (`cost.linear_cost`) against tracemalloc: the compute phase's
estimate is at least the measured peak of the analysis (with a candidate, with the numeric
check) and at most about twice it."""

import gc
import tracemalloc
from typing import Any

import numpy as np
import pytest

from app.numerics import linear
from app.numerics.cost import HeadShape, linear_cost
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import NumericOptions
from app.numerics.linear import LinearOutput, LinearProblem, analyse_linear
from app.numerics.linear_candidate import check_linear_candidate

MAX_RATIO = 2.0


def measured(work: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("samples", "features", "classes", "include", "candidate", "directions"),
    [
        (256, 64, 8000, {"loss", "input_gradient"}, False, 0),
        (300, 32, 4000, {"linear_weight_gradient", "logits_gradient"}, False, 0),
        (256, 64, 8000, set(), True, 0),
        (128, 64, 6000, {"linear_weight_gradient"}, False, 2),
    ],
)
def test_the_estimate_bounds_the_measured_peak(
    samples: int,
    features: int,
    classes: int,
    include: set[str],
    candidate: bool,
    directions: int,
) -> None:
    rng = np.random.default_rng(0)
    problem = LinearProblem(
        rng.normal(size=(samples, features)),
        rng.normal(size=(classes, features)) * 0.1,
        rng.integers(0, classes, samples),
        rng.normal(size=classes),
    )
    wanted = frozenset(LinearOutput(name) for name in include)
    sent: dict[str, Any] = {}
    if candidate:
        reference: Any = analyse_linear(problem, frozenset(LinearOutput))
        sent = {
            "input_gradient": reference.input_gradient.astype(np.float32),
            "linear_weight_gradient": reference.linear_weight_gradient.astype(np.float32),
        }
        del reference

    def work() -> None:
        if candidate:
            check_linear_candidate(problem, sent, atol=1e-8, rtol=1e-5, include=wanted)
        else:
            report = analyse_linear(
                problem, wanted | {LinearOutput.LINEAR_WEIGHT_GRADIENT} if directions else wanted
            )
            if directions:
                linear.linear_directional_check(report, directions, NumericOptions(Method.CENTRAL))

    peak = measured(work)
    estimate = linear_cost(
        HeadShape(samples, features, classes),
        include | ({"numeric_gradient"} if directions else set()),
        block_logits=linear.BLOCK_LOGITS,
        min_block_rows=linear.MIN_BLOCK_ROWS,
        candidate_outputs=dict.fromkeys(sent, 4),
        directions=directions,
    ).compute
    assert peak <= estimate <= MAX_RATIO * peak, (peak, estimate, estimate / peak)
