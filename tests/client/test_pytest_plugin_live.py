"""The pytest plugin (`gradcheck_client.pytest_plugin`, loaded here with `-p` since the client
is not installed in the project's venv): one test item per case with the case's name in its id,
`check(fn)` failing with the diagnoses and the reproduction, skips for cases that are not
applicable, and an unreachable service skipped with the reason or an error with
`--gradcheck-required`."""

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from tests.client.conftest import CLIENT_SRC
from tests.helpers import free_port

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
BASICS = (
    "small_random",
    "one_sample",
    "two_classes",
    "repeated_labels",
    "equal_logits",
    "logits_near_1e3",
    "spread_800",
    "offset_3e5",
    "dominant_logit",
    "large_batch",
)
PLUGIN = ("-p", "gradcheck_client.pytest_plugin", "-p", "no:cacheprovider")

PROBE = """
import pytest
from tests.client import implementations as impl


@pytest.mark.gradcheck(suite="basics")
def test_right(gradcheck_case):
    gradcheck_case.check(impl.softmax_loss)


@pytest.mark.gradcheck(suite="torch")
def test_ignored_rows(gradcheck_case):
    gradcheck_case.check(impl.mean_over_all_rows)


@pytest.mark.gradcheck("basics")
def test_overflow(gradcheck_case):
    gradcheck_case.check(impl.no_max_shift)


@pytest.mark.gradcheck(suite="basics")
def test_unfused(gradcheck_case):
    gradcheck_case.check(impl.unfused_backward)


@pytest.mark.gradcheck(suite="torch")
def test_smoothing(gradcheck_case):
    gradcheck_case.check(impl.smoothing_over_c_minus_1)


@pytest.mark.gradcheck(suite="basics")
def test_summed(gradcheck_case):
    gradcheck_case.check(impl.summed_gradient)
"""


@pytest.fixture
def probe(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytest run in a temporary directory, with the client and this checkout importable."""
    paths = [str(CLIENT_SRC), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.delenv("GRADCHECK_URL", raising=False)
    # pytest prints the short summary's messages whole when CI is set (truncated otherwise):
    # the probe's output must not depend on where the suite runs.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    pytester.makeini("[pytest]\n")
    return pytester


def test_one_item_per_case_named_after_it(probe: pytest.Pytester, live_url: str) -> None:
    probe.makepyfile(test_probe=PROBE)
    result = probe.runpytest_subprocess(
        *PLUGIN, "--gradcheck-url", live_url, "--collect-only", "-q"
    )
    out = result.stdout.str()
    for case in ("small_random", "spread_800", "large_batch"):
        assert f"test_probe.py::test_right[{case}]" in out
    assert "test_probe.py::test_ignored_rows[ignore_index_class]" in out
    assert "74 tests collected" in out  # four basics (10 cases), two torch (17)


def test_checks_pass_fail_and_skip_per_case(probe: pytest.Pytester, live_url: str) -> None:
    probe.makepyfile(test_probe=PROBE)
    result = probe.runpytest_subprocess(*PLUGIN, "--gradcheck-url", live_url, "-rfs")
    failed = {
        "test_ignored_rows": {"ignore_index", "ignore_index_class"},
        "test_overflow": {"logits_near_1e3", "spread_800", "offset_3e5"},
        "test_unfused": {"logits_near_1e3", "spread_800"},
        "test_smoothing": {"label_smoothing"},
        "test_summed": {case for case in BASICS if case != "one_sample"},
    }
    out = result.stdout.str()
    for test, cases in failed.items():
        found = set(re.findall(rf"FAILED test_probe.py::{test}\[(\w+)\]", out))
        assert found == cases, (test, found)
    result.assert_outcomes(
        passed=10 + 7 + 8 + 1, failed=sum(len(c) for c in failed.values()), skipped=15 + 16
    )
    shrunk = re.findall(r"shrunk to (\d+)×(\d+) in (\d+) calls", out)
    assert len(shrunk) == sum(len(c) for c in failed.values())
    assert all(int(r) <= 3 and int(c) <= 5 and int(n) <= 100 for r, c, n in shrunk), shrunk
    assert "case ignore_index: rows labelled -100" in out
    assert "divided_by_batch_size" in out
    assert "reproduce with:" in out
    assert "from tests.client.implementations import no_max_shift" in out
    assert "weight: not applicable: fn takes no `weight`" in out


def test_the_url_comes_from_the_environment(
    probe: pytest.Pytester, live_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe.makepyfile(test_probe=PROBE)
    monkeypatch.setenv("GRADCHECK_URL", live_url)
    result = probe.runpytest_subprocess(*PLUGIN, "-k", "test_right")
    result.assert_outcomes(passed=10)


def test_an_unreachable_service_skips_or_errors(probe: pytest.Pytester) -> None:
    probe.makepyfile(test_probe=PROBE)
    nobody = f"http://127.0.0.1:{free_port()}"
    skipped = probe.runpytest_subprocess(*PLUGIN, "--gradcheck-url", nobody, "-rs")
    skipped.assert_outcomes(skipped=6)  # one item per test, saying why
    assert "gradcheck suite basics unavailable" in skipped.stdout.str()
    assert (
        "basics-unavailable"
        in probe.runpytest_subprocess(
            *PLUGIN, "--gradcheck-url", nobody, "--collect-only", "-q"
        ).stdout.str()
    )
    required = probe.runpytest_subprocess(
        *PLUGIN, "--gradcheck-url", nobody, "--gradcheck-required"
    )
    required.assert_outcomes(errors=6)
    assert "--gradcheck-required" in required.stdout.str()
    no_url = probe.runpytest_subprocess(*PLUGIN, "-rs")
    no_url.assert_outcomes(skipped=6)
    assert "give --gradcheck-url or set GRADCHECK_URL" in no_url.stdout.str()


def test_a_course_suite_file_next_to_the_tests(probe: pytest.Pytester, live_url: str) -> None:
    served = httpx.get(f"{live_url}/v1/suites/torch", timeout=30).json()
    cases = [c for c in served["cases"] if c["name"] in {"ignore_index", "label_smoothing"}]
    (probe.path / "practice.json").write_text(
        json.dumps({"name": "practice", "version": "1", "cases": cases})
    )
    probe.makepyfile(
        test_course="""
        import pytest
        from tests.client import implementations as impl

        @pytest.mark.gradcheck(suite_file="practice.json")
        def test_submission(gradcheck_case):
            gradcheck_case.check(impl.cross_entropy)
        """
    )
    result = probe.runpytest_subprocess(*PLUGIN, "--gradcheck-url", live_url, "-v")
    result.assert_outcomes(passed=2)
    assert "test_submission[ignore_index] PASSED" in result.stdout.str()


HEAD_PROBE = """
import pytest
from tests.client import lm_head_implementations as heads


@pytest.mark.gradcheck(suite="lm_head")
def test_head(gradcheck_case):
    gradcheck_case.check(heads.chunked_linear_cross_entropy)


@pytest.mark.gradcheck(suite="lm_head")
def test_per_chunk(gradcheck_case):
    gradcheck_case.check(heads.mean_per_chunk)
"""
PER_CHUNK_FAILS = {
    "small_random",
    "two_classes",
    "ignore_index",
    "label_smoothing",
    "weight",
    "causal_shift",
    "denominator",
    "vocab_32000",
}
"""The lm_head cases whose chunks of 4 hold different numbers of tokens: a mean per chunk
differs from the mean there."""


def test_the_lm_head_suite_runs_as_test_items(probe: pytest.Pytester, live_url: str) -> None:
    probe.makepyfile(test_heads=HEAD_PROBE)
    result = probe.runpytest_subprocess(*PLUGIN, "--gradcheck-url", live_url, "-rf")
    out = result.stdout.str()
    found = set(re.findall(r"FAILED test_heads.py::test_per_chunk\[(\w+)\]", out))
    assert found == PER_CHUNK_FAILS
    result.assert_outcomes(passed=16 + 16 - len(PER_CHUNK_FAILS), failed=len(PER_CHUNK_FAILS))
    assert "normalized_per_chunk" in out
    shrunk = re.findall(r"shrunk to input ([\d×]+), weight (\d+)×(\d+) in (\d+) calls", out)
    assert len(shrunk) == len(PER_CHUNK_FAILS)
    assert all(int(c) <= 5 and int(d) == 1 and int(n) <= 100 for _, c, d, n in shrunk), shrunk
