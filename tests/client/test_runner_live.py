"""`Client.test` against a live server: right implementations pass every applicable case of
every suite, each broken one is flagged and shrunk to a small problem that fails the same way,
and the report follows the rules (options by signature, not applicable, exceptions)."""

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradcheck_client import Client
from gradcheck_client.runner import SHRINK_CALLS
from gradcheck_client.suites import CaseResult, SuiteReport

from tests.client import implementations as impl

pytestmark = pytest.mark.live

SUPPORTS = {"probability_targets"}
"""What `impl.cross_entropy` takes beyond (N, C) logits with index labels."""
EXPECTED_FLAGS = {
    "no_max_shift": ("basics", "logits_near_1e3"),
    "unfused_backward": ("basics", "spread_800"),
    "smoothing_over_c_minus_1": ("torch", "label_smoothing"),
    "mean_over_all_rows": ("torch", "ignore_index"),
    "summed_gradient": ("basics", "small_random"),
}
"""A case that must flag each broken implementation."""


@pytest.fixture(scope="module")
def service(live_url: str) -> Any:
    with Client(live_url) as client:
        yield client


def assert_no_false_alarm(report: SuiteReport) -> None:
    assert report.passed, report.table()
    assert not report.failures
    assert any(case.applicable for case in report.cases)


@pytest.mark.parametrize("suite", ["basics", "torch"])
def test_right_numpy_implementations_pass_every_applicable_case(
    service: Client, suite: str
) -> None:
    full = service.test(impl.cross_entropy, suite, supports=SUPPORTS)
    assert_no_false_alarm(full)
    if suite == "torch":  # everything but the K-dim and no-batch layouts ran
        ran = {case.name for case in full.cases if case.applicable}
        assert {"weight", "negative_weight", "ignore_with_smoothing", "none"} <= ran
        assert {case.name for case in full.cases if not case.applicable} == {
            "k_dim",
            "k_dim_none",
            "no_batch",
        }
        # the cs231n-style function takes no option: every torch case needs one
        assert not any(case.applicable for case in service.test(impl.softmax_loss, suite).cases)
    else:
        assert_no_false_alarm(service.test(impl.softmax_loss, suite))


def test_a_right_float32_kernel_passes_the_kernel_suite(service: Client) -> None:
    report = service.test(impl.kernel_cross_entropy, "kernel")
    assert_no_false_alarm(report)
    assert all(case.applicable for case in report.cases)
    assert (report.suite.name, report.suite.version) == ("kernel", "1")


def test_a_sequential_float32_sum_is_flagged_where_it_stagnates(service: Client) -> None:
    report = service.test(impl.sequential_sum_kernel, "kernel")
    assert [case.name for case in report.failures] == ["float32_summation"], report.table()
    (case,) = report.failures
    assert case.diagnoses == {"gradient": ()}  # no named mistake: a precision loss
    assert case.smallest is not None
    rows, classes = _small(case)
    assert rows == 1  # the bug needs thousands of lost terms: classes stay many
    assert classes < 32_000
    assert case.shrink_calls <= SHRINK_CALLS


def _small(case: CaseResult) -> tuple[int, int]:
    assert case.smallest is not None
    logits = np.asarray(case.smallest["logits"])
    return logits.shape[0], logits.shape[1]


@pytest.mark.parametrize("bug", sorted(impl.BROKEN))
def test_each_broken_implementation_is_flagged_and_shrunk(service: Client, bug: str) -> None:
    suite, flagging = EXPECTED_FLAGS[bug]
    report = service.test(impl.BROKEN[bug], suite)
    assert not report.passed
    names = {case.name for case in report.failures}
    assert flagging in names, report.table()
    for case in report.failures:
        rows, classes = _small(case)
        assert rows <= 3, (case.name, case.smallest)
        assert classes <= 5, (case.name, case.smallest)
        assert 0 < case.shrink_calls <= SHRINK_CALLS
        assert case.diagnoses and case.message
        assert case.reproduction is not None


def test_an_overflow_shrinks_to_a_row_with_its_large_logit(service: Client) -> None:
    report = service.test(impl.no_max_shift, "basics")
    case = next(c for c in report.failures if c.name == "logits_near_1e3")
    assert case.smallest is not None
    logits = np.asarray(case.smallest["logits"])
    assert logits.shape[0] <= 2
    assert np.abs(logits).max() > 709  # exp of it overflows float64
    assert case.diagnoses == {"gradient": ("overflow",), "loss": ("overflow",)}


def test_shrinking_is_deterministic(service: Client) -> None:
    first = service.test(impl.summed_gradient, "basics")
    second = service.test(impl.summed_gradient, "basics")
    assert [c.smallest for c in first.failures] == [c.smallest for c in second.failures]
    assert [c.diagnoses for c in first.failures] == [c.diagnoses for c in second.failures]
    assert all(c.diagnoses == {"gradient": ("not_divided",)} for c in first.failures)
    one_sample = next(c for c in first.cases if c.name == "one_sample")
    assert one_sample.passed  # with N = 1 a missing division changes nothing


def test_the_reproduction_runs_and_fails_the_same_way(service: Client) -> None:
    report = service.test(impl.mean_over_all_rows, "torch")
    case = next(c for c in report.failures if c.name == "ignore_index")
    assert case.reproduction is not None
    assert "np.array(" in case.reproduction
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(case.reproduction, "reproduction", "exec"), {})
    passed, diagnoses = printed.getvalue().split(" ", 1)
    assert passed == "False"
    assert "divided_by_batch_size" in diagnoses


def test_options_are_passed_by_signature_and_unknown_ones_make_cases_not_applicable(
    service: Client,
) -> None:
    seen: list[dict[str, Any]] = []

    def takes_ignore_index(logits: Any, labels: Any, ignore_index: int = -100) -> Any:
        seen.append({"ignore_index": ignore_index})
        return impl.cross_entropy(logits, labels, ignore_index=ignore_index)

    report = service.test(takes_ignore_index, "torch")
    results = {case.name: case for case in report.cases}
    assert results["ignore_index_class"].passed
    assert {"ignore_index": 1} in seen
    assert results["weight"].applicable is False
    assert results["weight"].passed is None
    assert results["weight"].message == "fn takes no `weight`"
    assert results["k_dim"].message == "needs k_dim (not in supports)"

    def takes_everything(logits: Any, labels: Any, **options: Any) -> Any:
        return impl.cross_entropy(logits, labels, **options)

    everything = service.test(takes_everything, "torch", supports=SUPPORTS)
    assert_no_false_alarm(everything)
    assert sum(case.applicable for case in everything.cases) == 14


def test_fixed_options_apply_to_every_case(service: Client) -> None:
    def summed(logits: Any, labels: Any) -> Any:
        return impl.cross_entropy(logits, labels, reduction="sum")

    report = service.test(summed, "basics", options={"reduction": "sum"})
    assert_no_false_alarm(report)
    assert all(case.applicable for case in report.cases)
    torch_suite = service.test(summed, "torch", options={"reduction": "sum"})
    results = {case.name: case for case in torch_suite.cases}
    assert results["sum"].passed
    assert results["none"].message == "needs reduction='none', options fix 'sum'"
    assert not service.test(summed, "basics").passed  # held to mean without the fixed option


def test_not_implemented_is_not_applicable_and_other_errors_fail(service: Client) -> None:
    def partial(logits: Any, labels: Any) -> Any:
        if logits.shape[1] == 2:
            raise NotImplementedError("binary case")
        if logits.shape[0] == 1:
            raise ValueError("needs two rows\nat least")
        return impl.softmax_loss(logits, labels)

    report = service.test(partial, "basics")
    results = {case.name: case for case in report.cases}
    assert results["two_classes"].applicable is False
    assert "NotImplementedError: binary case" in results["two_classes"].message
    assert results["one_sample"].passed is False
    assert results["one_sample"].message.startswith("raised ValueError: needs two rows")
    assert [case.name for case in report.failures] == ["one_sample"]
    table = str(report)
    assert table.splitlines()[0] == "suite basics v1: 8 passed, 1 failed, 1 not applicable"
    assert "two_classes" in table and "n/a" in table


def test_a_course_suite_file_runs_like_a_served_one(
    service: Client, live_url: str, tmp_path: Path
) -> None:
    served = json.loads(__import__("httpx").get(f"{live_url}/v1/suites/torch", timeout=30).text)
    course = {
        "name": "practice",
        "version": "hw3",
        "cases": [c for c in served["cases"] if c["name"] in {"ignore_index", "weight"}],
    }
    path = tmp_path / "practice.json"
    path.write_text(json.dumps(course))
    right = service.test(impl.cross_entropy, path)
    assert_no_false_alarm(right)
    assert str(right.suite) == "practice vhw3"
    broken = service.test(impl.mean_over_all_rows, path)
    assert [case.name for case in broken.failures] == ["ignore_index"]


async def test_the_suites_routes_as_methods_sync_and_async(service: Client, live_url: str) -> None:
    from gradcheck_client import AsyncClient

    listed = service.suites()
    assert [s.name for s in listed] == ["basics", "torch", "kernel", "lm_head"]
    basics = service.suite("basics")
    assert len(basics.cases) == listed[0].cases
    large = next(case for case in basics.cases if case.name == "large_batch")
    assert large.request is not None  # fetched from its own URL
    alone = service.suite_case("basics", "large_batch")
    assert np.array_equal(alone["logits"], large.request["logits"])
    result = service.cross_entropy(**{k: v for k, v in alone.items() if k != "tolerance"})
    assert result.loss is not None
    async with AsyncClient(live_url) as asynchronous:
        assert [s.name for s in await asynchronous.suites()] == [
            "basics",
            "torch",
            "kernel",
            "lm_head",
        ]
        again = await asynchronous.suite("basics")
        assert [c.name for c in again.cases] == [c.name for c in basics.cases]
        fetched = await asynchronous.suite_case("basics", "large_batch")
        assert np.array_equal(fetched["labels"], alone["labels"])
