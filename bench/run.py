"""`make bench`: the cases of issue 6 (1–5, targets restated by issue 13), issue 14 (6a, 6b),
issue 27 (6c), issue 18 (7: a kernel's gradient at LLM scale) and issue 20 (8: second order)
against a live uvicorn on 127.0.0.1, side by side with their baselines in the same run. Prints a
table with each case's verdict (met, missed, info); writes bench.json, bench.md and bench.png.

    python -m bench.run [--quick] [--output-dir DIR]

Every number is the median of several runs; every ratio compares two medians of this run. The
targets are stated once, in TARGETS.
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
import pydantic_core

from app.core.config import Settings
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import Output
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
    candidate_repeats: int = 15
    """Runs of each request of case 6a (small: more runs, steadier medians)."""
    jacobian_classes: int = 100
    """C of case 6b; N is the largest the body limit allows."""
    jacobian_repeats: int = 3
    max_body_bytes: int | None = None
    """Overrides GRADCHECK_MAX_BODY_BYTES for the server and case 6b (None: as set)."""
    llm: tuple[int, int] = (256, 32_000)
    """N and C of case 7 (a fused kernel's gradient at LLM scale)."""
    llm_repeats: int = 3
    hvp_samples: int = 256
    """N of case 8's Hessian-vector product sweep over C."""
    hvp_max_classes: int = 16_000
    hvp_points: int = 5


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
    candidate_repeats=1,
    jacobian_classes=10,
    jacobian_repeats=1,
    max_body_bytes=256 * 1024,
    llm=(8, 2000),
    llm_repeats=1,
    hvp_samples=4,
    hvp_max_classes=400,
    hvp_points=3,
)


@dataclass(frozen=True)
class Target:
    """A bound on a case's ratio."""

    at_most: bool
    """True: ratio ≤ bound; False: ratio ≥ bound."""
    bound: float
    source: str
    """Where the target is set."""

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.bound:g}"

    def met(self, ratio: float) -> bool:
        """Whether `ratio` meets the bound (never for NaN)."""
        return ratio <= self.bound if self.at_most else ratio >= self.bound


TARGETS: dict[str, Target | None] = {
    "1": Target(True, 1.5, "issue 6"),
    "2": Target(False, 100, "issue 6"),
    "3": Target(False, 0.4, "issue 13 item 4 (0.6 in issue 6)"),
    "4": Target(True, 1.5, "issue 13 item 4 (was JSON/.npz ≥ 5 in issue 6)"),
    "4 JSON in": None,
    "4 JSON/.npz": None,
    "5 slope": Target(True, 1.2, "issue 6"),
    "5 memory, numerics": Target(True, 3, "issue 6"),
    "5 memory, server .npz": Target(True, 3, "issue 6"),
    "5 memory, server JSON": Target(True, 1.5, "issue 6"),
    "6a": Target(True, 1.3, "issue 14"),
    "6a gradient only": None,
    "6b": Target(True, 1.5, "issue 14"),
    "6c": Target(True, 1.3, "issue 27"),
    "6c pair": None,
    "7": Target(True, 2.5, "issue 18 item 6"),
    "7 memory": Target(True, 6, "issue 18 item 6"),
    "8": Target(True, 1.5, "issue 20 item 5"),
    "8 HVP slope": Target(True, 1.2, "issue 20 item 5"),
}
"""Every case's target, keyed by case; None: the row is information only."""

MET, MISSED, INFO = "met", "missed", "info"


@dataclass
class Row:
    """One line of the table: a measurement, its baseline from the same run, the ratio, and
    the verdict against TARGETS[key]."""

    key: str
    case: str
    measured: float | None
    baseline: float | None
    unit: str
    ratio: float | None
    ratio_meaning: str
    target: str
    status: str
    """met, missed, info (no target), or "not available: …" (nothing measured)."""


def row(
    key: str,
    case: str,
    measured: float,
    baseline: float,
    unit: str,
    ratio: float,
    ratio_meaning: str,
) -> Row:
    """A measured row, judged against its target in TARGETS."""
    target = TARGETS[key]
    if target is None:
        return Row(key, case, measured, baseline, unit, ratio, ratio_meaning, "none", INFO)
    status = MET if target.met(ratio) else MISSED
    return Row(key, case, measured, baseline, unit, ratio, ratio_meaning, str(target), status)


def unavailable(key: str, case: str, unit: str, ratio_meaning: str, reason: str) -> Row:
    """A row whose case could not be measured, with its target and the reason."""
    target = TARGETS[key]
    shown = "none" if target is None else str(target)
    return Row(key, case, None, None, unit, None, ratio_meaning, shown, reason)


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


def large_response(server: Server, plan: Plan) -> tuple[Row, list[Row], dict[str, Any]]:
    """Cases 1 and 4: JSON end to end vs its in-process floor; .npz in and out end to end vs
    its own floor; for information, a JSON request answered as .npz vs its floor, and JSON vs
    .npz end to end."""
    payload = cases.problem(*plan.large)
    connection = Connection(server.port)
    json_fields = cases.post_json(connection, payload)
    npz_fields = cases.post_npz(connection, payload)
    binary_fields = cases.post_binary(connection, cases.npz_request(payload))
    cases.floor(payload)
    cases.npz_floor(payload)
    cases.binary_floor(payload)
    actions = {
        "json_floor": lambda: cases.floor(payload),
        "json": lambda: cases.post_json(connection, payload),
        "binary_floor": lambda: cases.binary_floor(payload),
        "binary": lambda: cases.post_binary(connection, cases.npz_request(payload)),
        "json_in_npz_out_floor": lambda: cases.npz_floor(payload),
        "json_in_npz_out": lambda: cases.post_npz(connection, payload),
    }
    medians = _interleaved(actions, plan.repeats)
    connection.close()
    floor, json_time = medians["json_floor"], medians["json"]
    n, c = plan.large
    details = {
        "json_response_keys": sorted(json_fields),
        "npz_response_keys": sorted(npz_fields),
        "binary_response_keys": sorted(binary_fields),
        "output_bytes": cases.output_bytes(npz_fields),
        "seconds": medians,
    }
    case1 = row(
        "1",
        f"1 large response, JSON (N={n}, C={c})",
        json_time,
        floor,
        "s",
        json_time / floor,
        "end-to-end time / in-process floor",
    )
    binary, binary_floor = medians["binary"], medians["binary_floor"]
    mixed, mixed_floor = medians["json_in_npz_out"], medians["json_in_npz_out_floor"]
    case4 = [
        row(
            "4",
            f"4 large response, .npz in and out (N={n}, C={c})",
            binary,
            binary_floor,
            "s",
            binary / binary_floor,
            "end-to-end time / in-process floor (request archive and np.load, numerics, "
            "encode_npz, np.load)",
        ),
        row(
            "4 JSON in",
            f"4 JSON in, .npz out, information (N={n}, C={c})",
            mixed,
            mixed_floor,
            "s",
            mixed / mixed_floor,
            "end-to-end time / in-process floor (JSON request encoded and decoded, numerics, "
            "encode_npz, np.load)",
        ),
        row(
            "4 JSON/.npz",
            f"4 JSON / .npz, information (N={n}, C={c})",
            binary,
            json_time,
            "s",
            json_time / binary,
            "JSON in and out end to end / .npz in and out end to end",
        ),
    ]
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
            row(
                "2",
                f"2 numeric gradient, {method} (N={n}, C={c})",
                service,
                loop_total,
                "s",
                loop_total / service,
                "per-element loop (in-process) / service end to end",
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
    case3 = row(
        "3",
        f"3 small requests/s (N={n}, C={c}, {plan.concurrency} connections)",
        rate,
        bare_rate,
        "req/s",
        rate / bare_rate,
        "service / bare endpoint of the same app",
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
    return case3, details


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
                row(
                    "5 slope",
                    f"5 cost against {axis}, {fmt} (up to N={last['N']}, C={last['C']})",
                    last[f"{fmt}_seconds"],
                    last["output_entries"],
                    "s / entries",
                    slope,
                    "slope of log time against log output size (1 = linear, < 1: the fixed "
                    "cost of a request still shows)",
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
        row(
            "5 memory, numerics",
            f"5 peak memory, numerics (N={n}, C={c})",
            numerics["peak_bytes"],
            output,
            "bytes",
            numerics["peak_bytes"] / output,
            "tracemalloc peak / output size",
        ),
        row(
            "5 memory, server .npz",
            f"5 peak memory, server .npz (N={n}, C={c})",
            growth["npz"],
            output,
            "bytes",
            growth["npz"] / output,
            "server peak RSS growth / output size",
        ),
        row(
            "5 memory, server JSON",
            f"5 peak memory, server JSON (N={n}, C={c})",
            growth["json"],
            output + response_bytes["json"],
            "bytes",
            growth["json"] / (output + response_bytes["json"]),
            "server peak RSS growth / (output size + JSON body)",
        ),
    ]
    return rows, {"numerics": numerics, "server_growth": growth, "response_bytes": response_bytes}


GRADIENT_INCLUDE = ["gradient"]
"""Outputs of case 6a's information rows: only the one its candidate is checked against, so
that the check's cost is not hidden behind the 2.56 M-entry Jacobian of the default outputs."""
JACOBIAN_INCLUDE = ["loss"]
"""Outputs of case 6b's requests: a small response, so that the case measures the candidate."""


def _verdict(response: dict[str, Any], output: str) -> dict[str, Any]:
    """What the service said of a candidate output: passed, entries checked, diagnoses."""
    check = response["candidate_check"]
    return {
        "passed": check["passed"],
        "checked": check["outputs"][output]["checked"],
        "diagnoses": [d["code"] for d in check["diagnoses"]],
    }


def _interleaved(actions: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each action, run in turn `repeats` times so that noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            times[name].append(cases.median_time(action, 1))
    return {name: statistics.median(values) for name, values in times.items()}


GRADIENT_MEANING = "end-to-end time / the same request without a candidate"
JACOBIAN_MEANING = "end-to-end time / in-process floor (parse, numerics, compare)"
TOO_SLOW_TO_REPEAT = 10.0
"""A 6b request whose first run takes this many times its floor is not run again: its one
time is reported (the bench stays bounded when the service is far off its target)."""


def candidate_checks(
    server: Server, plan: Plan, settings: Settings
) -> tuple[list[Row], dict[str, Any]]:
    """Case 6 (issue 14): (a) a candidate gradient, N×C of plan.large, end to end against the
    same request without it; (b) a candidate Jacobian as large as the body limit allows, end to
    end against its in-process parse-and-compare floor. Each with a correct candidate and with
    a classic mistake (diagnosed). "not available" rows if the service refuses `candidate`."""
    connection = Connection(server.port, timeout=900.0)
    try:
        if not cases.candidate_accepted(connection):
            n, c = plan.large
            reason = cases.CANDIDATE_UNAVAILABLE
            return [
                unavailable(
                    "6a", f"6a candidate gradient (N={n}, C={c})", "s", GRADIENT_MEANING, reason
                ),
                unavailable(
                    "6b",
                    f"6b candidate Jacobian (C={plan.jacobian_classes})",
                    "s",
                    JACOBIAN_MEANING,
                    reason,
                ),
                unavailable(
                    "6c",
                    f"6c unexplained gradient (N={n}, C={c})",
                    "s",
                    UNEXPLAINED_MEANING,
                    reason,
                ),
            ], {"available": False}
        gradient_rows, gradient_details = candidate_gradient_case(connection, plan)
        jacobian_rows, jacobian_details = candidate_jacobian_case(connection, plan, settings)
        unexplained_rows, unexplained_details = unexplained_gradient_case(connection, plan)
    finally:
        connection.close()
    details = {
        "available": True,
        "gradient": gradient_details,
        "jacobian": jacobian_details,
        "unexplained": unexplained_details,
    }
    return [*gradient_rows, *jacobian_rows, *unexplained_rows], details


def candidate_gradient_case(connection: Connection, plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    """Case 6a: the request of cases 1 and 4 (N×C of plan.large, default outputs) with a
    candidate gradient, correct or not divided by N, against the same request without one;
    and, for information, the same three requests asking for the gradient alone, where the
    Jacobian's 2.56 M numbers do not hide what the candidate costs."""
    n, c = plan.large
    payload = cases.problem(n, c)
    candidates = {
        "without": None,
        "correct": {"gradient": cases.candidate_gradient(payload)},
        "not_divided": {"gradient": cases.candidate_gradient(payload, divided=False)},
    }
    variants = {"default": cases.DEFAULT_INCLUDE_NAMES, "gradient_only": GRADIENT_INCLUDE}
    bodies = {
        variant: {
            name: cases.candidate_request(payload, include, candidate)
            for name, candidate in candidates.items()
        }
        for variant, include in variants.items()
    }
    verdicts = {
        variant: {
            name: _verdict(cases.post_ready_json(connection, body), "gradient")
            for name, body in group.items()
            if name != "without"
        }
        for variant, group in bodies.items()
    }
    repeats = {"default": plan.repeats, "gradient_only": plan.candidate_repeats}
    times = {
        variant: _interleaved(
            {
                name: partial(cases.post_ready_json, connection, body)
                for name, body in group.items()
            },
            repeats[variant],
        )
        for variant, group in bodies.items()
    }
    rows = []
    for variant, key, outputs in (
        ("default", "6a", "default outputs"),
        ("gradient_only", "6a gradient only", "gradient only, information"),
    ):
        group = times[variant]
        for name, label in (("correct", "correct"), ("not_divided", "not divided by N")):
            rows.append(
                row(
                    key,
                    f"6a candidate gradient, {label}; {outputs} (N={n}, C={c})",
                    group[name],
                    group["without"],
                    "s",
                    group[name] / group["without"],
                    GRADIENT_MEANING,
                )
            )
    details = {
        "include": variants,
        "body_bytes": {
            variant: {name: len(body) for name, body in group.items()}
            for variant, group in bodies.items()
        },
        "seconds": times,
        "verdicts": verdicts,
    }
    return rows, details


UNEXPLAINED_MEANING = "end-to-end time / the same request with a right candidate"


def unexplained_gradient_case(
    connection: Connection, plan: Plan
) -> tuple[list[Row], dict[str, Any]]:
    """Case 6c (issue 27): a candidate gradient that no single code explains (every entry off by
    a random 10 %), N×C of plan.large, gradient only, against the same request with a right
    candidate: every hypothesis, then every pair, fails on the probe rows (a few samples), so
    the diagnosis costs a few rows per hypothesis, not the batch. For information, the pair
    that does fit (gradient ascent: sign flipped and not divided), checked on every row once."""
    n, c = plan.large
    payload = cases.problem(n, c)
    candidates = {
        "correct": cases.candidate_gradient(payload),
        "unexplained": cases.unexplained_gradient(payload),
        "pair": cases.ascent_gradient(payload),
    }
    bodies = {
        name: cases.candidate_request(payload, GRADIENT_INCLUDE, {"gradient": gradient})
        for name, gradient in candidates.items()
    }
    verdicts = {
        name: _verdict(cases.post_ready_json(connection, body), "gradient")
        for name, body in bodies.items()
    }
    times = _interleaved(
        {name: partial(cases.post_ready_json, connection, body) for name, body in bodies.items()},
        plan.candidate_repeats,
    )
    rows = [
        row(
            key,
            f"6c candidate gradient, {label}; gradient only (N={n}, C={c})",
            times[name],
            times["correct"],
            "s",
            times[name] / times["correct"],
            UNEXPLAINED_MEANING,
        )
        for key, name, label in (
            ("6c", "unexplained", "no code nor pair explains it"),
            ("6c pair", "pair", "sign flipped and not divided (a pair), information"),
        )
    ]
    details = {
        "include": GRADIENT_INCLUDE,
        "body_bytes": {name: len(body) for name, body in bodies.items()},
        "seconds": times,
        "verdicts": verdicts,
    }
    return rows, details


def _detail(body: bytes | bytearray) -> str:
    """The start of an error response's `detail` (or of its body), for a table cell."""
    try:
        text = str(orjson.loads(body).get("detail", ""))
    except (orjson.JSONDecodeError, AttributeError):
        text = bytes(body[:200]).decode("utf-8", "replace")
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= 90 else text[:89] + "…"


def candidate_jacobian_case(
    connection: Connection, plan: Plan, settings: Settings
) -> tuple[list[Row], dict[str, Any]]:
    """Case 6b: include ["loss"] with a correct candidate Jacobian and with one missing its
    diagonal, N the largest that the body limit allows for C = plan.jacobian_classes; each
    against `cases.candidate_floor` of the same body. Also times the parse alone (pydantic's
    and orjson's) for information."""
    c = plan.jacobian_classes
    limit = settings.max_body_bytes
    n = cases.largest_candidate_batch(c, limit, JACOBIAN_INCLUDE, settings.max_batch_size)
    bodies = cases.jacobian_bodies(cases.problem(n, c, seed=1), JACOBIAN_INCLUDE)
    include = frozenset(Output(item) for item in JACOBIAN_INCLUDE)
    verdicts: dict[str, Any] = {}
    first: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name, body in bodies.items():
        cases.candidate_floor(body, include)  # warm
        started = time.perf_counter()
        reply = cases.post_body(connection, body)
        first[name] = time.perf_counter() - started
        if reply.status == 200:
            verdicts[name] = _verdict(orjson.loads(reply.body), "jacobian")
        else:
            failed[name] = f"not available: HTTP {reply.status} ({_detail(reply.body)})"
    floors = _interleaved(
        {name: partial(cases.candidate_floor, body, include) for name, body in bodies.items()},
        1,
    )
    too_slow = {name for name in verdicts if first[name] > TOO_SLOW_TO_REPEAT * floors[name]}
    actions: dict[str, Any] = {}
    for name, body in bodies.items():
        actions[f"{name}_floor"] = partial(cases.candidate_floor, body, include)
        if name in verdicts and name not in too_slow:
            actions[name] = partial(cases.post_ready_json, connection, body)
    actions["parse_only_pydantic"] = partial(pydantic_core.from_json, bodies["correct"])
    actions["parse_only_orjson"] = partial(orjson.loads, bodies["correct"])
    times = _interleaved(actions, plan.jacobian_repeats)
    for name in too_slow:
        times[name] = first[name]
    rows = []
    for name, label in (("correct", "correct"), ("missing_diagonal", "missing diagonal")):
        case = f"6b candidate Jacobian, {label} (N={n}, C={c})"
        if name in failed:
            rows.append(unavailable("6b", case, "s", JACOBIAN_MEANING, failed[name]))
            continue
        floor = times[f"{name}_floor"]
        rows.append(row("6b", case, times[name], floor, "s", times[name] / floor, JACOBIAN_MEANING))
    details = {
        "include": JACOBIAN_INCLUDE,
        "N": n,
        "C": c,
        "max_body_bytes": limit,
        "body_bytes": {name: len(body) for name, body in bodies.items()},
        "seconds": times,
        "first_run_seconds": first,
        "run_once_as_too_slow": sorted(too_slow),
        "verdicts": verdicts,
    }
    return rows, details


LLM_MEANING = "end-to-end time / in-process floor (np.load, float64 loss and gradient, compare)"
LLM_MEMORY_MEANING = "server peak RSS growth / float64 size of the logits"


def llm_kernel(plan: Plan, env: dict[str, str]) -> tuple[list[Row], dict[str, Any]]:
    """Case 7 (issue 18 item 6): a float32 fused-kernel gradient checked at LLM scale, N×C of
    plan.llm float32 logits (10 % of the positions ignored) with z-loss 1e-4 and softcap 30,
    sent as .npz with include ["loss"] and answered as JSON, end to end against its
    in-process floor (`cases.llm_floor`); and the peak RSS growth of a fresh server while it
    serves the first such request, against the float64 size of the logits (N·C·8 bytes)."""
    n, c = plan.llm
    payload = cases.llm_problem(n, c)
    body = cases.llm_body(payload)
    small = cases.npz_request(cases.problem(*plan.small), {"include": cases.LLM_INCLUDE})
    logits_bytes = n * c * 8
    case = f"(N={n}, C={c}, float32, z-loss, softcap)"
    with running_server(env) as server:
        connection = Connection(server.port, timeout=300.0)
        cases.post_binary(connection, small, npz_response=False)  # every path imported
        before = server.peak_rss_bytes()
        started = time.perf_counter()
        reply = cases.post_body(connection, body, cases.BINARY_JSON_HEADERS)
        first = time.perf_counter() - started
        growth = server.peak_rss_bytes() - before
        if reply.status != 200:
            connection.close()
            reason = f"not available: HTTP {reply.status} ({_detail(reply.body)})"
            return [
                unavailable("7", f"7 kernel gradient checked {case}", "s", LLM_MEANING, reason),
                unavailable(
                    "7 memory",
                    f"7 peak memory, server {case}",
                    "bytes",
                    LLM_MEMORY_MEANING,
                    reason,
                ),
            ], {"N": n, "C": c, "status": reply.status}
        response = orjson.loads(reply.body)
        floor_check = cases.llm_floor(body)
        times = _interleaved(
            {
                "floor": partial(cases.llm_floor, body),
                "service": partial(cases.post_binary, connection, body, npz_response=False),
            },
            plan.llm_repeats,
        )
        connection.close()
    rows = [
        row(
            "7",
            f"7 kernel gradient checked {case}",
            times["service"],
            times["floor"],
            "s",
            times["service"] / times["floor"],
            LLM_MEANING,
        ),
        row(
            "7 memory",
            f"7 peak memory, server {case}",
            growth,
            logits_bytes,
            "bytes",
            growth / logits_bytes,
            LLM_MEMORY_MEANING,
        ),
    ]
    details = {
        "N": n,
        "C": c,
        "body_bytes": len(body),
        "logits_float64_bytes": logits_bytes,
        "server_peak_rss_growth_bytes": growth,
        "first_run_seconds": first,
        "seconds": times,
        "response_keys": sorted(response),
        "candidate_passed": response["candidate_check"]["passed"],
        "floor_passed": floor_check.passed,
    }
    return rows, details


HESSIAN_MEANING = "end-to-end time / in-process floor (encode, decode, numerics, encode, decode)"
HESSIAN_REQUESTS = {
    "Hessian": cases.HESSIAN_INCLUDE,
    "Hessian and numeric Hessian": ["hessian", "numeric_hessian"],
}


def second_order(server: Server, plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    """Case 8 (issue 20 item 5): Hessian requests (N×C of plan.large, N·C·C numbers as the
    Jacobian of case 1) end to end against their in-process floors, as JSON and as .npz in
    and out; and Hessian-vector products (include ["hessian_vector_product"] with a
    `vector`, .npz in and out) against N·C, C swept at N = plan.hvp_samples: the slope of log
    time against log N·C, like case 5's."""
    n, c = plan.large
    payload = cases.problem(n, c)
    connection = Connection(server.port, timeout=300.0)
    actions: dict[str, Any] = {}
    for label, include in HESSIAN_REQUESTS.items():
        json_body = cases.json_request(payload, include)
        binary_body = cases.npz_request(payload, {"include": include})
        actions[f"{label}, JSON"] = partial(cases.post_ready_json, connection, json_body)
        actions[f"{label}, JSON floor"] = partial(
            cases.hessian_floor, payload, include, binary=False
        )
        actions[f"{label}, .npz"] = partial(cases.post_binary, connection, binary_body)
        actions[f"{label}, .npz floor"] = partial(
            cases.hessian_floor, payload, include, binary=True
        )
    keys = {name: sorted(action()) for name, action in actions.items()}  # warm, and what came
    times = _interleaved(actions, plan.repeats)
    rows = []
    for label in HESSIAN_REQUESTS:
        for fmt, shown in (("JSON", "JSON"), (".npz", ".npz in and out")):
            name = f"{label}, {fmt}"
            rows.append(
                row(
                    "8",
                    f"8 {label}, {shown} (N={n}, C={c})",
                    times[name],
                    times[f"{name} floor"],
                    "s",
                    times[name] / times[f"{name} floor"],
                    HESSIAN_MEANING,
                )
            )
    points: list[dict[str, Any]] = []
    for classes in geometric(10, plan.hvp_max_classes, plan.hvp_points):
        request = cases.with_vector(cases.problem(plan.hvp_samples, classes))
        body = cases.npz_request(request, {"include": cases.HVP_INCLUDE})
        cases.post_binary(connection, body)
        seconds = cases.median_time(
            partial(cases.post_binary, connection, body), plan.scaling_repeats
        )
        points.append(
            {
                "N": plan.hvp_samples,
                "C": classes,
                "entries": plan.hvp_samples * classes,
                "seconds": seconds,
            }
        )
    connection.close()
    top = max(p["entries"] for p in points)
    large = [p for p in points if p["entries"] >= top / 100] or points
    slope = (
        log_slope([p["entries"] for p in large], [p["seconds"] for p in large])
        if len(large) > 1
        else math.nan
    )
    last = points[-1]
    rows.append(
        row(
            "8 HVP slope",
            f"8 Hessian-vector product against N·C, .npz (up to N={last['N']}, C={last['C']})",
            last["seconds"],
            last["N"] * last["C"],
            "s / entries",
            slope,
            "slope of log time against log N·C (1 = linear, < 1: the fixed cost of a request "
            "still shows)",
        )
    )
    return rows, {"seconds": times, "response_keys": keys, "hvp": points}


def format_value(value: float | None, unit: str) -> str:
    """A measurement in a readable unit."""
    if value is None or math.isnan(value):
        return "–"
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
    for line in rows:
        if line.unit == "s / entries" and line.measured is not None and line.baseline is not None:
            measured = f"{line.measured * 1000:.1f} ms at the top"
            baseline = f"{line.baseline:,.0f} numbers"
        else:
            measured = format_value(line.measured, line.unit)
            baseline = format_value(line.baseline, line.unit)
        ratio = "–" if line.ratio is None else f"{line.ratio:.3g}"
        lines.append(
            f"| {line.case} | {measured} | {baseline} | {ratio} | {line.target} | "
            f"{line.status} | {line.ratio_meaning} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> str:
    """One line per case key with a target: met, missed (with the rows that missed), or why it
    was not measured."""
    lines = []
    for key, target in TARGETS.items():
        if target is None:
            continue
        mine = [line for line in rows if line.key == key]
        if not mine:
            continue
        missed = [line.case for line in mine if line.status == MISSED]
        other = [line.status for line in mine if line.status not in (MET, MISSED)]
        if other:
            verdict = other[0]
        elif missed:
            verdict = f"MISSED ({'; '.join(missed)})"
        else:
            verdict = MET
        lines.append(f"case {key} ({target}, {target.source}): {verdict}")
    return "\n".join(lines)


def run(plan: Plan, output_dir: Path) -> dict[str, Any]:
    """Every case against one server (memory: fresh servers); write bench.json and bench.png."""
    env = {}
    overrides: dict[str, int] = {}
    if plan.max_output_entries is not None:
        env["GRADCHECK_MAX_OUTPUT_ENTRIES"] = str(plan.max_output_entries)
        overrides["max_output_entries"] = plan.max_output_entries
    if plan.max_body_bytes is not None:
        env["GRADCHECK_MAX_BODY_BYTES"] = str(plan.max_body_bytes)
        overrides["max_body_bytes"] = plan.max_body_bytes
    settings = Settings().model_copy(update=overrides)
    started = time.perf_counter()
    info = machine()
    with running_server(env) as server:
        case1, case4, large_details = large_response(server, plan)
        case2, loop_details = numeric_gradient(server, plan)
        case3, small_details = small_requests(server, plan)
        scaling_rows, points = scaling(server, plan, settings)
        candidate_rows, candidate_details = candidate_checks(server, plan, settings)
        second_order_rows, second_order_details = second_order(server, plan)
    memory_rows, memory_details = peak_memory(plan, settings, env)
    llm_rows, llm_details = llm_kernel(plan, env)
    rows = [
        case1,
        *case2,
        case3,
        *case4,
        *scaling_rows,
        *memory_rows,
        *candidate_rows,
        *llm_rows,
        *second_order_rows,
    ]
    info["load_average_at_end"] = os.getloadavg()
    info["bench_seconds"] = time.perf_counter() - started
    results = {
        "machine": info,
        "plan": asdict(plan),
        "rows": [asdict(line) for line in rows],
        "large_response": large_details,
        "loop_baseline": loop_details,
        "small_requests": small_details,
        "scaling": points,
        "memory": memory_details,
        "candidate": candidate_details,
        "llm": llm_details,
        "second_order": second_order_details,
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
    rows = [Row(**line) for line in results["rows"]]
    print(table(rows))
    print()
    print(verdicts(rows))
    info = results["machine"]
    print(
        f"\n{info['cpu']}, {info['cores']} cores, Python {info['python']}, numpy {info['numpy']}; "
        f"load average {info['load_average_at_start'][0]:.2f} at start, "
        f"{info['load_average_at_end'][0]:.2f} at end; {info['bench_seconds']:.0f} s in all. "
        f"Results in {args.output_dir}/bench.json, bench.md, bench.png"
    )


if __name__ == "__main__":
    main()
