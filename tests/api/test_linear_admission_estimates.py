"""Admission's estimate of a /v1/linear-cross-entropy request (`cost.linear_cost` through
`admission.linear_request_cost`) against what serving it really allocates, end to end
(validation, the blocks of the analysis, the numeric check along directions, the candidate's
check, encoding): never below tracemalloc's peak, at most twice it, for every single include,
every pair, directional and candidate requests. The body's arrays exist before the request is
served (an .npz body's members); the estimate counts them too."""

import gc
import itertools
import tracemalloc
from typing import Any

import numpy as np
import pytest

from app.api.admission import linear_request_cost
from app.api.encoding import linear_fields, respond
from app.api.inputs import LinearValues, to_linear_call
from app.api.schemas.compute import LinearCrossEntropyRequest
from app.core.config import Settings
from app.numerics.linear import LinearOutput

MAX_RATIO = 2.0
OUTPUTS = tuple(output.value for output in LinearOutput)
"""Every output /v1/linear-cross-entropy computes (its `numeric_gradient` check apart)."""
SHAPE = (256, 64, 6000)
"""N, d, C: two blocks of samples, 12 MiB an array of logits."""
SETTINGS = Settings()


def _values(
    include: tuple[str, ...],
    numeric: dict[str, Any] | None = None,
    candidate: tuple[str, ...] = (),
    dtype: str = "float64",
) -> LinearValues:
    """A request as an .npz body makes it: its arrays as they were stored."""
    n, d, c = SHAPE
    rng = np.random.default_rng(29)
    fields: dict[str, Any] = {
        "input": [0.0],
        "linear_weight": [[0.0]],
        "labels": 0,
        "include": list(include),
        "dtype": dtype,
    }
    if numeric is not None:
        fields["numeric"] = numeric
    options = LinearCrossEntropyRequest.model_validate(fields)
    shapes = {
        "loss": (),
        "losses": (n,),
        "input_gradient": (n, d),
        "linear_weight_gradient": (c, d),
        "linear_bias_gradient": (c,),
    }
    sent: dict[str, object] = {
        name: rng.standard_normal(shapes[name]).astype(np.float32) for name in candidate
    }
    return LinearValues(
        options,
        rng.standard_normal((n, d)),
        rng.standard_normal((c, d)) * 0.1,
        rng.standard_normal(c),
        rng.integers(0, c, n),
        None,
        sent or None,
    )


def _served_peak(values: LinearValues) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        call = to_linear_call(values, SETTINGS)
        response = respond(linear_fields(call.run()), None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    return peak


CASES: list[Any] = (
    [pytest.param((name,), {}, id=name) for name in OUTPUTS]
    + [pytest.param(pair, {}, id="+".join(pair)) for pair in itertools.combinations(OUTPUTS, 2)]
    + [
        pytest.param(
            ("loss", "numeric_gradient"), {"numeric": {"directions": 2}}, id="directional"
        ),
        pytest.param(
            ("numeric_gradient",),
            {"numeric": {"directions": 2, "method": "complex_step"}},
            id="directional-complex-step",
        ),
        pytest.param((), {"candidate": ("input_gradient",)}, id="candidate-input"),
        pytest.param((), {"candidate": ("linear_weight_gradient",)}, id="candidate-weight"),
        pytest.param(
            (),
            {"candidate": ("loss", "input_gradient", "linear_weight_gradient")},
            id="candidate-all",
        ),
        pytest.param(("input_gradient",), {"dtype": "float32"}, id="float32"),
    ]
)


@pytest.mark.parametrize(("include", "options"), CASES)
def test_the_estimate_bounds_what_serving_allocates(
    include: tuple[str, ...], options: dict[str, Any]
) -> None:
    values = _values(include, **options)
    estimate = linear_request_cost(values, None)
    peak = _served_peak(values)
    assert estimate >= peak, f"estimate {estimate:,} < peak {peak:,}"
    assert estimate <= MAX_RATIO * peak, f"estimate {estimate:,} > {MAX_RATIO} × peak {peak:,}"
