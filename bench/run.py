"""`make bench`: the cases of issue 6 (1–5, targets restated by issue 13), issue 14 (6a, 6b),
issue 27 (6c), issue 18 (7: a kernel's gradient at LLM scale, its floor restated by issue 25),
issue 20 (8: second order) and issue 29 (9: an LM head fused with its loss) against a live
uvicorn on 127.0.0.1, side by side with their baselines in the same run. Prints a table with
each case's verdict (met, missed, info); writes bench.json, bench.md and bench.png.

    python -m bench.run [--quick] [--case CASE ...] [--output-dir DIR]

Every number is the median of several runs; every ratio compares two medians of this run. The
targets are stated once, in `bench.targets.TARGETS`; each case is one module
(`bench/caseN_*.py`, its `measure`) and one line of `MEASUREMENTS`.
"""

import argparse
import os
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from bench import (
    case1_4_large_response,
    case2_numeric_gradient,
    case3_small_requests,
    case5_scaling,
    case6_candidate,
    case7_llm_kernel,
    case8_second_order,
    case9_linear,
)
from bench.heap import keep_freed_memory
from bench.plan import QUICK, Bench, Plan
from bench.plot import plot_scaling
from bench.report import Row, in_table_order, machine, table, verdicts
from bench.server import running_server
from tests.helpers import ROOT

RESULTS_DIR = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Measurement:
    """One entry of the run: the cases it measures, where its details go in bench.json, and
    whether it is measured against the run's shared server (False: it starts its own)."""

    cases: tuple[str, ...]
    details_key: str
    measure: Callable[[Bench], tuple[list[Row], Any]]
    shared_server: bool = True


MEASUREMENTS = (
    Measurement(("1", "4"), "large_response", case1_4_large_response.measure),
    Measurement(("2",), "loop_baseline", case2_numeric_gradient.measure),
    Measurement(("3",), "small_requests", case3_small_requests.measure),
    Measurement(("5",), "scaling", case5_scaling.measure_scaling),
    Measurement(("6a", "6b", "6c"), "candidate", case6_candidate.measure),
    Measurement(("8",), "second_order", case8_second_order.measure),
    Measurement(("5",), "memory", case5_scaling.measure_memory, shared_server=False),
    Measurement(("7",), "llm", case7_llm_kernel.measure, shared_server=False),
    Measurement(("9",), "linear", case9_linear.measure, shared_server=False),
)
"""Every measurement, in the order run: first those against the shared server, then those
that start fresh servers of their own (memory readings)."""

CASE_NAMES = sorted({case for measurement in MEASUREMENTS for case in measurement.cases})


def run(plan: Plan, output_dir: Path, only: Collection[str] = ()) -> dict[str, Any]:
    """Every measurement (or those of the cases in `only`) with one shared server; write
    bench.json, bench.md and, with case 5's sweeps, bench.png."""
    chosen = [m for m in MEASUREMENTS if not only or set(m.cases) & set(only)]
    bench = Bench(plan, plan.settings(), plan.server_env())
    started = time.perf_counter()
    info = machine()
    rows: list[Row] = []
    results: dict[str, Any] = {"machine": info, "plan": asdict(plan)}
    shared = [m for m in chosen if m.shared_server]
    if shared:
        with running_server(bench.env) as server:
            for measurement in shared:
                found, details = measurement.measure(replace(bench, server=server))
                rows += found
                results[measurement.details_key] = details
    for measurement in (m for m in chosen if not m.shared_server):
        found, details = measurement.measure(bench)
        rows += found
        results[measurement.details_key] = details
    rows = in_table_order(rows)
    info["load_average_at_end"] = os.getloadavg()
    info["bench_seconds"] = time.perf_counter() - started
    results["rows"] = [asdict(line) for line in rows]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    if "scaling" in results:
        plot_scaling(results["scaling"], output_dir / "bench.png")
    (output_dir / "bench.md").write_text(table(rows) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the harness works")
    parser.add_argument(
        "--case",
        action="append",
        choices=CASE_NAMES,
        default=[],
        help="run only this case (repeatable; default: every case)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    keep_freed_memory()
    results = run(QUICK if args.quick else Plan(), args.output_dir, args.case)
    rows = [Row(**line) for line in results["rows"]]
    print(table(rows))
    print()
    print(verdicts(rows))
    info = results["machine"]
    print(
        f"\n{info['cpu']}, {info['cores']} cores, Python {info['python']}, numpy {info['numpy']}; "
        f"load average {info['load_average_at_start'][0]:.2f} at start, "
        f"{info['load_average_at_end'][0]:.2f} at end; {info['bench_seconds']:.0f} s in all. "
        f"Results in {args.output_dir}/bench.json, bench.md"
        + (", bench.png" if "scaling" in results else "")
    )


if __name__ == "__main__":
    main()
