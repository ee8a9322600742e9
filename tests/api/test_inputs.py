"""Request model → numerics problem (`app.api.inputs`): shapes, masks, precision, limits and
options become one call of the numerics, or a 422 / 413 naming the field and position."""

from typing import Any

import numpy as np
import pytest

from app.api.admission import request_entries
from app.api.inputs import to_loss_call, to_softmax_call
from app.api.parse import output_entries, to_dtype
from app.api.schemas.compute import CrossEntropyRequest, SoftmaxRequest
from app.core.config import Settings
from app.core.errors import LimitExceeded, RequestError
from app.numerics.cross_entropy import Reduction
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import NumericOptions, Output, Tolerance
from app.numerics.layout import Layout

SETTINGS = Settings()
LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]


def loss_request(**fields: Any) -> CrossEntropyRequest:
    return CrossEntropyRequest.model_validate({"logits": LOGITS, "labels": [0, 2], **fields})


def refusal(call: Any, body: SoftmaxRequest | CrossEntropyRequest) -> dict[str, Any]:
    """The one error item of the RequestError that `call(body, SETTINGS)` raises."""
    with pytest.raises(RequestError) as error:
        call(body, SETTINGS)
    (item,) = error.value.errors
    return item


def test_request_entries_count_the_logits_and_every_requested_output() -> None:
    assert output_entries((2, 3), ["loss", "gradient", "jacobian"]) == 2 * (1 + 3 + 9)
    assert request_entries([[0.0, 1.0, 2.0]] * 2, ["jacobian"]) == 6 + 18
    assert request_entries([0.0, 1.0, 2.0], ["numeric_jacobian", "gradient"]) == 3 + 9 + 3
    assert request_entries([], ["gradient"]) == 0


def test_a_softmax_request_becomes_logits_and_options() -> None:
    body = SoftmaxRequest.model_validate(
        {
            "logits": [0.0, float("-inf"), 1.5],
            "dtype": "float32",
            "include": ["probabilities", "numeric_jacobian"],
            "numeric": {"method": "five_point", "step": 1e-3},
            "tolerance": {"atol": 1e-4, "rtol": 1e-2},
        }
    )
    call = to_softmax_call(body, SETTINGS)
    assert call.task.logits.dtype == np.float32 and call.task.logits.shape == (1, 3)  # a flat row
    assert call.task.logits[0, 1] == -np.inf  # −Infinity is a mask, kept
    assert call.task.include == frozenset({Output.PROBABILITIES, Output.NUMERIC_JACOBIAN})
    assert call.task.numeric == NumericOptions(Method.FIVE_POINT, 1e-3)
    assert call.task.tolerance == Tolerance(1e-4, 1e-2)
    assert call.task.candidate is None


def test_a_cross_entropy_request_becomes_a_problem_and_options() -> None:
    call = to_loss_call(loss_request(reduction="sum", label_smoothing=0.1), SETTINGS)
    problem = call.task.problem
    assert problem.reduction is Reduction.SUM
    assert problem.logits.dtype == np.float64
    np.testing.assert_array_equal(problem.logits, LOGITS)
    # index labels with smoothing 0.1 over 3 classes: q = 0.9·onehot + 0.1/3
    np.testing.assert_allclose(
        problem.targets.q, [[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]]
    )
    assert call.task.numeric == NumericOptions()
    assert call.task.tolerance == Tolerance()
    same_shape = to_loss_call(loss_request(labels=[1, 1], reduction="sum"), SETTINGS)
    assert same_shape.task.batch_key() == call.task.batch_key()
    assert (
        to_loss_call(loss_request(dtype="float32"), SETTINGS).task.batch_key()
        != call.task.batch_key()
    )


def test_logits_are_refused_at_their_position() -> None:
    nan = refusal(to_loss_call, loss_request(logits=[[0.0, 1.0, 2.0], [0.0, float("nan"), 1.0]]))
    assert nan["loc"] == ["body", "logits", 1, 1] and "got NaN" in nan["msg"]
    flat = refusal(to_softmax_call, SoftmaxRequest.model_validate({"logits": [0.0, 1e16]}))
    assert flat["loc"] == ["body", "logits", 1]  # a flat row has no sample index
    masked = refusal(
        to_loss_call, loss_request(logits=[[0.0, 1.0, 2.0], [float("-inf")] * 3], reduction="sum")
    )
    assert masked["loc"] == ["body", "logits", 1]
    assert "all -Infinity" in masked["msg"]


def test_a_logit_that_overflows_float32_is_refused_naming_float32() -> None:
    """Behind the ±1e15 limit no logit can overflow float32; the cast still refuses one."""
    with pytest.raises(RequestError) as error:
        to_dtype(np.array([[0.0, 1.0], [1e39, 2.0]]), "float32", Layout.of((2, 2)))
    (item,) = error.value.errors
    assert item["loc"] == ["body", "logits", 1, 0]
    assert item["msg"] == "this logit overflows float32 (largest 3.403e+38): use dtype float64"
    cast = to_dtype(np.array([[0.1, -np.inf]]), "float32", Layout.of((2,)))
    assert cast.dtype == np.float32 and cast[0, 1] == -np.inf


@pytest.mark.parametrize(("dtype", "step"), [("float64", 1e-310), ("float32", 1e-39)])
def test_a_step_below_the_smallest_normal_number_is_refused_by_name(
    dtype: str, step: float
) -> None:
    item = refusal(to_loss_call, loss_request(dtype=dtype, numeric={"step": step}))
    assert item["loc"] == ["body", "numeric", "step"]
    assert f"below the smallest normal {dtype} number" in item["msg"]
    assert "logits" not in item["msg"]


def test_huge_weights_get_their_own_message() -> None:
    item = refusal(to_loss_call, loss_request(weight=[1.0, 1e16, 1.0]))
    assert item["loc"] == ["body", "weight", 1]
    assert item["msg"].startswith("weight must lie within ±1e+15")
    assert "weighted losses" in item["msg"] and "float64" not in item["msg"]


@pytest.mark.parametrize(
    ("settings", "fields", "phrase"),
    [
        (Settings(max_batch_size=1), {}, "GRADCHECK_MAX_BATCH_SIZE = 1"),
        (Settings(max_classes=2), {}, "GRADCHECK_MAX_CLASSES = 2"),
        (Settings(max_output_entries=10), {"include": ["jacobian"]}, "drop 'jacobian'"),
    ],
)
def test_limits_are_a_limit_exceeded_saying_which(
    settings: Settings, fields: dict[str, Any], phrase: str
) -> None:
    with pytest.raises(LimitExceeded) as error:
        to_loss_call(loss_request(**fields), settings)
    assert phrase in error.value.message
