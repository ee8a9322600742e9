"""`make bench`: the five cases of issue 6 against a live uvicorn on 127.0.0.1, side by side
with their baselines in the same run. Prints a table; writes bench.json and bench.png.

    python -m bench.run [--quick] [--output-dir DIR]

Every number is the median of several runs; every ratio compares two medians of this run.
"""

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.core.config import Settings
from app.numerics.finite_diff import Method
from bench import cases
from bench.client import Connection, build_request, requests_per_second
from bench.plot import plot_scaling
from bench.server import ROOT, Server, running_server

RESULTS_DIR = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one run."""

    large: tuple[int, int] = (256, 100)
    small: tuple[int, int] = (8, 10)
    repeats: int = 5
    scaling_repeats: int = 3
    scaling_points: int = 5
    scaling_classes: int = 100
    """C of the sweep over N."""
    scaling_samples: int = 8
    """N of the sweep over C."""
    loop_elements: int = 256
    rps_seconds: float = 1.5
    rps_runs: int = 5
    concurrency: int = 8
    max_output_entries: int | None = None
    """Overrides GRADCHECK_MAX_OUTPUT_ENTRIES for the server and the sweeps (None: as set)."""


QUICK = Plan(
    large=(16, 10),
    small=(4, 5),
    repeats=1,
    scaling_repeats=1,
    scaling_points=2,
    scaling_classes=10,
    scaling_samples=4,
    loop_elements=8,
    rps_seconds=0.3,
    rps_runs=1,
    concurrency=2,
    max_output_entries=20_000,
)


@dataclass
class Row:
    """One line of the table: a measurement, its baseline from the same run, and the ratio."""

    case: str
    measured: float
    baseline: float
    unit: str
    ratio: float
    ratio_meaning: str
    target: str
    met: bool


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def large_response(server: Server, plan: Plan) -> tuple[Row, Row, dict[str, Any]]:
    """Cases 1 and 4: JSON end to end vs the in-process floor, and .npz vs JSON end to end."""
    payload = cases.problem(*plan.large)
    connection = Connection(server.port)
    json_fields = cases.post_json(connection, payload)
    npz_fields = cases.post_npz(connection, payload)
    cases.floor(payload)
    floors, jsons, npzs = [], [], []
    for _ in range(plan.repeats):  # interleaved, so that noise hits all three alike
        floors.append(cases.median_time(lambda: cases.floor(payload), 1))
        jsons.append(cases.median_time(lambda: cases.post_json(connection, payload), 1))
        npzs.append(cases.median_time(lambda: cases.post_npz(connection, payload), 1))
    connection.close()
    floor, json_time, npz_time = (statistics.median(t) for t in (floors, jsons, npzs))
    n, c = plan.large
    details = {
        "json_response_keys": sorted(json_fields),
        "npz_response_keys": sorted(npz_fields),
        "output_bytes": cases.output_bytes(npz_fields),
    }
    case1 = Row(
        f"1 large response, JSON (N={n}, C={c})",
        json_time,
        floor,
        "s",
        json_time / floor,
        "end-to-end time / in-process floor",
        "≤ 1.5",
        json_time / floor <= 1.5,
    )
    case4 = Row(
        f"4 large response, .npz (N={n}, C={c})",
        npz_time,
        json_time,
        "s",
        json_time / npz_time,
        "JSON end to end / .npz end to end",
        "≥ 5",
        json_time / npz_time >= 5,
    )
    return case1, case4, details


def numeric_gradient(server: Server, plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    """Case 2: the service's numeric gradient vs a per-element loop, central and complex step."""
    payload = cases.problem(*plan.large)
    connection = Connection(server.port)
    rows, details = [], {}
    n, c = plan.large
    for method in (Method.CENTRAL, Method.COMPLEX_STEP):
        request = cases.numeric_gradient_payload(payload, method)
        service_gradient = np.asarray(cases.post_json(connection, request)["numeric_gradient"])
        service = cases.median_time(partial(cases.post_json, connection, request), plan.repeats)
        loop = cases.loop_baseline(
            payload, method, service_gradient, plan.loop_elements, plan.repeats
        )
        loop_total = loop.seconds_per_element * n * c
        rows.append(
            Row(
                f"2 numeric gradient, {method} (N={n}, C={c})",
                service,
                loop_total,
                "s",
                loop_total / service,
                "per-element loop (in-process) / service end to end",
                "≥ 100",
                loop_total / service >= 100,
            )
        )
        details[str(method)] = asdict(loop)
    connection.close()
    return rows, details


def small_requests(server: Server, plan: Plan) -> tuple[Row, dict[str, Any]]:
    """Case 3: requests per second of small requests vs the bare endpoint, one worker; with
    the rates of the thread-hop and no-numerics endpoints (bench/app.py), for reference."""
    body = orjson.dumps(cases.problem(*plan.small), option=orjson.OPT_SERIALIZE_NUMPY)
    requests = {
        "service": build_request("POST", cases.CROSS_ENTROPY_PATH, body, cases.JSON_HEADERS),
        "bare": build_request("POST", cases.CONSTANT_PATH, body, cases.JSON_HEADERS),
        "bare_with_thread_hop": build_request("POST", cases.HOP_PATH, body, cases.JSON_HEADERS),
        "service_without_numerics": build_request(
            "POST", cases.NO_NUMERICS_PATH, body, cases.JSON_HEADERS
        ),
    }
    connection = Connection(server.port)
    for raw in requests.values():
        connection.request(raw).raise_for_status()
    connection.close()
    warm_up = min(0.5, plan.rps_seconds)
    for raw in requests.values():
        requests_per_second(server.port, raw, plan.concurrency, warm_up)
    batches_before = coalesced_batches(server)
    rates: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(plan.rps_runs):
        for name, raw in requests.items():
            rates[name].append(
                requests_per_second(server.port, raw, plan.concurrency, plan.rps_seconds)
            )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    rate, bare_rate = medians["service"], medians["bare"]
    n, c = plan.small
    row = Row(
        f"3 small requests/s (N={n}, C={c}, {plan.concurrency} connections)",
        rate,
        bare_rate,
        "req/s",
        rate / bare_rate,
        "service / bare endpoint of the same app",
        "≥ 0.6",
        rate / bare_rate >= 0.6,
    )
    batches, requests_in_batches = (
        after - before
        for after, before in zip(coalesced_batches(server), batches_before, strict=True)
    )
    details = {
        "requests_per_second": medians,
        "bare_with_thread_hop_over_bare": medians["bare_with_thread_hop"] / bare_rate,
        "service_without_numerics_over_bare": medians["service_without_numerics"] / bare_rate,
        "mean_requests_per_coalesced_batch": requests_in_batches / max(batches, 1),
    }
    return row, details


def coalesced_batches(server: Server) -> tuple[float, float]:
    """(batches, requests in them) computed by the server's coalescer so far (/metrics)."""
    connection = Connection(server.port)
    text = connection.request(build_request("GET", "/metrics")).raise_for_status().body.decode()
    connection.close()
    values = dict(
        line.split(" ", 1)
        for line in text.splitlines()
        if line.startswith("gradcheck_coalesced_requests_")
    )
    return float(values["gradcheck_coalesced_requests_count"]), float(
        values["gradcheck_coalesced_requests_sum"]
    )


def geometric(low: int, high: int, points: int) -> list[int]:
    """`points` integers from low to high, evenly spaced on a log scale (high included)."""
    if points <= 1 or high <= low:
        return [high]
    return sorted({round(low * (high / low) ** (k / (points - 1))) for k in range(points)})


def log_slope(entries: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(entries): 1 means linear growth."""
    return float(np.polyfit(np.log(entries), np.log(seconds), 1)[0])


def scaling(
    server: Server, plan: Plan, settings: Settings
) -> tuple[list[Row], list[dict[str, Any]]]:
    """Case 5: end-to-end cost against N (C fixed) and against C (N fixed), up to the limits."""
    connection = Connection(server.port)
    points: list[dict[str, Any]] = []
    sweeps = {
        "N": [
            (n, plan.scaling_classes)
            for n in geometric(
                8, cases.largest_batch(plan.scaling_classes, settings), plan.scaling_points
            )
        ],
        "C": [
            (plan.scaling_samples, c)
            for c in geometric(
                10, cases.largest_classes(plan.scaling_samples, settings), plan.scaling_points
            )
        ],
    }
    for axis, shapes in sweeps.items():
        for n, c in shapes:
            payload = cases.problem(n, c)
            fields = cases.post_npz(connection, payload)
            npz = cases.median_time(
                partial(cases.post_npz, connection, payload), plan.scaling_repeats
            )
            json_time = cases.median_time(
                partial(cases.post_json, connection, payload), plan.scaling_repeats
            )
            points.append(
                {
                    "axis": axis,
                    "N": n,
                    "C": c,
                    "output_entries": cases.output_bytes(fields) // 8,
                    "npz_seconds": npz,
                    "json_seconds": json_time,
                }
            )
    connection.close()
    rows = []
    for axis in sweeps:
        line = [p for p in points if p["axis"] == axis]
        entries = [p["output_entries"] for p in line]
        large = [p for p in line if p["output_entries"] >= max(entries) / 100] or line
        for fmt in ("npz", "json"):
            slope = (
                log_slope(
                    [p["output_entries"] for p in large], [p[f"{fmt}_seconds"] for p in large]
                )
                if len(large) > 1
                else math.nan
            )
            last = line[-1]
            rows.append(
                Row(
                    f"5 cost against {axis}, {fmt} (up to N={last['N']}, C={last['C']})",
                    last[f"{fmt}_seconds"],
                    last["output_entries"],
                    "s / entries",
                    slope,
                    "slope of log time against log output size (1 = linear, < 1: the fixed "
                    "cost of a request still shows)",
                    "≤ 1.2",
                    slope <= 1.2,
                )
            )
    return rows, points


def peak_memory(
    plan: Plan, settings: Settings, env: dict[str, str]
) -> tuple[list[Row], dict[str, Any]]:
    """Case 5: peak memory of the largest allowed request against its output size.

    Output size: 8 bytes per float64 number in the response's arrays. Measured twice: the
    numerics in a fresh process (tracemalloc peak), and the server's peak RSS growth (VmHWM)
    while it serves the request, as .npz and as JSON (each on a fresh server).
    """
    n, c = cases.largest_batch(plan.scaling_classes, settings), plan.scaling_classes
    payload = cases.problem(n, c)
    small = cases.problem(*plan.small)
    numerics = orjson.loads(
        subprocess.run(
            [sys.executable, "-m", "bench.memory", str(n), str(c)],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        ).stdout
    )
    growth = {}
    response_bytes = {}
    for fmt, post in (("npz", cases.post_npz), ("json", cases.post_json)):
        with running_server(env) as server:
            connection = Connection(server.port)
            cases.post_npz(connection, small)
            cases.post_json(connection, small)
            before = server.peak_rss_bytes()
            raw = build_request(
                "POST",
                cases.CROSS_ENTROPY_PATH,
                orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                cases.NPZ_HEADERS if fmt == "npz" else cases.JSON_HEADERS,
            )
            reply = connection.request(raw).raise_for_status()
            growth[fmt] = server.peak_rss_bytes() - before
            response_bytes[fmt] = len(reply.body)
            post(connection, small)
            connection.close()
    output = numerics["output_bytes"]
    rows = [
        Row(
            f"5 peak memory, numerics (N={n}, C={c})",
            numerics["peak_bytes"],
            output,
            "bytes",
            numerics["peak_bytes"] / output,
            "tracemalloc peak / output size",
            "≤ 3",
            numerics["peak_bytes"] <= 3 * output,
        ),
        Row(
            f"5 peak memory, server .npz (N={n}, C={c})",
            growth["npz"],
            output,
            "bytes",
            growth["npz"] / output,
            "server peak RSS growth / output size",
            "≤ 3",
            growth["npz"] <= 3 * output,
        ),
        Row(
            f"5 peak memory, server JSON (N={n}, C={c})",
            growth["json"],
            output + response_bytes["json"],
            "bytes",
            growth["json"] / (output + response_bytes["json"]),
            "server peak RSS growth / (output size + JSON body)",
            "≤ 1.5",
            growth["json"] <= 1.5 * (output + response_bytes["json"]),
        ),
    ]
    return rows, {"numerics": numerics, "server_growth": growth, "response_bytes": response_bytes}


def format_value(value: float, unit: str) -> str:
    """A measurement in a readable unit."""
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| case | measured | baseline | ratio | target | met | ratio means |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.unit == "s / entries":
            measured = f"{row.measured * 1000:.1f} ms at the top"
            baseline = f"{row.baseline:,.0f} numbers"
        else:
            measured = format_value(row.measured, row.unit)
            baseline = format_value(row.baseline, row.unit)
        lines.append(
            f"| {row.case} | {measured} | {baseline} | {row.ratio:.3g} | {row.target} | "
            f"{'yes' if row.met else 'NO'} | {row.ratio_meaning} |"
        )
    return "\n".join(lines)


def run(plan: Plan, output_dir: Path) -> dict[str, Any]:
    """Every case against one server (memory: fresh servers); write bench.json and bench.png."""
    env = {}
    if plan.max_output_entries is not None:
        env["GRADCHECK_MAX_OUTPUT_ENTRIES"] = str(plan.max_output_entries)
    settings = (
        Settings()
        if plan.max_output_entries is None
        else Settings(max_output_entries=plan.max_output_entries)
    )
    started = time.perf_counter()
    info = machine()
    with running_server(env) as server:
        case1, case4, large_details = large_response(server, plan)
        case2, loop_details = numeric_gradient(server, plan)
        case3, small_details = small_requests(server, plan)
        scaling_rows, points = scaling(server, plan, settings)
    memory_rows, memory_details = peak_memory(plan, settings, env)
    rows = [case1, *case2, case3, case4, *scaling_rows, *memory_rows]
    info["load_average_at_end"] = os.getloadavg()
    info["bench_seconds"] = time.perf_counter() - started
    results = {
        "machine": info,
        "plan": asdict(plan),
        "rows": [asdict(row) for row in rows],
        "large_response": large_details,
        "loop_baseline": loop_details,
        "small_requests": small_details,
        "scaling": points,
        "memory": memory_details,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    plot_scaling(points, output_dir / "bench.png")
    (output_dir / "bench.md").write_text(table(rows) + "\n")
    return results


def main() -> None:
    """Parse the command line, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the harness works")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    results = run(QUICK if args.quick else Plan(), args.output_dir)
    rows = [Row(**row) for row in results["rows"]]
    print(table(rows))
    info = results["machine"]
    print(
        f"\n{info['cpu']}, {info['cores']} cores, Python {info['python']}, numpy {info['numpy']}; "
        f"load average {info['load_average_at_start'][0]:.2f} at start, "
        f"{info['load_average_at_end'][0]:.2f} at end; {info['bench_seconds']:.0f} s in all. "
        f"Results in {args.output_dir}/bench.json, bench.md, bench.png"
    )


if __name__ == "__main__":
    main()
