"""The cost model against tracemalloc: every estimate is at least the measured peak of the real
computation and encoding, and at most about twice it (numpy reports its allocations to
tracemalloc). The shapes cover the output limit (N=79, C=316 with both Jacobians), a wide batch
without outputs (3200 × 10000), a 32,000-class vocabulary (by blocks), numeric derivatives
whose checks fail everywhere (their worst mismatches are collected), float32, probability
labels, .npz and grading."""

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest

from app.api.encoding import encode_json, encode_npz, report_fields
from app.core.config import Settings
from app.grading.grade import GradingOptions, Part, Reference, grade_batch
from app.numerics.cost import (
    JSON_BYTES_PER_NUMBER,
    OUTPUTS,
    PYTHON_NUMBER_BYTES,
    MemoryCost,
    ResponseFormat,
    Shape,
    Width,
    cross_entropy_cost,
    grading_cost,
    softmax_cost,
)
from app.numerics.cross_entropy import Reduction, index_targets, probability_targets
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import (
    NumericOptions,
    Output,
    Tolerance,
    analyse_cross_entropy,
    analyse_softmax,
)
from app.numerics.layout import Layout

MAX_RATIO = 2.0
"""An estimate may exceed the measured peak by this factor at most (for peaks over SMALL)."""
SMALL = 16 << 20
"""Below this the fixed allowances dominate: only "at least the peak" is checked."""
EVERYTHING_FAILS = Tolerance(0.0, 0.0)


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """tracemalloc around the block; yields a function giving the peak so far."""
    gc.collect()
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@dataclass(frozen=True)
class Case:
    """One request: endpoint, shape, include and options."""

    endpoint: str
    rows: int
    classes: int
    include: tuple[str, ...]
    dtype: str = "float64"
    method: str = "central"
    probability_labels: bool = False
    smoothing: float = 0.0
    failing: bool = False
    response: ResponseFormat = ResponseFormat.JSON
    later_softmax: bool = False
    """The softmax is formed after the analysis (as a candidate's check may)."""

    def estimate(self) -> MemoryCost:
        shape = Shape(self.rows, self.classes, np.dtype(self.dtype).itemsize)
        if self.endpoint == "softmax":
            return softmax_cost(shape, self.include, response=self.response)
        return cross_entropy_cost(
            shape,
            self.include,
            probability_labels=self.probability_labels,
            label_smoothing=self.smoothing > 0,
            response=self.response,
            later_softmax=self.later_softmax,
        )

    def measure(self) -> int:
        """Peak traced bytes from parsed float64 inputs to the encoded body."""
        dtype = np.dtype(self.dtype).type
        include = frozenset(Output(item) for item in self.include)
        options = NumericOptions(Method(self.method))
        tolerance = EVERYTHING_FAILS if self.failing else Tolerance()
        rng = np.random.default_rng(0)
        with traced() as peak:
            parsed = rng.standard_normal((self.rows, self.classes))
            logits = parsed.astype(dtype) if dtype is not np.float64 else parsed
            if self.endpoint == "softmax":
                report = analyse_softmax(logits, include, options, tolerance)
            else:
                if self.probability_labels:
                    p = rng.random((self.rows, self.classes))
                    p /= p.sum(axis=1, keepdims=True)
                    targets = probability_targets(
                        p,
                        weight=None,
                        label_smoothing=self.smoothing,
                        reduction=Reduction.MEAN,
                        dtype=dtype,
                    )
                else:
                    targets = index_targets(
                        rng.integers(0, self.classes, self.rows),
                        self.classes,
                        weight=None,
                        ignore_index=-100,
                        label_smoothing=self.smoothing,
                        reduction=Reduction.MEAN,
                        dtype=dtype,
                    )
                report = analyse_cross_entropy(
                    logits, targets, Reduction.MEAN, include, options, tolerance
                )
            if self.later_softmax:
                assert report.softmax.probabilities.shape == logits.shape
            layout = Layout.of(logits.shape)
            fields = report_fields(report, frozenset(self.include), self.dtype, layout)
            del report
            encode = encode_npz if self.response is ResponseFormat.NPZ else encode_json
            body = encode(fields)
            del fields, body
            return peak()


CASES = [
    Case("softmax", 2000, 500, ()),
    Case("softmax", 2000, 500, ("probabilities", "log_probabilities")),
    Case("softmax", 79, 316, ("numeric_jacobian",), dtype="float32"),
    Case("softmax", 60, 300, ("jacobian", "numeric_jacobian"), failing=True),
    Case("cross_entropy", 2000, 500, ()),
    Case("cross_entropy", 2000, 500, (), dtype="float32"),
    Case("cross_entropy", 2000, 500, ("loss", "gradient")),
    Case(
        "cross_entropy",
        2000,
        500,
        ("probabilities", "log_probabilities", "loss", "gradient"),
        probability_labels=True,
        smoothing=0.1,
    ),
    Case("cross_entropy", 2000, 500, ("loss", "gradient", "numeric_gradient"), failing=True),
    Case("cross_entropy", 2000, 500, ("numeric_gradient",), method="five_point"),
    Case("cross_entropy", 2000, 500, ("numeric_gradient",), response=ResponseFormat.NPZ),
    Case("cross_entropy", 79, 316, ("gradient", "jacobian")),
    Case("cross_entropy", 79, 316, ("jacobian", "numeric_jacobian")),
    Case(
        "cross_entropy",
        79,
        316,
        ("jacobian", "numeric_jacobian"),
        failing=True,
        response=ResponseFormat.NPZ,
    ),
    Case("cross_entropy", 40, 200, ("numeric_jacobian",), method="complex_step"),
    Case("cross_entropy", 1000, 2, ("loss", "gradient", "numeric_gradient")),
    Case("cross_entropy", 1, 10000, ("loss", "gradient", "numeric_gradient")),
    pytest.param(Case("cross_entropy", 3200, 10000, ()), marks=pytest.mark.slow),
    # a language model's vocabulary: by blocks, and with the softmax formed afterwards
    Case("cross_entropy", 256, 32000, ("loss",)),
    Case("cross_entropy", 256, 32000, ("loss",), dtype="float32"),
    Case("cross_entropy", 256, 32000, ("loss",), later_softmax=True),
]


def check_bound(estimate: int, measured: int) -> None:
    assert estimate >= measured, f"estimate {estimate:,} < measured peak {measured:,}"
    if measured >= SMALL:
        assert estimate <= MAX_RATIO * measured, (
            f"estimate {estimate:,} > {MAX_RATIO} × measured peak {measured:,}"
        )


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_estimate_bounds_the_measured_peak(case: Case) -> None:
    check_bound(case.estimate().peak, case.measure())


@pytest.mark.parametrize(
    ("rows", "classes", "submissions", "parts", "failing"),
    [
        (200, 500, 1, ("gradient",), False),
        (400, 500, 16, ("gradient",), True),
        (400, 500, 8, ("probabilities", "loss", "gradient"), True),
        (20, 200, 4, ("jacobian",), True),
        (60, 200, 2, ("probabilities", "jacobian"), False),
    ],
)
def test_grading_estimate_bounds_the_measured_peak(
    rows: int, classes: int, submissions: int, parts: tuple[str, ...], failing: bool
) -> None:
    """Submissions arrive as the lists a JSON parser makes (not counted here: the parser's
    representation is `parsed_bytes_per_number`); the reference and the stacks are."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((rows, classes))
    targets = index_targets(
        rng.integers(0, classes, rows),
        classes,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    answer = Reference(logits, targets, Reduction.MEAN)
    offset = 0.5 if failing else 0.0
    sheets = [
        {part: (answer.value(Part(part)) + offset).tolist() for part in parts}
        for _ in range(submissions)
    ]
    del answer
    options = GradingOptions({Part(part): 1.0 for part in parts}, 1e-5, 1e-3, False)
    with traced() as peak:
        reference = Reference(logits.copy(), targets, Reduction.MEAN)
        grades = grade_batch(reference, sheets, options)
        del reference, grades
        measured = peak()
    estimate = grading_cost(Shape(rows, classes), parts, submissions).peak
    check_bound(estimate, measured)


def test_cost_is_a_function_of_the_shape_alone() -> None:
    """The same shape costs the same whatever the values; more rows or classes cost more."""
    small = cross_entropy_cost(Shape(100, 100), ["gradient"]).peak
    assert cross_entropy_cost(Shape(100, 100), ["gradient"]).peak == small
    assert cross_entropy_cost(Shape(200, 100), ["gradient"]).peak > small
    assert cross_entropy_cost(Shape(100, 200), ["gradient"]).peak > small


def test_include_nothing_still_counts_the_loss_and_gradient() -> None:
    """`include: []` computes the loss and the gradient all the same (by blocks): its cost
    counts the logits and the gradient, and q as a matrix where the labels make one
    (smoothing, probabilities; index labels keep one class a row); sent as JSON, its 32 M
    parsed numbers count PYTHON_NUMBER_BYTES each on top (the issue's 3.56 GB, with q)."""
    shape = Shape(3200, 10000)
    logits_size = shape.array_bytes(Width.CLASSES)
    assert cross_entropy_cost(shape, []).peak > 2 * logits_size
    assert cross_entropy_cost(shape, [], label_smoothing=True).peak > 3 * logits_size
    assert cross_entropy_cost(shape, [], probability_labels=True).peak > 3 * logits_size
    as_json = cross_entropy_cost(shape, [], parsed_bytes_per_number=PYTHON_NUMBER_BYTES)
    parsed = shape.numbers(Width.CLASSES) * PYTHON_NUMBER_BYTES
    assert as_json.peak >= cross_entropy_cost(shape, []).peak + parsed


def test_the_output_limit_fits_the_default_per_request_limit() -> None:
    """N=79, C=316 with both Jacobians (the issue's case at the output limit), as JSON."""
    cost = cross_entropy_cost(Shape(79, 316), ["gradient", "jacobian", "numeric_jacobian"])
    assert cost.peak < Settings().max_request_memory_bytes


def test_numeric_jacobian_brings_the_analytic_one() -> None:
    shape = Shape(50, 100)
    both = cross_entropy_cost(shape, ["jacobian", "numeric_jacobian"]).peak
    numeric_only = cross_entropy_cost(shape, ["numeric_jacobian"]).peak
    # asking for the analytic Jacobian as well costs only its encoding: it is computed either way
    assert 0 <= both - numeric_only <= 2 * JSON_BYTES_PER_NUMBER * shape.numbers(Width.SQUARE)


def test_parsed_representation_adds_per_number() -> None:
    shape = Shape(100, 50)
    plain = cross_entropy_cost(shape, ["gradient"]).peak
    as_lists = cross_entropy_cost(shape, ["gradient"], parsed_bytes_per_number=32).peak
    assert as_lists - plain == 32 * (100 * 50 + 100)


def test_k_dimensional_inputs_are_rows() -> None:
    """(N, C, d1, d2) logits cost as N·d1·d2 rows of C classes."""
    n, c, d1, d2 = 4, 10, 8, 8
    assert cross_entropy_cost(Shape(n * d1 * d2, c), ["gradient"]) == cross_entropy_cost(
        Shape(256, c), ["gradient"]
    )


def test_every_output_has_a_cost_and_unknown_ones_are_refused() -> None:
    assert set(OUTPUTS) == {str(output) for output in Output}
    with pytest.raises(ValueError, match="third_derivative"):
        cross_entropy_cost(Shape(2, 2), ["third_derivative"])
    with pytest.raises(ValueError, match="logits"):
        grading_cost(Shape(2, 2), ["logits"], 1)
