"""Admission's estimate of a /v1/cross-entropy request against what the request really
allocates, end to end (validation, analysis, directional check, candidate check, encoding):
never below tracemalloc's peak, at most twice it, for every single include and every pair,
directional, second-order-only and candidate-only requests, at shapes where the analysis works
by blocks of rows (issue 26: a numeric gradient checked along directions was priced as blocks
while it evaluates whole losses, 4.2× under).

The arrays of the body exist before the request is served (an .npz body's members), so the
peak measured is what serving allocates beyond them; the estimate counts them too."""

import gc
import itertools
import tracemalloc
from typing import Any

import numpy as np
import pytest

from app.api.admission import cross_entropy_request_cost
from app.api.encoding import cross_entropy_fields, respond
from app.api.inputs import LossValues, to_loss_call
from app.api.schemas.compute import CrossEntropyRequest
from app.core.config import Settings
from app.numerics.gradcheck import SQUARE_OUTPUTS, Output
from app.numerics.layout import BLOCK_ENTRIES

MAX_RATIO = 2.0
OUTPUTS = tuple(output.value for output in Output)
"""Every output /v1/cross-entropy's `include` takes."""
WIDE = (128, 8192)
"""Rows × classes of a request without C×C outputs: 128 blocks of rows, 8 MiB an array."""
TALL = (6144, 24)
"""With C×C outputs: 6144 × 24 × 24 numbers (27 MiB) a Jacobian; blocks of rows apply too."""
SETTINGS = Settings()


def _values(
    include: tuple[str, ...],
    dtype: str = "float64",
    numeric: dict[str, Any] | None = None,
    candidate: tuple[str, ...] = (),
) -> LossValues:
    """A request as an .npz body makes it: its arrays as they were stored."""
    rows, classes = TALL if set(include) & SQUARE_OUTPUTS else WIDE
    assert rows * classes > BLOCK_ENTRIES
    rng = np.random.default_rng(26)
    fields: dict[str, Any] = {"logits": [0.0, 0.0], "labels": 0, "include": list(include)}
    fields["dtype"] = dtype
    if numeric is not None:
        fields["numeric"] = numeric
    options = CrossEntropyRequest.model_validate(fields)
    per_position = {"loss": np.array(1.0), "losses": rng.random(rows)}
    labels: Any = rng.integers(0, classes, rows)  # an .npz member
    return LossValues(
        options,
        rng.standard_normal((rows, classes)).astype(dtype),
        labels,
        None,
        rng.standard_normal((rows, classes)) if "hessian_vector_product" in include else None,
        {name: per_position.get(name, rng.random((rows, classes))) for name in candidate} or None,
        True,
    )


def _served_peak(values: LossValues) -> int:
    """tracemalloc's peak while the request is validated, computed and encoded, as the route
    does off the event loop."""
    gc.collect()
    tracemalloc.start()
    try:
        call = to_loss_call(values, SETTINGS)
        response = respond(cross_entropy_fields(call.run(), call.layout), None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    return peak


CASES: list[Any] = (
    [pytest.param((name,), {}, id=name) for name in OUTPUTS]
    + [pytest.param(pair, {}, id="+".join(pair)) for pair in itertools.combinations(OUTPUTS, 2)]
    + [
        pytest.param(("numeric_gradient",), {"numeric": {"directions": 8}}, id="directional"),
        pytest.param(
            ("numeric_gradient", "loss"),
            {"numeric": {"directions": 8, "method": "complex_step"}},
            id="directional-complex-step",
        ),
        pytest.param(
            ("numeric_gradient",),
            {"numeric": {"directions": 4}, "dtype": "float32"},
            id="directional-float32",
        ),
        pytest.param(("numeric_gradient",), {"numeric": {"directions": 4}}, id="directional-k4"),
        pytest.param(("hessian", "numeric_hessian"), {}, id="second-order-only"),
        pytest.param((), {"candidate": ("gradient",)}, id="candidate-gradient"),
        pytest.param((), {"candidate": ("probabilities",)}, id="candidate-probabilities"),
        pytest.param((), {"candidate": ("loss",)}, id="candidate-loss"),
        pytest.param((), {"candidate": ("losses",)}, id="candidate-losses"),
        pytest.param((), {"candidate": ("probabilities", "gradient")}, id="candidate-pair"),
    ]
)


@pytest.mark.parametrize(("include", "options"), CASES)
def test_the_estimate_bounds_what_serving_allocates(
    include: tuple[str, ...], options: dict[str, Any]
) -> None:
    values = _values(include, **options)
    estimate = cross_entropy_request_cost(values, SETTINGS, None)
    peak = _served_peak(values)
    assert estimate >= peak, f"estimate {estimate:,} < peak {peak:,}"
    assert estimate <= MAX_RATIO * peak, f"estimate {estimate:,} > {MAX_RATIO} × peak {peak:,}"
