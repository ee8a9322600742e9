"""A tiny run of the benchmark harness (`bench.run --quick`): it runs end to end and reports
every case of issues 6, 13, 14, 18, 20, 25 and 29. No timing is asserted: speed claims are the
benchmark's, as ratios."""

import json
import math
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from app.numerics.gradcheck import Output
from app.numerics.linear import LinearOutput, LinearProblem, analyse_linear
from bench import case7_llm_kernel, case9_linear, cases
from bench.plan import QUICK
from bench.report import INFO, MET, MISSED, Row, table, unavailable, verdicts
from bench.run import MEASUREMENTS, main, run
from bench.targets import TARGETS
from tests.helpers import optional_module, require_module

pytestmark = [pytest.mark.live, pytest.mark.slow]

TORCH_ROWS = {"7 torch", "9", "9 torch check"}
"""The rows measured against torch: "not available" without it."""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    output_dir = tmp_path_factory.mktemp("bench")
    return run(QUICK, output_dir), output_dir


def test_every_case_has_a_measurement_a_baseline_and_a_ratio(
    results: tuple[dict[str, Any], Path],
) -> None:
    rows = results[0]["rows"]
    assert sorted({row["case"].split()[0] for row in rows}) == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6a",
        "6b",
        "6c",
        "7",
        "8",
        "9",
    ]
    assert {row["key"] for row in rows} == set(TARGETS)
    for row in rows:
        assert row["status"] != cases.CANDIDATE_UNAVAILABLE, row  # the route takes a candidate
        if row["status"] == case7_llm_kernel.TORCH_UNAVAILABLE:
            assert row["key"] in TORCH_ROWS and optional_module("torch") is None, row
            continue
        assert row["baseline"] > 0, row
        # a tiny request may grow the server's memory by nothing at all
        assert row["measured"] > 0 or (row["unit"] == "bytes" and row["measured"] == 0), row
        assert math.isfinite(row["ratio"]), row
        assert row["target"] and row["ratio_meaning"], row


def test_every_row_is_judged_by_the_one_table_of_targets(
    results: tuple[dict[str, Any], Path],
) -> None:
    rows = [Row(**row) for row in results[0]["rows"]]
    assert [row.key for row in rows] == sorted(
        (row.key for row in rows), key=list(TARGETS).index
    )  # the table follows TARGETS
    for row in rows:
        target = TARGETS[row.key]
        if row.status == case7_llm_kernel.TORCH_UNAVAILABLE:
            assert row.key in TORCH_ROWS and row.ratio is None
            assert row.target == ("none" if target is None else str(target))
        elif target is None:
            assert (row.target, row.status) == ("none", INFO), row
        else:
            assert row.ratio is not None
            assert row.target == str(target)
            assert row.status == (MET if target.met(row.ratio) else MISSED), row
    assert str(TARGETS["3"]) == "≥ 0.4"
    assert str(TARGETS["4"]) == "≤ 1.5" and TARGETS["4 JSON/.npz"] is None
    assert (str(TARGETS["6a"]), str(TARGETS["6b"])) == ("≤ 1.3", "≤ 1.5")
    assert str(TARGETS["6c"]) == "≤ 1.3" and TARGETS["6c pair"] is None
    assert (str(TARGETS["7"]), str(TARGETS["7 memory"])) == ("≤ 1.5", "≤ 6")
    assert TARGETS["7 numerics"] is None and TARGETS["7 torch"] is None
    assert (str(TARGETS["9"]), str(TARGETS["9 memory"]), str(TARGETS["9 healthz"])) == (
        "≤ 1.3",
        "≤ 3",
        "≤ 1",
    )
    assert (str(TARGETS["8"]), str(TARGETS["8 HVP slope"])) == ("≤ 1.5", "≤ 1.2")
    summary = verdicts(rows).splitlines()
    assert len(summary) == sum(target is not None for target in TARGETS.values())
    for line in summary:  # "case KEY (TARGET, SOURCE): VERDICT"
        verdict = line.split("): ", 1)[1]
        without_torch = (
            verdict == case7_llm_kernel.TORCH_UNAVAILABLE and optional_module("torch") is None
        )
        assert verdict == MET or verdict.startswith("MISSED (") or without_torch, line


def test_unavailable_rows_say_why_and_keep_their_target() -> None:
    line = unavailable("6b", "6b candidate Jacobian", "s", "meaning", cases.CANDIDATE_UNAVAILABLE)
    assert line.status == "not available: candidate not accepted (422)"
    assert line.target == "≤ 1.5" and line.ratio is None
    assert "| – | – | – | ≤ 1.5 | not available: candidate not accepted (422) |" in table([line])
    assert verdicts([line]) == (
        "case 6b (≤ 1.5, issue 14): not available: candidate not accepted (422)"
    )


def test_candidate_cases_measure_what_they_claim(results: tuple[dict[str, Any], Path]) -> None:
    details = results[0]["candidate"]
    assert details["available"]
    n, c = results[0]["plan"]["large"]
    for variant in ("default", "gradient_only"):
        gradient = details["gradient"]["verdicts"][variant]
        assert gradient["correct"] == {"passed": True, "checked": n * c, "diagnoses": []}
        assert not gradient["not_divided"]["passed"]
        assert gradient["not_divided"]["diagnoses"][0] == "not_divided"
    jacobian = details["jacobian"]
    n, c = jacobian["N"], jacobian["C"]
    assert jacobian["verdicts"]["correct"] == {
        "passed": True,
        "checked": n * c * c,
        "diagnoses": [],
    }
    assert jacobian["verdicts"]["missing_diagonal"]["diagnoses"][0] == "jacobian_missing_diagonal"
    unexplained = details["unexplained"]["verdicts"]
    assert unexplained["correct"]["passed"] and unexplained["correct"]["diagnoses"] == []
    assert (unexplained["unexplained"]["passed"], unexplained["unexplained"]["diagnoses"]) == (
        False,
        [],
    )
    assert unexplained["pair"]["diagnoses"] == ["sign_flipped", "not_divided"]
    # the largest batch whose body fits the limit: one more sample would not
    limit = jacobian["max_body_bytes"]
    assert limit == results[0]["plan"]["max_body_bytes"]
    assert max(jacobian["body_bytes"].values()) <= limit
    bigger = cases.jacobian_bodies(cases.problem(n + 1, c, seed=1), jacobian["include"])
    assert max(map(len, bigger.values())) > limit


def test_files_are_written(results: tuple[dict[str, Any], Path]) -> None:
    payload, output_dir = results
    assert json.loads((output_dir / "bench.json").read_text())["rows"] == payload["rows"]
    assert (output_dir / "bench.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    markdown = (output_dir / "bench.md").read_text()
    assert markdown == table([Row(**row) for row in payload["rows"]]) + "\n"
    assert markdown.count("\n") == len(payload["rows"]) + 2


def test_responses_and_baselines_computed_the_same_thing(
    results: tuple[dict[str, Any], Path],
) -> None:
    payload, _ = results
    default_outputs = {
        "probabilities",
        "loss",
        "losses",
        "gradient",
        "numeric_gradient",
        "jacobian",
    }
    assert default_outputs <= set(payload["large_response"]["json_response_keys"])
    assert default_outputs <= set(payload["large_response"]["npz_response_keys"])
    for method in ("central", "complex_step"):
        # the per-element loop and the service differentiate the same loss at the same points
        assert payload["loop_baseline"][method]["max_abs_difference"] < 1e-6


def test_scaling_reaches_the_configured_limit(results: tuple[dict[str, Any], Path]) -> None:
    payload, _ = results
    limit = payload["plan"]["max_output_entries"]
    for axis in ("N", "C"):
        entries = [p["output_entries"] for p in payload["scaling"] if p["axis"] == axis]
        assert entries == sorted(entries) and len(entries) >= 2
        assert limit / 2 < entries[-1] <= limit


def test_small_requests_report_the_reference_endpoints(
    results: tuple[dict[str, Any], Path],
) -> None:
    details = results[0]["small_requests"]
    rates = details["requests_per_second"]
    assert set(rates) == {"service", "bare", "bare_with_thread_hop", "service_without_numerics"}
    assert all(rate > 0 for rate in rates.values())
    assert (
        details["bare_with_thread_hop_over_bare"] == rates["bare_with_thread_hop"] / rates["bare"]
    )
    assert (
        details["service_without_numerics_over_bare"]
        == rates["service_without_numerics"] / rates["bare"]
    )


def test_binary_requests_are_what_case_4_sends(results: tuple[dict[str, Any], Path]) -> None:
    details = results[0]["large_response"]
    assert details["binary_response_keys"] == details["npz_response_keys"]
    payload = cases.problem(3, 4)
    arrays, fields = cases.read_npz_request(cases.npz_request(payload, {"include": ["loss"]}))
    assert fields == {"include": ["loss"]}
    assert all((arrays[name] == payload[name]).all() for name in ("logits", "labels"))


def test_llm_case_checks_a_right_float32_kernel(results: tuple[dict[str, Any], Path]) -> None:
    payload, _ = results
    details = payload["llm"]
    assert [details["N"], details["C"]] == list(payload["plan"]["llm"])
    assert all(details["passed"].values()) and {"service", "floor"} <= set(details["passed"])
    assert "candidate_check" in details["response_keys"] and "loss" in details["response_keys"]
    assert details["logits_float64_bytes"] == details["N"] * details["C"] * 8
    problem = case7_llm_kernel.llm_problem(20, 7)
    assert problem["logits"].dtype == np.float32 and (problem["labels"] == -100).sum() == 2


def test_llm_floor_is_the_formula_the_service_computes(
    results: tuple[dict[str, Any], Path],
) -> None:
    """The plain numpy floor finds the service's loss, passes the right candidate and fails a
    wrong one (the gradient of the sum instead of the mean)."""
    losses = results[0]["llm"]["losses"]
    assert losses["floor"] == pytest.approx(losses["service"], rel=1e-12)
    right, wrong = _llm_bodies()
    assert case7_llm_kernel.formula_floor(right).passed
    assert not case7_llm_kernel.formula_floor(wrong).passed


@pytest.mark.torch
def test_llm_torch_row_computes_what_the_service_computes() -> None:
    """torch float64 autograd (case 7's information row) finds the service's loss, passes the
    right candidate and fails the wrong one."""
    torch = require_module("torch")
    payload = case7_llm_kernel.llm_problem(16, 300, seed=4)
    service = cases.analyse(payload, frozenset({Output.LOSS}), **case7_llm_kernel.LLM_OPTIONS)
    right, wrong = _llm_bodies()
    found = case7_llm_kernel.torch_autograd(torch, right)
    assert found.passed and found.loss == pytest.approx(float(np.asarray(service.loss)), rel=1e-12)
    assert not case7_llm_kernel.torch_autograd(torch, wrong).passed


def _llm_bodies() -> tuple[bytes, bytes]:
    """Case 7's request with a right candidate gradient, and with the sum's gradient (× kept
    samples) instead of the mean's."""
    payload = case7_llm_kernel.llm_problem(16, 300, seed=4)
    gradient = case7_llm_kernel.llm_gradient(payload)
    fields = {**case7_llm_kernel.LLM_OPTIONS, "include": case7_llm_kernel.LLM_INCLUDE}
    wrong = {**payload, "candidate.gradient": gradient * (payload["labels"] != -100).sum()}
    return case7_llm_kernel.llm_body(payload), cases.npz_request(wrong, fields)


def test_one_case_runs_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m bench.run --quick --case 7`: only case 7's rows and verdicts."""
    main(["--quick", "--case", "7", "--output-dir", str(tmp_path)])
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {row["key"] for row in rows} == {"7", "7 numerics", "7 torch", "7 memory"}
    assert not (tmp_path / "bench.png").exists()
    printed = capsys.readouterr().out
    assert "case 7 (≤ 1.5" in printed and "case 1 " not in printed
    registered = {case for measurement in MEASUREMENTS for case in measurement.cases}
    assert registered == {key.split()[0] for key in TARGETS}


def test_second_order_cases_get_what_they_ask_for(results: tuple[dict[str, Any], Path]) -> None:
    payload, _ = results
    details = payload["second_order"]
    keys = details["response_keys"]
    for fmt in ("JSON", ".npz"):
        assert "hessian" in keys[f"Hessian, {fmt}"]
        assert {"hessian", "numeric_hessian"} <= set(keys[f"Hessian and numeric Hessian, {fmt}"])
        assert "hessian" in keys[f"Hessian, {fmt} floor"]
    hvp = details["hvp"]
    assert len(hvp) == payload["plan"]["hvp_points"]
    assert hvp[-1]["C"] == payload["plan"]["hvp_max_classes"]


def test_linear_case_checks_right_bfloat16_gradients(results: tuple[dict[str, Any], Path]) -> None:
    """Case 9 sends bfloat16 input, weight and candidate gradients, which the service passes;
    the /healthz probe answered while it ran."""
    payload, _ = results
    details = payload["linear"]
    assert [details["N"], details["d"], details["C"]] == list(payload["plan"]["linear"])
    assert details["passed"]["service"] == dict.fromkeys(case9_linear.CANDIDATES, True)
    assert details["head_float64_bytes"] == (details["N"] + details["C"]) * details["d"] * 8
    assert details["healthz"]["answers"] >= 1 and details["healthz"]["longest_seconds"] > 0
    problem = case9_linear.linear_problem(20, 8, 30)
    arrays = case9_linear.read_body(
        case9_linear.linear_body(problem, case9_linear.right_gradients(problem))
    )
    assert {arrays[name].dtype for name in arrays if name != "labels"} == {
        np.dtype(ml_dtypes.bfloat16)
    }
    assert sorted(arrays) == sorted(
        ["input", "linear_weight", "labels"]
        + [f"candidate.{name}" for name in case9_linear.CANDIDATES]
    )
    assert (arrays["labels"] == -100).sum() == 2


@pytest.mark.torch
def test_linear_torch_baseline_computes_what_the_service_computes() -> None:
    """Case 9's baseline (torch float64 in-process) finds the service's loss, passes the
    right bfloat16 gradients and fails gradients of the sum instead of the mean."""
    torch = require_module("torch")
    problem = case9_linear.linear_problem(24, 16, 50, seed=3)
    right = case9_linear.right_gradients(problem)
    found = case9_linear.torch_check(torch, case9_linear.linear_body(problem, right))
    assert found.passed == dict.fromkeys(case9_linear.CANDIDATES, True)
    service = analyse_linear(
        LinearProblem(problem["input"], problem["linear_weight"], problem["labels"]),
        frozenset({LinearOutput.LOSS}),
    )
    assert found.loss == pytest.approx(float(np.asarray(service.loss)), rel=1e-12)
    kept = int((problem["labels"] != -100).sum())
    wrong = {
        name: (value.astype(np.float64) * kept).astype(ml_dtypes.bfloat16)
        for name, value in right.items()
    }
    found = case9_linear.torch_check(torch, case9_linear.linear_body(problem, wrong))
    assert found.passed == dict.fromkeys(case9_linear.CANDIDATES, False)
    tensors = case9_linear.torch_tensors(torch, problem)
    assert case9_linear.torch_forward_backward(torch, tensors) == pytest.approx(found.loss)
