"""`Client.test` on the `lm_head` suite (cases of /v1/linear-cross-entropy) against a live server:
a right chunked numpy head and torch's `F.linear_cross_entropy` pass every case, each classic bug
of chunked kernels is named and shrunk, and the reproduction runs."""

import contextlib
import io
from typing import Any

import numpy as np
import pytest
from gradcheck_client import Client
from gradcheck_client.runner import SHRINK_CALLS
from gradcheck_client.suites import CaseResult

from tests.client import lm_head_implementations as impl
from tests.helpers import require_module

pytestmark = pytest.mark.live

EVERY_OUTPUT = ("loss", "input_gradient", "linear_weight_gradient", "linear_bias_gradient")
EXPECTED = {
    "weight_gradient_of_the_last_chunk": (
        "small_random",
        {
            "linear_weight_gradient": ("weight_gradient_not_accumulated",),
            "linear_bias_gradient": ("weight_gradient_not_accumulated",),
        },
    ),
    "mean_per_chunk": (
        "ignore_index",
        dict.fromkeys(EVERY_OUTPUT, ("normalized_per_chunk",)),
    ),
    "no_bias_gradient": ("small_random", {"linear_bias_gradient": ("bias_gradient_missing",)}),
    "labels_not_shifted": (
        "causal_shift",
        dict.fromkeys(EVERY_OUTPUT, ("labels_not_shifted",)),
    ),
}
"""Each broken head: a case that must flag it, and the diagnoses it must carry there."""


@pytest.fixture(scope="module")
def service(live_url: str) -> Any:
    with Client(live_url) as client:
        yield client


def _sizes(case: CaseResult) -> tuple[int, int, int]:
    """(positions scored, classes, hidden features) of a failing case's smallest request (with
    causal_shift the last position of each sequence is not scored)."""
    assert case.smallest is not None
    labels = np.asarray(case.smallest["labels"])
    positions = labels[:, 1:].size if case.smallest.get("causal_shift") else labels.size
    classes, d = np.shape(case.smallest["linear_weight"])
    return positions, classes, d


def test_a_right_chunked_numpy_head_passes_every_case(service: Client) -> None:
    report = service.test(impl.chunked_linear_cross_entropy, "lm_head")
    assert report.passed, report.table()
    assert all(case.applicable for case in report.cases), report.table()
    assert (report.suite.name, report.suite.version) == ("lm_head", "1")
    assert {"float32", "bfloat16", "vocab_32000", "causal_shift"} <= {c.name for c in report.cases}


@pytest.mark.torch
def test_torch_linear_cross_entropy_passes_every_case(service: Client) -> None:
    require_module("torch")
    report = service.test(impl.torch_linear_cross_entropy, "lm_head", framework="torch")
    assert report.passed, report.table()
    assert all(case.applicable for case in report.cases), report.table()


@pytest.mark.parametrize("bug", sorted(impl.BROKEN))
def test_each_broken_head_is_named_and_shrunk(service: Client, bug: str) -> None:
    flagging, diagnoses = EXPECTED[bug]
    report = service.test(impl.BROKEN[bug], "lm_head")
    failed = {case.name: case for case in report.failures}
    assert flagging in failed, report.table()
    assert failed[flagging].diagnoses == diagnoses
    for case in report.failures:
        positions, classes, d = _sizes(case)
        # the last chunk and the per-chunk mean need a second chunk: CHUNK + 1 positions
        assert positions <= impl.CHUNK + 1, (case.name, case.smallest)
        assert classes <= 5 and d == 1, (case.name, case.smallest)
        assert 0 < case.shrink_calls <= SHRINK_CALLS
        assert case.reproduction is not None
    if bug == "no_bias_gradient":  # every case with a bias fails, and shrinks to one position
        assert {case.name for case in report.cases if case.passed} == {"spread_800"}
        assert all(
            _sizes(case)[:2] == (1, 2) for case in report.failures if "shift" not in case.name
        )


def test_the_reproduction_of_a_head_runs_and_fails_the_same_way(service: Client) -> None:
    report = service.test(impl.BROKEN["labels_not_shifted"], "lm_head")
    (case,) = report.failures
    assert case.name == "causal_shift"
    assert case.reproduction is not None
    assert "service.linear_cross_entropy(" in case.reproduction
    assert "from tests.client.lm_head_implementations import labels_not_shifted" in (
        case.reproduction
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(case.reproduction, "reproduction", "exec"), {})
    passed, diagnoses = printed.getvalue().split(" ", 1)
    assert passed == "False"
    assert "labels_not_shifted" in diagnoses


def test_a_head_without_bias_or_options_runs_only_the_cases_it_can(service: Client) -> None:
    def no_bias(input: Any, linear_weight: Any, labels: Any) -> Any:
        return impl.chunked_linear_cross_entropy(input, linear_weight, labels)

    report = service.test(no_bias, "lm_head")
    results = {case.name: case for case in report.cases}
    assert [name for name, case in results.items() if case.applicable] == ["spread_800"]
    assert results["spread_800"].passed
    assert results["small_random"].message == "fn takes no `linear_bias`"

    def summed(input: Any, linear_weight: Any, labels: Any, linear_bias: Any = None) -> Any:
        return impl.chunked_linear_cross_entropy(
            input, linear_weight, labels, linear_bias, reduction="sum"
        )

    fixed = service.test(summed, "lm_head", options={"reduction": "sum"})
    assert fixed.passed, fixed.table()
    ran = {case.name for case in fixed.cases if case.applicable}
    assert ran == {
        "small_random",
        "one_sample",
        "two_classes",
        "bias_offset_3e5",
        "logits_near_1e3",
        "spread_800",
        "sum",
        "float32",
        "bfloat16",
    }
    messages = {case.name: case.message for case in fixed.cases}
    assert messages["none"] == "needs reduction='none', options fix 'sum'"
    assert messages["causal_shift"] == "fn takes no `causal_shift`"

    def takes_everything(input: Any, linear_weight: Any, labels: Any, **options: Any) -> Any:
        return impl.chunked_linear_cross_entropy(input, linear_weight, labels, **options)

    everything = service.test(takes_everything, "lm_head", options={"reduction": "sum"})
    assert everything.passed, everything.table()
    refused = {case.name: case for case in everything.cases}["denominator"]
    assert refused.applicable is False
    assert refused.message.startswith("the service refuses the case with reduction fixed: ")
    assert "denominator" in refused.message
    basics = service.test(summed, "basics", options={"causal_shift": True})
    assert not any(case.applicable for case in basics.cases)
    assert basics.cases[0].message == "options fix causal_shift: /v1/cross-entropy takes none"


async def test_the_32000_class_head_is_fetched_by_its_url_sync_and_async(
    service: Client, live_url: str
) -> None:
    from gradcheck_client import AsyncClient

    heads = service.suite("lm_head")
    vocab = next(case for case in heads.cases if case.name == "vocab_32000")
    assert vocab.endpoint == "/v1/linear-cross-entropy"
    assert vocab.request is not None  # fetched from its own URL, as .npz
    assert vocab.request["linear_weight"].shape == (32_000, 16)
    assert vocab.request["linear_bias"].shape == (32_000,)
    assert vocab.request["labels"].dtype == np.int64
    alone = service.suite_case("lm_head", "vocab_32000")
    assert np.array_equal(alone["input"], vocab.request["input"])
    async with AsyncClient(live_url) as asynchronous:
        again = await asynchronous.suite("lm_head")
        fetched = next(case for case in again.cases if case.name == "vocab_32000")
        assert fetched.request is not None
        assert np.array_equal(fetched.request["linear_weight"], vocab.request["linear_weight"])
