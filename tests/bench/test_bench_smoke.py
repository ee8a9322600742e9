"""A tiny run of the benchmark harness (`bench.run --quick`): it runs end to end and reports
every case of issue 6. No timing is asserted: speed claims are the benchmark's, as ratios."""

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.run import QUICK, Row, run, table

pytestmark = [pytest.mark.live, pytest.mark.slow]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    output_dir = tmp_path_factory.mktemp("bench")
    return run(QUICK, output_dir), output_dir


def test_every_case_has_a_measurement_a_baseline_and_a_ratio(
    results: tuple[dict[str, Any], Path],
) -> None:
    rows = results[0]["rows"]
    assert sorted({row["case"].split()[0] for row in rows}) == ["1", "2", "3", "4", "5"]
    for row in rows:
        assert row["baseline"] > 0, row
        # a tiny request may grow the server's memory by nothing at all
        assert row["measured"] > 0 or (row["unit"] == "bytes" and row["measured"] == 0), row
        assert math.isfinite(row["ratio"]), row
        assert row["target"] and row["ratio_meaning"], row


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
