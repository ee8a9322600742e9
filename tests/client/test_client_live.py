"""The Python client against a live server: every method, arrays equal to the JSON API's bit
for bit, errors, retries, Hessians and a directional check."""

import json
import math
import time
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from gradcheck_client import (
    AsyncClient,
    Client,
    CrossEntropyResult,
    GradcheckError,
    GradeResult,
    GradescopeResult,
    PrairieLearnResult,
    Problem,
    RefusedError,
    ResponseError,
    TransportError,
    UnavailableError,
)
from gradcheck_client.client import Output, SoftmaxOutput

from tests.client.conftest import Stub, json_body
from tests.helpers import free_port, require_module
from tests.live.conftest import ServerFactory

pytestmark = pytest.mark.live

MASKED_LOGITS = [[2.0, 1.0, -math.inf, 0.1], [0.5, 2.5, -1.0, -math.inf], [0.3, -0.2, 0.0, 1.7]]
LABELS = [0, 1, 3]
WEIGHT = [1.0, 2.0, 0.5, 1.5]
CE_INCLUDE: list[Output] = [
    "probabilities",
    "log_probabilities",
    "loss",
    "gradient",
    "numeric_gradient",
    "jacobian",
    "numeric_jacobian",
]


def json_api(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON API called by hand (json.dumps writes -Infinity)."""
    response = httpx.post(
        url + path,
        content=json.dumps(body, allow_nan=True),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def as_float(value: Any) -> npt.NDArray[np.float64]:
    """A JSON array as float64, null (a masked log-probability) as -inf."""
    array = np.array(value, dtype=np.float64)
    array[np.isnan(array)] = -math.inf
    return array


def assert_same_bits(got: Any, expected: npt.NDArray[Any]) -> None:
    assert isinstance(got, np.ndarray)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("binary", [True, False], ids=["npz-requests", "json-requests"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_arrays_equal_the_json_apis_bit_for_bit(
    live_url: str, binary: bool, reduction: str
) -> None:
    options: dict[str, Any] = {"weight": WEIGHT, "reduction": reduction}
    expected = json_api(
        live_url,
        "/v1/cross-entropy",
        {"logits": MASKED_LOGITS, "labels": LABELS, "include": CE_INCLUDE, **options},
    )
    with Client(live_url, binary=binary) as service:
        result = service.cross_entropy(
            np.array(MASKED_LOGITS), np.array(LABELS), include=CE_INCLUDE, **options
        )
    assert isinstance(result, CrossEntropyResult)
    for name in ("probabilities", "log_probabilities", "gradient", "numeric_gradient"):
        assert_same_bits(getattr(result, name), as_float(expected[name]))
    for name in ("jacobian", "numeric_jacobian", "losses"):
        assert_same_bits(getattr(result, name), as_float(expected[name]))
    assert result.log_probabilities is not None
    assert result.log_probabilities[0, 2] == -math.inf  # null in JSON, -inf here
    assert result.log_probabilities[1, 3] == -math.inf
    if reduction == "none":
        assert_same_bits(result.loss, as_float(expected["loss"]))
    else:
        assert isinstance(result.loss, float)
        assert result.loss == expected["loss"]
    assert result.gradient_check is not None
    assert result.gradient_check.passed is expected["gradient_check"]["passed"] is True
    assert result.gradient_check.message == expected["gradient_check"]["message"]
    assert result.jacobian_check is not None
    assert result.jacobian_check.passed
    assert result.reduction == reduction
    assert result.batch_size == 3
    assert result.num_classes == 4


def test_float32_results_stay_float32(live_url: str) -> None:
    body = {"logits": MASKED_LOGITS, "labels": LABELS, "dtype": "float32"}
    expected = json_api(live_url, "/v1/cross-entropy", body)
    with Client(live_url) as service:
        result = service.cross_entropy(MASKED_LOGITS, LABELS, dtype="float32")
    assert result.dtype == "float32"
    assert_same_bits(result.gradient, as_float(expected["gradient"]).astype(np.float32))


@pytest.mark.parametrize("binary", [True, False], ids=["npz-requests", "json-requests"])
def test_softmax_equals_the_json_api_and_takes_dim(live_url: str, binary: bool) -> None:
    include: list[SoftmaxOutput] = [
        "probabilities",
        "log_probabilities",
        "jacobian",
        "numeric_jacobian",
    ]
    expected = json_api(live_url, "/v1/softmax", {"logits": MASKED_LOGITS, "include": include})
    with Client(live_url, binary=binary) as service:
        result = service.softmax(MASKED_LOGITS, include=include)
        for name in include:
            assert_same_bits(getattr(result, name), as_float(expected[name]))
        assert result.jacobian_check is not None
        assert result.jacobian_check.passed

        x = np.random.default_rng(1).normal(size=(2, 4, 3))  # softmax over the middle axis
        along = service.softmax(x, dim=1)
        rows = service.softmax(np.moveaxis(x, 1, -1).reshape(6, 4))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    assert along.probabilities is not None
    assert along.jacobian is not None
    np.testing.assert_allclose(along.probabilities, e / e.sum(axis=1, keepdims=True), rtol=1e-14)
    assert along.jacobian.shape == (2, 3, 4, 4)
    assert rows.jacobian is not None
    np.testing.assert_array_equal(along.jacobian, rows.jacobian.reshape(2, 3, 4, 4))


def test_check_names_the_mistake(live_url: str) -> None:
    logits = np.random.default_rng(2).normal(size=(4, 3))
    labels = np.array([0, 2, 1, 1])
    with Client(live_url) as service:
        gradient = service.cross_entropy(logits, labels, include=["gradient"]).gradient
        assert gradient is not None
        right = service.check(logits, labels, candidate={"gradient": gradient})
        summed = service.check(logits, labels, candidate={"gradient": gradient * 4})
        result = service.cross_entropy(logits, labels, candidate={"gradient": gradient * 4})
        probabilities = service.softmax(logits).probabilities
        assert probabilities is not None
        jacobian = -np.einsum("ni,nj->nij", probabilities, probabilities)
        softmax_check = service.check(logits, candidate={"jacobian": jacobian})
    assert right.passed
    assert right.diagnoses == ()
    assert right.outputs["gradient"].passed
    assert not summed.passed
    assert summed.diagnoses[0].code == "not_divided"
    assert summed.diagnoses[0].output == "gradient"
    assert summed.outputs["gradient"].mismatches > 0
    assert summed.outputs["gradient"].worst
    assert result.candidate_check is not None
    assert result.candidate_check.diagnoses[0].code == "not_divided"
    assert result.gradient is not None  # a candidate changes no other output
    assert softmax_check.diagnoses[0].code == "jacobian_missing_diagonal"


def test_non_finite_and_unreadable_candidates(live_url: str) -> None:
    logits = [[1000.0, 0.0, -5.0], [0.0, 1.0, 2.0]]
    with Client(live_url) as service:
        overflowed = service.check(
            logits, [0, 2], candidate={"probabilities": [[math.nan, 0.0, 0.0], [0.09, 0.24, 0.67]]}
        )
        ragged = service.check(logits, [0, 2], candidate={"gradient": [[0.1, 0.2], [0.1]]})
    output = overflowed.outputs["probabilities"]
    assert not output.passed
    assert output.nonfinite == 1
    assert output.max_abs_error is None
    assert overflowed.diagnoses[0].code == "overflow"
    assert math.isnan(output.worst[0].got)
    assert not ragged.passed
    assert ragged.outputs["gradient"].defect


@pytest.mark.torch
def test_torch_tensors_work_as_inputs(live_url: str) -> None:
    torch = require_module("torch")
    logits = torch.tensor(MASKED_LOGITS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    with Client(live_url) as service:
        result = service.cross_entropy(logits, labels, candidate={"gradient": logits.grad})
        check = service.check(
            logits.float(), labels, candidate={"loss": loss, "gradient": logits.grad.float()}
        )
    assert result.candidate_check is not None
    assert result.candidate_check.passed
    assert result.loss == pytest.approx(loss.item(), rel=1e-14)
    assert check.passed


def test_problems_grade_and_grade_batch(live_url: str) -> None:
    with Client(live_url) as service:
        problem = service.problems("hw3:ada@example.edu", batch_size=2, num_classes=3)
        assert isinstance(problem, Problem)
        assert problem.logits.shape == (2, 3)
        assert problem.problem_id
        reference = service.cross_entropy(
            problem.logits, problem.labels, include=["loss", "gradient"]
        )
        assert reference.gradient is not None
        answer = {"loss": reference.loss, "gradient": reference.gradient}
        graded = service.grade(answer, problem=problem)
        wrong = service.grade(
            {"loss": reference.loss, "gradient": reference.gradient * 2},
            problem_id=problem.problem_id,
            format="gradescope",
        )
        in_full = service.grade(answer, problem=problem.request_fields(), format="prairielearn")
        batch = service.grade_batch([answer, {"loss": 0.0}], problem=problem)
    assert isinstance(graded, GradeResult)
    assert graded.score == graded.max_score == 2.0
    assert [part.name for part in graded.parts] == ["loss", "gradient"]
    assert isinstance(wrong, GradescopeResult)
    assert wrong.score == 1.0
    assert {test.status for test in wrong.tests} == {"passed", "failed"}
    assert isinstance(in_full, PrairieLearnResult)
    assert in_full.score == 1.0
    assert [r.score for r in batch] == [2.0, 0.0]
    assert graded.raw["score"] == 2.0  # the service's JSON, to write as a results file


def test_grade_batch_takes_a_roster_of_items(live_url: str) -> None:
    with Client(live_url) as service:
        problems = [service.problems(f"hw3:{name}@example.edu") for name in ("ada", "bob")]
        answers = [
            {"loss": service.cross_entropy(p.logits, p.labels, include=["loss"]).loss}
            for p in problems
        ]
        items: list[dict[str, Any]] = [
            {"problem": problems[0], "submission": answers[0], "student": "ada"},
            {"problem_id": problems[1].problem_id, "submission": answers[0], "student": "bob"},
        ]
        results = service.grade_batch(items=items, points={"loss": 1})
    assert [r.score for r in results] == [1.0, 0.0]
    assert [r.student for r in results] == ["ada", "bob"]
    (loss,) = results.summary.parts  # bob sent ada's loss: wrong, and counted as such
    assert (loss.name, loss.submissions, loss.passed) == ("loss", 2, 1)
    assert results.summary.scores.max == 1.0 and results.summary.scores.min == 0.0
    assert sum(b.count for b in results.summary.scores.histogram) == 2


def test_a_refused_request_raises_with_the_field_and_position(live_url: str) -> None:
    with Client(live_url) as service, pytest.raises(RefusedError) as nan:
        service.cross_entropy([[1.0, 2.0], [0.0, math.nan]], [0, 1])
    assert nan.value.status == 422
    assert nan.value.errors[0].loc[:2] == ("body", "logits")
    with Client(live_url) as service, pytest.raises(RefusedError) as refused:
        service.cross_entropy([[1.0, 2.0], [0.0, 1.0]], [0, 7])
    error = refused.value
    assert error.status == 422
    assert error.errors[0].loc == ("body", "labels", 1)
    assert error.errors[0].where == "labels[1]"
    assert "labels[1]" in str(error)
    assert isinstance(error.detail, list)


def test_an_api_key_is_sent_and_a_401_raises(start_server: ServerFactory) -> None:
    server = start_server(GRADCHECK_API_KEYS="course-key")
    with Client(server.url, api_key="course-key") as service:
        assert service.softmax([[1.0, 2.0]]).probabilities is not None
    with Client(server.url) as service, pytest.raises(RefusedError) as refused:
        service.problems("s")
    assert refused.value.status == 401
    assert refused.value.detail


def test_an_unreachable_service_raises_a_transport_error_with_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout=5) as service, pytest.raises(TransportError) as caught:
        service.softmax([[1.0, 2.0]])
    assert f"{url}/v1/softmax" in str(caught.value)
    assert isinstance(caught.value, GradcheckError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_the_async_client_raises_the_same_errors(stub: Stub) -> None:
    stub.answers = [(504, {}, json_body({"detail": "gateway timeout"}))]
    async with AsyncClient(stub.url, retries=0) as service:
        with pytest.raises(UnavailableError) as unavailable:
            await service.softmax([[0.0, 0.0]])
    assert unavailable.value.status == 504
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, timeout=5) as service:
        with pytest.raises(TransportError):
            await service.problems("s")


def test_a_success_without_a_documented_field_is_a_response_error(stub: Stub) -> None:
    stub.answers = [(200, {}, json_body({"dtype": "float64", "probabilities": [[0.5, 0.5]]}))]
    with Client(stub.url) as service, pytest.raises(ResponseError) as caught:
        service.softmax([[0.0, 0.0]])
    assert "batch_size" in str(caught.value)
    assert not hasattr(caught.value, "status")  # no HTTP 200 dressed up as an error status


def test_a_503_is_retried_after_its_retry_after(stub: Stub) -> None:
    ok = {
        "dtype": "float64",
        "batch_size": 1,
        "num_classes": 2,
        "spatial_shape": [],
        "probabilities": [[0.5, 0.5]],
    }
    stub.answers = [
        (503, {"Retry-After": "1"}, json_body({"detail": "busy"})),
        (200, {}, json_body(ok)),
    ]
    started = time.monotonic()
    with Client(stub.url) as service:
        result = service.softmax([[0.0, 0.0]])
    assert time.monotonic() - started >= 1.0
    assert result.probabilities is not None
    assert result.probabilities.tolist() == [[0.5, 0.5]]
    assert [r[1]["Content-Type"] for r in stub.requests] == [
        "application/x-npz",
        "application/x-npz",
    ]


def test_a_503_that_stays_raises_after_a_bounded_number_of_retries(stub: Stub) -> None:
    stub.answers = [(503, {"Retry-After": "0"}, json_body({"detail": "busy, retry"}))]
    with Client(stub.url, retries=2) as service, pytest.raises(UnavailableError) as refused:
        service.problems("s")
    assert refused.value.status == 503
    assert refused.value.detail == "busy, retry"
    assert len(stub.requests) == 3


async def test_the_async_client_has_the_same_methods(live_url: str) -> None:
    async with AsyncClient(live_url) as service:
        result = await service.cross_entropy(MASKED_LOGITS, LABELS, include=["gradient"])
        assert result.gradient is not None
        check = await service.check(MASKED_LOGITS, LABELS, candidate={"gradient": result.gradient})
        softmax = await service.softmax(MASKED_LOGITS)
        problem = await service.problems("hw3:eve@example.edu", batch_size=2)
        graded = await service.grade({"loss": 0.0}, problem=problem)
        batch = await service.grade_batch([{"loss": 0.0}], problem_id=problem.problem_id)
        with pytest.raises(GradcheckError):
            await service.cross_entropy([[1.0, 2.0]], [5])
    expected = json_api(live_url, "/v1/cross-entropy", {"logits": MASKED_LOGITS, "labels": LABELS})
    assert_same_bits(result.gradient, as_float(expected["gradient"]))
    assert check.passed
    assert softmax.probabilities is not None
    assert graded.score == 0.0
    assert len(batch) == 1


def test_a_bfloat16_candidate_passes_at_its_own_tolerance(live_url: str) -> None:
    ml_dtypes = require_module("ml_dtypes")
    logits = np.random.default_rng(3).normal(size=(8, 16))
    labels = np.arange(8) % 16
    with Client(live_url) as service:
        gradient = service.cross_entropy(logits, labels, include=["gradient"]).gradient
        assert gradient is not None
        check = service.check(
            logits, labels, candidate={"gradient": gradient.astype(ml_dtypes.bfloat16)}
        )
    assert check.passed, check.outputs["gradient"]
    assert (check.tolerance.atol, check.tolerance.rtol) == (1e-5, 5e-2)
    assert check.outputs["gradient"].max_ulp_error is not None


def test_k_dimensional_inputs_and_a_directional_check(live_url: str) -> None:
    logits = np.random.default_rng(6).normal(size=(4, 6))
    with Client(live_url) as service:
        result = service.cross_entropy(
            logits,
            np.arange(4),
            numeric={"directions": 3},
            include=["gradient", "numeric_gradient"],
        )
    assert result.gradient_check is not None
    assert result.gradient_check.passed
    assert result.gradient_check.directions == 3
    assert result.directional_derivatives is not None
    assert result.directional_derivatives.numeric.shape == (3,)
    assert isinstance(result.directional_derivatives.seed, int)
    assert result.numeric_gradient is None


@pytest.mark.parametrize("binary", [True, False], ids=["npz-requests", "json-requests"])
def test_hessians_and_the_hessian_vector_product(live_url: str, binary: bool) -> None:
    rng = np.random.default_rng(8)
    logits, labels, vector = rng.normal(size=(3, 4)), np.array([0, 3, 1]), rng.normal(size=(3, 4))
    include: list[Output] = ["hessian", "numeric_hessian", "hessian_vector_product"]
    expected = json_api(
        live_url,
        "/v1/cross-entropy",
        {
            "logits": logits.tolist(),
            "labels": labels.tolist(),
            "vector": vector.tolist(),
            "include": include,
        },
    )
    with Client(live_url, binary=binary) as service:
        result = service.cross_entropy(logits, labels, vector=vector, include=include)
        hessian = result.hessian
        assert hessian is not None
        check = service.check(logits, labels, candidate={"hessian": hessian * 3})
    for name in include:
        assert_same_bits(getattr(result, name), as_float(expected[name]))
    assert result.hessian_check is not None
    assert result.hessian_check.passed
    assert result.hessian_vector_product is not None
    np.testing.assert_allclose(
        result.hessian_vector_product, np.einsum("nij,nj->ni", hessian, vector), rtol=1e-12
    )
    assert not check.outputs["hessian"].passed
